#!/usr/bin/env python3
"""Generate the descriptions `kubectl explain` shows: of the meta/v1 types and of every message in
the API server's generated message table (crates/control/apiserver/src/k8s_messages.rs).

`kubectl explain` prints a field's description from the OpenAPI schema the server publishes.
Upstream's descriptions are the Go doc comments of the API types. This script fetches the pinned
modules through the Go module proxy and writes crates/control/apiserver/src/k8s_docs.rs: one
sorted table of (message, JSON field or "", description), from
  - k8s.io/kubernetes v1.32.0's api/openapi-spec/swagger.json (what kube-apiserver v1.32.0, the
    version strata reports in /version, publishes) for every message of k8s_messages.rs's
    MESSAGES, keyed by the table's own name (`Event@events.v1` for a Go type name another
    package also has; run gen-k8s-messages.py first);
  - k8s.io/api v0.37.0's types_swagger_doc_generated.go (gen-k8s-messages.py's pin) for the
    fields and messages of later versions that v1.32.0 does not have;
  - k8s.io/apimachinery v0.32.0's pkg/apis/meta/v1/types_swagger_doc_generated.go for every meta/v1
    type (TypeMeta, PartialObjectMetadata, ... which the OpenAPI builder and custom kinds'
    schemas describe, and which swagger.json does not all carry).

Usage:
  scripts/gen-k8s-docs.py           # regenerate
  scripts/gen-k8s-docs.py --check   # exit 1 if regenerating would change the file
Needs: go, python3.
"""

import json
import os
import re
import sys

import gomod

APIMACHINERY = ("k8s.io/apimachinery", "v0.32.0")  # the Kubernetes v1.32.0 API strata reports in /version
KUBERNETES = ("k8s.io/kubernetes", "v1.32.0")
SWAGGER = "api/openapi-spec/swagger.json"
API_LATER = ("k8s.io/api", "v0.37.0")  # gen-k8s-messages.py's pin: descriptions of what v1.32 lacks
DOC_FILE = "types_swagger_doc_generated.go"
SOURCE = "pkg/apis/meta/v1/" + DOC_FILE
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates/control/apiserver/src/k8s_docs.rs")
MESSAGES = os.path.join(ROOT, "crates/control/apiserver/src/k8s_messages.rs")
META_PACKAGE = "io.k8s.apimachinery.pkg.apis.meta.v1"
ROW_RE = re.compile(r'^    \("([^"]+)", "([^"]+)", &\[')

MAP_RE = re.compile(r"^var map_(\w+) = map\[string\]string\{\s*$")
ENTRY_RE = re.compile(r'^\s*("(?:[^"\\]|\\.)*")\s*:\s*("(?:[^"\\]|\\.)*"),\s*$')


def go_string(literal):
    """A Go interpreted string literal's value (its escapes are JSON's, bar \\' which Go forbids
    in double quotes and \\x, \\a ... which swagger docs do not use)."""
    try:
        return json.loads(literal)
    except json.JSONDecodeError as e:
        sys.exit(f"{SOURCE}: cannot read the Go string {literal[:60]}...: {e}")


def read_docs(path):
    """{(Go type, JSON field): description} of one types_swagger_doc_generated.go."""
    docs = {}
    current = None
    with open(path) as f:
        for line in f:
            m = MAP_RE.match(line)
            if m:
                current = m.group(1)
                continue
            if current is None:
                continue
            if line.strip() == "}":
                current = None
                continue
            e = ENTRY_RE.match(line)
            if not e:
                sys.exit(f"{path}: unexpected line in map_{current}: {line.rstrip()}")
            docs[(current, go_string(e.group(1)))] = go_string(e.group(2))
    return docs


def later_docs(package, cache):
    """k8s.io/api v0.37.0's docs of an `io.k8s.api.` package ({} for other packages)."""
    if not package.startswith("io.k8s.api."):
        return {}
    if package not in cache:
        path = os.path.join(gomod.module_dir(*API_LATER), package[len("io.k8s.api."):].replace(".", "/"), DOC_FILE)
        cache[package] = read_docs(path) if os.path.exists(path) else {}
    return cache[package]


def messages():
    """(table name, OpenAPI package) of every message of k8s_messages.rs."""
    rows = []
    with open(MESSAGES) as f:
        for line in f:
            m = ROW_RE.match(line)
            if m:
                rows.append((m.group(1), m.group(2)))
    if ("ObjectMeta", META_PACKAGE) not in rows:
        sys.exit(f"{MESSAGES}: no ObjectMeta message: run scripts/gen-k8s-messages.py first")
    return rows


def collect():
    docs = read_docs(os.path.join(gomod.module_dir(*APIMACHINERY), SOURCE))
    if ("ObjectMeta", "creationTimestamp") not in docs:
        sys.exit(f"{SOURCE}: no ObjectMeta.creationTimestamp: the file's layout changed")
    with open(os.path.join(gomod.module_dir(*KUBERNETES), SWAGGER)) as f:
        definitions = json.load(f)["definitions"]
    cache = {}
    for name, package in messages():
        go_type = name.split("@")[0]
        entries = {(name, field): text for (t, field), text in later_docs(package, cache).items() if t == go_type and text}
        d = definitions.get(f"{package}.{go_type}", {})
        if d.get("description"):
            entries[(name, "")] = d["description"]
        for field, prop in d.get("properties", {}).items():
            if prop.get("description"):
                entries[(name, field)] = prop["description"]
        if not entries and package != META_PACKAGE:
            sys.exit(f"{package}.{go_type}: no description in {SWAGGER} or k8s.io/api {API_LATER[1]}")
        docs.update(entries)
    return docs


def render(docs):
    lines = [
        "// @generated by scripts/gen-k8s-docs.py from " + " ".join(KUBERNETES) + "'s " + SWAGGER + ", "
        + " ".join(API_LATER) + "'s and " + " ".join(APIMACHINERY) + "'s " + DOC_FILE + ".",
        "// Do not edit: regenerate (`--check` runs in scripts/test.sh).",
        "//! Upstream's descriptions of the meta/v1 types and of every message of [`crate::k8s_messages`] and",
        "//! their fields (what `kubectl explain` shows), keyed by the message table's name and JSON field",
        "//! name (\"\" for the type itself).",
        "",
        "/// (type, field, description), sorted by type then field.",
        "#[rustfmt::skip]",
        "pub static DOCS: &[(&str, &str, &str)] = &[",
    ]
    for (t, field) in sorted(docs):
        lines.append(f"    ({json.dumps(t)}, {json.dumps(field)}, {json.dumps(docs[(t, field)], ensure_ascii=False)}),")
    lines.append("];")
    lines.append("")
    lines.append("/// Upstream's description of field `field` of type `ty` (`\"\"`: of the type).")
    lines.append("pub fn doc(ty: &str, field: &str) -> Option<&'static str> {")
    lines.append("    DOCS.binary_search_by(|(t, f, _)| (*t, *f).cmp(&(ty, field))).ok().map(|i| DOCS[i].2)")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main():
    gomod.write_or_check(OUT, render(collect()), "scripts/gen-k8s-docs.py")


if __name__ == "__main__":
    main()
