#!/usr/bin/env bash
# One-time (re-runnable) setup of everything the job needs in a Google Cloud project:
# APIs, Artifact Registry repository, result bucket (object versioning + lifecycle rules),
# service accounts with least privilege, the API secret, log-based metrics, a dashboard, alert
# policies with an email channel, the first build + deploy, and two Cloud Scheduler triggers
# (the daily run of yesterday, and a refresh of the last REFRESH_DAYS days).
#
#   PROJECT=my-project SECRET_FILE=./api-secret.txt ALERT_EMAIL=ops@example.com deploy/setup.sh
#
# Every step checks before it creates, so running it again only fills in what is missing and
# re-applies the files in deploy/ (IAM bindings are idempotent). Run it as someone who can
# administer the project (owner, or the admin roles for Run, IAM, Storage, Secret Manager,
# Scheduler, Artifact Registry, Build) plus, for the monitoring part, roles/logging.configWriter
# (log-based metrics), roles/monitoring.dashboardEditor, roles/monitoring.alertPolicyEditor and
# roles/monitoring.notificationChannelEditor. Those stay with the operator: the job's service
# account gets no logging or monitoring role (it only writes stdout).
set -euo pipefail

# ---------------------------------------------------------------- settings (override via env)
PROJECT=${PROJECT:?set PROJECT to the Google Cloud project id}
REGION=${REGION:-asia-southeast1}
JOB=${JOB:-involve-asia-conversions}
REPOSITORY=${REPOSITORY:-involve-asia}
IMAGE=${IMAGE:-involve-asia-job}
BUCKET=${BUCKET:-${PROJECT}-involve-asia-conversions}
# Must equal GCS_PREFIX in job.yaml: the job's write access is limited to this prefix.
PREFIX=${PREFIX:-conversions}
# Secret Manager secret holding INVOLVE_ASIA_API_SECRET (job.yaml pins its version).
SECRET=${SECRET:-involve-asia-api-secret}
# A file with the API secret, used only if the secret has no version yet. Never pass the
# secret itself on a command line (it would land in shell history and process lists).
SECRET_FILE=${SECRET_FILE:-}
JOB_SA_NAME=${JOB_SA_NAME:-involve-asia-job}
SCHEDULER_SA_NAME=${SCHEDULER_SA_NAME:-involve-asia-scheduler}
SCHEDULER_JOB=${SCHEDULER_JOB:-${JOB}-daily}
# Daily at 02:00 Beijing time; the job then fetches "yesterday" in TIMEZONE (Asia/Shanghai).
SCHEDULE=${SCHEDULE:-0 2 * * *}
SCHEDULE_TIME_ZONE=${SCHEDULE_TIME_ZONE:-Asia/Shanghai}
# The refresh: the REFRESH_DAYS days up to yesterday fetched again (DEFAULT_DATE_RANGE as a
# per-execution override), so the statuses Involve Asia validates 14-60+ days after a month ends
# reach the day store. Weekly, Monday 03:00, after the daily run and before the week's reports.
# Cost: pages per day x REFRESH_DAYS requests per account at 60/minute (README "Scheduling and
# backfills"); job.yaml's timeoutSeconds is sized for REFRESH_DAYS=90.
REFRESH_SCHEDULER_JOB=${REFRESH_SCHEDULER_JOB:-${JOB}-refresh}
REFRESH_SCHEDULE=${REFRESH_SCHEDULE:-0 3 * * 1}
REFRESH_DAYS=${REFRESH_DAYS:-90}
REFRESH_SA_NAME=${REFRESH_SA_NAME:-involve-asia-refresh}
# Bucket lifecycle: a replaced day snapshot (a noncurrent version under PREFIX/days/) is kept
# this many days, so it can be recovered; per-execution run results under PREFIX/runs/ are
# deleted after RUNS_RETENTION_DAYS (the day store is the durable data).
DAYS_NONCURRENT_RETENTION=${DAYS_NONCURRENT_RETENTION:-90}
RUNS_RETENTION_DAYS=${RUNS_RETENTION_DAYS:-30}
# Where alerts go. Empty: metrics and the dashboard are still set up, but no alert policy.
ALERT_EMAIL=${ALERT_EMAIL:-}
# Seconds between attempts when alerting does not see a just-created log-based metric yet.
MONITORING_RETRY_SLEEP=${MONITORING_RETRY_SLEEP:-20}
# Identity Cloud Build runs as. Projects created before mid-2024 use the legacy Cloud Build
# account (the default below); newer ones use the Compute Engine default account, see
# `gcloud builds get-default-service-account`. Set BUILD_SA accordingly.
BUILD_SA=${BUILD_SA:-}
# Optional principal allowed to start executions WITH overrides (backfills), e.g.
# group:data-ops@example.com. Empty: nobody gets it here.
OPERATOR=${OPERATOR:-}
# false: stop after the infrastructure, before building and deploying the job.
DEPLOY=${DEPLOY:-true}

JOB_SA="${JOB_SA_NAME}@${PROJECT}.iam.gserviceaccount.com"
SCHEDULER_SA="${SCHEDULER_SA_NAME}@${PROJECT}.iam.gserviceaccount.com"
REFRESH_SA="${REFRESH_SA_NAME}@${PROJECT}.iam.gserviceaccount.com"
LISTER_ROLE_ID=involveAsiaObjectLister
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEPLOY_DIR="$REPO_ROOT/deploy"

g() { gcloud --project "$PROJECT" --quiet "$@"; }
say() { printf '\n== %s\n' "$*"; }
die() { echo "$*" >&2; exit 2; }

for var in REFRESH_DAYS DAYS_NONCURRENT_RETENTION RUNS_RETENTION_DAYS; do
    [[ ${!var} =~ ^[1-9][0-9]*$ ]] || die "$var must be a whole number of days >= 1, got: ${!var}"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A file from deploy/ with its placeholders filled (CHANNEL is set once the channel exists).
render() {
    sed -e "s|__JOB__|${JOB}|g" -e "s|__REGION__|${REGION}|g" -e "s|__PROJECT__|${PROJECT}|g" \
        -e "s|__SCHEDULER_JOB__|${SCHEDULER_JOB}|g" -e "s|__CHANNEL__|${CHANNEL:-}|g" "$1"
}
# The top-level "displayName" of a policy or dashboard file (JSON indented by two spaces).
display_name() { sed -n 's/^  "displayName": "\(.*\)",$/\1/p' "$1" | head -n 1; }
# Alerting may not see a log-based metric created seconds before: try a few times.
with_retries() {
    local attempt
    for attempt in 1 2 3; do
        if "$@"; then
            return 0
        fi
        if [ "$attempt" -lt 3 ]; then
            sleep "$MONITORING_RETRY_SLEEP"
        fi
    done
    return 1
}

# ---------------------------------------------------------------- APIs
say "Enabling APIs"
g services enable run.googleapis.com cloudbuild.googleapis.com \
    artifactregistry.googleapis.com secretmanager.googleapis.com \
    cloudscheduler.googleapis.com storage.googleapis.com iam.googleapis.com \
    logging.googleapis.com monitoring.googleapis.com

PROJECT_NUMBER=$(g projects describe "$PROJECT" --format='value(projectNumber)')
BUILD_SA=${BUILD_SA:-${PROJECT_NUMBER}@cloudbuild.gserviceaccount.com}

# ---------------------------------------------------------------- Artifact Registry
say "Artifact Registry repository $REPOSITORY"
if ! g artifacts repositories describe "$REPOSITORY" --location "$REGION" >/dev/null 2>&1; then
    g artifacts repositories create "$REPOSITORY" --location "$REGION" \
        --repository-format docker --description "Involve Asia conversions job images"
fi

# ---------------------------------------------------------------- bucket
# Uniform bucket-level access is required for IAM conditions (and turns ACLs off).
say "Bucket gs://$BUCKET"
if ! g storage buckets describe "gs://$BUCKET" >/dev/null 2>&1; then
    g storage buckets create "gs://$BUCKET" --location "$REGION" \
        --uniform-bucket-level-access --public-access-prevention
fi

# Versioning keeps the snapshot a refresh replaced as a noncurrent version (recover it with
# `gcloud storage ls --all-versions` and `cp` of its #generation URL, README "Operating it").
# The lifecycle file replaces the bucket's whole lifecycle configuration on every run:
#   1. noncurrent versions under PREFIX/days/ go DAYS_NONCURRENT_RETENTION days after they
#      were replaced;
#   2. objects under PREFIX/runs/ (per-execution results, summaries, scratch) go
#      RUNS_RETENTION_DAYS days after they were written: the day store holds the same records;
#   3. noncurrent versions under PREFIX/runs/ (left by rule 2 and by the job deleting its own
#      scratch) go a day later, so versioning does not keep what rule 2 removed.
say "Bucket versioning and lifecycle"
cat >"$work/lifecycle.json" <<EOF
{
  "rule": [
    {
      "action": {"type": "Delete"},
      "condition": {"isLive": false, "daysSinceNoncurrentTime": ${DAYS_NONCURRENT_RETENTION},
                    "matchesPrefix": ["${PREFIX}/days/"]}
    },
    {
      "action": {"type": "Delete"},
      "condition": {"age": ${RUNS_RETENTION_DAYS}, "matchesPrefix": ["${PREFIX}/runs/"]}
    },
    {
      "action": {"type": "Delete"},
      "condition": {"isLive": false, "daysSinceNoncurrentTime": 1,
                    "matchesPrefix": ["${PREFIX}/runs/"]}
    }
  ]
}
EOF
g storage buckets update "gs://$BUCKET" --versioning --lifecycle-file "$work/lifecycle.json"

# ---------------------------------------------------------------- service accounts
say "Service accounts"
ensure_sa() {
    local name=$1 display=$2
    if ! g iam service-accounts describe "${name}@${PROJECT}.iam.gserviceaccount.com" \
            >/dev/null 2>&1; then
        g iam service-accounts create "$name" --display-name "$display"
    fi
}
ensure_sa "$JOB_SA_NAME" "Involve Asia conversions job (runtime)"
ensure_sa "$SCHEDULER_SA_NAME" "Involve Asia conversions job (daily trigger)"
ensure_sa "$REFRESH_SA_NAME" "Involve Asia conversions job (refresh trigger, with overrides)"

# ---------------------------------------------------------------- secret
say "Secret $SECRET"
if ! g secrets describe "$SECRET" >/dev/null 2>&1; then
    g secrets create "$SECRET" --replication-policy automatic
fi
if [ -z "$(g secrets versions list "$SECRET" --limit 1 --format='value(name)')" ]; then
    if [ -n "$SECRET_FILE" ]; then
        g secrets versions add "$SECRET" --data-file "$SECRET_FILE"
    else
        echo "Secret $SECRET has no version yet. Add one (job.yaml pins version \"1\"):" >&2
        echo "  gcloud secrets versions add $SECRET --project $PROJECT --data-file FILE" >&2
    fi
fi
# The job may read this one secret, nothing else in Secret Manager.
g secrets add-iam-policy-binding "$SECRET" \
    --member "serviceAccount:$JOB_SA" --role roles/secretmanager.secretAccessor >/dev/null

# ---------------------------------------------------------------- job's bucket access
# What the job does: create day snapshots, run results and summaries (create-only or
# generation-checked writes), read them back to compare and compose, delete its temporary
# objects, and list what already exists to reuse fresh snapshots.
#   roles/storage.objectCreator  create only: no get, no delete -> not enough
#   roles/storage.objectViewer   get + list: no create           -> not enough
#   roles/storage.objectUser     create, get, list, update, delete objects (+ multipart
#                                uploads), no IAM or ACL changes  -> chosen
# It is granted on the bucket, conditioned on the object name starting with PREFIX/, so the
# job cannot touch objects outside its prefix.
#
# Listing is the known gap: storage.objects.list is checked against the BUCKET
# (resource.name = projects/_/buckets/BUCKET), never against an object name, so the
# prefix condition above can never match a list call, and IAM allow policies offer no
# condition on the list prefix (the `storage.googleapis.com/objectListPrefix` attribute
# belongs to downscoped credentials / credential access boundaries). We therefore grant
# list alone, bucket-wide, through a custom role holding only storage.objects.list. That
# lets the job see the names and metadata (never the content) of every object in the bucket,
# which is why the bucket is dedicated to this job: then "bucket-wide" changes nothing.
say "Bucket IAM for $JOB_SA"
condition_file="$work/condition.yaml"
cat >"$condition_file" <<EOF
title: ${JOB_SA_NAME}-prefix-only
description: Objects under gs://${BUCKET}/${PREFIX}/ only
expression: resource.name.startsWith("projects/_/buckets/${BUCKET}/objects/${PREFIX}/")
EOF
g storage buckets add-iam-policy-binding "gs://$BUCKET" \
    --member "serviceAccount:$JOB_SA" --role roles/storage.objectUser \
    --condition-from-file "$condition_file" >/dev/null

if ! g iam roles describe "$LISTER_ROLE_ID" >/dev/null 2>&1; then
    g iam roles create "$LISTER_ROLE_ID" --title "Storage object lister (names only)" \
        --description "storage.objects.list alone: list object names, read nothing" \
        --permissions storage.objects.list --stage GA
fi
g storage buckets add-iam-policy-binding "gs://$BUCKET" \
    --member "serviceAccount:$JOB_SA" \
    --role "projects/${PROJECT}/roles/${LISTER_ROLE_ID}" >/dev/null
# Logs need no role: the job writes JSON lines to stdout and Cloud Run ships them. Metrics,
# the dashboard and alerts below are read from those logs: no role for the job either.

# ---------------------------------------------------------------- build identity
# Cloud Build pushes to this repository only, may create/update Cloud Run jobs, and may
# attach the job's service account (actAs) to the job, no other account.
say "Cloud Build permissions for $BUILD_SA"
g artifacts repositories add-iam-policy-binding "$REPOSITORY" --location "$REGION" \
    --member "serviceAccount:$BUILD_SA" --role roles/artifactregistry.writer >/dev/null
g projects add-iam-policy-binding "$PROJECT" --condition=None \
    --member "serviceAccount:$BUILD_SA" --role roles/run.developer >/dev/null
g iam service-accounts add-iam-policy-binding "$JOB_SA" \
    --member "serviceAccount:$BUILD_SA" --role roles/iam.serviceAccountUser >/dev/null

# ---------------------------------------------------------------- log-based metrics
# One metric per file in deploy/metrics/ (the file name is the metric name), counting or
# measuring the job's own log entries (run_finished, unit_finished, page_fetched, page_retry,
# page_skipped, day_changed, day_volume_low). A re-run updates each metric from its file.
say "Log-based metrics"
for metric_file in "$DEPLOY_DIR"/metrics/*.yaml; do
    metric=$(basename "$metric_file" .yaml)
    render "$metric_file" >"$work/$metric.yaml"
    if g logging metrics describe "$metric" >/dev/null 2>&1; then
        g logging metrics update "$metric" --config-from-file "$work/$metric.yaml" >/dev/null
    else
        g logging metrics create "$metric" --config-from-file "$work/$metric.yaml" >/dev/null
    fi
done

# ---------------------------------------------------------------- dashboard
say "Dashboard"
render "$DEPLOY_DIR/dashboard.json" >"$work/dashboard.json"
dashboard_title=$(display_name "$work/dashboard.json")
dashboard=$(g monitoring dashboards list --filter "displayName=\"${dashboard_title}\"" \
    --format 'value(name)' | head -n 1)
if [ -n "$dashboard" ]; then
    g monitoring dashboards update "$dashboard" --config-from-file "$work/dashboard.json" \
        >/dev/null
else
    g monitoring dashboards create --config-from-file "$work/dashboard.json" >/dev/null
fi

# ---------------------------------------------------------------- alerts
# Four policies from deploy/alerts/, all notifying one email channel:
#   execution-failed.json  Cloud Run's own failed-execution count: the verdict after every task
#                          retry, and it also sees tasks that died without logging (memory
#                          limit, task timeout, missing secret), which run_finished cannot
#   run-partial.json       the job's run_finished entries with status partial (log metric)
#   day-volume-low.json    a day stored with under a fifth of its account's median records
#                          (day_volume_low, log metric): tracking may be broken upstream
#   no-success-26h.json    no run_finished succeeded for 26 h (PromQL absent_over_time: a
#                          metric-absence condition cannot look back more than 23.5 h)
say "Alerts"
if [ -z "$ALERT_EMAIL" ]; then
    echo "ALERT_EMAIL is not set: no notification channel and no alert policies were created." >&2
    echo "Rerun with ALERT_EMAIL=you@example.com for the four alerts (README \"Operating it\")." >&2
else
    CHANNEL=$(g beta monitoring channels list \
        --filter "type=\"email\" AND labels.email_address=\"${ALERT_EMAIL}\"" \
        --format 'value(name)' | head -n 1)
    if [ -z "$CHANNEL" ]; then
        CHANNEL=$(g beta monitoring channels create --type email \
            --display-name "Involve Asia conversions alerts (${JOB})" \
            --channel-labels "email_address=${ALERT_EMAIL}" --format 'value(name)')
    fi
    for policy_file in "$DEPLOY_DIR"/alerts/*.json; do
        rendered="$work/alert-$(basename "$policy_file")"
        render "$policy_file" >"$rendered"
        title=$(display_name "$rendered")
        policy=$(g monitoring policies list --filter "displayName=\"${title}\"" \
            --format 'value(name)' | head -n 1)
        if [ -n "$policy" ]; then
            with_retries g monitoring policies update "$policy" --policy-from-file "$rendered" \
                >/dev/null
        else
            with_retries g monitoring policies create --policy-from-file "$rendered" >/dev/null
        fi
        echo "Alert policy \"$title\" notifies $ALERT_EMAIL"
    done
fi

if [ "$DEPLOY" != "true" ]; then
    say "DEPLOY=$DEPLOY: stopping before build, deploy and scheduling"
    exit 0
fi

# ---------------------------------------------------------------- build + deploy the job
say "Building and deploying the job (cloudbuild.yaml)"
short_sha=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || date -u +%Y%m%d%H%M%S)
(cd "$REPO_ROOT" && g builds submit --config cloudbuild.yaml \
    --substitutions "SHORT_SHA=${short_sha},_REGION=${REGION},_REPOSITORY=${REPOSITORY},_IMAGE=${IMAGE},_JOB=${JOB},_BUCKET=${BUCKET}" .)

# ---------------------------------------------------------------- who may run the job
# The daily trigger's account may run THIS job (roles/run.invoker on the job: run.jobs.run),
# and nothing else: no overrides, no other job, no project-wide role.
# The refresh trigger sends a per-execution override (DEFAULT_DATE_RANGE), which needs
# run.jobs.runWithOverrides: roles/run.jobsExecutorWithOverrides on this job, held by its own
# account, so the daily trigger's account never gets the power to override anything.
say "Job-level IAM"
g run jobs add-iam-policy-binding "$JOB" --region "$REGION" \
    --member "serviceAccount:$SCHEDULER_SA" --role roles/run.invoker >/dev/null
g run jobs add-iam-policy-binding "$JOB" --region "$REGION" \
    --member "serviceAccount:$REFRESH_SA" --role roles/run.jobsExecutorWithOverrides >/dev/null
if [ -n "$OPERATOR" ]; then
    # Backfills pass --update-env-vars / --tasks: that needs run.jobs.runWithOverrides.
    g run jobs add-iam-policy-binding "$JOB" --region "$REGION" \
        --member "$OPERATOR" --role roles/run.jobsExecutorWithOverrides >/dev/null
fi

# ---------------------------------------------------------------- daily trigger
# Cloud Scheduler calls the Run Admin API with an OAuth access token (OIDC tokens are for
# calling Cloud Run services' own URLs, not Google APIs). No body: the job fetches
# yesterday in TIMEZONE because START_DATE/END_DATE are unset.
say "Cloud Scheduler job $SCHEDULER_JOB ($SCHEDULE $SCHEDULE_TIME_ZONE)"
RUN_URI="https://${REGION}-run.googleapis.com/apis/run.googleapis.com/v1/namespaces/${PROJECT}/jobs/${JOB}:run"
scheduler_flags=(
    --location "$REGION"
    --schedule "$SCHEDULE"
    --time-zone "$SCHEDULE_TIME_ZONE"
    --uri "$RUN_URI"
    --http-method POST
    --oauth-service-account-email "$SCHEDULER_SA"
    --oauth-token-scope "https://www.googleapis.com/auth/cloud-platform"
)
if g scheduler jobs describe "$SCHEDULER_JOB" --location "$REGION" >/dev/null 2>&1; then
    g scheduler jobs update http "$SCHEDULER_JOB" "${scheduler_flags[@]}"
else
    g scheduler jobs create http "$SCHEDULER_JOB" "${scheduler_flags[@]}" \
        --description "Daily Involve Asia conversions fetch (yesterday)"
fi

# ---------------------------------------------------------------- refresh trigger
# The Run Admin API v2 :run method takes the override in its JSON body; the job then fetches the
# REFRESH_DAYS days up to yesterday. Days fetched less than SNAPSHOT_MAX_AGE ago (the daily
# run's yesterday) are reused; every older day is fetched again and its snapshot replaced when
# the fetch is complete (the old one stays as a noncurrent version).
say "Cloud Scheduler job $REFRESH_SCHEDULER_JOB ($REFRESH_SCHEDULE $SCHEDULE_TIME_ZONE, last $REFRESH_DAYS days)"
REFRESH_URI="https://run.googleapis.com/v2/projects/${PROJECT}/locations/${REGION}/jobs/${JOB}:run"
refresh_body='{"overrides":{"containerOverrides":[{"env":[{"name":"DEFAULT_DATE_RANGE","value":"'"${REFRESH_DAYS}"'"}]}]}}'
refresh_flags=(
    --location "$REGION"
    --schedule "$REFRESH_SCHEDULE"
    --time-zone "$SCHEDULE_TIME_ZONE"
    --uri "$REFRESH_URI"
    --http-method POST
    --oauth-service-account-email "$REFRESH_SA"
    --oauth-token-scope "https://www.googleapis.com/auth/cloud-platform"
    --message-body "$refresh_body"
)
if g scheduler jobs describe "$REFRESH_SCHEDULER_JOB" --location "$REGION" >/dev/null 2>&1; then
    g scheduler jobs update http "$REFRESH_SCHEDULER_JOB" "${refresh_flags[@]}" \
        --update-headers "Content-Type=application/json"
else
    g scheduler jobs create http "$REFRESH_SCHEDULER_JOB" "${refresh_flags[@]}" \
        --headers "Content-Type=application/json" \
        --description "Involve Asia conversions refresh (last ${REFRESH_DAYS} days)"
fi

say "Done"
echo "Run it now:      gcloud scheduler jobs run $SCHEDULER_JOB --location $REGION --project $PROJECT"
echo "Refresh now:     gcloud scheduler jobs run $REFRESH_SCHEDULER_JOB --location $REGION --project $PROJECT"
echo "Backfill:        PROJECT=$PROJECT REGION=$REGION deploy/backfill.sh 2025-01-01 2025-01-31 --tasks 4"
echo "Day store:       gs://$BUCKET/$PREFIX/days/  (BigQuery table: deploy/bigquery.sh)"
echo "Dashboard:       https://console.cloud.google.com/monitoring/dashboards?project=$PROJECT"
