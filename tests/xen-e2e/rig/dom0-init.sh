#!/bin/sh
# dom0's /init: mount, load the Xen device modules, start xenstored and friends, run the
# xvio dom0 program (which prints XVIO-PASS/XVIO-FAIL lines), then power off.
export PATH=/sbin:/bin:/usr/lib/xen-4.17/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /dev/pts; mount -t devpts devpts /dev/pts  # xenconsoled gives each guest console a pty
mount -t tmpfs tmpfs /run; mkdir -p /run/xen /run/xenstored /var/run/xen /var/lib/xenstored /var/log/xen /tmp
for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs; do insmod /lib/modules/$m.ko || echo "XVIO-FAIL insmod $m"; done
mount -t xenfs xenfs /proc/xen || echo "XVIO-FAIL mount xenfs"
xenstored --pid-file /run/xenstored.pid
i=0; while [ ! -S /run/xenstored/socket ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i+1)); done
xen-init-dom0 >/dev/null 2>&1 || echo "XVIO-FAIL xen-init-dom0"
mkdir -p /var/log/xen/console
xenconsoled --pid-file=/run/xenconsoled.pid --log=guest  # guest consoles -> /var/log/xen/console/guest-NAME.log
echo "XVIO-DOM0-READY $(cut -d' ' -f1 /proc/uptime)"
cd /opt/xvio && node dom0-xvio.mjs
rc=$?
if [ $rc -ne 0 ]; then
  for f in /var/log/xen/*.log; do [ -f "$f" ] && { echo "== $f"; tail -n 30 "$f"; }; done
fi
echo "XVIO-DOM0-DONE rc=$rc"
echo o > /proc/sysrq-trigger 2>/dev/null
poweroff -f
