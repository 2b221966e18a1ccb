#!/usr/bin/env python3
"""Generate the Table columns of the built-in kinds (what `kubectl get` and `kubectl get -o wide`
print): crates/control/apiserver/src/k8s_printers.rs.

kube-apiserver answers a `Table` request with the column definitions its printers declare in
k8s.io/kubernetes pkg/printers/internalversion/printers.go (AddHandlers): name, type, format,
priority (1: only with `-o wide`) and a description, which is either a literal or the doc of a
field of an API type (`apiv1.PodSpec{}.SwaggerDoc()["nodeName"]`). This script reads that
function from the pinned module (through the Go module proxy), resolves every description from
the types_swagger_doc_generated.go of the package the printer names (k8s.io/api and
k8s.io/apimachinery at the versions k8s.io/kubernetes v1.32.0 builds with; a key the map lacks
is "", as in Go), maps each column list to the kinds of the printer functions registered with
it, and writes one table sorted by kind. The cells of each row are computed in table.rs.

Usage:
  scripts/gen-k8s-printers.py           # regenerate
  scripts/gen-k8s-printers.py --check   # exit 1 if regenerating would change the file
Needs: go, python3.
"""

import json
import os
import re
import sys

import gomod

KUBERNETES = ("k8s.io/kubernetes", "v1.32.0")  # the version strata reports in /version
MODULES = {"k8s.io/api": "v0.32.0", "k8s.io/apimachinery": "v0.32.0"}  # what v1.32.0 builds with
SOURCE = "pkg/printers/internalversion/printers.go"
DOC_FILE = "types_swagger_doc_generated.go"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates/control/apiserver/src/k8s_printers.rs")

IMPORT_RE = re.compile(r'^\t(\w+) "(k8s\.io/(?:api|apimachinery)/[^"]+)"$')
LIST_START_RE = re.compile(r"^\t(\w+) := \[\]metav1\.TableColumnDefinition\{$")
APPEND_START_RE = re.compile(r"^\t(\w+) = append\((\w+), \[\]metav1\.TableColumnDefinition\{$")
HANDLER_RE = re.compile(r"^\t(?:_ = )?h\.TableHandler\((\w+), (\w+)\)$")
FUNC_RE = re.compile(r"^func (print\w+)\(\w+ \*(\w+)\.(\w+), ")
STRING = r'"(?:[^"\\]|\\.)*"'
COLUMN_RE = re.compile(r"^\t\t\{(.*)\},$")
FIELD_RE = re.compile(r'(Name|Type|Format|Priority|Description): (' + STRING + r'|\d+|[^,{}]+\{\}(?:\.\w+)*\.SwaggerDoc\(\)\[' + STRING + r'\])')
DEFAULT_RE = re.compile(r"rest\.NewDefaultTableConvertor\(\w+\.Resource\(\"(\w+)\"\)\)")
DOC_REF_RE = re.compile(r'^(\w+)\.(\w+)\{\}((?:\.\w+)*)\.SwaggerDoc\(\)\[(' + STRING + r')\]$')


class Printers:
    def __init__(self):
        self.k8s = gomod.module_dir(*KUBERNETES)
        with open(os.path.join(self.k8s, SOURCE)) as f:
            self.lines = f.read().split("\n")
        self.imports = {}
        for line in self.lines:
            m = IMPORT_RE.match(line)
            if m:
                self.imports[m.group(1)] = m.group(2)
        self.docs = {}

    def package_dir(self, alias):
        path = self.imports.get(alias)
        if path is None:
            sys.exit(f"{SOURCE}: a description names package {alias}, which is not an imported k8s.io/api or apimachinery package")
        module = "k8s.io/api" if path.startswith("k8s.io/api/") else "k8s.io/apimachinery"
        return os.path.join(gomod.module_dir(module, MODULES[module]), path[len(module) + 1:])

    def package_docs(self, alias):
        if alias not in self.docs:
            self.docs[alias] = gomod.read_docs(os.path.join(self.package_dir(alias), DOC_FILE))
        return self.docs[alias]

    def field_type(self, alias, go_type, field):
        """The Go type of `go_type`'s field `field` (`Event{}.InvolvedObject` is an ObjectReference)."""
        pattern = re.compile(r"^\t" + field + r"\s+\*?(?:\[\])?(\w+)\b")
        for name in sorted(os.listdir(self.package_dir(alias))):
            if not name.endswith(".go") or name.endswith("_test.go"):
                continue
            inside = False
            with open(os.path.join(self.package_dir(alias), name)) as f:
                for line in f:
                    if line.startswith(f"type {go_type} struct"):
                        inside = True
                    elif inside and line.startswith("}"):
                        inside = False
                    elif inside:
                        m = pattern.match(line)
                        if m:
                            return m.group(1)
        sys.exit(f"{SOURCE}: no field {field} in {alias}.{go_type}")

    def description(self, expr):
        if expr.startswith('"'):
            return gomod.go_string(expr)
        m = DOC_REF_RE.match(expr)
        if not m:
            sys.exit(f"{SOURCE}: cannot read the description {expr}")
        alias, go_type, path, key = m.group(1), m.group(2), m.group(3), gomod.go_string(m.group(4))
        for field in filter(None, path.split(".")):
            go_type = self.field_type(alias, go_type, field)
        if not any(t == go_type for t, _ in self.package_docs(alias)):
            sys.exit(f"{SOURCE}: {alias}.{go_type} has no SwaggerDoc in {DOC_FILE}")
        # A key the map lacks reads as "" in Go (printers.go has a few such).
        return self.package_docs(alias).get((go_type, key), "")

    def column(self, line):
        m = COLUMN_RE.match(line)
        if not m:
            sys.exit(f"{SOURCE}: unexpected line in a column list: {line.strip()}")
        fields = dict(FIELD_RE.findall(m.group(1)))
        if "Name" not in fields or "Type" not in fields:
            sys.exit(f"{SOURCE}: a column without Name or Type: {line.strip()}")
        return {
            "name": gomod.go_string(fields["Name"]),
            "type": gomod.go_string(fields["Type"]),
            "format": gomod.go_string(fields.get("Format", '""')),
            "priority": int(fields.get("Priority", "0")),
            "description": self.description(fields["Description"]) if "Description" in fields else "",
        }

    def collect(self):
        """{kind: [column]} of every printer AddHandlers registers."""
        start = self.lines.index("func AddHandlers(h printers.PrintHandler) {")
        lists, handlers = {}, []
        current = None
        for line in self.lines[start + 1:]:
            if line == "}":
                break
            if current is not None:
                if line in ("\t}", "\t}...)"):
                    current = None
                else:
                    lists[current].append(self.column(line))
                continue
            m = LIST_START_RE.match(line)
            if m:
                current = m.group(1)
                lists[current] = []
                continue
            m = APPEND_START_RE.match(line)
            if m:
                if m.group(1) != m.group(2) or m.group(1) not in lists:
                    sys.exit(f"{SOURCE}: cannot follow {line.strip()}")
                current = m.group(1)
                continue
            m = HANDLER_RE.match(line)
            if m:
                handlers.append((m.group(1), m.group(2)))
        kinds_of = {}
        for line in self.lines:
            m = FUNC_RE.match(line)
            if m:
                kinds_of[m.group(1)] = m.group(3)
        printers = {}
        for var, func in handlers:
            if var not in lists or func not in kinds_of:
                sys.exit(f"{SOURCE}: cannot follow h.TableHandler({var}, {func})")
            kind = kinds_of[func]
            if kind.endswith("List") and func.endswith("List"):
                continue
            if kind in printers and printers[kind] != lists[var]:
                sys.exit(f"{SOURCE}: two printers for kind {kind}")
            printers[kind] = lists[var]
        if "Pod" not in printers or "Lease" not in printers:
            sys.exit(f"{SOURCE}: no Pod or Lease printer: the file's layout changed")
        # A kind whose storage (pkg/registry) converts with the default convertor (Name, Created
        # At) shows that, whatever printer printers.go has for it.
        for plural in self.default_convertors():
            kinds = [k for k in printers if plural_of(k) == plural]
            if not kinds:
                continue
            del printers[kinds[0]]
        return printers

    def default_convertors(self):
        """The resources (plurals) pkg/registry stores with rest.NewDefaultTableConvertor."""
        found = set()
        for d, _, files in os.walk(os.path.join(self.k8s, "pkg/registry")):
            for name in files:
                if name.endswith(".go") and not name.endswith("_test.go"):
                    with open(os.path.join(d, name)) as f:
                        found.update(DEFAULT_RE.findall(f.read()))
        if "roles" not in found:
            sys.exit("pkg/registry: Roles are not stored with the default table convertor: the layout changed")
        return sorted(found)


def plural_of(kind):
    k = kind.lower()
    return k[:-1] + "ies" if k.endswith("y") else k + "es" if k.endswith("s") else k + "s"


def render(printers):
    counts = {}
    for columns in printers.values():
        for c in columns:
            counts[c["description"]] = counts.get(c["description"], 0) + 1
    shared = sorted(d for d, n in counts.items() if n > 1 and len(d) > 40)
    names = {d: f"D{i}" for i, d in enumerate(shared)}
    lines = [
        "// @generated by scripts/gen-k8s-printers.py from " + " ".join(KUBERNETES) + "'s " + SOURCE + " and the",
        "// " + DOC_FILE + " of " + " and ".join(f"{m} {v}" for m, v in sorted(MODULES.items())) + ".",
        "// Do not edit: regenerate (`--check` runs in scripts/test.sh).",
        "//! The Table columns kube-apiserver's printers declare for the built-in kinds: what `kubectl",
        "//! get` prints, with the priority-1 columns only under `-o wide`. table.rs computes the cells.",
        "",
        "/// One column definition of a `meta.k8s.io/v1 Table`.",
        "pub struct Column {",
        "    pub name: &'static str,",
        "    /// `string`, `integer`, `boolean`, `date` ...",
        "    pub ty: &'static str,",
        "    /// `name` for the column that names the object, else empty.",
        "    pub format: &'static str,",
        "    /// 0: printed by default; 1: only with `-o wide`.",
        "    pub priority: u8,",
        "    pub description: &'static str,",
        "}",
        "",
    ]
    for d in shared:
        lines.append(f"const {names[d]}: &str = {json.dumps(d, ensure_ascii=False)};")
    lines += [
        "",
        "/// (kind, columns), sorted by kind.",
        "#[rustfmt::skip]",
        "pub static PRINTERS: &[(&str, &[Column])] = &[",
    ]
    for kind in sorted(printers):
        lines.append(f"    ({json.dumps(kind)}, &[")
        for c in printers[kind]:
            d = names.get(c["description"]) or json.dumps(c["description"], ensure_ascii=False)
            lines.append(
                f"        Column {{ name: {json.dumps(c['name'])}, ty: {json.dumps(c['type'])}, format: {json.dumps(c['format'])}, "
                f"priority: {c['priority']}, description: {d} }},"
            )
        lines.append("    ]),")
    lines += [
        "];",
        "",
        "/// The columns of built-in kind `kind`'s printer, if upstream has one.",
        "pub fn columns(kind: &str) -> Option<&'static [Column]> {",
        "    PRINTERS.binary_search_by(|(k, _)| (*k).cmp(kind)).ok().map(|i| PRINTERS[i].1)",
        "}",
    ]
    return "\n".join(lines) + "\n"


def main():
    gomod.write_or_check(OUT, render(Printers().collect()), "scripts/gen-k8s-printers.py")


if __name__ == "__main__":
    main()
