#!/bin/sh
# A scripted "AI agent" doing what coding agents do: produce a file, then ship it somewhere.
# It runs in the watched cgroup, so its `aws s3 cp` is held until an approver decides.
set -eu
WORK=$1 S3=$2
echo "ai-agent: writing the Q3 report"
printf 'region,revenue\nemea,1200\namer,3400\napac,900\n' >"$WORK/q3-report.csv"
echo "ai-agent: exporting it with: aws s3 cp q3-report.csv s3://demo-reports/ (this waits for approval)"
started=$(date +%s)
aws --endpoint-url "$S3" s3 cp "$WORK/q3-report.csv" s3://demo-reports/q3-report.csv
echo "ai-agent: export finished after $(( $(date +%s) - started ))s of waiting and uploading"
