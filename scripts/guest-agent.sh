#!/usr/bin/env bash
# Build strata-guest, the guest agent of VM-isolated pods, as a static executable (it is /init
# of the microVM's initramfs, with no libc beside it) and print its path. The machine has no musl
# target: glibc's static libraries with `-C target-feature=+crt-static` on the final crate only
# (the agent uses nothing of glibc that needs NSS or dlopen). A target dir of its own
# (<CARGO_TARGET_DIR>/guest-static), so its flags never rebuild the workspace's artifacts.
set -euo pipefail
cd "$(dirname "$0")/.."
T="${CARGO_TARGET_DIR:-$PWD/target}/guest-static"
mkdir -p "$T"
exec 9>"$T/.build-lock"
flock 9
CARGO_TARGET_DIR="$T" cargo rustc --locked --release -q -p strata-guest --bin strata-guest -- -C target-feature=+crt-static
f="$T/release/strata-guest"
if readelf -d "$f" | grep -q NEEDED; then
  echo "guest-agent.sh: $f is dynamically linked" >&2
  exit 1
fi
echo "$f"
