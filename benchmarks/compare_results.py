"""Compare two results.jsonl files record by record, timing and version fields aside.

    python benchmarks/compare_results.py BEFORE/results.jsonl AFTER/results.jsonl
    python benchmarks/compare_results.py BEFORE/results.jsonl AFTER/results.jsonl --ignore cost fit_cost

Prints one JSON object: the number of records on each side, how many are identical, and a list
of differences (record index, cell key, dotted path of the field, both values). Used to check
that a refactoring leaves `robustmm run --quick` metrics unchanged. Exit status 0 when every
record is identical, else 1.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

#: fields that legitimately differ between two runs of the same job: wall-clock seconds (the
#: record's, and a calibration's attack and head-training times) and package versions
IGNORED = {"timing_s", "attack_s", "train_s", "versions"}


#: more field names to leave aside (``--ignore``: e.g. a field one side adds, such as ``cost``)
EXTRA_IGNORED: set[str] = set()


def _ignored(key: str) -> bool:
    return key in IGNORED or key in EXTRA_IGNORED


def diff(a: Any, b: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Every (dotted path, a value, b value) where ``a`` and ``b`` differ, ignored fields aside."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if _ignored(str(k)):
                continue
            out += diff(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{path}.{k}" if path else str(k))
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [(path + ".len", len(a), len(b))]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    return [] if a == b and type(a) is type(b) else [(path, a, b)]


def read(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL file (blank lines skipped)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def compare(before: Path, after: Path, max_diffs: int = 50) -> dict[str, Any]:
    """The comparison summary printed by this script."""
    a, b = read(before), read(after)
    diffs, identical = [], 0
    for i, (x, y) in enumerate(zip(a, b)):
        d = diff(x, y)
        identical += not d
        cell = x.get("extra", {}).get("cell")
        diffs += [{"record": i, "cell": cell, "field": f, "before": u, "after": v} for f, u, v in d]
    return {"before": str(before), "after": str(after), "records_before": len(a), "records_after": len(b),
            "identical": identical, "n_differences": len(diffs), "differences": diffs[:max_diffs]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--max-diffs", type=int, default=50, help="differences listed (all are counted)")
    ap.add_argument("--ignore", nargs="*", default=[], help="more field names to leave aside, at any depth")
    args = ap.parse_args(argv)
    EXTRA_IGNORED.update(args.ignore)
    summary = compare(args.before, args.after, args.max_diffs)
    print(json.dumps(summary, indent=2, default=str))
    same = summary["records_before"] == summary["records_after"] == summary["identical"]
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
