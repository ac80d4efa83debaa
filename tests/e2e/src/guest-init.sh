#!/bin/sh
# /init of the xvio end-to-end guest (busybox). Runs the case named by xvio.case= on the
# kernel command line and reports on the serial console:
#   XVIO-BOOT            the guest reached /init
#   XVIO-RESULT k=v ...  measurements
#   XVIO-MARK <name>     a point the host may act on (e.g. restart the backend)
#   XVIO-PASS <case>     / XVIO-FAIL <case> <why>
#   XVIO-WAIT            with xvio.ask=1: waits for "reboot" or "poweroff" on the console
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /tmp && mount -t tmpfs tmp /tmp

up() { cut -d' ' -f1 /proc/uptime; }
arg() { sed -n "s/.*xvio\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
result() { echo "XVIO-RESULT $*"; }

echo "XVIO-BOOT uptime=$(up)"
for module in virtio_pci virtio-rng virtio_net; do modprobe "$module" 2>/dev/null; done

# The driver probes asynchronously: give /dev/hwrng up to 10 s to appear.
wait_hwrng() {
  i=0
  while [ ! -e /dev/hwrng ] || [ -z "$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null | grep virtio)" ]; do
    i=$((i + 1))
    [ $i -gt 100 ] && return 1
    sleep 0.1
  done
  return 0
}

# Reads xvio.bytes from /dev/hwrng, then checks the count and that the data varies.
rng_case() {
  want=$(arg bytes)
  want=${want:-262144}
  if ! wait_hwrng; then
    echo "XVIO-FAIL rng no virtio hwrng (rng_current=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null))"
    return
  fi
  result "rng_current=$(cat /sys/class/misc/hw_random/rng_current)"
  [ "$(arg mark)" = 1 ] && echo "XVIO-MARK transfer-start"
  t0=$(up)
  timeout 120 dd if=/dev/hwrng of=/tmp/rng bs=4096 count=$((want / 4096)) iflag=fullblock 2>/dev/null
  t1=$(up)
  got=$(wc -c < /tmp/rng)
  # 4 KiB of random bytes hold nearly all 256 values; a stuck device gives one or a few.
  distinct=$(head -c 4096 /tmp/rng | od -An -v -tx1 | tr -s ' ' '\n' | grep . | sort -u | wc -l)
  first=$(head -c 2048 /tmp/rng | md5sum | cut -c1-32)
  second=$(tail -c 2048 /tmp/rng | md5sum | cut -c1-32)
  result "bytes=$got t0=$t0 t1=$t1 distinct=$distinct"
  if [ "$got" = "$want" ] && [ "$distinct" -gt 128 ] && [ "$first" != "$second" ]; then
    echo "XVIO-PASS rng"
  else
    echo "XVIO-FAIL rng bytes=$got want=$want distinct=$distinct"
  fi
}

# virtio-net (`-netdev vhost-user` through xvio, or QEMU's own): brings eth0 up as xvio.ip
# (CIDR), pings xvio.peer xvio.pings times (RTT from busybox's summary), then sends
# xvio.bytes of /dev/urandom to xvio.peer:xvio.port with nc. The peer answers "<md5> <bytes>"
# after the data: the guest checks it against its own md5, so the sum is verified on the
# other end. With xvio.dport it also downloads from that port and prints the md5 it got.
net_case() {
  i=0
  while [ ! -e /sys/class/net/eth0 ]; do
    i=$((i + 1))
    [ $i -gt 100 ] && { echo "XVIO-FAIL net no eth0"; return; }
    sleep 0.1
  done
  ip link set lo up
  ip link set eth0 up
  ip addr add "$(arg ip)" dev eth0
  result "features=$(cat /sys/class/net/eth0/device/features 2>/dev/null)"
  pings=$(arg pings)
  # The first echo also resolves ARP: it is sent apart and not counted in the RTT.
  if ! ping -c 1 -W 5 "$(arg peer)" > /tmp/ping 2>&1; then
    echo "XVIO-FAIL net ping $(tail -1 /tmp/ping)"
    return
  fi
  if ! ping -c "${pings:-3}" -W 2 "$(arg peer)" > /tmp/ping 2>&1; then
    echo "XVIO-FAIL net ping $(tail -1 /tmp/ping)"
    return
  fi
  # busybox: "round-trip min/avg/max = 0.712/1.031/1.542 ms"
  result "rtt_ms=$(sed -n 's|.*= [0-9.]*/\([0-9.]*\)/.*|\1|p' /tmp/ping) rtt_min_avg_max=$(sed -n 's|.*= \([0-9./]*\) ms|\1|p' /tmp/ping)"
  bytes=$(arg bytes)
  head -c "${bytes:-1048576}" /dev/urandom > /tmp/payload
  md5=$(md5sum < /tmp/payload | cut -c1-32)
  size=$(wc -c < /tmp/payload)
  result "md5=$md5"
  [ "$(arg mark)" = 1 ] && echo "XVIO-MARK transfer-start"
  t0=$(up)
  reply=$(timeout 120 nc "$(arg peer)" "$(arg port)" < /tmp/payload)
  t1=$(up)
  result "bytes=$size t0=$t0 t1=$t1"
  if [ "$reply" != "$md5 $size" ]; then
    echo "XVIO-FAIL net peer got '$reply', sent '$md5 $size'"
    return
  fi
  dport=$(arg dport)
  if [ -n "$dport" ]; then
    t0=$(up)
    timeout 120 nc "$(arg peer)" "$dport" < /dev/null > /tmp/download
    t1=$(up)
    result "down_md5=$(md5sum < /tmp/download | cut -c1-32) down_bytes=$(wc -c < /tmp/download) down_t0=$t0 down_t1=$t1"
  fi
  echo "XVIO-PASS net"
}

case "$(arg case)" in
  rng) rng_case ;;
  net) net_case ;;
  *) echo "XVIO-FAIL unknown case '$(arg case)'" ;;
esac

if [ "$(arg ask)" = 1 ]; then
  echo "XVIO-WAIT"
  read -r command < /dev/console
  if [ "$command" = reboot ]; then
    echo "XVIO-REBOOT"
    reboot -f
  fi
fi
echo "XVIO-DONE uptime=$(up)"
poweroff -f
