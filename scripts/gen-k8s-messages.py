#!/usr/bin/env python3
"""Generate the protobuf message table of every built-in kind the API server knows.

The API server decodes protobuf bodies, drops or refuses unknown fields, publishes the OpenAPI
v2/v3 schemas and walks objects for strategic merge patch and server-side apply with one
message table: crates/control/apiserver/src/k8s_messages.rs, written by this script from the
pinned upstream modules (Go module proxy, `go mod download`):

  generated.proto   field numbers, JSON names, scalar and message types, repeated, map, and the
                    proto package (`k8s.io.api.core.v1`), which is the Go package upstream's
                    OpenAPI names a type by (`io.k8s.api.core.v1.PodSpec`, kube-openapi's
                    friendly name of `k8s.io/api/core/v1.PodSpec`)
  types*.go         (and meta/v1's watch.go) whether the Go field is a pointer (kept when zero) or a value with
                    `omitempty` (left out when zero), embedded (`json:",inline"`) fields, and
                    slices Go writes even when empty (no `omitempty`)
  swagger.json      (k8s.io/kubernetes v1.32.0 api/openapi-spec) upstream's definition names,
                    written out for the API server's test that every definition it publishes
                    is named as upstream names it, and each definition's `required` fields

Output: crates/control/apiserver/src/k8s_messages.rs with
  MESSAGES:       (name, OpenAPI package, fields) of every message reachable from the roots
                  below, across packages;
  KINDS:          (apiVersion, kind, message) of every root kind;
  ALWAYS_WRITTEN: (message, field) of the repeated fields Go writes even when empty;
  REQUIRED:       (message, fields) upstream v1.32.0 publishes as `required`;
  UPSTREAM_DEFINITIONS (tests only): upstream v1.32.0's `io.k8s.*` definition names.
A Go type name that several packages have keeps its plain name in the first package of PACKAGES
below and is named `Name@group.version` in the others (`Event@events.v1`); everything that
reads Go-type metadata strips the suffix (`protobuf::go_type`).

Which k8s.io/api: v0.37.0, not v0.32.0 (the v1.32.0 strata reports in /version). Go's protobuf
marshalling writes every non-pointer field, zero values included, so a client built on a newer
k8s.io/api sends fields v1.32 does not have (client-go v0.33+ sends PodStatus.observedGeneration,
field 17, new in v1.33, = 0 with every Pod it creates); kube-apiserver skips unknown protobuf
fields, while strata refuses them (415) rather than drop data silently. The hand-written table
this script replaced accepted such fields for that reason; v0.37.0 is the first version that
has all of them (checked field by field: v0.32.0 lacks 37 of its fields and 19 of its messages,
v0.36.0 still some). The fields of versions after v1.32 are stored and served like any other;
strata acts on none of them. EXCLUDED lists the fields strata must not accept, with why: they
are refused in protobuf (415) and dropped from JSON (refused under fieldValidation=Strict).
OVERRIDES lists the one deliberate difference from Go's JSON. The patch and list metadata
(scripts/gen-k8s-schema.py) stays at v0.32.0, so strategic merge and server-side apply behave as
v1.32's; apiextensions.k8s.io and apiregistration.k8s.io come from their v0.32.0 modules, meta/v1
from k8s.io/apimachinery v0.32.0.

Usage:
  scripts/gen-k8s-messages.py           # regenerate
  scripts/gen-k8s-messages.py --check   # exit 1 if regenerating would change the file
Needs: go, python3.
"""

import json
import os
import re
import sys

import gomod

API = ("k8s.io/api", "v0.37.0")
APIMACHINERY = ("k8s.io/apimachinery", "v0.32.0")
APIEXT = ("k8s.io/apiextensions-apiserver", "v0.32.0")
AGGREGATOR = ("k8s.io/kube-aggregator", "v0.32.0")
# Upstream's published OpenAPI (definition names), of the version strata reports.
KUBERNETES = ("k8s.io/kubernetes", "v1.32.0")
SWAGGER = "api/openapi-spec/swagger.json"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates/control/apiserver/src/k8s_messages.rs")

# (module, package directory, API group (None: not a group of kinds), version, root kinds,
# other root messages). The order decides which package keeps a shared Go name plain.
PACKAGES = [
    (APIMACHINERY, "pkg/apis/meta/v1", None, "v1", [], ["ObjectMeta", "DeleteOptions", "ListMeta", "Status", "WatchEvent", "Patch"]),
    (API, "core/v1", "", "v1", [
        "Namespace", "ConfigMap", "Secret", "ServiceAccount", "Service", "Pod", "ResourceQuota", "LimitRange", "Endpoints", "Event",
        "Node", "PersistentVolumeClaim", "PersistentVolume", "Binding", "ReplicationController", "PodTemplate", "ComponentStatus",
    ], []),
    (API, "apps/v1", "apps", "v1", ["Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "ControllerRevision"], []),
    (API, "batch/v1", "batch", "v1", ["Job", "CronJob"], []),
    (API, "coordination/v1", "coordination.k8s.io", "v1", ["Lease"], []),
    (API, "discovery/v1", "discovery.k8s.io", "v1", ["EndpointSlice"], []),
    (API, "autoscaling/v1", "autoscaling", "v1", ["Scale", "HorizontalPodAutoscaler"], []),
    (API, "autoscaling/v2", "autoscaling", "v2", ["HorizontalPodAutoscaler"], []),
    (API, "rbac/v1", "rbac.authorization.k8s.io", "v1", ["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"], []),
    (API, "authorization/v1", "authorization.k8s.io", "v1",
     ["SelfSubjectAccessReview", "SelfSubjectRulesReview", "SubjectAccessReview", "LocalSubjectAccessReview"], []),
    (API, "authentication/v1", "authentication.k8s.io", "v1", ["SelfSubjectReview", "TokenReview", "TokenRequest"], []),
    (API, "certificates/v1", "certificates.k8s.io", "v1", ["CertificateSigningRequest"], []),
    (API, "policy/v1", "policy", "v1", ["PodDisruptionBudget", "Eviction"], []),
    (API, "policy/v1beta1", "policy", "v1beta1", ["Eviction"], []),
    (API, "scheduling/v1", "scheduling.k8s.io", "v1", ["PriorityClass"], []),
    (API, "storage/v1", "storage.k8s.io", "v1", ["StorageClass", "CSIDriver", "CSINode", "CSIStorageCapacity", "VolumeAttachment"], []),
    (API, "node/v1", "node.k8s.io", "v1", ["RuntimeClass"], []),
    (API, "networking/v1", "networking.k8s.io", "v1", ["Ingress", "IngressClass", "NetworkPolicy"], []),
    (API, "events/v1", "events.k8s.io", "v1", ["Event"], []),
    (API, "admissionregistration/v1", "admissionregistration.k8s.io", "v1", ["ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"], []),
    (API, "flowcontrol/v1", "flowcontrol.apiserver.k8s.io", "v1", ["FlowSchema", "PriorityLevelConfiguration"], []),
    (APIEXT, "pkg/apis/apiextensions/v1", "apiextensions.k8s.io", "v1", ["CustomResourceDefinition"], []),
    (AGGREGATOR, "pkg/apis/apiregistration/v1", "apiregistration.k8s.io", "v1", ["APIService"], []),
]

# Go files with message types besides types*.go, by package directory.
GO_FILES = {"pkg/apis/meta/v1": ["watch.go"]}

# Fields strata must not accept: (package directory, message, proto field name) -> why.
EXCLUDED = {
    ("certificates/v1", "CertificateSigningRequestSpec", "extra"):
        "set by the server from the requester, and strata's users have no extra attributes: a client's value would be an unchecked identity claim",
    ("authentication/v1", "UserInfo", "extra"): "strata's authenticators give users no extra attributes",
    ("authorization/v1", "SubjectAccessReviewSpec", "extra"): "strata's authorizer does not read extra attributes",
    ("authorization/v1", "ResourceAttributes", "fieldSelector"): "strata's authorizer does not evaluate selectors",
    ("authorization/v1", "ResourceAttributes", "labelSelector"): "strata's authorizer does not evaluate selectors",
    ("authentication/v1", "TokenRequestSpec", "attestations"): "strata issues tokens without attestations (v1.37 alpha)",
    ("batch/v1", "JobSpec", "scheduling"): "its types are scheduling.k8s.io/v1alpha3's, a group strata does not serve (v1.37 alpha)",
}

# Cardinality overrides: (message, JSON field) -> C. `ScaleSpec.replicas` is a plain int32 with
# omitempty in Go, but a Scale PUT means "set replicas to this", 0 included, and strata's scale
# handler needs it present.
OVERRIDES = {("ScaleSpec", "replicas"): "Keep"}

SCALARS = {"string": "Str", "bool": "Bool", "int32": "I32", "int64": "I64", "double": "F64", "bytes": "Bytes"}
# Messages Go marshals to JSON by hand, by package directory: apiextensions' `JSON` is its raw
# bytes and its `JSONSchemaPropsOr*` unions are their one set field (`K::Union`); meta/v1's times
# are RFC 3339 strings and FieldsV1 its raw JSON.
LOCAL_SPECIAL = {
    "pkg/apis/apiextensions/v1": {
        "JSON": "Raw",
        "JSONSchemaPropsOrArray": 'Union("JSONSchemaPropsOrArray")',
        "JSONSchemaPropsOrBool": 'Union("JSONSchemaPropsOrBool")',
        "JSONSchemaPropsOrStringArray": 'Union("JSONSchemaPropsOrStringArray")',
    },
    "pkg/apis/meta/v1": {"Time": "Time", "MicroTime": "MicroTime", "FieldsV1": "Raw"},
}
SPECIAL = {
    ".k8s.io.apimachinery.pkg.apis.meta.v1.Time": "Time",
    ".k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime": "MicroTime",
    ".k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1": "Raw",
    ".k8s.io.apimachinery.pkg.util.intstr.IntOrString": "IntOrStr",
    ".k8s.io.apimachinery.pkg.api.resource.Quantity": "Quantity",
    ".k8s.io.apimachinery.pkg.runtime.RawExtension": "Raw",
}
FIELD_RE = re.compile(r"^\s*(optional|repeated)?\s*(map<\s*string\s*,\s*([\w.]+)\s*>|[\w.]+)\s+(\w+)\s*=\s*(\d+)\s*;")
TYPE_RE = re.compile(r"^type (\w+) struct \{\s*$")


def parse_proto(path):
    """(proto package, {message: [(number, name, type, label)]}) of one generated.proto (label:
    opt/rep/map)."""
    messages = {}
    package = None
    current = None
    with open(path) as f:
        for line in f:
            s = line.strip()
            if s.startswith("//") or not s:
                continue
            m = re.match(r"^package ([\w.]+);", s)
            if m:
                package = m.group(1)
                continue
            m = re.match(r"^message (\w+) \{", s)
            if m:
                current = []
                messages[m.group(1)] = current
                continue
            if s == "}":
                current = None
                continue
            if current is None:
                continue
            m = FIELD_RE.match(s)
            if not m:
                sys.exit(f"{path}: cannot parse field line: {s}")
            label, ty, map_value, name, number = m.groups()
            if map_value:
                current.append((int(number), name, map_value, "map"))
            else:
                current.append((int(number), name, ty, "rep" if label == "repeated" else "opt"))
    if package is None:
        sys.exit(f"{path}: no package line")
    return package, messages


def parse_go(path):
    """{type: {proto name: (json name, pointer, omitempty, inline)}} of one types*.go."""
    types = {}
    current = None
    with open(path) as f:
        for line in f:
            if current is None:
                m = TYPE_RE.match(line)
                if m:
                    current = {}
                    types[m.group(1)] = current
                continue
            if line.strip() == "}":
                current = None
                continue
            if "`" not in line or line.strip().startswith("//"):
                continue
            decl, tag = line.split("`")[0].split(), line.split("`")[1]
            tags = dict(re.findall(r'(\w+):"([^"]*)"', tag))
            if "protobuf" not in tags:
                continue
            go_type = decl[-1]
            embedded = len(decl) == 1
            # An embedded struct's proto field is named after its type (go-to-protobuf).
            default = go_type[0].lower() + go_type[1:] if embedded else None
            pname = next((p[5:] for p in tags["protobuf"].split(",") if p.startswith("name=")), default)
            json_parts = tags.get("json", "").split(",")
            inline = "inline" in json_parts[1:] or (embedded and not json_parts[0])
            current[pname] = (json_parts[0], go_type.startswith("*"), "omitempty" in json_parts[1:], inline)
    return types


def load_packages():
    """Every package of PACKAGES, read: dicts with proto messages, Go fields and names."""
    out = []
    for module, pkg, group, version, kinds, roots in PACKAGES:
        base = gomod.module_dir(*module)
        proto_package, proto = parse_proto(os.path.join(base, pkg, "generated.proto"))
        go = {}
        for name in sorted(os.listdir(os.path.join(base, pkg))):
            if (name.startswith("types") and name.endswith(".go") and not name.endswith("_test.go")) or name in GO_FILES.get(pkg, []):
                go.update(parse_go(os.path.join(base, pkg, name)))
        # Upstream's OpenAPI package (kube-openapi's friendly name of the Go package path
        # `k8s.io/api/core/v1`): the domain reversed, then the path, dot-separated.
        domain, *path = f"{module[0]}/{pkg}".split("/")
        openapi = ".".join(list(reversed(domain.split("."))) + path)
        out.append({
            "pkg": pkg, "group": group, "version": version, "kinds": kinds, "roots": kinds + roots,
            "proto_package": proto_package, "proto": proto, "go": go, "openapi": openapi,
        })
    return out


def main():
    packages = load_packages()
    by_proto = {p["proto_package"]: p for p in packages}

    def resolve(p, ty):
        """The (package, message) a field type names, or None for scalars and special types."""
        if ty in SCALARS or ty in SPECIAL:
            return None
        if not ty.startswith("."):
            # A union is decoded as its message and then written as its one set field.
            return (p, ty) if LOCAL_SPECIAL.get(p["pkg"], {}).get(ty, "Union").startswith("Union") else None
        qual, _, name = ty[1:].rpartition(".")
        target = by_proto.get(qual)
        if target is None:
            return ("unknown", ty)
        if not LOCAL_SPECIAL.get(target["pkg"], {}).get(name, "Union").startswith("Union"):
            return None
        return (target, name)

    def special_kind(p, ty):
        """The kind of a scalar or specially marshalled field type, else None."""
        if ty in SCALARS:
            return SCALARS[ty]
        if ty in SPECIAL:
            return SPECIAL[ty]
        qual, _, name = ty[1:].rpartition(".") if ty.startswith(".") else (p["proto_package"], "", ty)
        target = by_proto.get(qual)
        return LOCAL_SPECIAL.get(target["pkg"], {}).get(name) if target else None

    # Messages reachable from the roots, in order: package by package, breadth first.
    reach = []  # (package, message)
    seen = set()
    todo = [(p, m) for p in packages for m in p["roots"]]
    while todo:
        p, m = todo.pop(0)
        if (p["pkg"], m) in seen:
            continue
        if m not in p["proto"]:
            sys.exit(f"{p['pkg']}: no message {m}")
        seen.add((p["pkg"], m))
        reach.append((p, m))
        for _, name, ty, _ in p["proto"][m]:
            if (p["pkg"], m, name) in EXCLUDED:
                continue
            target = resolve(p, ty)
            if target is None:
                continue
            if target[0] == "unknown":
                sys.exit(f"{p['pkg']}: {m}.{name} has type {ty}, of a package this script does not read (add it or exclude the field)")
            todo.append(target)
    for (pkg, m, name) in EXCLUDED:
        p = next((p for p in packages if p["pkg"] == pkg), None)
        if p is None or m not in p["proto"] or not any(f[1] == name for f in p["proto"][m]):
            sys.exit(f"excluded field {pkg} {m}.{name} does not exist")

    # Names: the first package (in PACKAGES order) that has a Go name keeps it plain.
    index = {p["pkg"]: i for i, p in enumerate(packages)}
    first = {}
    for p, m in sorted(reach, key=lambda x: index[x[0]["pkg"]]):
        first.setdefault(m, p["pkg"])

    def name_of(p, m):
        if first[m] == p["pkg"]:
            return m
        return f"{m}@{p['group'] if p['group'] else 'core'}.{p['version']}"

    upstream, required = upstream_definitions()
    out = [
        "//! GENERATED by scripts/gen-k8s-messages.py from " + ", ".join(" ".join(m) for m in (API, APIMACHINERY, APIEXT, AGGREGATOR))
        + " (generated.proto and types*.go) and the definition names of " + " ".join(KUBERNETES) + "'s " + SWAGGER + ": do not edit.",
        "//! The protobuf message table of the built-in kinds (see [`crate::protobuf`] and the script's docstring for the pin).",
        "",
        "use crate::protobuf::{C::*, F, K::*};",
        "",
        "/// (message, OpenAPI package, fields). A name with `@group.version` is a Go type whose name",
        "/// a package earlier in the table also has.",
        "#[rustfmt::skip]",
        "pub static MESSAGES: &[(&str, &str, &[F])] = &[",
    ]
    always = []
    current = None
    for p, m in sorted(reach, key=lambda x: index[x[0]["pkg"]]):
        if p is not current:
            out.append(f"    // {p['pkg']}")
            current = p
        gofields = p["go"].get(m, {})
        fields = []
        for number, name, ty, label in p["proto"][m]:
            if (p["pkg"], m, name) in EXCLUDED:
                continue
            if name not in gofields:
                sys.exit(f"{p['pkg']}: {m}.{name} has no Go field")
            json_name, pointer, omitempty, inline = gofields[name]
            json_name = json_name or name
            kind = special_kind(p, ty)
            if kind is None:
                target = resolve(p, ty)
                if target is None:
                    sys.exit(f"{p['pkg']}: {m}.{name}: type {ty}")
                kind = f'{"Inline" if inline else "Msg"}("{name_of(*target)}")'
            if label == "map":
                card = "Map"
            elif label == "rep" and ty != "bytes":
                card = "Rep"
                if not omitempty:
                    always.append((name_of(p, m), json_name))
            elif omitempty and not pointer and not kind.startswith(("Msg(", "Inline(", "Union(")):
                # Go's omitempty leaves out zero scalars; a struct value is always written.
                card = "Omit"
            else:
                card = "Keep"
            card = OVERRIDES.get((m, json_name), card)
            fields.append(f'F({number}, "{json_name}", {kind}, {card})')
        out.append(f'    ("{name_of(p, m)}", "{p["openapi"]}", &[{", ".join(fields)}]),')
    out.append("];")
    out.append("")
    out.append("/// (apiVersion, kind, message) of the built-in kinds with a message.")
    out.append("pub static KINDS: &[(&str, &str, &str)] = &[")
    for p in packages:
        if p["group"] is None:
            continue
        api_version = f"{p['group']}/{p['version']}" if p["group"] else p["version"]
        for k in p["kinds"]:
            out.append(f'    ("{api_version}", "{k}", "{name_of(p, k)}"),')
    out.append("];")
    out.append("")
    out.append("/// (message, field) of the repeated fields Go writes even when empty (no `omitempty`).")
    out.append("pub static ALWAYS_WRITTEN: &[(&str, &str)] = &[")
    for m, f in always:
        out.append(f'    ("{m}", "{f}"),')
    out.append("];")
    out.append("")
    out.append("/// (message, required JSON fields) as upstream " + KUBERNETES[1] + " publishes them (" + SWAGGER + "), for the")
    out.append("/// messages whose definition it has.")
    out.append("#[rustfmt::skip]")
    out.append("pub static REQUIRED: &[(&str, &[&str])] = &[")
    for p, m in sorted(reach, key=lambda x: index[x[0]["pkg"]]):
        fields = required.get(f"{p['openapi']}.{m}")
        if fields:
            out.append(f'    ("{name_of(p, m)}", &[{", ".join(json.dumps(f) for f in fields)}]),')
    out.append("];")
    out.append("")
    out.append("/// Upstream " + KUBERNETES[1] + "'s OpenAPI definition names under `io.k8s.` (" + SWAGGER + "), sorted.")
    out.append("#[cfg(test)]")
    out.append("#[rustfmt::skip]")
    out.append("pub static UPSTREAM_DEFINITIONS: &[&str] = &[")
    for d in sorted(upstream):
        out.append(f"    {json.dumps(d)},")
    out.append("];")
    out.append("")
    gomod.write_or_check(OUT, "\n".join(out), "scripts/gen-k8s-messages.py")


def upstream_definitions():
    """Upstream's `io.k8s.*` definition names, and {name: required fields} of those that have any."""
    with open(os.path.join(gomod.module_dir(*KUBERNETES), SWAGGER)) as f:
        defs = {n: d for n, d in json.load(f)["definitions"].items() if n.startswith("io.k8s.")}
    return set(defs), {n: d["required"] for n, d in defs.items() if d.get("required")}


if __name__ == "__main__":
    main()
