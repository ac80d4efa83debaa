#!/usr/bin/env bash
# Debian packages the test suites use. Each is installed only when missing.
set -euo pipefail
need=()
have() { dpkg -s "$1" >/dev/null 2>&1; }
for pkg in ${XVIO_APT_PACKAGES:-libxen-dev xenstore-utils gcc libc6-dev iproute2 tcpdump qemu-system-x86 busybox-static kmod cpio chromium}; do have "$pkg" || need+=("$pkg"); done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
