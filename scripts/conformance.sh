#!/usr/bin/env bash
# Upstream Kubernetes conformance against `strata server` (issue 12 part 5). NOT part of .ci/run:
# the first build of e2e.test takes long (see docs/conformance.md for the measured time and memory).
#
#   scripts/conformance.sh [build|images|run|all]      (default: all)
#
# build   e2e.test from k8s.io/kubernetes@$KUBE_VERSION through the Go module proxy: a small module
#         of our own (scripts/conformance/e2e_test.go, mirroring upstream's test/e2e/e2e_test.go)
#         requires k8s.io/kubernetes and replaces every staging module (k8s.io/api, apimachinery,
#         client-go, ...) by its published v0.X.Y of the same release, read from upstream's go.mod.
# images  agnhost and nonewprivs' nnp from their Go module (nautilus: agnhost with upstream's
#         files), busybox/nginx/httpd/pause equivalents from Debian packages,
#         pushed to a docker-registry started on a free 127.0.0.1 port; a KUBE_TEST_REPO_LIST file
#         names it.
# run     starts `strata server` (free ports, own data dir) with the registry configured, runs
#         e2e.test --ginkgo.focus=$FOCUS (default '\[Conformance\]') --ginkgo.skip=$SKIP with a
#         JUnit report, then writes $REPORT (default docs/conformance.md; a sig-apps run:
#         docs/conformance-sig-apps.md) with scripts/conformance-report.py. CONFORMANCE_NODES=2
#         joins a second node: `strata agent` with a bootstrap token, its own strata root (a
#         tmpfs too) and stream port, on this host's network (the specs that need two nodes, e.g.
#         the DaemonSet rollback, run instead of failing "needs a cluster with at least 2 nodes").
#
# Everything built or downloaded is cached under $CONFORMANCE_DIR (default /var/tmp/strata-conformance),
# outside the repository, so reruns only run the tests.
set -euo pipefail
KUBE_VERSION="${KUBE_VERSION:-v1.32.0}"
STAGING="v0.${KUBE_VERSION#v1.}"
. "$(dirname "${BASH_SOURCE[0]}")/kube-gomod.sh"
WORK="${CONFORMANCE_DIR:-/var/tmp/strata-conformance}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
E2E_DIR="$WORK/e2e-$KUBE_VERSION"
E2E_BIN="$E2E_DIR/e2e.test"
# Builds run at niceness 15 in all: a caller's `nice` counts (nested `nice -n 15`s gave the Go
# builds 19, starved on a shared machine: e2e.test took 64 min instead of about 19).
NICE="nice -n $(( $(nice) < 15 ? 15 - $(nice) : 0 ))"
log() { echo "conformance: $*" >&2; }

need_go() {
    if ! command -v go >/dev/null; then
        log "installing Go (golang-go)"
        apt-get install -y golang-go >&2
    fi
}

build_e2e() {
    if [ -x "$E2E_BIN" ]; then
        log "e2e.test $KUBE_VERSION cached at $E2E_BIN"
        return
    fi
    need_go
    mkdir -p "$E2E_DIR/src"
    cp "$REPO/scripts/conformance/e2e_test.go" "$E2E_DIR/src/e2e_test.go"
    cd "$E2E_DIR/src"
    write_kube_gomod conformance "$KUBE_VERSION"
    log "go mod tidy (k8s.io/kubernetes@$KUBE_VERSION, staging modules at $STAGING)"
    GOFLAGS=-mod=mod go mod tidy >&2
    log "building e2e.test under nice -n 15 (time and peak memory in $E2E_DIR/build-time.txt)"
    GOFLAGS=-mod=mod /usr/bin/time -v -o "$E2E_DIR/build-time.txt" $NICE go test -c -trimpath \
        -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION" -o "$E2E_BIN.tmp" . >&2
    mv "$E2E_BIN.tmp" "$E2E_BIN"
    grep -E 'Elapsed|Maximum resident' "$E2E_DIR/build-time.txt" >&2
    cd "$REPO"
}

build_agnhost() {
    local dir="$WORK/agnhost-$KUBE_VERSION"
    if [ -x "$dir/agnhost" ]; then
        return
    fi
    need_go
    mkdir -p "$dir/src"
    cd "$dir/src"
    write_kube_gomod agnhost "$KUBE_VERSION"
    # A blank import makes `go mod tidy` record agnhost's dependencies.
    printf '//go:build tools\n\npackage tools\n\nimport _ "k8s.io/kubernetes/test/images/agnhost"\n' > tools.go
    GOFLAGS=-mod=mod go mod tidy >&2
    log "building agnhost (static) under nice -n 15"
    CGO_ENABLED=0 GOFLAGS=-mod=mod $NICE go build -trimpath -ldflags "-s -w" -o "$dir/agnhost.tmp" k8s.io/kubernetes/test/images/agnhost >&2
    mv "$dir/agnhost.tmp" "$dir/agnhost"
    cd "$REPO"
}

# nnp, the program of upstream's nonewprivs image (test/images/nonewprivs: it prints its
# effective uid), from the same module as agnhost.
build_nnp() {
    local dir="$WORK/agnhost-$KUBE_VERSION"
    [ -x "$dir/nnp" ] && return
    build_agnhost
    cd "$dir/src"
    log "building nnp (static) under nice -n 15"
    CGO_ENABLED=0 GOFLAGS=-mod=mod $NICE go build -trimpath -ldflags "-s -w" -o "$dir/nnp.tmp" k8s.io/kubernetes/test/images/nonewprivs >&2
    mv "$dir/nnp.tmp" "$dir/nnp"
    cd "$REPO"
}

need_image_tools() {
    local missing=()
    command -v umoci >/dev/null || missing+=(umoci)
    command -v skopeo >/dev/null || missing+=(skopeo)
    command -v docker-registry >/dev/null || missing+=(docker-registry)
    [ -x /bin/busybox ] && /bin/busybox --list | grep -qx httpd || missing+=(busybox-static)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >&2
    fi
}

# A root filesystem with Debian's static busybox and every applet linked in /bin, a passwd and
# group as upstream's images carry (agnhost's user-defined-in-image 1000, group-defined-in-image
# 50000), /tmp, and `bash` as a wrapper of busybox sh (tests call `bash -c` in agnhost).
busybox_rootfs() {
    local root="$1" a
    mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root" "$root/uploads" "$root/usr/local/apache2/htdocs"
    chmod 1777 "$root/tmp"
    cp /bin/busybox "$root/bin/busybox"
    for a in $(/bin/busybox --list); do
        [ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"
    done
    printf '#!/bin/sh\nexec /bin/sh "$@"\n' > "$root/bin/bash"
    chmod 755 "$root/bin/bash"
    # `curl URL` (upstream's agnhost is Alpine with curl; the lifecycle hook specs' exec hooks
    # run `curl http://IP:8080/echo?msg=...`): busybox wget fetching the URL to stdout.
    printf '#!/bin/sh\n# curl [options] URL: busybox wget -O- of the URL\nurl=\nfor a in "$@"; do case "$a" in -*) ;; *) url="$a" ;; esac; done\nexec /bin/wget -q -O - "$url"\n' > "$root/bin/curl"
    chmod 755 "$root/bin/curl"
    mkdir -p "$root/usr/bin" "$root/usr/sbin" "$root/sbin"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nuser-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh\n' > "$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\nuser-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n' > "$root/etc/group"
    echo '<html><body><h1>It works!</h1></body></html>' > "$root/usr/local/apache2/htdocs/index.html"
}

# make_image NAME TAG ROOTFS ENTRYPOINT-JSON CMD-JSON: an OCI layout under $WORK/images pushed as
# $REGISTRY/NAME:TAG.
make_image() {
    local name="$1" tag="$2" root="$3" entry="$4" cmd="$5" layout
    layout="$WORK/images/layout-${name//\//-}"
    [ -d "$layout" ] || umoci init --layout "$layout" >&2
    umoci new --image "$layout:$tag" >&2
    # unpack + repack (not `umoci insert DIR /`, whose layer has an entry named "/", which
    # strata refuses as an absolute path).
    local bundle="$WORK/images/bundle"
    rm -rf "$bundle"
    umoci unpack --image "$layout:$tag" "$bundle" >&2
    cp -a "$root/." "$bundle/rootfs/"
    umoci repack --image "$layout:$tag" "$bundle" >&2
    rm -rf "$bundle"
    local args=(--image "$layout:$tag" --config.workingdir / --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
    local e c
    [ "$entry" = "[]" ] || while IFS= read -r e; do args+=(--config.entrypoint "$e"); done < <(python3 -c 'import json,sys; print("\n".join(json.loads(sys.argv[1])))' "$entry")
    [ "$cmd" = "[]" ] || while IFS= read -r c; do args+=(--config.cmd "$c"); done < <(python3 -c 'import json,sys; print("\n".join(json.loads(sys.argv[1])))' "$cmd")
    umoci config "${args[@]}" >&2
}

build_images() {
    need_image_tools
    build_agnhost
    build_base_images
    build_nonewprivs_image
    build_nautilus_image
}

build_base_images() {
    local marker="$WORK/images/built-$KUBE_VERSION"
    if [ -e "$marker" ]; then
        return
    fi
    log "building images"
    mkdir -p "$WORK/images"
    rm -rf "$WORK"/images/layout-* "$WORK/images/built-nonewprivs-$KUBE_VERSION" "$WORK/images/built-nautilus-$KUBE_VERSION"
    local base="$WORK/images/rootfs-busybox" kmod
    rm -rf "$base" && busybox_rootfs "$base"
    kmod="$(cd / && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"

    # busybox: as upstream's, a shell image without an entrypoint.
    make_image e2e-test-images/busybox 1.36.1-1 "$base" '[]' '["sh"]'
    # agnhost: upstream's binary (built above from its Go module) as /agnhost over busybox,
    # entrypoint and default command as upstream's Dockerfile.
    local ag="$WORK/images/rootfs-agnhost"
    rm -rf "$ag" && cp -a "$base" "$ag"
    cp "$WORK/agnhost-$KUBE_VERSION/agnhost" "$ag/agnhost"
    ln -sf agnhost "$ag/agnhost-2"
    cp "$kmod/test/images/agnhost/porter/localhost.crt" "$kmod/test/images/agnhost/porter/localhost.key" "$ag/"
    chmod 644 "$ag/localhost.crt" "$ag/localhost.key"
    make_image e2e-test-images/agnhost 2.53 "$ag" '["/agnhost"]' '["pause"]'
    # httpd and nginx: a web server on port 80 serving "It works!" (busybox httpd in the
    # foreground) in place of Apache and nginx; the tests only need something serving port 80.
    make_image e2e-test-images/httpd 2.4.38-4 "$base" '[]' '["httpd","-f","-p","80","-h","/usr/local/apache2/htdocs"]'
    make_image e2e-test-images/httpd 2.4.39-4 "$base" '[]' '["httpd","-f","-p","80","-h","/usr/local/apache2/htdocs"]'
    make_image e2e-test-images/nginx 1.14-4 "$base" '[]' '["httpd","-f","-p","80","-h","/usr/local/apache2/htdocs"]'
    make_image e2e-test-images/nginx 1.15-4 "$base" '[]' '["httpd","-f","-p","80","-h","/usr/local/apache2/htdocs"]'
    # pause: sleeps until a signal ends it, as /pause.
    local pz="$WORK/images/rootfs-pause"
    rm -rf "$pz" && cp -a "$base" "$pz"
    printf '#!/bin/sh\ntrap "exit 0" TERM INT\nwhile :; do sleep 3600 & wait $!; done\n' > "$pz/pause"
    chmod 755 "$pz/pause"
    make_image pause 3.10 "$pz" '["/pause"]' '[]'
    touch "$marker"
}

# nonewprivs: as upstream's (test/images/nonewprivs/Dockerfile), nnp at /usr/local/bin owned by
# root with the setuid bit, default command nnp; over busybox instead of Alpine. The
# AllowPrivilegeEscalation specs run it as uid 1000 and read "Effective uid: N" from its log.
# A marker of its own: it came after the first set of images.
build_nonewprivs_image() {
    local marker="$WORK/images/built-nonewprivs-$KUBE_VERSION" root="$WORK/images/rootfs-nonewprivs"
    [ -e "$marker" ] && return
    build_nnp
    mkdir -p "$WORK/images"
    rm -rf "$root" "$WORK/images/layout-e2e-test-images-nonewprivs" && busybox_rootfs "$root"
    mkdir -p "$root/usr/local/bin"
    install -o root -g root -m 4755 "$WORK/agnhost-$KUBE_VERSION/nnp" "$root/usr/local/bin/nnp"
    make_image e2e-test-images/nonewprivs 1.3 "$root" '[]' '["nnp"]'
    touch "$marker"
}

# nautilus: as upstream's (test/images/nautilus/Dockerfile), agnhost with the image's
# nautilus.jpg and data.json in its working directory, default command test-webserver; sig-cli's
# Update Demo specs read data.json through pods/proxy. A marker of its own, as nonewprivs'.
build_nautilus_image() {
    local marker="$WORK/images/built-nautilus-$KUBE_VERSION" root="$WORK/images/rootfs-nautilus" kmod
    [ -e "$marker" ] && return
    kmod="$(cd / && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
    rm -rf "$root" "$WORK/images/layout-e2e-test-images-nautilus" && cp -a "$WORK/images/rootfs-agnhost" "$root"
    install -m 644 "$kmod/test/images/nautilus/html/nautilus.jpg" "$kmod/test/images/nautilus/html/data.json" "$root/"
    make_image e2e-test-images/nautilus "$(cat "$kmod/test/images/nautilus/VERSION")" "$root" '["/agnhost"]' '["test-webserver"]'
    touch "$marker"
}

# The images of build_images, pushed into the registry (its storage is cached: each image and
# tag once, a marker each, named by the layout's index so that a rebuilt image is pushed again).
push_images() {
    local l name tag marker
    for l in "$WORK"/images/layout-*; do
        name="$(basename "$l")"; name="${name#layout-}"
        case "$name" in e2e-test-images-*) name="e2e-test-images/${name#e2e-test-images-}" ;; esac
        for tag in $(umoci ls --layout "$l"); do
            marker="$WORK/registry/pushed-$KUBE_VERSION-$(basename "$l")-$tag-$(sha256sum "$l/index.json" | cut -c1-12)"
            [ -e "$marker" ] && continue
            log "pushing $name:$tag"
            skopeo copy --quiet --dest-tls-verify=false "oci:$l:$tag" "docker://$REGISTRY/$name:$tag" >&2
            touch "$marker"
        done
    done
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_registry() {
    mkdir -p "$WORK/registry/storage"
    local port
    port="$(free_port)"
    cat > "$WORK/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $WORK/registry/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
    docker-registry serve "$WORK/registry/config.yml" > "$WORK/registry/registry.log" 2>&1 &
    REGISTRY_PID=$!
    REGISTRY="127.0.0.1:$port"
    local i
    for i in $(seq 1 100); do
        curl -sf "http://$REGISTRY/v2/" >/dev/null && return
        sleep 0.2
    done
    log "the registry did not start: $(tail -5 "$WORK/registry/registry.log")"
    exit 1
}

# The ginkgo CLI of the version e2e.test links, to run the specs in parallel processes.
build_ginkgo() {
    [ -x "$E2E_DIR/ginkgo" ] && return
    cd "$E2E_DIR/src"
    local v
    v="$(go list -m -f '{{.Version}}' github.com/onsi/ginkgo/v2)"
    log "building ginkgo $v"
    GOFLAGS=-mod=mod $NICE go build -trimpath -o "$E2E_DIR/ginkgo.tmp" "github.com/onsi/ginkgo/v2/ginkgo@$v" 2>/dev/null \
        || GOFLAGS=-mod=mod $NICE go build -trimpath -o "$E2E_DIR/ginkgo.tmp" github.com/onsi/ginkgo/v2/ginkgo >&2
    mv "$E2E_DIR/ginkgo.tmp" "$E2E_DIR/ginkgo"
    cd "$REPO"
}

strata_bin() {
    if [ -n "${STRATA_BIN:-}" ]; then
        echo "$STRATA_BIN"
        return
    fi
    command -v protoc >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y protobuf-compiler >&2
    (cd "$REPO" && $NICE cargo build --locked -p strata --bin strata >&2)
    # Where cargo put it: CARGO_TARGET_DIR, else the repository's .cargo/config.toml target-dir.
    (cd "$REPO" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"] + "/debug/strata")')
}

cleanup() {
    set +e
    if [ -n "${SERVER_PID:-}" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        # Pods outlive their agent (strata's design): delete them all so the node stops them
        # before the server goes (the e2e namespaces are normally gone already).
        kubectl delete pods --all -A --wait=false >/dev/null 2>&1
        for _ in $(seq 1 120); do
            [ -z "$(kubectl get pods -A -o name 2>/dev/null)" ] && break
            sleep 1
        done
    fi
    if [ -n "${SERVER_PID:-}" ]; then
        kill -TERM "$SERVER_PID" 2>/dev/null
        for _ in $(seq 1 300); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null
    fi
    if [ -n "${AGENT2_PID:-}" ]; then
        kill -TERM "$AGENT2_PID" 2>/dev/null
        for _ in $(seq 1 300); do kill -0 "$AGENT2_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$AGENT2_PID" 2>/dev/null
    fi
    [ -n "${APPROVER_PID:-}" ] && kill "$APPROVER_PID" 2>/dev/null
    [ -n "${REGISTRY_PID:-}" ] && kill "$REGISTRY_PID" 2>/dev/null
    for m in ${ROOT_MOUNT:-} ${ROOT2_MOUNT:-}; do
        grep -F " $m/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
        umount -l "$m" 2>/dev/null
    done
}

# Node `name` Ready and without taints (the not-ready taint goes shortly after Ready): the
# framework wants untainted nodes.
wait_node() {
    local name="$1" i
    # A joining node's object comes a moment after its agent starts (kubectl wait wants it).
    for i in $(seq 1 240); do
        kubectl get node "$name" >/dev/null 2>&1 && break
        sleep 0.5
    done
    kubectl wait --for=condition=Ready "node/$name" --timeout=120s >&2
    for i in $(seq 1 240); do
        [ -z "$(kubectl get node "$name" -o jsonpath='{.spec.taints}')" ] && break
        sleep 0.5
    done
}

# A second node (CONFORMANCE_NODES=2): `strata agent` joined with a bootstrap token, its own
# strata root on a tmpfs, any free stream port. Its data dir (pod volumes; what it measures for
# DiskPressure, as node 1's `root/agent`) is on that tmpfs too: on the shared disk, 91% full one
# day, it tainted the node and the e2e framework waited for untainted nodes.
join_second_node() {
    local bin="$1" run="$2" port="$3" token
    mkdir -p "$run/root2"
    mount -t tmpfs -o "size=${ROOT_TMPFS_SIZE:-6g},mode=0700" tmpfs "$run/root2"
    ROOT2_MOUNT="$run/root2"
    token="$("$bin" --root "$run/root2" token create --data-dir "$run/data")"
    log "joining node conformance-$port-2 (root $run/root2)"
    "$bin" --root "$run/root2" agent --server "https://127.0.0.1:$port" --token "$token" --name "conformance-$port-2" \
        --kubelet-port 0 --data-dir "$run/root2/agent" > "$run/agent2.log" 2>&1 &
    AGENT2_PID=$!
    wait_node "conformance-$port-2"
    # Its serving certificate (for logs, exec, port-forward and pods/proxy through the API
    # server) comes from a kubelet-serving CSR that, as in a kubeadm cluster, an admin approves:
    # every pending one of the node, for the whole run (the agent asks again when one is not
    # approved within 60 s; approving once raced with that under load and the node had no
    # serving certificate for the run).
    approve_serving_csrs "conformance-$port-2" &
    APPROVER_PID=$!
    local i
    for i in $(seq 1 240); do
        [ -n "$(kubectl get csr -o jsonpath="{range .items[?(@.spec.username==\"system:node:conformance-$port-2\")]}{.status.certificate}{end}")" ] && break
        sleep 0.5
    done
}

# Approve node $1's pending kubelet-serving CSRs, every 2 s, until killed.
approve_serving_csrs() {
    local node="$1" csr
    while :; do
        for csr in $(kubectl get csr -o jsonpath="{range .items[?(@.spec.username==\"system:node:$node\")]}{.metadata.name} {.spec.signerName} {.status.conditions[*].type}{'\n'}{end}" 2>/dev/null \
            | awk '$2 == "kubernetes.io/kubelet-serving" && NF == 2 {print $1}'); do
            kubectl certificate approve "$csr" >&2 || true
        done
        sleep 2
    done
}

run_e2e() {
    local bin run port i
    bin="$(strata_bin)"
    trap cleanup EXIT
    start_registry
    push_images
    # CONFORMANCE_RUN_DIR: a run directory of its own, so that two runs (of different focuses)
    # can share the cached e2e.test, images and registry storage.
    run="${CONFORMANCE_RUN_DIR:-$WORK/run}"
    # The previous run's server is gone; its data dir and strata root go (without crossing into
    # mounts a killed run may have left).
    if [ -d "$run" ]; then
        { grep -F " $run/" /proc/mounts || true; } | awk '{print $2}' | sort -r | xargs -r -n1 umount -l
        rm -rf --one-file-system "$run"
    fi
    mkdir -p "$run/report" "$run/root"
    # The node's strata root (images, containers, logs) on a tmpfs of its own: the node reports
    # DiskPressure (and taints itself) below kubelet's 10% nodefs threshold, and this machine's
    # disk is shared by several builds that can bring it there; the tests need a few hundred MiB.
    mount -t tmpfs -o "size=${ROOT_TMPFS_SIZE:-6g},mode=0700" tmpfs "$run/root"
    ROOT_MOUNT="$run/root"
    port="$(free_port)"
    log "starting strata server on 127.0.0.1:$port (data $run/data, root $run/root)"
    "$bin" --root "$run/root" server --data-dir "$run/data" --listen "127.0.0.1:$port" \
        --node-name "conformance-$port" --kubelet-port 0 > "$run/server.log" 2>&1 &
    SERVER_PID=$!
    for i in $(seq 1 600); do
        [ -e "$run/data/kubeconfig" ] && KUBECONFIG="$run/data/kubeconfig" kubectl get --raw /readyz >/dev/null 2>&1 && break
        kill -0 "$SERVER_PID" 2>/dev/null || { log "strata server exited: $(tail -20 "$run/server.log")"; exit 1; }
        sleep 0.5
    done
    export KUBECONFIG="$run/data/kubeconfig"
    wait_node "conformance-$port"
    [ "${CONFORMANCE_NODES:-1}" -ge 2 ] && join_second_node "$bin" "$run" "$port"
    # Where the e2e images come from: the local registry for every image the tests pull; the
    # "invalid" registry is a loopback port nothing listens on (never a name to resolve).
    cat > "$run/repo-list.yaml" <<EOF
gcAuthenticatedRegistry: $REGISTRY/authenticated-image-pulling
promoterE2eRegistry: $REGISTRY/e2e-test-images
buildImageRegistry: $REGISTRY/build-image
invalidRegistry: 127.0.0.1:1/invalid
gcEtcdRegistry: $REGISTRY
gcRegistry: $REGISTRY
sigStorageRegistry: $REGISTRY/sig-storage
privateRegistry: $REGISTRY/k8s-authenticated-test
dockerLibraryRegistry: $REGISTRY/library
cloudProviderGcpRegistry: $REGISTRY/cloud-provider-gcp
EOF
    export KUBE_TEST_REPO_LIST="$run/repo-list.yaml"
    local started=$SECONDS rc=0
    log "running e2e.test: focus '$FOCUS' skip '$SKIP' in $PROCS processes (log $run/e2e.log)"
    "$E2E_DIR/ginkgo" --procs="$PROCS" --timeout="$SUITE_TIMEOUT" --no-color --focus="$FOCUS" ${SKIP:+--skip="$SKIP"} \
        "$E2E_BIN" -- --kubeconfig="$KUBECONFIG" --provider=skeleton --report-dir="$run/report" \
        > "$run/e2e.log" 2>&1 || rc=$?
    log "e2e.test finished in $((SECONDS - started)) s (exit $rc); JUnit report $run/report/junit_01.xml"
    {
        echo "command: KUBE_VERSION=$KUBE_VERSION FOCUS='$FOCUS' SKIP='$SKIP' PROCS=$PROCS SUITE_TIMEOUT=$SUITE_TIMEOUT${CONFORMANCE_NODES:+ CONFORMANCE_NODES=$CONFORMANCE_NODES} scripts/conformance.sh"
        echo "focus: $FOCUS"
        echo "skip: $SKIP"
        echo "suite_timeout: $SUITE_TIMEOUT"
        echo "kube_version: $KUBE_VERSION"
        echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
        echo "duration_seconds: $((SECONDS - started))"
        echo "strata: $(cd "$REPO" && git rev-parse --short HEAD)"
        echo "server_version: $(kubectl version -o json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')"
        if [ -e "$E2E_DIR/build-time.txt" ]; then
            echo "e2e_build: $(grep -E 'Elapsed' "$E2E_DIR/build-time.txt" | sed 's/.*: //') wall, $(grep -E 'Maximum resident' "$E2E_DIR/build-time.txt" | sed 's/.*: //') KiB peak RSS"
        fi
    } > "$run/report/run-info.txt"
    if [ -e "$run/report/junit_01.xml" ]; then
        python3 "$REPO/scripts/conformance-report.py" "$run/report/junit_01.xml" "$run/report/run-info.txt" "$REPO/scripts/conformance-skips.txt" > "$REPO/$REPORT"
        log "wrote $REPORT"
    fi
    return "$rc"
}

FOCUS="${FOCUS:-\[Conformance\]}"
REPORT="${REPORT:-docs/conformance.md}"
PROCS="${PROCS:-4}"
# ginkgo's limit for the whole run: specs not reached by then are reported as not run.
SUITE_TIMEOUT="${SUITE_TIMEOUT:-24h}"
# What this machine cannot have (docs/conformance.md says why for each): a regex of spec names.
SKIP="${SKIP-$(awk -F'\t' '!/^#/ && NF {print $1}' "$REPO/scripts/conformance-skips.txt" | paste -sd'|')}"

stage="${1:-all}"
case "$stage" in
    build) build_e2e; build_ginkgo ;;
    images) build_images ;;
    run) run_e2e ;;
    all) build_e2e; build_ginkgo; build_images; run_e2e ;;
    *) echo "usage: $0 [build|images|run|all]" >&2; exit 2 ;;
esac
