#!/usr/bin/env bash
# Unpack the Debian guest kernel package that scripts/vm-assets.sh caches into a kernel tree
# (boot/vmlinuz-<release>, lib/modules/<release>/) for VM-isolated pods
# (`strata server|agent --vm-kernel DIR`), and print DIR (<assets>/guest-kernel).
set -euo pipefail
ASSETS=$("$(dirname "$0")/vm-assets.sh" "${1:-/var/tmp/strata-vm-assets}")
cd "$ASSETS"
exec 9>"$ASSETS/.lock"
flock 9
if [[ ! -d guest-kernel/lib/modules ]]; then
  deb=$(ls linux-image-*.deb | head -n1)
  rm -rf guest-kernel.tmp && mkdir guest-kernel.tmp
  dpkg -x "$deb" guest-kernel.tmp
  rm -rf guest-kernel.tmp/usr guest-kernel.tmp/etc
  mv guest-kernel.tmp guest-kernel
fi
echo "$ASSETS/guest-kernel"
