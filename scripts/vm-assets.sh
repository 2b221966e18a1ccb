#!/usr/bin/env bash
# Build the VM test assets once and cache them:
# - vmlinuz: a Debian guest kernel (linux-image-*-amd64);
# - initrd.gz: a busybox initramfs (with the virtio, balloon, vfat and ACPI button modules) whose /init
#   prints STRATA-GUEST-UP, answers console lines with "GOT: <line>", prints a ticking clock on
#   "ticker", powers off on "poweroff" or on the ACPI power button, and:
#     * on a disk labelled STRATABOOT: counts its boots in /bootcount (prints BOOTCOUNT n);
#     * on a disk labelled CIDATA (a cloud-init NoCloud seed): prints SEED-HOSTNAME <local-hostname>
#       and every user-data line as "SEED-USERDATA <line>";
#     * with a NIC: configures it (10.0.2.15/24 by default, or the address in the seed's
#       network-config) and serves /www over HTTP on port 80 (busybox httpd);
# - disk.qcow2: a bootable disk (FAT "superfloppy" labelled STRATABOOT with SYSLINUX, the
#   kernel and the initramfs), for firmware (SeaBIOS) boots of disk images;
# - initrd-qga.gz: initrd.gz with a second archive appended (the kernel unpacks both, the later
#   one's files win): Debian's QEMU guest agent (qemu-ga from the qemu-guest-agent package, with
#   the host's copies of its shared libraries), virtio_console, an /etc/os-release, and an /init
#   that also sets the seed's hostname and starts qemu-ga on the port org.qemu.guest_agent.0.
# Usage: scripts/vm-assets.sh [DIR]   (default /var/tmp/strata-vm-assets); prints DIR.
# Needs: apt-get (package lists), dpkg, cpio, gzip, busybox-static, syslinux, mtools,
# dosfstools, qemu-img, ldd; qemu-ga's libraries (glib, libnuma, liburing, libudev: QEMU's own).
set -euo pipefail
DIR="${1:-/var/tmp/strata-vm-assets}"
# Bump when the guest's /init or the disk layout changes: stale caches are rebuilt.
VERSION=3
# The guest's /init (both archives carry it; the later one's wins).
write_init() {
  cat > "$1" <<'INIT'
#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /mnt/boot /mnt/seed
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# Two passes: a module whose dependency comes later in the list loads on the second.
for pass in 1 2; do for m in $(cat /lib/modules.order); do insmod /lib/$m.ko 2>/dev/null; done; done
for e in /dev/input/event*; do
  [ -e "$e" ] && (head -c 1 "$e" >/dev/null; echo STRATA-POWER-BUTTON; sync; poweroff -f) &
done
stty -echo 2>/dev/null
addr=10.0.2.15/24; gw=10.0.2.2
boot=$(findfs LABEL=STRATABOOT 2>/dev/null) && mount -t vfat "$boot" /mnt/boot && {
  n=$(( $(cat /mnt/boot/bootcount 2>/dev/null || echo 0) + 1 ))
  echo "$n" > /mnt/boot/bootcount; sync
  echo "BOOTCOUNT $n"
}
seed=$(findfs LABEL=CIDATA 2>/dev/null || findfs LABEL=cidata 2>/dev/null) && mount -t vfat -o ro "$seed" /mnt/seed && {
  h=$(sed -n 's/^local-hostname: *//p' /mnt/seed/meta-data)
  echo "SEED-HOSTNAME $h"; [ -n "$h" ] && hostname "$h"
  while IFS= read -r l; do echo "SEED-USERDATA $l"; done < /mnt/seed/user-data
  a=$(sed -n 's/.*addresses: *\[ *\([0-9./]*\).*/\1/p' /mnt/seed/network-config 2>/dev/null | head -n1)
  g=$(sed -n 's/.*gateway4: *\([0-9.]*\).*/\1/p' /mnt/seed/network-config 2>/dev/null | head -n1)
  [ -n "$a" ] && addr=$a; [ -n "$g" ] && gw=$g
}
if [ -e /sys/class/net/eth0 ]; then
  ip link set lo up; ip link set eth0 up; ip addr add "$addr" dev eth0; ip route add default via "$gw"
  httpd -p 80 -h /www && echo "STRATA-NET-UP $addr"
fi
# The QEMU guest agent, when this initramfs carries one and the VM has its port.
if [ -x /sbin/qemu-ga ]; then
  for p in /sys/class/virtio-ports/*; do
    [ "$(cat "$p/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] || continue
    mkdir -p /run && /sbin/qemu-ga -m virtio-serial -p "/dev/${p##*/}" -t /run 2>/run/qga.log &
    echo STRATA-QGA-UP
  done
fi
echo STRATA-GUEST-UP
while read -r line; do
  case "$line" in
    poweroff) echo STRATA-POWEROFF; sync; poweroff -f ;;
    ticker) (n=0; while :; do n=$((n+1)); echo "TICK $n $(cut -d' ' -f1 /proc/uptime)"; sleep 0.2; done) & ;;
    *) echo "GOT: $line" ;;
  esac
done
poweroff -f
INIT
  chmod +x "$1"
}
mkdir -p "$DIR"
exec 9>"$DIR/.lock"
flock 9
cd "$DIR"
if [[ ! -s vmlinuz || ! -s initrd.gz || ! -s disk.qcow2 || "$(cat version 2>/dev/null)" != "$VERSION" ]]; then
  rm -f vmlinuz initrd.gz disk.qcow2 version
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  [[ -n "$pkg" ]] || { apt-get update -qq >/dev/null; pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}'); }
  rm -rf x && mkdir x
  if ! ls "$pkg"_*.deb >/dev/null 2>&1; then
    apt-get download "$pkg" >/dev/null 2>&1 || { apt-get update -qq >/dev/null; apt-get download "$pkg" >/dev/null; }
  fi
  dpkg -x "$(ls "$pkg"_*.deb | head -n1)" x
  cp x/boot/vmlinuz-* vmlinuz.tmp && mv vmlinuz.tmp vmlinuz
  rm -rf root && mkdir -p root/bin root/lib root/www
  cp "$(command -v busybox)" root/bin/busybox
  # Everything the guest needs is a module in Debian's kernel; /init loads them in this order.
  MODULES="evdev button virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
    virtio_mmio virtio_blk failover net_failover virtio_net virtio_balloon fat vfat nls_cp437 nls_ascii"
  for m in $MODULES; do
    f=$(find x/lib/modules -name "$m.ko" | head -n1)
    [[ -n "$f" ]] || { echo "module $m not found in $pkg" >&2; exit 1; }
    cp "$f" root/lib/
  done
  echo "$MODULES" | tr -s ' \n' '\n' | grep . > root/lib/modules.order
  echo "served by the strata test guest" > root/www/index.html
  write_init root/init
  (cd root && find . | cpio -o -H newc 2>/dev/null | gzip -1 > ../initrd.tmp) && mv initrd.tmp initrd.gz
  rm -rf root x
  # The bootable disk: SYSLINUX in the FAT boot sector loads the same kernel and initramfs.
  rm -f disk.raw && truncate -s 32M disk.raw
  mkfs.vfat -n STRATABOOT disk.raw >/dev/null
  syslinux --install disk.raw
  cat > syslinux.cfg <<'CFG'
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL vmlinuz
  INITRD initrd.gz
  APPEND console=ttyS0 panic=-1 tsc_early_khz=2000000 no_timer_check
CFG
  mcopy -i disk.raw vmlinuz initrd.gz syslinux.cfg ::
  rm -f syslinux.cfg
  qemu-img convert -q -f raw -O qcow2 disk.raw disk.tmp && mv disk.tmp disk.qcow2
  rm -f disk.raw
  echo "$VERSION" > version
fi
# Bump when initrd-qga.gz's content changes.
QGA_VERSION=1
if [[ ! -s initrd-qga.gz || initrd-qga.gz -ot initrd.gz || "$(cat qga-version 2>/dev/null)" != "$QGA_VERSION" ]]; then
  rm -f initrd-qga.gz qga-version
  rm -rf x qga root && mkdir -p x qga root/sbin root/etc root/lib
  kpkg=$(ls linux-image-*.deb | head -n1)
  dpkg -x "$kpkg" x
  f=$(find x/lib/modules -name virtio_console.ko | head -n1)
  [[ -n "$f" ]] || { echo "module virtio_console not found in $kpkg" >&2; exit 1; }
  cp "$f" root/lib/
  # The base archive's module list plus virtio_console (after virtio, its dependency).
  zcat initrd.gz | (cd qga && cpio -id lib/modules.order 2>/dev/null)
  { cat qga/lib/modules.order; echo virtio_console; } > root/lib/modules.order
  (cd qga && { ls qemu-guest-agent_*.deb >/dev/null 2>&1 || apt-get download qemu-guest-agent >/dev/null 2>&1 || { apt-get update -qq >/dev/null; apt-get download qemu-guest-agent >/dev/null; }; })
  dpkg -x "$(ls qga/qemu-guest-agent_*.deb | head -n1)" qga/pkg
  cp qga/pkg/usr/sbin/qemu-ga root/sbin/qemu-ga
  if ldd root/sbin/qemu-ga | grep -q 'not found'; then
    echo "qemu-ga needs libraries this host lacks (install qemu-system-x86, which depends on them):" >&2
    ldd root/sbin/qemu-ga | grep 'not found' >&2
    exit 1
  fi
  for lib in $(ldd root/sbin/qemu-ga | awk '/=> \//{print $3} /^\t\/lib/{print $1}'); do
    mkdir -p "root$(dirname "$lib")" && cp -L "$lib" "root$lib"
  done
  printf 'NAME="strata test guest"\nID=strata-test\nVERSION_ID=%s\nVERSION="%s (busybox)"\nPRETTY_NAME="strata test guest %s"\n' "$VERSION" "$VERSION" "$VERSION" > root/etc/os-release
  write_init root/init
  (cd root && find . | cpio -o -H newc 2>/dev/null | gzip -1 > ../qga.cpio.gz)
  cat initrd.gz qga.cpio.gz > initrd-qga.tmp && mv initrd-qga.tmp initrd-qga.gz
  rm -rf x qga root qga.cpio.gz
  echo "$QGA_VERSION" > qga-version
fi
echo "$DIR"
