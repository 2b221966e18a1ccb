"""What the generators of upstream-derived tables share (scripts/gen-*.py): fetching a pinned Go
module through the Go module proxy, and writing an output file or checking that regenerating
it changes nothing (`--check`, run by scripts/test.sh)."""

import json
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
