#!/bin/sh
# Runs the given test binaries (guest tests, --ignored) one after another inside the VM.
rc=0
for t in "$@"; do
  echo "=== $t"
  "$t" --ignored --test-threads=1 || rc=1
done
exit $rc
