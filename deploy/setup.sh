#!/usr/bin/env bash
# One-time (re-runnable) setup of everything the job needs in a Google Cloud project:
# APIs, Artifact Registry repository, result bucket, two service accounts with least
# privilege, the API secret, the first build + deploy, and the daily Cloud Scheduler trigger.
#
#   PROJECT=my-project SECRET_FILE=./api-secret.txt deploy/setup.sh
#
# Every step checks before it creates, so running it again only fills in what is missing
# (IAM bindings are idempotent). Run it as someone who can administer the project (owner, or
# the admin roles for Run, IAM, Storage, Secret Manager, Scheduler, Artifact Registry, Build).
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
LISTER_ROLE_ID=involveAsiaObjectLister
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)

g() { gcloud --project "$PROJECT" --quiet "$@"; }
say() { printf '\n== %s\n' "$*"; }

# ---------------------------------------------------------------- APIs
say "Enabling APIs"
g services enable run.googleapis.com cloudbuild.googleapis.com \
    artifactregistry.googleapis.com secretmanager.googleapis.com \
    cloudscheduler.googleapis.com storage.googleapis.com iam.googleapis.com

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
ensure_sa "$SCHEDULER_SA_NAME" "Involve Asia conversions job (scheduler trigger)"

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
# What the job does: create part/result/summary objects (create-only, ifGenerationMatch=0),
# read them back to compose the result, delete its temporary compose objects, and list
# what already exists under the range to resume.
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
condition_file=$(mktemp)
trap 'rm -f "$condition_file"' EXIT
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
# Logs need no role: the job writes JSON lines to stdout and Cloud Run ships them.

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
# The scheduler's account may run THIS job (roles/run.invoker on the job: run.jobs.run),
# and nothing else: no overrides, no other job, no project-wide role.
say "Job-level IAM"
g run jobs add-iam-policy-binding "$JOB" --region "$REGION" \
    --member "serviceAccount:$SCHEDULER_SA" --role roles/run.invoker >/dev/null
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

say "Done"
echo "Run it now:      gcloud scheduler jobs run $SCHEDULER_JOB --location $REGION --project $PROJECT"
echo "Backfill:        PROJECT=$PROJECT REGION=$REGION deploy/backfill.sh 2025-01-01 2025-01-31 --tasks 4"
echo "Results:         gs://$BUCKET/$PREFIX/"
