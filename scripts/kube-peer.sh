#!/usr/bin/env bash
# Build a stock upstream component (k8s.io/kubernetes cmd/COMPONENT at a pinned version:
# kube-scheduler, the scheduler benchmark's peer and compatibility run; kube-controller-manager,
# the controllers' compatibility run) from the Go module proxy. Prints the binary's path; builds
# once per component and version (cached under $STRATA_PEER_DIR, default /var/tmp).
#
# Usage: scripts/kube-peer.sh COMPONENT
#
# k8s.io/kubernetes is not meant to be used as a module: its go.mod replaces each staging module
# (k8s.io/api, apimachinery, client-go, ...) with ./staging/src/..., so a module requiring it
# must replace each of them with the published v0.X.Y of the same release (read from the
# module's own go.mod here, not typed by hand).
set -euo pipefail
COMPONENT="${1:?usage: kube-peer.sh kube-scheduler|kube-controller-manager}"
case "$COMPONENT" in
    kube-scheduler) COMMAND='app.NewSchedulerCommand()' ;;
    kube-controller-manager) COMMAND='app.NewControllerManagerCommand()' ;;
    *) echo "kube-peer.sh: no such component: $COMPONENT" >&2; exit 2 ;;
esac
VERSION="${KUBE_VERSION:-v1.32.0}"
STAGING="v0.${VERSION#v1.}"
DIR="${STRATA_PEER_DIR:-/var/tmp}/strata-$COMPONENT-$VERSION"
BIN="$DIR/$COMPONENT"
if [ -x "$BIN" ]; then
    echo "$BIN"
    exit 0
fi
mkdir -p "$DIR/src"
cd "$DIR/src"
KMOD="$(go mod download -json "k8s.io/kubernetes@$VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
{
    echo "module strata.dev/$COMPONENT-peer"
    echo
    echo "go 1.23"
    echo
    echo "require k8s.io/kubernetes $VERSION"
    echo
    echo "replace ("
    grep -E '^\s+k8s\.io/[a-z0-9-]+ => \./staging/src/' "$KMOD/go.mod" | awk -v v="$STAGING" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
} > go.mod
cat > main.go <<GO
// The stock $COMPONENT, built as a module (see scripts/kube-peer.sh).
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/$COMPONENT/app"
)

func main() {
	os.Exit(cli.Run($COMMAND))
}
GO
GOFLAGS=-mod=mod go mod tidy >&2
GOFLAGS=-mod=mod nice go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$VERSION" -o "$BIN.tmp" . >&2
mv "$BIN.tmp" "$BIN"
echo "$BIN"
