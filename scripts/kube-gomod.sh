# Sourced by scripts/kube-peer.sh and scripts/conformance.sh (not run on its own).
#
# write_kube_gomod NAME VERSION: write ./go.mod for a module of our own requiring
# k8s.io/kubernetes@VERSION. k8s.io/kubernetes is not meant to be used as a module: its go.mod
# replaces each staging module (k8s.io/api, apimachinery, client-go, ...) with ./staging/src/...,
# which a module download does not have, so each is replaced here by its published v0.X.Y of
# the same release (the list read from the module's own go.mod, not typed by hand).
write_kube_gomod() {
    local name="$1" version="$2" staging kmod
    staging="v0.${version#v1.}"
    kmod="$(cd / && go mod download -json "k8s.io/kubernetes@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
    {
        echo "module strata.dev/$name"
        echo
        echo "go 1.23"
        echo
        echo "require k8s.io/kubernetes $version"
        echo
        echo "replace ("
        grep -E '^\s+k8s\.io/[a-z0-9-]+ => \./staging/src/' "$kmod/go.mod" | awk -v v="$staging" '{print "\t" $1 " => " $1 " " v}'
        echo ")"
    } > go.mod
}
