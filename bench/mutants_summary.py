#!/usr/bin/env python3
"""Summarise a `cargo mutants` run (mutants.out/) into bench/results/mutants.md.

`make mutants` runs it after cargo-mutants; the summary is committed so that a
reviewer sees which mutants survive (each one is a missing test or dead code)
and how long the run takes, without running it.
"""
import json
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else "mutants.out")
DEST = Path(sys.argv[2] if len(sys.argv) > 2 else "bench/results/mutants.md")
SECONDS = sys.argv[3] if len(sys.argv) > 3 else None
# The commit the run started at (`+changes`: with uncommitted changes in src/).
AT = sys.argv[4] if len(sys.argv) > 4 else None


def lines(name):
    path = OUT / name
    return [l for l in path.read_text().splitlines() if l.strip()] if path.exists() else []


def main():
    outcomes = json.loads((OUT / "outcomes.json").read_text())
    caught, missed = lines("caught.txt"), lines("missed.txt")
    timeout, unviable = lines("timeout.txt"), lines("unviable.txt")
    total = outcomes.get("total_mutants", len(caught) + len(missed) + len(timeout) + len(unviable))
    baseline = [o for o in outcomes.get("outcomes", []) if o.get("scenario") == "Baseline"]
    if baseline and baseline[0].get("summary") not in ("Success", None):
        sys.exit(f"baseline failed: {baseline[0].get('summary')}: fix the tests first")
    commit = AT or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    runtime = f"{int(SECONDS) // 60} min {int(SECONDS) % 60} s" if SECONDS else "unknown"
    out = [
        "# cargo-mutants: src/llm and src/gateway",
        "",
        f"Run by `make mutants` on {time.strftime('%Y-%m-%d')} at {commit},"
        " against the unit tests and the golden tests (`cargo test --lib --test golden`), one job on the"
        f" 2-core CI machine. Wall time: **{runtime}**, so it is not part of `.ci/run`.",
        "",
        "| mutants | caught | missed | timeout | unviable |",
        "|---|---|---|---|---|",
        f"| {total} | {len(caught)} | {len(missed)} | {len(timeout)} | {len(unviable)} |",
        "",
        "A missed mutant is a change to the code that no test notices: each one is a missing test or dead code.",
        "Unviable mutants do not compile (nothing to test).",
        "",
        "## Missed",
        "",
    ]
    out += [f"- `{m}`" for m in missed] or ["None."]
    out += ["", "## Timed out", ""]
    out += [f"- `{m}`" for m in timeout] or ["None."]
    out.append("")
    DEST.parent.mkdir(parents=True, exist_ok=True)
    DEST.write_text("\n".join(out))
    print("\n".join(out[6:9]))
    print(f"summary written to {DEST}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
