#!/usr/bin/env bash
# strata's main job on a fresh machine, offline: install what the build needs, build strata,
# start `strata server` (the control plane and this machine's node agent), import a busybox
# image built from the host's static busybox (no registry, no internet), run a pod from it with
# the admin kubeconfig, and show it Running with its IP and its output.
#
#   sudo ./scripts/quickstart.sh          # leaves the server running; prints how to use and stop it
#   sudo ./scripts/quickstart.sh --stop   # stops it and removes the demo's state
#
# Everything lives under $STRATA_DEMO_DIR (default /var/tmp/strata-demo); the API listens on
# 127.0.0.1:$STRATA_DEMO_PORT (default 16443).
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO="${STRATA_DEMO_DIR:-/var/tmp/strata-demo}"
PORT="${STRATA_DEMO_PORT:-16443}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/strata-target}"
PROFILE="${STRATA_DEMO_PROFILE:-release}"   # or debug (a faster build, a slower strata)
PROFILE_FLAG=(--release); [[ "$PROFILE" == debug ]] && PROFILE_FLAG=()
STRATA="$CARGO_TARGET_DIR/$PROFILE/strata"

api() {
  local pki="$DEMO/data/pki"
  curl -sS --fail-with-body --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "$@"
}
stop() {
  if [[ -f "$DEMO/server.pid" ]] && kill -0 "$(cat "$DEMO/server.pid")" 2>/dev/null; then
    # Delete every workload and pod first (the demo's and whatever else was run on it): the node
    # agent stops their containers and removes everything they had (network namespace, address,
    # mounts, cgroups); then the server stops (containers outlive the server by design, so this
    # order matters).
    local base="https://127.0.0.1:$PORT" ns r
    for ns in $(api "$base/api/v1/namespaces" 2>/dev/null | python3 -c 'import json,sys; print(" ".join(i["metadata"]["name"] for i in json.load(sys.stdin)["items"]))' 2>/dev/null); do
      for r in apis/batch/v1/namespaces/$ns/cronjobs apis/batch/v1/namespaces/$ns/jobs \
               apis/apps/v1/namespaces/$ns/deployments apis/apps/v1/namespaces/$ns/daemonsets \
               apis/apps/v1/namespaces/$ns/statefulsets apis/apps/v1/namespaces/$ns/replicasets \
               api/v1/namespaces/$ns/replicationcontrollers api/v1/namespaces/$ns/pods; do
        api -o /dev/null -X DELETE "$base/$r" 2>/dev/null || true
      done
    done
    # A pod leaves the API once the agent has stopped its containers (at most its grace period).
    for _ in $(seq 1 180); do
      [[ "$(api "$base/api/v1/pods" 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))' 2>/dev/null)" == 0 ]] && break
      sleep 0.5
    done
    sleep 3 # the pod's sandbox goes after its containers
    kill "$(cat "$DEMO/server.pid")" 2>/dev/null || true
    sleep 1
  fi
  rm -rf "$DEMO"
}
if [[ "${1:-}" == "--stop" ]]; then
  stop
  echo "stopped; $DEMO removed"
  exit 0
fi
[[ $(id -u) == 0 ]] || { echo "run as root (containers need namespaces, cgroups and mounts)" >&2; exit 1; }

# 1. What the build and the pod need (Debian/Ubuntu): protoc for the etcd client, runc, the CNI
#    plugins for the pod network, the host's static busybox for the image.
PACKAGES=(protobuf-compiler runc containernetworking-plugins busybox-static curl gcc libc6-dev)
missing=()
for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y "${missing[@]}" || { apt-get update && apt-get install -y "${missing[@]}"; }
fi

# 2. Build.
cargo build "${PROFILE_FLAG[@]}" --locked -p strata --bin strata -p strata-testkit --bin busybox-oci

# 3. Start the server (control plane + this machine's agent).
stop
mkdir -p "$DEMO"
"$STRATA" --root "$DEMO/root" server --data-dir "$DEMO/data" --listen "127.0.0.1:$PORT" >"$DEMO/server.log" 2>&1 &
echo $! >"$DEMO/server.pid"
KUBECONFIG="$DEMO/data/kubeconfig"
PKI="$DEMO/data/pki"
echo -n "waiting for the API server"
for _ in $(seq 1 120); do
  if [[ -f "$PKI/admin.key" ]] && api -o /dev/null "https://127.0.0.1:$PORT/readyz" 2>/dev/null; then break; fi
  echo -n .; sleep 0.5
done
echo
api -o /dev/null "https://127.0.0.1:$PORT/readyz" || { echo "the server did not come up; see $DEMO/server.log" >&2; exit 1; }
NODE=$(hostname | tr '[:upper:]' '[:lower:]')
echo -n "waiting for node $NODE to be Ready"
for _ in $(seq 1 120); do
  if api "https://127.0.0.1:$PORT/api/v1/nodes/$NODE" 2>/dev/null | python3 -c 'import json,sys; n=json.load(sys.stdin); sys.exit(0 if any(c["type"]=="Ready" and c["status"]=="True" for c in n.get("status",{}).get("conditions",[])) else 1)' 2>/dev/null; then break; fi
  echo -n .; sleep 0.5
done
echo

# 4. An image without a registry: an OCI layout of the host's busybox, imported into the node's store.
rm -rf "$DEMO/busybox-oci"
"$CARGO_TARGET_DIR/$PROFILE/busybox-oci" "$DEMO/busybox-oci" latest >/dev/null
"$STRATA" --root "$DEMO/root" image import "$DEMO/busybox-oci" --tag localhost/demo/busybox:latest

# 5. A pod: it serves HTTP on its pod IP and says hello in its log.
api -o /dev/null -X POST -H 'Content-Type: application/yaml' "https://127.0.0.1:$PORT/api/v1/namespaces/default/pods" --data-binary @- <<YAML
apiVersion: v1
kind: Pod
metadata: {name: hello}
spec:
  containers:
  - name: hello
    image: localhost/demo/busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "echo hello from a strata pod; mkdir -p /www; echo it works > /www/index.html; exec httpd -f -p 8080 -h /www"]
    ports: [{containerPort: 8080}]
YAML
echo -n "waiting for pod hello to run"
IP=""
for _ in $(seq 1 120); do
  IP=$(api "https://127.0.0.1:$PORT/api/v1/namespaces/default/pods/hello" | python3 -c 'import json,sys; p=json.load(sys.stdin)["status"]; print(p.get("podIP","") if p.get("phase")=="Running" else "")')
  [[ -n "$IP" ]] && break
  echo -n .; sleep 0.5
done
echo
[[ -n "$IP" ]] || { echo "the pod did not start; see $DEMO/server.log" >&2; api "https://127.0.0.1:$PORT/api/v1/namespaces/default/pods/hello"; exit 1; }
echo "pod hello is Running at $IP"
echo -n "its web server says: "; curl -sS --retry 10 --retry-connrefused --retry-delay 1 "http://$IP:8080/"
echo -n "its log says: "; api "https://127.0.0.1:$PORT/api/v1/namespaces/default/pods/hello/log"
cat <<EOF2

strata is running (log: $DEMO/server.log). Try:
  export KUBECONFIG=$KUBECONFIG
  kubectl get nodes -o wide ; kubectl get pods -o wide ; kubectl logs hello ; kubectl exec hello -- ps
Stop it and remove the demo's state: sudo $0 --stop
EOF2
