#!/usr/bin/env bash
# Boots Xen 4.17 under QEMU TCG with the dom0 built by build.sh; the serial console (Xen and
# dom0) goes to stdout. smap=0 smep=0: without them dom0 faults at its first instruction
# under TCG. The dom0 init powers the machine off when its checks are done.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${XVIO_XEN_WORK:-$here/.work}
exec timeout "${XVIO_XEN_TIMEOUT:-900}" qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 2048 -machine q35 \
  -nographic -no-reboot -serial mon:stdio -monitor none -nic none \
  -kernel "$work/xen.elf" \
  -append "console=com1 com1=115200,8n1 dom0_mem=1024M,max:1024M dom0_max_vcpus=1 noreboot smap=0 smep=0 conring_size=1M" \
  -initrd "$work/vmlinuz console=hvc0 earlyprintk=xen rdinit=/init quiet ${XVIO_DOM0_ARGS:-},$work/dom0-initramfs.cpio.gz" \
  < /dev/null
