#!/usr/bin/env bash
# Build a stock upstream component (k8s.io/kubernetes cmd/COMPONENT at a pinned version:
# kube-scheduler, the scheduler benchmark's peer and compatibility run; kube-controller-manager,
# the controllers' compatibility run) from the Go module proxy. Prints the binary's path; builds
# once per component and version (cached under $STRATA_PEER_DIR, default /var/tmp).
#
# Usage: scripts/kube-peer.sh COMPONENT
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/kube-gomod.sh"
COMPONENT="${1:?usage: kube-peer.sh kube-scheduler|kube-controller-manager}"
case "$COMPONENT" in
    kube-scheduler) COMMAND='app.NewSchedulerCommand()' ;;
    kube-controller-manager) COMMAND='app.NewControllerManagerCommand()' ;;
    *) echo "kube-peer.sh: no such component: $COMPONENT" >&2; exit 2 ;;
esac
VERSION="${KUBE_VERSION:-v1.32.0}"
DIR="${STRATA_PEER_DIR:-/var/tmp}/strata-$COMPONENT-$VERSION"
BIN="$DIR/$COMPONENT"
if [ -x "$BIN" ]; then
    echo "$BIN"
    exit 0
fi
mkdir -p "$DIR/src"
cd "$DIR/src"
write_kube_gomod "$COMPONENT-peer" "$VERSION"
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
