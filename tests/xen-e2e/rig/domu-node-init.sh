#!/bin/sh
# /init of the PVH guest that runs the user-space virtio-xenbus frontend (Node) against
# xvio's XenbusBackend in dom0. Built inside dom0 from dom0's own files (dom0-xenbus.ts).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
echo "DOMU-BOOTED $(cut -d' ' -f1 /proc/uptime)"
for m in xen-evtchn xen-gntdev xen-gntalloc; do insmod /lib/modules/$m.ko || echo "DOMU-FAIL insmod $m"; done
cd /opt/xvio && node domu-xvio.mjs
echo "DOMU-EXIT rc=$? $(cut -d' ' -f1 /proc/uptime)"
poweroff -f
