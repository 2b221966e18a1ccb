#!/usr/bin/env bash
# Build the VM test assets once and cache them: a Debian guest kernel and a busybox initramfs
# whose /init prints STRATA-GUEST-UP, answers console lines with "GOT: <line>", prints a
# ticking clock on "ticker", and powers off on "poweroff" or on the ACPI power button.
# Usage: scripts/vm-assets.sh [DIR]   (default /var/tmp/strata-vm-assets); prints DIR.
# Needs: apt-get (package lists), dpkg, cpio, gzip, busybox-static.
set -euo pipefail
DIR="${1:-/var/tmp/strata-vm-assets}"
mkdir -p "$DIR"
exec 9>"$DIR/.lock"
flock 9
cd "$DIR"
if [[ ! -s vmlinuz || ! -s initrd.gz ]]; then
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  [[ -n "$pkg" ]] || { apt-get update -qq >/dev/null; pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}'); }
  rm -rf x && mkdir x
  if ! ls "$pkg"_*.deb >/dev/null 2>&1; then
    apt-get download "$pkg" >/dev/null 2>&1 || { apt-get update -qq >/dev/null; apt-get download "$pkg" >/dev/null; }
  fi
  dpkg -x "$pkg"_*.deb x
  cp x/boot/vmlinuz-* vmlinuz.tmp && mv vmlinuz.tmp vmlinuz
  rm -rf root && mkdir -p root/bin root/lib
  cp "$(command -v busybox)" root/bin/busybox
  # ACPI power button and input events are modules in Debian's kernel.
  cp x/lib/modules/*/kernel/drivers/input/evdev.ko x/lib/modules/*/kernel/drivers/acpi/button.ko root/lib/
  cat > root/init <<'INIT'
#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
insmod /lib/evdev.ko
insmod /lib/button.ko
for e in /dev/input/event*; do
  [ -e "$e" ] && (head -c 1 "$e" >/dev/null; echo STRATA-POWER-BUTTON; poweroff -f) &
done
stty -echo 2>/dev/null
echo STRATA-GUEST-UP
while read -r line; do
  case "$line" in
    poweroff) echo STRATA-POWEROFF; poweroff -f ;;
    ticker) (n=0; while :; do n=$((n+1)); echo "TICK $n $(cut -d' ' -f1 /proc/uptime)"; sleep 0.2; done) & ;;
    *) echo "GOT: $line" ;;
  esac
done
poweroff -f
INIT
  chmod +x root/init
  (cd root && find . | cpio -o -H newc 2>/dev/null | gzip -1 > ../initrd.tmp) && mv initrd.tmp initrd.gz
  rm -rf root x
fi
echo "$DIR"
