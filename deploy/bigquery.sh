#!/usr/bin/env bash
# A BigQuery external table over the day store, so reports query the current data in place:
#
#   PROJECT=my-project deploy/bigquery.sh
#
# gs://BUCKET/PREFIX/days/account={account}/date={YYYY-MM-DD}/conversions.ndjson.gz holds one
# current snapshot per (account, day), each conversion once, so a table over days/ never counts
# a record twice however the runs' ranges overlapped. Hive partitioning (CUSTOM mode) turns the
# folder names into the columns `account` (STRING) and `date` (DATE); a filter on them reads
# only the matching files. Nothing is copied: a query always sees the latest snapshots.
#
# Re-runnable: the dataset is created if missing; the table is created, or its definition
# updated to what this script writes. Needs the bq tool (Google Cloud SDK), run as someone with
# roles/bigquery.dataEditor on the dataset (or bigquery.datasets.create in the project for the
# first run). People who query the table need roles/bigquery.dataViewer on the dataset,
# roles/bigquery.jobUser in the project, and read access to the objects
# (roles/storage.objectViewer on the bucket): BigQuery reads the files with the caller's rights.
set -euo pipefail

PROJECT=${PROJECT:?set PROJECT to the Google Cloud project id}
# Must match deploy/setup.sh (BUCKET, PREFIX) and job.yaml (GCS_BUCKET, GCS_PREFIX).
BUCKET=${BUCKET:-${PROJECT}-involve-asia-conversions}
PREFIX=${PREFIX:-conversions}
DATASET=${DATASET:-involve_asia}
TABLE=${TABLE:-conversions}
# The dataset's location; keep it with the bucket's region (setup.sh creates the bucket there).
BQ_LOCATION=${BQ_LOCATION:-asia-southeast1}

DAYS_URI="gs://${BUCKET}/${PREFIX}/days"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

b() { bq --project_id="$PROJECT" --quiet "$@"; }

# The table definition (the ExternalDataConfiguration of the BigQuery API). The schema is given
# rather than detected: a sample of files could see only empty aff_sub values and guess wrong.
# Amounts stay STRING as the API sends them ("12.34"): cast in queries with
# SAFE_CAST(payout AS NUMERIC). Fields the schema does not name are ignored.
cat >"$work/definition.json" <<EOF
{
  "sourceFormat": "NEWLINE_DELIMITED_JSON",
  "sourceUris": ["${DAYS_URI}/*"],
  "compression": "GZIP",
  "ignoreUnknownValues": true,
  "hivePartitioningOptions": {
    "mode": "CUSTOM",
    "sourceUriPrefix": "${DAYS_URI}/{account:STRING}/{date:DATE}",
    "requirePartitionFilter": false
  },
  "schema": {
    "fields": [
      {"name": "conversion_id", "type": "INTEGER"},
      {"name": "offer_id", "type": "INTEGER"},
      {"name": "offer_name", "type": "STRING"},
      {"name": "merchant_id", "type": "INTEGER"},
      {"name": "sale_amount", "type": "STRING"},
      {"name": "payout", "type": "STRING"},
      {"name": "base_payout", "type": "STRING"},
      {"name": "bonus_payout", "type": "STRING"},
      {"name": "currency", "type": "STRING"},
      {"name": "conversion_status", "type": "STRING"},
      {"name": "datetime_conversion", "type": "STRING"},
      {"name": "aff_sub1", "type": "STRING"},
      {"name": "aff_sub2", "type": "STRING"},
      {"name": "aff_sub3", "type": "STRING"},
      {"name": "aff_sub4", "type": "STRING"},
      {"name": "aff_sub5", "type": "STRING"},
      {"name": "adv_sub1", "type": "STRING"},
      {"name": "adv_sub2", "type": "STRING"},
      {"name": "adv_sub3", "type": "STRING"},
      {"name": "adv_sub4", "type": "STRING"},
      {"name": "adv_sub5", "type": "STRING"},
      {"name": "_account", "type": "STRING"}
    ]
  }
}
EOF

echo "== Dataset ${PROJECT}:${DATASET} (${BQ_LOCATION})"
if ! b show --dataset "${PROJECT}:${DATASET}" >/dev/null 2>&1; then
    b --location="$BQ_LOCATION" mk --dataset \
        --description="Involve Asia conversions (external tables over gs://${BUCKET}/${PREFIX}/)" \
        "${PROJECT}:${DATASET}"
fi

echo "== External table ${PROJECT}:${DATASET}.${TABLE} over ${DAYS_URI}/"
if b show "${PROJECT}:${DATASET}.${TABLE}" >/dev/null 2>&1; then
    b update --external_table_definition="$work/definition.json" "${PROJECT}:${DATASET}.${TABLE}"
else
    b mk --table --external_table_definition="$work/definition.json" \
        --description="Current day snapshots of the Involve Asia conversions job, one row per conversion" \
        "${PROJECT}:${DATASET}.${TABLE}"
fi

echo "Query it, e.g.: bq query --use_legacy_sql=false 'SELECT date, conversion_status, COUNT(*) AS n FROM \`${PROJECT}.${DATASET}.${TABLE}\` GROUP BY 1, 2 ORDER BY 1, 2'"
