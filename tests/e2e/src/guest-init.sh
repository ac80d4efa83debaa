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
  # The hwrng core's kthread (khwrngd) also reads the device when the rng's quality is
  # non-zero; it shares the device with dd, so the quality is reported with the result.
  result "rng_quality=$(cat /sys/class/misc/hw_random/rng_quality 2>/dev/null || echo none) default_quality=$(cat /sys/module/rng_core/parameters/default_quality 2>/dev/null || echo none) hwrng_threads=$(grep -l 'hwrng' /proc/[0-9]*/comm 2>/dev/null | wc -l)"
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

# virtio-gpu: loads virtio_gpu, waits for its fbdev emulation (/dev/fb0), hides the fbcon
# cursor and writes a known pattern to the framebuffer: 8 columns x 4 rows of blocks, the
# block in row r, column c of colour R=32c+16, G=64r+32, B=0xc0 (XRGB8888, bytes B G R X;
# the last column/row takes the remainder). The host compares the device's snapshot. With
# xvio.askblue=1 the host chooses B on the console (XVIO-ASK blue), so each boot's picture
# differs.
gpu_pixel() { printf "\\$(printf %03o "$3")\\$(printf %03o "$2")\\$(printf %03o "$1")\\000"; }
# gpu_repeat FILE BYTES: FILE repeated (by doubling) and cut to BYTES.
gpu_repeat() {
  cp "$1" /tmp/rep
  while [ "$(wc -c < /tmp/rep)" -lt "$2" ]; do cat /tmp/rep /tmp/rep > /tmp/rep2; mv /tmp/rep2 /tmp/rep; done
  head -c "$2" /tmp/rep
}
gpu_case() {
  modprobe virtio_gpu 2>/dev/null
  i=0
  while [ ! -e /dev/fb0 ]; do
    i=$((i + 1))
    [ $i -gt 200 ] && { echo "XVIO-FAIL gpu no /dev/fb0 ($(ls /sys/class/drm 2>/dev/null | tr '\n' ' '))"; return; }
    sleep 0.1
  done
  fb=/sys/class/graphics/fb0
  w=$(cut -d, -f1 $fb/virtual_size)
  h=$(cut -d, -f2 $fb/virtual_size)
  stride=$(cat $fb/stride)
  bpp=$(cat $fb/bits_per_pixel)
  result "fb=$(tr ' ' _ < $fb/name) width=$w height=$h stride=$stride bpp=$bpp"
  [ "$bpp" = 32 ] || { echo "XVIO-FAIL gpu bpp=$bpp"; return; }
  blue=192
  if [ "$(arg askblue)" = 1 ]; then
    echo "XVIO-ASK blue"
    read -r blue < /dev/console
  fi
  result "blue=$blue"
  # The fbcon cursor would blink over the pattern.
  printf '\033[?25l' > /dev/tty1 2>/dev/null
  echo 0 > /sys/class/graphics/fbcon/cursor_blink 2>/dev/null
  bw=$((w / 8)); bh=$((h / 4))
  : > /tmp/pattern
  r=0
  while [ $r -lt 4 ]; do
    : > /tmp/row
    c=0
    while [ $c -lt 8 ]; do
      n=$bw; [ $c = 7 ] && n=$((w - 7 * bw))
      gpu_pixel $((32 * c + 16)) $((64 * r + 32)) "$blue" > /tmp/px
      gpu_repeat /tmp/px $((n * 4)) >> /tmp/row
      c=$((c + 1))
    done
    [ "$stride" -gt $((w * 4)) ] && head -c $((stride - w * 4)) /dev/zero >> /tmp/row
    n=$bh; [ $r = 3 ] && n=$((h - 3 * bh))
    gpu_repeat /tmp/row $((n * stride)) >> /tmp/pattern
    r=$((r + 1))
  done
  t0=$(up)
  # One write of the whole frame: Linux 6.1's fbdev emulation computes an empty damage
  # rectangle for a write of exactly one line (it ends on a line boundary, so x2 = 0), and
  # the device would never be told.
  if ! dd if=/tmp/pattern of=/dev/fb0 bs="$(wc -c < /tmp/pattern)" count=1 2>/tmp/dd; then
    echo "XVIO-FAIL gpu dd $(tail -1 /tmp/dd)"
    return
  fi
  # What the framebuffer holds now: the first pixel of the first and of the last block.
  result "bytes=$(wc -c < /tmp/pattern) t0=$t0 t1=$(up) first=$(head -c 4 /dev/fb0 | od -An -tx1 | tr -d ' \n')"
  echo "XVIO-PASS gpu"
}

case "$(arg case)" in
  rng) rng_case ;;
  net) net_case ;;
  gpu) gpu_case ;;
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
