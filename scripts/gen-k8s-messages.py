#!/usr/bin/env python3
"""Generate the protobuf message table of the kinds added from issue 12 part 3 on.

The API server decodes protobuf bodies, checks unknown fields and publishes OpenAPI schemas
from one message table (crates/control/apiserver/src/protobuf.rs, `schema::MESSAGES`, written
by hand before this generator existed). The messages of the kinds listed in ROOTS below are
generated instead, from the pinned k8s.io/api module, and apiextensions.k8s.io's from the pinned
k8s.io/apiextensions-apiserver module, apiregistration.k8s.io's from k8s.io/kube-aggregator (Go module
proxy, `go mod download`):

  generated.proto   field numbers, JSON names, scalar and message types, repeated, map
  types.go          whether the Go field is a pointer (kept when zero) or a value with
                    `omitempty` (left out when zero), and embedded (`json:",inline"`) fields

Output: crates/control/apiserver/src/k8s_messages.rs with
  MESSAGES: (name, OpenAPI package, fields) of every message reachable from ROOTS inside their
            own package (messages of other packages, e.g. core/v1 ObjectReference, come from
            the hand-written table and must exist there);
  KINDS:    (apiVersion, kind, message) of every root.
A message whose Go name is also in the hand-written table or in another generated package is
named `Name@group.version` (e.g. `HorizontalPodAutoscaler@autoscaling.v2`); everything that
reads Go-type metadata strips the suffix.

Usage:
  scripts/gen-k8s-messages.py           # regenerate
  scripts/gen-k8s-messages.py --check   # exit 1 if regenerating would change the file
Needs: go, python3.
"""

import os
import re
import sys

import gomod

API = ("k8s.io/api", "v0.32.0")  # the Kubernetes v1.32.0 API strata reports in /version
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates/control/apiserver/src/k8s_messages.rs")
HAND = os.path.join(ROOT, "crates/control/apiserver/src/protobuf.rs")

APIEXT = ("k8s.io/apiextensions-apiserver", "v0.32.0")
AGGREGATOR = ("k8s.io/kube-aggregator", "v0.32.0")

# (package directory in k8s.io/api, API group, version, root kinds); a package of another module
# is written `module:directory`.
ROOTS = [
    ("core/v1", "", "v1", ["PodTemplate"]),
    ("networking/v1", "networking.k8s.io", "v1", ["Ingress", "IngressClass", "NetworkPolicy"]),
    ("autoscaling/v1", "autoscaling", "v1", ["HorizontalPodAutoscaler"]),
    ("autoscaling/v2", "autoscaling", "v2", ["HorizontalPodAutoscaler"]),
    ("storage/v1", "storage.k8s.io", "v1", ["CSIDriver", "CSINode", "VolumeAttachment"]),
    ("events/v1", "events.k8s.io", "v1", ["Event"]),
    ("admissionregistration/v1", "admissionregistration.k8s.io", "v1", ["ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"]),
    ("flowcontrol/v1", "flowcontrol.apiserver.k8s.io", "v1", ["FlowSchema", "PriorityLevelConfiguration"]),
    ("k8s.io/apiextensions-apiserver:pkg/apis/apiextensions/v1", "apiextensions.k8s.io", "v1", ["CustomResourceDefinition"]),
    ("k8s.io/kube-aggregator:pkg/apis/apiregistration/v1", "apiregistration.k8s.io", "v1", ["APIService"]),
]
MODULES = {API[0]: API, APIEXT[0]: APIEXT, AGGREGATOR[0]: AGGREGATOR}
# OpenAPI packages of the directories of modules other than k8s.io/api.
OPENAPI_PACKAGE = {
    "pkg/apis/apiextensions/v1": "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1",
    "pkg/apis/apiregistration/v1": "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1",
}

SCALARS = {"string": "Str", "bool": "Bool", "int32": "I32", "int64": "I64", "double": "F64", "bytes": "Bytes"}
# Messages of a package that Go marshals to JSON by hand (apiextensions' marshal.go): `JSON` is its
# raw bytes; the `JSONSchemaPropsOr*` unions are their one set field (`K::Union`).
LOCAL_SPECIAL = {
    "pkg/apis/apiextensions/v1": {
        "JSON": "Raw",
        "JSONSchemaPropsOrArray": 'Union("JSONSchemaPropsOrArray")',
        "JSONSchemaPropsOrBool": 'Union("JSONSchemaPropsOrBool")',
        "JSONSchemaPropsOrStringArray": 'Union("JSONSchemaPropsOrStringArray")',
    },
}
SPECIAL = {
    ".k8s.io.apimachinery.pkg.apis.meta.v1.Time": "Time",
    ".k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime": "MicroTime",
    ".k8s.io.apimachinery.pkg.util.intstr.IntOrString": "IntOrStr",
    ".k8s.io.apimachinery.pkg.api.resource.Quantity": "Quantity",
    ".k8s.io.apimachinery.pkg.runtime.RawExtension": "Raw",
}
FIELD_RE = re.compile(r"^\s*(optional|repeated)?\s*(map<\s*string\s*,\s*([\w.]+)\s*>|[\w.]+)\s+(\w+)\s*=\s*(\d+)\s*;")
TYPE_RE = re.compile(r"^type (\w+) struct \{\s*$")


def parse_proto(path):
    """{message: [(number, name, type, label)]} of one generated.proto (label: opt/rep/map)."""
    messages = {}
    current = None
    with open(path) as f:
        for line in f:
            s = line.strip()
            if s.startswith("//") or not s:
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
    return messages


def parse_go(path):
    """{type: {proto name: (json name, pointer, omitempty, inline)}} of one types.go."""
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
            pname = next((p[5:] for p in tags["protobuf"].split(",") if p.startswith("name=")), None)
            json_parts = tags.get("json", "").split(",")
            go_type = decl[-1]
            current[pname] = (json_parts[0], go_type.startswith("*"), "omitempty" in json_parts[1:], "inline" in json_parts[1:])
    return types


def main():
    with open(HAND) as f:
        hand = set(re.findall(r'^\s+\("(\w+)", &\[F\(', f.read(), re.M))
    packages = []
    for pkg, group, version, roots in ROOTS:
        module, _, pkg = pkg.rpartition(":")
        base = gomod.module_dir(*MODULES[module or API[0]])
        proto = parse_proto(os.path.join(base, pkg, "generated.proto"))
        go = {}
        for name in sorted(os.listdir(os.path.join(base, pkg))):
            if name.startswith("types") and name.endswith(".go") and not name.endswith("_test.go"):
                go.update(parse_go(os.path.join(base, pkg, name)))
        # Messages reachable from the roots inside this package.
        reach, todo = [], list(roots)
        while todo:
            m = todo.pop(0)
            if m in reach:
                continue
            if m not in proto:
                sys.exit(f"{pkg}: no message {m}")
            reach.append(m)
            for _, _, ty, _ in proto[m]:
                local = ty.split(".")[-1] if not ty.startswith(".") else None
                if local and ty not in SCALARS and local in proto and LOCAL_SPECIAL.get(pkg, {}).get(local) != "Raw":
                    todo.append(local)
        packages.append((pkg, group, version, roots, proto, go, reach))
    # Names that need their package's suffix: in the hand table, or in two generated packages.
    seen = {}
    for pkg, *_rest, reach in packages:
        for m in reach:
            seen.setdefault(m, []).append(pkg)
    clash = {m for m, pkgs in seen.items() if len(pkgs) > 1 or m in hand}

    out = [
        "//! GENERATED by scripts/gen-k8s-messages.py from k8s.io/api " + API[1] + ", " + " ".join(APIEXT) + " and " + " ".join(AGGREGATOR) + " (generated.proto and types.go): do not edit.",
        "//! The protobuf message table of the kinds added from issue 12 part 3 on; see [`crate::protobuf`].",
        "",
        "use crate::protobuf::{C::*, F, K::*};",
        "",
        "/// (message, OpenAPI package, fields). A name with `@group.version` is a Go type whose name",
        "/// another package or the hand-written table also has.",
        "#[rustfmt::skip]",
        "pub static MESSAGES: &[(&str, &str, &[F])] = &[",
    ]
    kinds = []
    for pkg, group, version, roots, proto, go, reach in packages:
        suffix = f"@{group or 'core'}.{version}"
        openapi_pkg = OPENAPI_PACKAGE.get(pkg) or "io.k8s.api." + pkg.replace("/", ".")
        special = LOCAL_SPECIAL.get(pkg, {})
        name_of = lambda m, suffix=suffix: f"{m}{suffix}" if m in clash else m
        out.append(f"    // {pkg}")
        for m in reach:
            if pkg == "core/v1" and m not in roots:
                continue  # core/v1 messages the roots use are in the hand-written table
            fields = []
            gofields = go.get(m, {})
            for number, name, ty, label in proto[m]:
                if name not in gofields:
                    sys.exit(f"{pkg}: {m}.{name} has no Go field")
                json_name, pointer, omitempty, inline = gofields[name]
                if ty in SCALARS:
                    kind = SCALARS[ty]
                elif ty in special:
                    kind = special[ty]
                elif ty in SPECIAL:
                    kind = SPECIAL[ty]
                else:
                    local = ty.split(".")[-1]
                    if ty.startswith(".") and not (pkg == "core/v1" and ty.startswith(".k8s.io.api.core.v1.")):
                        if local not in hand:
                            sys.exit(f"{pkg}: {m}.{name} refers to {ty}, which the hand-written table lacks")
                        target = local
                    elif pkg == "core/v1":
                        if local not in hand:
                            sys.exit(f"{pkg}: {m}.{name} refers to {local}, which the hand-written table lacks")
                        target = local
                    else:
                        target = name_of(local)
                    kind = f'{"Inline" if inline else "Msg"}("{target}")'
                if label == "map":
                    card = "Map"
                elif label == "rep" and ty != "bytes":
                    card = "Rep"
                elif omitempty and not pointer and not kind.startswith(("Msg(", "Inline(", "Union(")):
                    # Go's omitempty leaves out zero scalars; a struct value is always written.
                    card = "Omit"
                else:
                    card = "Keep"
                fields.append(f'F({number}, "{json_name or name}", {kind}, {card})')
            out.append(f'    ("{name_of(m)}", "{openapi_pkg}", &[{", ".join(fields)}]),')
        for r in roots:
            api_version = f"{group}/{version}" if group else version
            kinds.append(f'    ("{api_version}", "{r}", "{name_of(r)}"),')
    out.append("];")
    out.append("")
    out.append("/// (apiVersion, kind, message) of the generated kinds.")
    out.append("pub static KINDS: &[(&str, &str, &str)] = &[")
    out.extend(kinds)
    out.append("];")
    out.append("")
    gomod.write_or_check(OUT, "\n".join(out), "scripts/gen-k8s-messages.py")


if __name__ == "__main__":
    main()
