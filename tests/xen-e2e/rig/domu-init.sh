#!/bin/sh
# /init of the stock-kernel guest: load the stock virtio modules, read the xvio rng device
# through /dev/hwrng, print DOMU-PASS/DOMU-FAIL lines on the serial console, power off.
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
echo "DOMU-BOOTED $(cut -d' ' -f1 /proc/uptime)"
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio-rng; do
  insmod /lib/modules/$m.ko || echo "DOMU-FAIL insmod $m"
done
mode=$(sed -n 's/.*xvio\.mode=\([a-z]*\).*/\1/p' /proc/cmdline)
i=0; while [ ! -e /dev/hwrng ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i+1)); done
lspci_line=$(cat /sys/bus/pci/devices/*/vendor /sys/bus/pci/devices/*/device 2>/dev/null | tr '\n' ' ')
echo "DOMU-PCI $lspci_line"
current=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)
echo "DOMU-RNG-CURRENT $current"
case "$current" in
  virtio_rng*) ;;
  *) echo "DOMU-FAIL rng-current '$current'";;
esac
if [ "$mode" = stream ]; then
  # Robustness: read until dom0 destroys this domain mid-transfer.
  echo "DOMU-STREAMING"
  while :; do dd if=/dev/hwrng of=/dev/null bs=4096 count=64 2>/dev/null; done
fi
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
# The throughput seen by the guest (uptime has centisecond resolution).
cs() { tr -d . < /proc/uptime | cut -d' ' -f1; }
echo "DOMU-MEASURE pci-rng-16k-read-seconds $start..$end s"
# PCI config reads: each dword is one PCI_CONFIG ioreq answered by xvio (an upper bound
# for the ioreq round trip, guest sysfs overhead included).
dev=/sys/bus/pci/devices/0000:00:05.0
t0=$(cs); i=0; while [ $i -lt 20 ]; do cat $dev/config > /dev/null; i=$((i+1)); done; t1=$(cs)
echo "DOMU-MEASURE pci-config-dword-read $(( (t1 - t0) * 10000 / (20 * 64) )) us"
# Robustness: unbind the driver (it resets the device and frees the BAR), then write garbage
# over the BAR with devmem. Each write is an ioreq this vCPU waits on: finishing proves xvio
# answered every one; the reads must come back too.
echo 0000:00:05.0 > /sys/bus/pci/drivers/virtio-pci/unbind 2>/dev/null || echo "DOMU-NOTE unbind failed"
bar=$(head -n 6 $dev/resource | awk '$1 != "0x0000000000000000" { print $1; exit }')
writes=0; reads=0; t0=$(cs)
if [ -n "$bar" ]; then
  off=0
  while [ $off -lt 32768 ]; do
    addr=$(printf '0x%x' $(( bar + off )))
    devmem $addr 32 0xdeadbeef 2>/dev/null && writes=$((writes+1))
    devmem $addr 8 0xa5 2>/dev/null && writes=$((writes+1))
    devmem $addr 32 >/dev/null 2>&1 && reads=$((reads+1))
    off=$((off + 512))
  done
fi
t1=$(cs)
if [ "$writes" -gt 0 ]; then
  echo "DOMU-PASS register-garbage $writes garbage writes and $reads reads over the BAR at $bar answered in $(( (t1 - t0) * 10 )) ms; the vCPU never blocked"
else
  echo "DOMU-FAIL register-garbage no write reached the BAR (bar '$bar')"
fi
echo "DOMU-DONE"
poweroff -f
