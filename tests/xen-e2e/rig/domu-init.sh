#!/bin/sh
# /init of the stock-kernel guest: load the stock virtio modules, read the xvio rng device
# through /dev/hwrng, print DOMU-PASS/DOMU-FAIL lines on the serial console, power off.
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
echo "DOMU-BOOTED $(cut -d' ' -f1 /proc/uptime)"
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio-rng; do
  insmod /lib/modules/$m.ko || echo "DOMU-FAIL insmod $m"
done
i=0; while [ ! -e /dev/hwrng ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i+1)); done
lspci_line=$(cat /sys/bus/pci/devices/*/vendor /sys/bus/pci/devices/*/device 2>/dev/null | tr '\n' ' ')
echo "DOMU-PCI $lspci_line"
current=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)
echo "DOMU-RNG-CURRENT $current"
case "$current" in
  virtio_rng*) ;;
  *) echo "DOMU-FAIL rng-current '$current'";;
esac
start=$(cut -d' ' -f1 /proc/uptime)
dd if=/dev/hwrng of=/tmp/random bs=4096 count=4 2>/dev/null
end=$(cut -d' ' -f1 /proc/uptime)
size=$(wc -c < /tmp/random)
distinct=$(od -An -v -tu1 /tmp/random | tr -s ' ' '\n' | sort -u | wc -l)
if [ "$size" = 16384 ] && [ "$distinct" -gt 200 ]; then
  echo "DOMU-PASS hwrng $size bytes, $distinct distinct byte values, $start..$end s"
else
  echo "DOMU-FAIL hwrng size=$size distinct=$distinct"
fi
echo "DOMU-DONE"
poweroff -f
