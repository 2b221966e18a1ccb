#!/usr/bin/env python3
"""docs/conformance.md from the JUnit report of a scripts/conformance.sh run.

    scripts/conformance-report.py JUNIT.xml RUN-INFO.txt SKIPS.txt > docs/conformance.md

Every spec whose name carries [Conformance] is listed (every spec the run ran, when its focus is
not about [Conformance]): passed, failed with the first line of its
failure, or skipped with the reason (the skip's own message, the reason of the
scripts/conformance-skips.txt line that matched it, the reason of the
scripts/conformance-unsupported.txt line of a spec this run's SKIP left out, or not selected by
this run's focus).
Nothing in the output is typed by hand but the fixed explanations below."""

import os
import re
import sys
import xml.etree.ElementTree as ET


def spec_name(tc):
    name = tc.get("name", "")
    return re.sub(r"^\[It\] ", "", name)


def first_failure_line(text):
    for line in (text or "").splitlines():
        line = line.strip()
        if not line:
            continue
        line = re.sub(r"^\[(FAILED|PANICKED|TIMEDOUT|INTERRUPTED)\] ", "", line)
        # Some failures print whole objects on one line: the start says what failed.
        return line if len(line) <= 300 else line[:300] + " …"
    return "(no message)"


def load_skips(path):
    skips = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            regex, _, reason = line.partition("\t")
            skips.append((re.compile(regex), reason.strip()))
    return skips


def sig_of(name):
    m = re.match(r"\[(sig-[a-z-]+)\]", name)
    return m.group(1) if m else "other"


def md_cell(text):
    return text.replace("|", "\\|").replace("\n", " ")


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    junit, info_path, skips_path = sys.argv[1:]
    info = {}
    with open(info_path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition(": ")
            info[k] = v
    skips = load_skips(skips_path)
    unsupported_path = os.path.join(os.path.dirname(skips_path), "conformance-unsupported.txt")
    unsupported = load_skips(unsupported_path) if os.path.exists(unsupported_path) else []
    # ginkgo's focus is a Go regular expression; these are Python-compatible.
    focus = re.compile(info["focus"]) if info.get("focus") else None
    skip = re.compile(info["skip"]) if info.get("skip") else None
    # A run whose focus is not about [Conformance] (e.g. a sig's other specs): every spec it ran
    # is listed, and nothing else (the binary's thousands of other specs would drown it).
    beyond = "Conformance" not in info.get("focus", "")
    kind = "e2e" if beyond else "`[Conformance]`"
    root = ET.parse(junit).getroot()
    results = []
    for tc in root.iter("testcase"):
        name = spec_name(tc)
        if beyond:
            if tc.find("skipped") is not None or not name.startswith("[sig-"):
                continue
        elif "[Conformance]" not in name:
            continue
        failure = tc.find("failure")
        if failure is None:
            failure = tc.find("error")
        skipped = tc.find("skipped")
        if failure is not None:
            results.append((name, "failed", first_failure_line(failure.text or failure.get("message", ""))))
        elif skipped is not None:
            message = skipped.get("message", "skipped")
            reason = None
            if message.startswith("skipped - "):
                reason = "skipped by the test: " + first_failure_line(message[len("skipped - "):])
            elif skip is not None and skip.search(name):
                # The file's reason only where this run's SKIP (by default the file) left it out.
                for regex, why in skips:
                    if regex.search(name):
                        reason = "skipped by scripts/conformance-skips.txt: " + why
                        break
            if reason is None and skip is not None and skip.search(name):
                why = next((why for regex, why in unsupported if regex.search(name)), None)
                if why is not None:
                    reason = "not supported by strata, left out by this run's SKIP: " + why
                else:
                    reason = "skipped by this run's SKIP (see the command above)"
            if reason is None and focus is not None and focus.search(name):
                reason = f"not run: the suite reached its time limit ({info.get('suite_timeout', '?')}) first"
            if reason is None:
                reason = "not selected by this run's focus"
            results.append((name, "skipped", reason))
        else:
            results.append((name, "passed", ""))
    results.sort(key=lambda r: (sig_of(r[0]), r[0]))

    ran = [r for r in results if r[1] != "skipped" or not r[2].startswith("not selected")]
    passed = sum(1 for r in results if r[1] == "passed")
    failed = sum(1 for r in results if r[1] == "failed")
    skipped = sum(1 for r in ran if r[1] == "skipped")
    out = []
    w = out.append
    w("# Upstream Kubernetes conformance against strata")
    w("")
    w("Generated by `scripts/conformance-report.py` from the JUnit report of `scripts/conformance.sh`")
    w("(do not edit by hand: rerun the script). The script builds upstream's e2e test binary from the")
    w("Go module proxy, builds the test images locally, pushes them to a local `docker-registry`, starts")
    w("`strata server` with its node agent and runs the `[Conformance]` specs against it.")
    w("")
    w("## This run")
    w("")
    w(f"- Command: `{info.get('command', '?')}`")
    w(f"- Date: {info.get('date', '?')}; strata commit {info.get('strata', '?')}; server reports {info.get('server_version', '?')}")
    w(f"- e2e.test: k8s.io/kubernetes {info.get('kube_version', '?')} (staging modules at the matching v0.x), ginkgo focus above")
    if "e2e_build" in info:
        w(f"- Build of the cached e2e.test (its build-time.txt): {info['e2e_build']}")
    w(f"- Run time: {info.get('duration_seconds', '?')} s")
    if "note" in info:
        # What happened to the run by hand (a `note:` line added to run-info.txt).
        w(f"- Note: {info['note']}")
    w("")
    w(f"**{passed} passed, {failed} failed, {skipped} skipped** of the {len(ran)} {kind} specs this run selected")
    if beyond:
        w("(every spec this run ran is listed; specs it selected but did not reach are not).")
    else:
        w(f"({len(results)} `[Conformance]` specs in the binary).")
    w("")
    w("| sig | passed | failed | skipped |")
    w("| --- | ---: | ---: | ---: |")
    sigs = sorted({sig_of(r[0]) for r in ran})
    for s in sigs:
        rs = [r for r in ran if sig_of(r[0]) == s]
        w(f"| {s} | {sum(1 for r in rs if r[1] == 'passed')} | {sum(1 for r in rs if r[1] == 'failed')} | {sum(1 for r in rs if r[1] == 'skipped')} |")
    w("")
    w("## Skipped on purpose (scripts/conformance-skips.txt)")
    w("")
    if skips:
        for regex, why in skips:
            w(f"- `{md_cell(regex.pattern)}`: {why}")
    else:
        w("- none")
    w("")
    if unsupported:
        w("## Not supported by strata (scripts/conformance-unsupported.txt)")
        w("")
        w("Specs of features strata does not have; a run may leave them out with its SKIP.")
        w("")
        for regex, why in unsupported:
            w(f"- `{md_cell(regex.pattern)}`: {why}")
        w("")
    w("## Per spec")
    w("")
    for s in sigs:
        w(f"### {s}")
        w("")
        w("| spec | result | first line of the failure / why skipped |")
        w("| --- | --- | --- |")
        for name, state, why in results:
            if sig_of(name) != s or (state == "skipped" and why.startswith("not selected")):
                continue
            w(f"| {md_cell(name)} | {state} | {md_cell(why)} |")
        w("")
    not_run = [r for r in results if r[1] == "skipped" and r[2].startswith("not selected")]
    if not_run:
        w("## Not selected by this run's focus")
        w("")
        w(f"{len(not_run)} specs: " + ", ".join(sorted({sig_of(r[0]) for r in not_run})) + ".")
        w("")
    sys.stdout.write("\n".join(out))


if __name__ == "__main__":
    main()
