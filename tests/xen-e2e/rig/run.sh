#!/usr/bin/env bash
# Builds the rig and boots it, holding a lock for the whole run: two Xen-under-TCG boots on
# one machine starve each other into timeouts, and a build must not replace the initramfs of
# a run that is about to start. Exit 90 means the build failed (its log tail is printed).
# The console of the last run stays in .work/boot.log.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${XVIO_XEN_WORK:-$here/.work}
mkdir -p "$work"
exec 9>"$work/.rig.lock"
flock 9
if ! bash "$here/rig/build.sh" >"$work/build.log" 2>&1; then
  echo "XVIO-RIG-BUILD-FAILED"
  tail -n 80 "$work/build.log"
  exit 90
fi
# The whole console is also kept in boot.log for diagnosis after the run.
bash "$here/rig/boot.sh" 2>&1 | tee "$work/boot.log"
