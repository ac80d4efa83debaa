#!/usr/bin/env bash
# Builds everything a real-Xen run needs from Debian packages only, cached in .work/:
# the Xen 4.17 hypervisor, a Debian 6.1 dom0 kernel, and a busybox dom0 initramfs with
# xenstored, xen-init-dom0, xenconsoled, xl, Node.js and the bundled xvio dom0 program.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${XVIO_XEN_WORK:-$here/.work}
mkdir -p "$work/debs"
cd "$work"

need=()
for pkg in busybox-static cpio kmod qemu-system-x86 libxen-dev xenstore-utils gcc libc6-dev; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

kernel_pkg=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | awk '{print $1}' | sort -V | tail -n 1)
[ -n "$kernel_pkg" ] || { echo "rig: no linux-image-6.1.0-*-amd64 package in apt" >&2; exit 1; }
kernel_version=${kernel_pkg#linux-image-}
for pkg in xen-hypervisor-4.17-amd64 xen-utils-4.17 xen-utils-common libyajl2 qemu-system-xen "$kernel_pkg"; do
  if ! ls debs/"${pkg}"_*.deb >/dev/null 2>&1; then (cd debs && apt-get download -qq "$pkg"); fi
done
if [ ! -f .extracted-"$kernel_version" ]; then
  rm -rf x && mkdir x
  for deb in debs/*.deb; do dpkg-deb -x "$deb" x; done
  touch .extracted-"$kernel_version"
fi
[ -f xen.elf ] || gunzip -c x/boot/xen-4.17-amd64.gz > xen.elf
cp x/boot/vmlinuz-"$kernel_version" vmlinuz
echo "$kernel_version" > kernel-version

# The guest: the same stock kernel, a busybox initramfs with the stock virtio modules.
domu=$work/domu-rootfs
rm -rf "$domu"
mkdir -p "$domu"/{bin,proc,sys,dev,tmp,lib/modules}
cp /bin/busybox "$domu/bin/busybox"
for applet in $("$domu/bin/busybox" --list); do [ -e "$domu/bin/$applet" ] || ln -s busybox "$domu/bin/$applet"; done
for m in drivers/virtio/virtio_ring.ko drivers/virtio/virtio.ko drivers/virtio/virtio_pci_legacy_dev.ko drivers/virtio/virtio_pci_modern_dev.ko drivers/virtio/virtio_pci.ko drivers/char/hw_random/virtio-rng.ko \
  net/core/failover.ko drivers/net/net_failover.ko drivers/net/virtio_net.ko drivers/char/virtio_console.ko; do
  cp "x/lib/modules/$kernel_version/kernel/$m" "$domu/lib/modules/"
done
# Scenario 2: gntalloc and a static user-space virtio-mmio driver (grant DMA from the guest).
cp "x/lib/modules/$kernel_version/kernel/drivers/xen/xen-gntalloc.ko" "$domu/lib/modules/"
gcc -static -O2 -Wall -o "$domu/bin/guest-virtio-mmio" "$here/rig/guest-virtio-mmio.c"
cp "$here/rig/domu-init.sh" "$domu/init"
chmod +x "$domu/init"
(cd "$domu" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "$work/domu-initramfs.cpio.gz")

# The dom0 program: one ESM bundle; koffi stays a package beside it (it loads a native module).
node "$here/rig/bundle.mjs" "$work/dom0-xvio.mjs"
node "$here/rig/bundle.mjs" "$work/domu-xvio.mjs" domu/domu-xenbus.ts
node "$here/rig/bundle.mjs" "$work/dom0-pci-backend.mjs" dom0/dom0-pci-backend.ts

root=$work/rootfs
rm -rf "$root"
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,run,root,var/run,var/lib/xen,var/lib/xenstored,var/log/xen,opt/xvio/node_modules,lib64}
cp /bin/busybox "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"; done
modules=x/lib/modules/$kernel_version/kernel
mkdir -p "$root/lib/modules"
for m in drivers/xen/xen-evtchn.ko drivers/xen/xen-gntdev.ko drivers/xen/xen-gntalloc.ko drivers/xen/xen-privcmd.ko drivers/xen/xenfs/xenfs.ko drivers/net/tun.ko; do
  cp "$modules/$m" "$root/lib/modules/"
done
xbin=x/usr/lib/xen-4.17/bin
mkdir -p "$root/usr/lib/xen-4.17/bin" "$root/etc/xen"
for b in xl xenstored xenconsoled xen-init-dom0 libxl-save-helper; do cp "$xbin/$b" "$root/usr/lib/xen-4.17/bin/"; done
for b in xenstore-read xenstore-write xenstore-ls xenstore-list xenstore-rm; do cp "/usr/bin/$b" "$root/usr/lib/xen-4.17/bin/"; done
cp -a x/etc/xen/. "$root/etc/xen/" 2>/dev/null || true
cp /usr/bin/node "$root/usr/lib/xen-4.17/bin/node"
# Shared libraries of every binary (the debs' libs first), the loader, libgcc (xl aborts without it).
export LD_LIBRARY_PATH=$work/x/usr/lib/x86_64-linux-gnu
for b in "$root"/usr/lib/xen-4.17/bin/*; do ldd "$b" 2>/dev/null | awk '/=>/ {print $3}'; done | sort -u | while read -r lib; do
  [ -f "$lib" ] || continue
  dest=${lib#"$work"/x}   # libraries from the unpacked debs go where the debs would install them
  mkdir -p "$root$(dirname "$dest")"
  cp -L "$lib" "$root$dest"
done
for lib in libxenstore.so.4 libxenevtchn.so.1 libxengnttab.so.1 libxenforeignmemory.so.1 libxendevicemodel.so.1 libxentoolcore.so.1 libxencall.so.1 libxentoollog.so.1; do
  src=$( (ls "$work"/x/usr/lib/x86_64-linux-gnu/$lib* /usr/lib/x86_64-linux-gnu/$lib* 2>/dev/null || true) | head -n 1)
  [ -n "$src" ] && mkdir -p "$root/usr/lib/x86_64-linux-gnu" && cp -L "$src" "$root/usr/lib/x86_64-linux-gnu/$lib"
done
cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
mkdir -p "$root/lib/x86_64-linux-gnu" && cp -L /lib/x86_64-linux-gnu/libgcc_s.so.1 "$root/lib/x86_64-linux-gnu/"
for t in xl xenstored xenconsoled xen-init-dom0 node xenstore-read xenstore-write xenstore-ls xenstore-list xenstore-rm; do ln -sf /usr/lib/xen-4.17/bin/$t "$root/sbin/$t"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"
cp "$work/dom0-xvio.mjs" "$root/opt/xvio/dom0-xvio.mjs"
# The PVH guest's frontend: dom0 assembles that guest's initramfs from its own files.
cp "$work/domu-xvio.mjs" "$root/opt/xvio/domu-xvio.mjs"
# The stand-alone PCI backend process the backend-restart case kills and starts again.
cp "$work/dom0-pci-backend.mjs" "$root/opt/xvio/dom0-pci-backend.mjs"
cp "$here/rig/domu-node-init.sh" "$root/opt/xvio/domu-node-init.sh"
node "$here/rig/copy-package.mjs" koffi "$root/opt/xvio/node_modules"
# HVM guests: hvmloader, SeaBIOS, and Debian's qemu-system-xen as the device model.
mkdir -p "$root/usr/lib/xen-4.17/boot" "$root/usr/libexec" "$root/usr/share/seabios" "$root/usr/share/qemu"
cp x/usr/lib/xen-4.17/boot/hvmloader "$root/usr/lib/xen-4.17/boot/"
dpkg-deb -x debs/qemu-system-xen_*.deb qx
cp qx/usr/libexec/xen-qemu-system-i386 "$root/usr/libexec/"
for lib in $(ldd qx/usr/libexec/xen-qemu-system-i386 | awk '/=>/ {print $3}'); do
  dest=${lib#"$work"/x}
  mkdir -p "$root$(dirname "$dest")"
  cp -L "$lib" "$root$dest"
done
cp /usr/share/seabios/bios-256k.bin "$root/usr/share/seabios/"
cp -r /usr/share/qemu/keymaps "$root/usr/share/qemu/"
cp /usr/share/qemu/linuxboot_dma.bin /usr/share/qemu/linuxboot.bin /usr/share/qemu/kvmvapic.bin "$root/usr/share/qemu/" 2>/dev/null || true
cp vmlinuz "$root/root/vmlinuz"
cp "$work/domu-initramfs.cpio.gz" "$root/root/"
cp "$here/rig/dom0-init.sh" "$root/init"
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "$work/dom0-initramfs.cpio.gz")
echo "rig: built $(du -h "$work/dom0-initramfs.cpio.gz" | cut -f1) dom0 initramfs, kernel $kernel_version"
