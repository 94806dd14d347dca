"""Per-module mutation scores from mutmut's results in mutants/ (run `make mutation` first).

score = killed / (total - equivalent - not run). Mutants judged equivalent (no test can tell them
from the original) are listed with their reason in tools/mutation_equivalent.json, keyed by the
function and the changed lines of `mutmut show NAME`, not by the mutant's number, which shifts
when the function is edited; an entry that no longer matches a surviving mutant is reported as
stale.

    python tools/mutation_report.py             # the table, then every survivor with its verdict
    python tools/mutation_report.py --check 90  # exit 1 when a module scores under 90%
    mutmut run $(python tools/mutation_report.py --survivors)  # re-test the open survivors
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EQUIVALENT_FILE = REPO / "tools" / "mutation_equivalent.json"
COLUMNS = ("killed", "survived", "timeout", "no tests", "not checked", "other")


def status_of(exit_code: int | None) -> str:
    from mutmut.stats import status_by_exit_code

    status = status_by_exit_code[exit_code]
    return status if status in COLUMNS else "other"


def changed_lines(mutant: str, path: str) -> list[str]:
    """The '-' and '+' lines of `mutmut show MUTANT`, whitespace after the sign removed."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    diff = get_diff_for_mutant(mutant, path=path).splitlines()[2:]  # past the ---/+++ header
    return [line[0] + line[1:].strip() for line in diff if line[:1] in "+-"]


def function_of(mutant: str) -> str:
    return mutant.partition("__mutmut_")[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", type=float, metavar="PERCENT",
                        help="exit 1 when a module's score is under PERCENT")
    parser.add_argument("--survivors", action="store_true",
                        help="print only the names of the survivors without a verdict")
    args = parser.parse_args(argv)
    os.chdir(REPO)  # mutmut reads pyproject.toml and mutants/ from the current folder
    modules = tomllib.loads(Path("pyproject.toml").read_text())["tool"]["mutmut"]["only_mutate"]
    equivalents = json.loads(EQUIVALENT_FILE.read_text()) if EQUIVALENT_FILE.exists() else []
    used = [False] * len(equivalents)

    rows, survivors = [], []
    for path in modules:
        meta = Path("mutants") / (path + ".meta")
        if not meta.exists():
            rows.append((path, None))
            continue
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        counts = Counter(status_of(code) for code in codes.values())
        counts["equivalent"] = 0
        for mutant in sorted(name for name, code in codes.items() if status_of(code) == "survived"):
            change = changed_lines(mutant, path)
            verdict = None
            for i, entry in enumerate(equivalents):
                if entry["function"] == function_of(mutant) and entry["change"] == change:
                    verdict, used[i] = "equivalent: " + entry["reason"], True
                    break
            counts["equivalent"] += verdict is not None
            survivors.append((mutant, change, verdict or "SURVIVED (no verdict yet)"))
        counts["total"] = len(codes)
        rows.append((path, counts))

    if args.survivors:
        print(" ".join(m for m, _, verdict in survivors if not verdict.startswith("equivalent")))
        return 0
    print("| module | mutants | killed | survived | equivalent | timeout | no tests | not run "
          "| score |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    failing = []
    for path, c in rows:
        if c is None:
            print(f"| `{path}` | not run | | | | | | | |")
            failing.append(path)
            continue
        scored = c["total"] - c["equivalent"] - c["not checked"]  # a subset run: score what ran
        score = 100.0 * c["killed"] / scored if scored else 100.0
        if args.check is not None and score < args.check:
            failing.append(path)
        print(f"| `{path}` | {c['total']} | {c['killed']} | {c['survived'] - c['equivalent']} | "
              f"{c['equivalent']} | {c['timeout']} | {c['no tests']} | {c['not checked']} | "
              f"{score:.1f}% |")
    print("\nsurvived = survivors not judged equivalent; score = killed / (mutants - equivalent - "
          "not run); `not run` > 0 means only a subset of the module's mutants was run")

    if survivors:
        print("\nSurviving mutants:")
        for mutant, change, verdict in survivors:
            print(f"- `{mutant}` {' / '.join(f'`{line}`' for line in change)}: {verdict}")
    stale = [e for e, u in zip(equivalents, used) if not u]
    for entry in stale:
        print(f"stale entry in {EQUIVALENT_FILE.name} (matches no survivor): {entry['function']} "
              f"{entry['change']}", file=sys.stderr)
    if args.check is not None and failing:
        print(f"under {args.check:g}% or not fully run: {', '.join(failing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
