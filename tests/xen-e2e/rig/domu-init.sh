#!/bin/sh
# /init of the stock-kernel guest: load the stock virtio modules, read the xvio rng device
# through /dev/hwrng, print DOMU-PASS/DOMU-FAIL lines on the serial console, power off.
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
echo "DOMU-BOOTED $(cut -d' ' -f1 /proc/uptime)"
if grep -q 'xvio\.mode=mmio-grant' /proc/cmdline; then
  # Scenario 2 (src/dom0/dom0-mmio.ts): grant DMA driven from user space over virtio-mmio
  # windows at xvio.mmio, one round per memory strategy named in xvio.strategies.
  insmod /lib/modules/xen-gntalloc.ko || echo "DOMU-FAIL insmod xen-gntalloc"
  base=$(sed -n 's/.*xvio\.mmio=\(0x[0-9a-f]*\).*/\1/p' /proc/cmdline)
  strategies=$(sed -n 's/.*xvio\.strategies=\([a-z+-]*\).*/\1/p' /proc/cmdline | tr '+' ' ')
  i=0; while [ ! -e /dev/xen/gntalloc ] && [ $i -lt 25 ]; do sleep 0.2; i=$((i+1)); done
  # shellcheck disable=SC2086 # one argument per strategy
  /bin/guest-virtio-mmio "$base" 0 $strategies || echo "DOMU-NOTE guest-virtio-mmio rc=$?"
  echo "DOMU-DONE"
  poweroff -f
fi
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio-rng; do
  insmod /lib/modules/$m.ko || echo "DOMU-FAIL insmod $m"
done
mode=$(sed -n 's/.*xvio\.mode=\([a-z]*\).*/\1/p' /proc/cmdline)
if [ "$mode" = functions ]; then
  # xvio's PCI functions (tests/xen-e2e/src/dom0/dom0-pci-netcon.ts): `xvio.functions=` names
  # the parts to run, `netcon` (virtio-net and virtio-console) and `restart` (virtio-rng read
  # in rounds while dom0 kills and restarts its backend).
  functions=$(sed -n 's/.*xvio\.functions=\([a-z+]*\).*/\1/p' /proc/cmdline)
  has() { case "+$functions+" in *"+$1+"*) return 0;; esac; return 1; }
  cs() { tr -d . < /proc/uptime | cut -d' ' -f1; }
  for m in failover net_failover virtio_net virtio_console; do
    insmod /lib/modules/$m.ko || echo "DOMU-FAIL insmod $m"
  done
fi
if [ "$mode" = functions ] && has netcon; then
  # The console's named port: the guest writes a line, reads dom0's answer, echoes it back.
  i=0; port=
  while [ -z "$port" ] && [ $i -lt 100 ]; do
    for p in /sys/class/virtio-ports/*; do
      [ "$(cat "$p/name" 2>/dev/null)" = org.xvio.test ] && port=/dev/${p##*/}
    done
    [ -n "$port" ] && [ -e "$port" ] || { port=; sleep 0.2; i=$((i+1)); }
  done
  if [ -n "$port" ]; then
    exec 3<>"$port"
    echo "xvio-hello from $(cut -d' ' -f1 /proc/uptime)" >&3
    if read -t 120 line <&3; then
      echo "xvio-ack $line" >&3
      echo "DOMU-PASS console-rx $port read '$line'"
    else
      echo "DOMU-FAIL console-rx nothing read from $port"
    fi
    exec 3>&-
  else
    echo "DOMU-FAIL console no port named org.xvio.test: $(ls /sys/class/virtio-ports 2>&1 | tr '\n' ' ')"
  fi
  i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i+1)); done
  ip link set lo up
  ip addr add 10.99.0.2/24 dev eth0 && ip link set eth0 up || echo "DOMU-FAIL eth0 $(ls /sys/class/net | tr '\n' ' ')"
  if ping -c 5 -W 10 10.99.0.1 > /tmp/ping 2>&1; then
    rtt=$(sed -n 's/.*min\/avg\/max = \([0-9.]*\)\/\([0-9.]*\)\/\([0-9.]*\).*/\2/p' /tmp/ping)
    echo "DOMU-PASS ping 5/5 replies from dom0, avg $rtt ms"
    echo "DOMU-MEASURE pci-net-ping-rtt $rtt ms"
  else
    echo "DOMU-FAIL ping $(tail -n 2 /tmp/ping | tr '\n' ' ')"
  fi
  dd if=/dev/urandom of=/tmp/data bs=65536 count=32 2>/dev/null
  echo "DOMU-NET-TX-SHA256 $(sha256sum /tmp/data | cut -d' ' -f1)"
  t0=$(cs); nc 10.99.0.1 5001 < /tmp/data || echo "DOMU-FAIL tcp to dom0 rc=$?"; t1=$(cs)
  echo "DOMU-NOTE tcp to dom0 in $(( (t1 - t0) * 10 )) ms"
  t0=$(cs); nc 10.99.0.1 5002 < /dev/null > /tmp/recv || echo "DOMU-FAIL tcp from dom0 rc=$?"; t1=$(cs)
  echo "DOMU-NET-RX-SHA256 $(sha256sum /tmp/recv | cut -d' ' -f1)"
  echo "DOMU-NOTE tcp from dom0 $(wc -c < /tmp/recv) bytes in $(( (t1 - t0) * 10 )) ms"
fi
if [ "$mode" = functions ] && has restart; then
  # Reads /dev/hwrng in rounds; dom0 kills the backend after round 4 and starts a new one.
  i=0; while [ ! -e /dev/hwrng ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i+1)); done
  echo "DOMU-RNG-CURRENT $(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)"
  round=0; total=0; : > /tmp/all
  while [ $round -lt 24 ]; do
    dd if=/dev/hwrng of=/tmp/chunk bs=2048 count=1 2>/dev/null
    n=$(wc -c < /tmp/chunk); cat /tmp/chunk >> /tmp/all
    round=$((round+1)); total=$((total+n))
    echo "DOMU-RNG-ROUND $round $total $(cut -d' ' -f1 /proc/uptime)"
  done
  distinct=$(od -An -v -tu1 /tmp/all | tr -s ' ' '\n' | sort -u | wc -l)
  if [ "$total" -gt 0 ] && [ "$distinct" -gt 200 ]; then
    echo "DOMU-PASS rng-restart $round rounds, $total bytes, $distinct distinct byte values"
  else
    echo "DOMU-FAIL rng-restart $round rounds, total=$total distinct=$distinct"
  fi
fi
if [ "$mode" = functions ]; then
  echo "DOMU-DONE"
  poweroff -f
fi
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
# 16 KiB is 256 requests of 64 bytes (Linux's virtio-rng buffer): one notify ioreq and one
# MSI each. A read under 10 ms would be below uptime's resolution: report it as 10 ms.
echo "DOMU-MEASURE pci-rng-throughput $(awk -v s="$start" -v e="$end" 'BEGIN { d = e - s; if (d < 0.01) d = 0.01; printf "%.4f", 16384 / d / 1e6 }') MB/s"
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
