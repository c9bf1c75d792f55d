#!/bin/sh
# The airlock demo, run by `cargo xtask demo` (natively on a BPF LSM host, or inside the
# test VM). It starts a local S3 (moto), the approval hub, the agent watching the real `aws`
# CLI, and a scripted "AI agent" in its own cgroup that exports a report to S3. The export
# waits in the kernel until someone approves it:
#     airlock --hub http://127.0.0.1:7443 --as alice list
#     airlock --hub http://127.0.0.1:7443 --as alice approve <ID>
# Environment: AIRLOCK (binary), AWS (aws CLI path), MOTO (moto_server path),
#              DEMO_BRIDGE=1 to expose the hub on the VM's NIC for the host's port forward.
set -eu
AIRLOCK=${AIRLOCK:?path to the airlock binary}
AWS=${AWS:?path to the aws CLI}
MOTO=${MOTO:?path to moto_server}
HERE=$(cd "$(dirname "$0")" && pwd)
export PATH="$(dirname "$AWS"):$PATH"
WORK=$(mktemp -d /tmp/airlock-demo.XXXXXX)
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo-secret AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
# The demo is about the export; keep the aws CLI off the user's own ~/.aws files, whose reads
# the credential-file gate would (rightly) hold as a second request.
export AWS_CONFIG_FILE="$WORK/aws-config" AWS_SHARED_CREDENTIALS_FILE="$WORK/aws-credentials"
S3=http://127.0.0.1:5000
say() { printf '\n\033[1mdemo:\033[0m %s\n' "$*"; }

cleanup() { kill $(jobs -p) 2>/dev/null || true; rmdir "$CG" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

say "starting a local S3 (moto_server) on $S3"
"$MOTO" -H 127.0.0.1 -p 5000 >"$WORK/moto.log" 2>&1 &
say "starting the approval hub on 127.0.0.1:7443 (dev identity mode: loopback only)"
"$AIRLOCK" hub serve --dev-tokens --listen 127.0.0.1:7443 --default-ttl 10m >"$WORK/hub.log" 2>&1 &
if [ "${DEMO_BRIDGE:-0}" = 1 ]; then
    # The VM's port forward arrives on its NIC; the dev-mode hub only listens on loopback.
    socat TCP-LISTEN:7443,bind=10.0.2.15,fork,reuseaddr TCP:127.0.0.1:7443 &
fi

CGROOT=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
CG=$CGROOT/ai-agent-demo
mkdir -p "$CG"
"$AIRLOCK" auditor-keygen "$WORK/auditor.key" >/dev/null
cat >"$WORK/agent.toml" <<CONF
[agent]
id = "demo-host"
[audit]
dir = "$WORK/audit"
signing_key = "$WORK/audit.key"
[masking]
auditor_public_key = "$WORK/auditor.key.pub"
fingerprint_key = "$WORK/fingerprint.key"
[hub]
url = "http://127.0.0.1:7443"
decision_ttl = "10m"
[scope]
cgroups = ["$CG"]
[exec]
watch = ["$AWS"]
CONF
say "starting the agent: it holds any exec of $AWS by processes in $CG"
NOTIFY_SOCKET= "$AIRLOCK" run --config "$WORK/agent.toml" 2>"$WORK/agent.log" &
until grep -q "airlock agent ready" "$WORK/agent.log"; do
    if ! kill -0 $! 2>/dev/null; then cat "$WORK/agent.log"; exit 1; fi
    sleep 0.5
done

until "$AWS" --endpoint-url "$S3" s3 mb s3://demo-reports >/dev/null 2>&1; do sleep 2; done
say "bucket s3://demo-reports is ready (created outside the watched cgroup, so not held)"

say "the AI agent starts; its export will wait for a human. Approve it from another terminal:"
printf '    airlock --hub http://127.0.0.1:7443 --as alice watch\n'
printf '    airlock --hub http://127.0.0.1:7443 --as alice approve <ID>     (or: deny <ID> --reason ...)\n'
sh -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' sh "$CG" \
    sh "$HERE/ai-agent.sh" "$WORK" "$S3" || { say "the AI agent's export failed (denied?)"; exit 3; }

"$AWS" --endpoint-url "$S3" s3 cp s3://demo-reports/q3-report.csv "$WORK/roundtrip.csv" >/dev/null
if cmp -s "$WORK/q3-report.csv" "$WORK/roundtrip.csv"; then
    say "DEMO OK: the approved upload landed; the object in S3 equals the source file"
else
    say "DEMO FAILED: the object in S3 differs from the source file"; exit 4
fi
say "the signed audit trail (airlock audit tail $WORK/audit):"
"$AIRLOCK" audit tail "$WORK/audit" -n 8
say "verifying it (airlock audit verify $WORK/audit):"
# Under emulation (the test VM) the 1 s checkpoint heartbeat can lag by seconds.
GAP=""; [ "${DEMO_BRIDGE:-0}" = 1 ] && GAP="--max-gap-ms 30000"
"$AIRLOCK" audit verify --key "$WORK/audit.key.pub" $GAP "$WORK/audit"
