#!/usr/bin/env bash
# Run every test of strata: installs the Debian packages the tests drive for real, then runs
# the whole workspace's tests. Needs root (containers, mounts, network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(runc busybox-static gcc libc6-dev util-linux docker-registry containernetworking-plugins etcd-server curl protobuf-compiler
  syslinux syslinux-common mtools dosfstools iproute2 openssl tzdata)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y "${missing[@]}" || { apt-get update && apt-get install -y "${missing[@]}"; }
fi

# VMs: QEMU 7.2 from Debian. Installing qemu-system-x86 removes the preinstalled (backported)
# qemu-utils, so qemu-img is installed from the same release in the same command.
if ! dpkg -s qemu-system-x86 >/dev/null 2>&1 || ! command -v qemu-img >/dev/null || ! command -v cpio >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  vm_pkgs=(qemu-system-x86 qemu-utils/bookworm cpio)
  apt-get install -y --allow-downgrades "${vm_pkgs[@]}" || { apt-get update && apt-get install -y --allow-downgrades "${vm_pkgs[@]}"; }
fi
# The guest kernel and initramfs the VM tests boot (cached under /var/tmp/strata-vm-assets).
scripts/vm-assets.sh >/dev/null
# VM-isolated pods boot that Debian kernel with its modules (an unpacked kernel tree).
scripts/guest-kernel.sh >/dev/null

# The Python Kubernetes client drives the API server in the end-to-end tests.
python3 -c 'import kubernetes' 2>/dev/null || python3 -m pip install -q kubernetes
# The reference Prometheus text parser reads /metrics in the end-to-end tests.
python3 -c 'import prometheus_client' 2>/dev/null || python3 -m pip install -q prometheus_client

# The RBAC bootstrap policy is generated from upstream's definitions (k8s.io/kubernetes via the Go
# module proxy): regenerating it must change nothing.
python3 scripts/gen-bootstrap-policy.py --check
# The patch and list metadata of the built-in types is generated from k8s.io/api the same way.
python3 scripts/gen-k8s-schema.py --check
# So is the protobuf message table of the built-in kinds (and the upstream names it is checked against).
python3 scripts/gen-k8s-messages.py --check
# And the agent's sysctl allowlist and namespaces, from kubelet's.
python3 scripts/gen-k8s-sysctls.py --check
# And the descriptions of the meta/v1 types (kubectl explain), from k8s.io/apimachinery.
python3 scripts/gen-k8s-docs.py --check
# And the Table columns of the built-in kinds (kubectl get), from kube-apiserver's printers.
python3 scripts/gen-k8s-printers.py --check
# And the priorities of the built-in group versions' APIServices, from kube-apiserver's.
python3 scripts/gen-k8s-apiservices.py --check

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/strata-target}"
cargo build --workspace --all-targets --locked
# The stock upstream components some tests run against strata (tests/scheduler.rs,
# tests/controllers.rs), built from the Go module proxy once, before the tests rather than
# while they run (cached under /var/tmp); without Go those tests say so and check nothing.
if command -v go >/dev/null; then
  scripts/kube-peer.sh kube-scheduler >/dev/null
  scripts/kube-peer.sh kube-controller-manager >/dev/null
fi
# The static guest agent (/init of VM-isolated pods' microVMs), built once for every test.
STRATA_GUEST_AGENT="$(scripts/guest-agent.sh)"
export STRATA_GUEST_AGENT
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-4}"
