#!/usr/bin/env python3
"""Generate the patch and list metadata of the Kubernetes types from upstream's definitions.

kubectl's client-side apply computes strategic merge patches from the OpenAPI schemas the
server publishes: without `x-kubernetes-patch-merge-key`/`x-kubernetes-patch-strategy` it
cannot delete list entries a manifest dropped. The same struct tags and markers drive the
server's own strategic merge patch and field management. This script fetches the pinned
k8s.io/api and k8s.io/apimachinery modules through the Go module proxy (`go mod download`),
reads every field of the Go types of the stable API groups:

  patchStrategy:"merge[,retainKeys]" patchMergeKey:"KEY"   (struct tags)
  // +listType=map|set|atomic   // +listMapKey=KEY ...     (markers above the field)
  // +mapType=atomic|granular   // +structType=atomic      (markers; structType above the type)
  // +default=VALUE                                         (the JSON a field defaults to)

and writes crates/control/apiserver/src/k8s_meta.rs: one table keyed by (Go type, JSON field
name). Go type names are unique across the packages read (the script fails if two packages
disagree about the same name).

Usage:
  scripts/gen-k8s-schema.py           # regenerate
  scripts/gen-k8s-schema.py --check   # exit 1 if regenerating would change the file
Needs: go, python3.
"""

import json
import os
import re
import sys

import gomod

API = ("k8s.io/api", "v0.32.0")  # the Kubernetes v1.32.0 API strata reports in /version
APIMACHINERY = ("k8s.io/apimachinery", "v0.32.0")
# The packages read (types.go of each): the stable groups and meta/v1.
API_PACKAGES = [
    "core/v1", "apps/v1", "batch/v1", "autoscaling/v1", "autoscaling/v2", "policy/v1", "rbac/v1",
    "coordination/v1", "discovery/v1", "networking/v1", "storage/v1", "scheduling/v1", "node/v1",
    "certificates/v1", "authentication/v1", "authorization/v1", "events/v1",
    "admissionregistration/v1", "flowcontrol/v1",
]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates/control/apiserver/src/k8s_meta.rs")


TYPE_RE = re.compile(r"^type (\w+) struct \{\s*$")
FIELD_RE = re.compile(r"^\s+(\w+)?\s*([^\s`]+)?\s*`([^`]*)`")
TAG_RE = re.compile(r'(\w+):"([^"]*)"')


def parse(path, package):
    """(types: {name: {"atomic": bool, "fields": {json: meta}}}) of one types.go."""
    types = {}
    comments = []
    current = None
    depth = 0
    with open(path) as f:
        for line in f:
            stripped = line.strip()
            if current is None:
                m = TYPE_RE.match(line)
                if m:
                    current = {"atomic": any(c == "+structType=atomic" for c in comments), "fields": {}, "package": package}
                    types[m.group(1)] = current
                    depth = 1
                    comments = []
                elif stripped.startswith("//"):
                    comments.append(stripped[2:].strip())
                else:
                    comments = []
                continue
            # Inside a struct.
            if stripped.startswith("//"):
                comments.append(stripped[2:].strip())
                continue
            if stripped == "}" and depth == 1:
                current = None
                comments = []
                continue
            m = FIELD_RE.match(line)
            if m:
                tags = dict(TAG_RE.findall(m.group(3)))
                name = tags.get("json", "").split(",")[0]
                markers = {}
                keys = []
                for c in comments:
                    if c.startswith("+listMapKey="):
                        keys.append(c.split("=", 1)[1])
                    elif c.startswith("+") and "=" in c:
                        k, v = c[1:].split("=", 1)
                        markers[k] = v
                meta = {
                    "strategy": tags.get("patchStrategy", ""),
                    "key": tags.get("patchMergeKey", ""),
                    "list": markers.get("listType", ""),
                    "keys": keys,
                    "map": markers.get("mapType", ""),
                    "default": default_json(markers.get("default", "")),
                }
                if name and any([meta["strategy"], meta["key"], meta["list"], meta["map"], meta["default"]]):
                    current["fields"][name] = meta
            comments = []
    return types


def default_json(marker):
    """A `+default=` marker's value as JSON text; "" for none and for `ref(...)` (a Go constant)."""
    if not marker or marker.startswith("ref("):
        return ""
    return json.dumps(json.loads(marker))


def collect():
    api = gomod.module_dir(*API)
    machinery = gomod.module_dir(*APIMACHINERY)
    sources = [(os.path.join(machinery, "pkg/apis/meta/v1/types.go"), "meta/v1")]
    sources += [(os.path.join(api, p, "types.go"), p) for p in API_PACKAGES]
    merged = {}
    for path, package in sources:
        for name, t in parse(path, package).items():
            if name in merged:
                old = merged[name]
                if (old["atomic"], old["fields"]) != (t["atomic"], t["fields"]):
                    if not t["fields"] and not t["atomic"]:
                        continue
                    if not old["fields"] and not old["atomic"]:
                        merged[name] = t
                        continue
                    sys.exit(f"type {name}: {old['package']} and {package} disagree; the table needs package-qualified names")
                continue
            merged[name] = t
    return merged


def rust_str(s):
    return json.dumps(s)


def render(types):
    lines = [
        "// @generated by scripts/gen-k8s-schema.py from k8s.io/api " + API[1] + " and k8s.io/apimachinery " + APIMACHINERY[1] + ".",
        "// Do not edit: regenerate (`--check` runs in scripts/test.sh).",
        "//! Patch and list metadata of the built-in types: the `patchStrategy`/`patchMergeKey` struct",
        "//! tags and the `+listType`/`+listMapKey`/`+mapType`/`+structType` markers of k8s.io/api,",
        "//! keyed by Go type name and JSON field name.",
        "",
        "/// One field's metadata; empty strings where upstream says nothing.",
        "#[derive(Clone, Copy, Debug, PartialEq, Eq)]",
        "pub struct FieldMeta {",
        "    /// `patchStrategy`: \"merge\", \"retainKeys\", \"merge,retainKeys\" or \"\".",
        "    pub strategy: &'static str,",
        "    /// `patchMergeKey`.",
        "    pub merge_key: &'static str,",
        "    /// `+listType`: \"map\", \"set\", \"atomic\" or \"\".",
        "    pub list_type: &'static str,",
        "    /// `+listMapKey`s, in order.",
        "    pub list_map_keys: &'static [&'static str],",
        "    /// `+mapType`: \"atomic\", \"granular\" or \"\".",
        "    pub map_type: &'static str,",
        "    /// `+default=`: the JSON of the value defaulting gives the field, or \"\" (also for a Go constant).",
        "    pub default: &'static str,",
        "}",
        "",
        "/// (type, field, metadata), sorted by type then field.",
        "#[rustfmt::skip]",
        "pub static FIELDS: &[(&str, &str, FieldMeta)] = &[",
    ]
    for tname in sorted(types):
        for fname in sorted(types[tname]["fields"]):
            m = types[tname]["fields"][fname]
            keys = ", ".join(rust_str(k) for k in m["keys"])
            lines.append(
                f"    ({rust_str(tname)}, {rust_str(fname)}, FieldMeta {{ strategy: {rust_str(m['strategy'])}, merge_key: {rust_str(m['key'])}, "
                f"list_type: {rust_str(m['list'])}, list_map_keys: &[{keys}], map_type: {rust_str(m['map'])}, default: {rust_str(m['default'])} }}),"
            )
    lines.append("];")
    lines.append("")
    lines.append("/// Types marked `+structType=atomic` (owned and replaced whole).")
    lines.append("#[rustfmt::skip]")
    lines.append("pub static ATOMIC_STRUCTS: &[&str] = &[")
    for tname in sorted(t for t in types if types[t]["atomic"]):
        lines.append(f"    {rust_str(tname)},")
    lines.append("];")
    lines.append("")
    lines.append("/// The metadata of field `field` of type `ty`, if upstream gives it any.")
    lines.append("pub fn field(ty: &str, field: &str) -> Option<&'static FieldMeta> {")
    lines.append("    FIELDS.binary_search_by(|(t, f, _)| (*t, *f).cmp(&(ty, field))).ok().map(|i| &FIELDS[i].2)")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main():
    gomod.write_or_check(OUT, render(collect()), "scripts/gen-k8s-schema.py")


if __name__ == "__main__":
    main()
