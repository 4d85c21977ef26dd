#!/usr/bin/env bash
# Run the job once for a past date range, with per-execution overrides; the job's own
# configuration (and the daily schedule) stays untouched.
#
#   PROJECT=my-project deploy/backfill.sh START_DATE END_DATE [--tasks N] [--async] [-- KEY=VALUE ...]
#
#   deploy/backfill.sh 2025-01-01 2025-01-31                 # one task, wait for the result
#   deploy/backfill.sh 2025-01-01 2025-03-31 --tasks 6       # six slices of the (account, day) units
#   deploy/backfill.sh 2025-02-01 2025-02-28 -- FAIL_ON_SKIPPED_PAGES=false MAX_SKIPPED_PAGES=50
#
# Dates are inclusive (YYYY-MM-DD). Each task takes its share of the (account, day) units and
# every task attempt has the full task timeout; tasks run one after another (job.yaml
# parallelism 1: the API's 60 requests/minute limit is per account, so parallel tasks would
# not be faster). A failed task is retried by Cloud Run (maxRetries) and resumes from the
# parts it already uploaded.
#
# Needs run.jobs.runWithOverrides on the job (roles/run.jobsExecutorWithOverrides or
# roles/run.developer); plain roles/run.invoker cannot pass overrides.
set -euo pipefail

PROJECT=${PROJECT:-}
REGION=${REGION:-asia-southeast1}
JOB=${JOB:-involve-asia-conversions}
TASKS=${TASKS:-1}
WAIT=${WAIT:-true}

usage() {
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[ $# -ge 2 ] || usage
START_DATE=$1
END_DATE=$2
shift 2

extra_env=()
while [ $# -gt 0 ]; do
    case $1 in
        --tasks) [ $# -ge 2 ] || usage; TASKS=$2; shift 2 ;;
        --tasks=*) TASKS=${1#--tasks=}; shift ;;
        --async) WAIT=false; shift ;;
        --wait) WAIT=true; shift ;;
        --) shift; extra_env=("$@"); break ;;
        -h|--help) usage ;;
        *) echo "unknown argument: $1" >&2; usage ;;
    esac
done

[ -n "$PROJECT" ] || { echo "set PROJECT to the Google Cloud project id" >&2; exit 2; }

date_re='^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$'
for d in "$START_DATE" "$END_DATE"; do
    [[ $d =~ $date_re ]] || { echo "not a YYYY-MM-DD date: $d" >&2; exit 2; }
done
# ISO dates compare correctly as strings. The job re-validates everything (exit 2).
if [[ $START_DATE > $END_DATE ]]; then
    echo "START_DATE $START_DATE is after END_DATE $END_DATE" >&2
    exit 2
fi
[[ $TASKS =~ ^[1-9][0-9]*$ ]] && [ "$TASKS" -le 10000 ] || {
    echo "--tasks must be an integer from 1 to 10000, got: $TASKS" >&2
    exit 2
}
# `${a[@]+"${a[@]}"}` expands an empty array safely under `set -u` in old bash (macOS 3.2).
for kv in ${extra_env[@]+"${extra_env[@]}"}; do
    [[ $kv =~ ^[A-Z][A-Z0-9_]*=.*$ ]] || { echo "not KEY=VALUE: $kv" >&2; exit 2; }
    case $kv in
        *SECRET*|INVOLVE_ASIA_ACCOUNTS=*)
            echo "refusing to pass a secret as an override (it would show in the execution): ${kv%%=*}" >&2
            exit 2 ;;
        *\;*)
            echo "values may not contain ';': $kv" >&2
            exit 2 ;;
    esac
done

# Joined with ';' under gcloud's alternative-delimiter syntax (`gcloud topic escaping`), so
# values with commas such as RETRY_BACKOFF=10,20,30 pass through intact.
env_overrides="^;^START_DATE=${START_DATE};END_DATE=${END_DATE}"
for kv in ${extra_env[@]+"${extra_env[@]}"}; do
    env_overrides+=";${kv}"
done

wait_flag=--wait
[ "$WAIT" = "true" ] || wait_flag=--async

echo "Executing $JOB in $REGION for $START_DATE..$END_DATE with $TASKS task(s)" >&2
exec gcloud run jobs execute "$JOB" \
    --project "$PROJECT" \
    --region "$REGION" \
    --update-env-vars "$env_overrides" \
    --tasks "$TASKS" \
    "$wait_flag"
