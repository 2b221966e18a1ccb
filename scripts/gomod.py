"""What the generators of upstream-derived tables share (scripts/gen-*.py): fetching a pinned Go
module through the Go module proxy, and writing an output file or checking that regenerating
it changes nothing (`--check`, run by scripts/test.sh)."""

import json
import re
import subprocess
import sys


def module_dir(module, version):
    """The directory of `module@version` in the Go module cache (downloaded if needed)."""
    out = subprocess.run(["go", "mod", "download", "-json", f"{module}@{version}"], check=True, capture_output=True, text=True, cwd="/").stdout
    info = json.loads(out)
    if info.get("Error"):
        sys.exit(f"go mod download {module}@{version}: {info['Error']}")
    return info["Dir"]


def write_or_check(path, text, script):
    """Write `text` to `path`, or with `--check` exit 1 if the file differs from it."""
    if "--check" in sys.argv[1:]:
        with open(path) as f:
            if f.read() != text:
                sys.exit(f"{path} is out of date: run {script}")
        print(f"{path} is up to date")
        return
    with open(path, "w") as f:
        f.write(text)
    print(f"wrote {path}")


MAP_RE = re.compile(r"^var map_(\w+) = map\[string\]string\{\s*$")
ENTRY_RE = re.compile(r'^\s*("(?:[^"\\]|\\.)*")\s*:\s*("(?:[^"\\]|\\.)*"),\s*$')


def go_string(literal):
    """A Go interpreted string literal's value (its escapes are JSON's, bar \\' which Go forbids
    in double quotes and \\x, \\a ... which swagger docs do not use)."""
    try:
        return json.loads(literal)
    except json.JSONDecodeError as e:
        sys.exit(f"cannot read the Go string {literal[:60]}...: {e}")


def read_docs(path):
    """{(Go type, JSON field): description} of one types_swagger_doc_generated.go (the maps its
    types' SwaggerDoc() return)."""
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
