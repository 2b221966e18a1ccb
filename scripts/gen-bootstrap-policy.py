#!/usr/bin/env python3
"""Generate strata's RBAC bootstrap policy from upstream Kubernetes' own definitions.

kube-apiserver's default roles and bindings are written out by its tests as YAML
(plugin/pkg/auth/authorizer/rbac/bootstrappolicy/testdata/*.yaml in k8s.io/kubernetes). This
script fetches the pinned module through the Go module proxy (`go mod download`, about 17 MB,
a few seconds), reads those files and writes
crates/control/apiserver/src/bootstrap_policy.json, which the API server embeds and
reconciles at every start.

strata's additions are the role of its own VirtualMachine controller, VirtualMachines in the
aggregated admin/edit/view roles, and what kubeadm creates at `kubeadm init` for joining nodes (named
`strata:` instead of `kubeadm:`): bootstrap tokens (group `system:bootstrappers`) may create
CertificateSigningRequests (`system:node-bootstrapper`) and have node client CSRs approved
(`...:nodeclient`), nodes may renew their own (`...:selfnodeclient`), and anyone may read
`kube-public/cluster-info` (the cluster's CA, which a joining node checks against its token's
hash). Nodes themselves are authorized by strata's Node authorizer, as upstream: the
`system:node` ClusterRoleBinding keeps upstream's empty subjects.

Usage:
  scripts/gen-bootstrap-policy.py           # regenerate
  scripts/gen-bootstrap-policy.py --check   # exit 1 if regenerating would change the file
Needs: go, python3 with PyYAML (installed with the `kubernetes` client).
"""

import json
import os
import sys

import yaml

import gomod

MODULE = "k8s.io/kubernetes"
VERSION = "v1.32.0"  # the version strata reports in /version
TESTDATA = "plugin/pkg/auth/authorizer/rbac/bootstrappolicy/testdata"
FILES = [
    "cluster-roles.yaml",
    "cluster-role-bindings.yaml",
    "controller-roles.yaml",
    "controller-role-bindings.yaml",
    "namespace-roles.yaml",
    "namespace-role-bindings.yaml",
]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates/control/apiserver/src/bootstrap_policy.json")

RBAC = "rbac.authorization.k8s.io"
LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}
ANNOTATIONS = {"rbac.authorization.kubernetes.io/autoupdate": "true"}


def binding(kind, name, role, subject_kind, subject, namespace=None):
    meta = {"name": name, "labels": LABELS, "annotations": ANNOTATIONS}
    if namespace:
        meta["namespace"] = namespace
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": kind,
        "metadata": meta,
        "roleRef": {"apiGroup": RBAC, "kind": "Role" if kind == "RoleBinding" else "ClusterRole", "name": role},
        "subjects": [{"apiGroup": RBAC, "kind": subject_kind, "name": subject}],
    }


# strata's additional objects (kubeadm's join objects, see above).
EXTRA_OBJECTS = [
    binding("ClusterRoleBinding", "strata:kubelet-bootstrap", "system:node-bootstrapper", "Group", "system:bootstrappers"),
    binding("ClusterRoleBinding", "strata:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient", "Group", "system:bootstrappers"),
    binding("ClusterRoleBinding", "strata:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", "Group", "system:nodes"),
    {
        "apiVersion": f"{RBAC}/v1",
        "kind": "Role",
        "metadata": {"name": "strata:bootstrap-signer-clusterinfo", "namespace": "kube-public",
                     "labels": LABELS, "annotations": ANNOTATIONS},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cluster-info"], "verbs": ["get"]}],
    },
    binding("RoleBinding", "strata:bootstrap-signer-clusterinfo", "strata:bootstrap-signer-clusterinfo",
            "User", "system:anonymous", namespace="kube-public"),
    # strata's own controller (strata_controllers::virtualmachine), written like upstream's
    # controller roles: it runs VirtualMachines through launcher pods it owns.
    {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "strata:controller:virtualmachine-controller", "labels": LABELS, "annotations": ANNOTATIONS},
        "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "delete", "get", "list", "watch"]},
            {"apiGroups": ["strata.dev"], "resources": ["virtualmachines"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["strata.dev"], "resources": ["virtualmachines/status"], "verbs": ["patch", "update"]},
            {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]},
        ],
    },
    # VirtualMachines in the user-facing roles, aggregated into admin, edit and view as
    # upstream's `system:aggregate-to-*` roles are (and as KubeVirt's kubevirt.io:edit/view):
    # edit may run VMs and open their serial console (`virtualmachines/console`, verb get, as
    # KubeVirt's `virtualmachineinstances/console`), view may only read them and their serial
    # log (`virtualmachines/log`, as view reads `pods/log`).
    {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "strata:aggregate-to-edit", "annotations": ANNOTATIONS,
                     "labels": {**LABELS, "rbac.authorization.k8s.io/aggregate-to-admin": "true",
                                "rbac.authorization.k8s.io/aggregate-to-edit": "true"}},
        "rules": [
            {"apiGroups": ["strata.dev"], "resources": ["virtualmachines"],
             "verbs": ["create", "delete", "deletecollection", "patch", "update"]},
            {"apiGroups": ["strata.dev"], "resources": ["virtualmachines/console"], "verbs": ["get"]},
        ],
    },
    {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "strata:aggregate-to-view", "annotations": ANNOTATIONS,
                     "labels": {**LABELS, "rbac.authorization.k8s.io/aggregate-to-admin": "true",
                                "rbac.authorization.k8s.io/aggregate-to-edit": "true",
                                "rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [
            {"apiGroups": ["strata.dev"], "resources": ["virtualmachines", "virtualmachines/log", "virtualmachines/status"],
             "verbs": ["get", "list", "watch"]},
        ],
    },
    {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "strata:controller:virtualmachine-controller", "labels": LABELS, "annotations": ANNOTATIONS},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "strata:controller:virtualmachine-controller"},
        "subjects": [{"kind": "ServiceAccount", "name": "virtualmachine-controller", "namespace": "kube-system"}],
    },
]


def module_dir():
    return gomod.module_dir(MODULE, VERSION)


def clean(obj):
    meta = obj.get("metadata", {})
    meta.pop("creationTimestamp", None)
    if obj.get("rules", []) is None:
        obj["rules"] = []
    return obj


def generate():
    base = os.path.join(module_dir(), TESTDATA)
    policy = {"ClusterRole": [], "ClusterRoleBinding": [], "Role": [], "RoleBinding": []}
    for name in FILES:
        with open(os.path.join(base, name)) as f:
            doc = yaml.safe_load(f)
        for item in doc["items"]:
            policy[item["kind"]].append(clean(item))
    for item in EXTRA_OBJECTS:
        policy[item["kind"]].append(item)
    out = {
        "source": f"{MODULE}@{VERSION} {TESTDATA}, by scripts/gen-bootstrap-policy.py; do not edit",
        "clusterRoles": policy["ClusterRole"],
        "clusterRoleBindings": policy["ClusterRoleBinding"],
        "roles": policy["Role"],
        "roleBindings": policy["RoleBinding"],
    }
    return json.dumps(out, indent=1, sort_keys=True) + "\n"


def main():
    gomod.write_or_check(OUT, generate(), "scripts/gen-bootstrap-policy.py")


if __name__ == "__main__":
    main()
