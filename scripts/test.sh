#!/usr/bin/env bash
# Run every test of strata: installs the Debian packages the tests drive for real, then runs
# the whole workspace's tests. Needs root (containers, mounts, network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(runc busybox-static docker-registry containernetworking-plugins etcd-server curl protobuf-compiler)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y "${missing[@]}" || { apt-get update && apt-get install -y "${missing[@]}"; }
fi

# The Python Kubernetes client drives the API server in the end-to-end tests.
python3 -c 'import kubernetes' 2>/dev/null || python3 -m pip install -q kubernetes

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/strata-target}"
cargo build --workspace --all-targets --locked
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-4}"
