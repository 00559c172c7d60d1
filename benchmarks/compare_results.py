"""Compare two results folders cell by cell: the same cells, identical rows, identical per-sample lines.

A refactor that should not change behavior is checked by running the same study before and after it into two
folders and comparing them. Cells are matched by id, or with `--by-config` by their resolved configuration less
the fields that only name the code (so a change that adds a code fingerprint to the id can still be compared).

    python benchmarks/compare_results.py /tmp/cmp/before /tmp/cmp/after
    python benchmarks/compare_results.py A B --by-config --ignore-key code

Exit code 0 when the two folders agree, 1 otherwise (each difference is printed, at most 20 of each kind).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path


def _key(record: dict, by_config: bool, ignore: set[str]) -> str:
    if not by_config:
        return record["run_id"]

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in ignore}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    blob = json.dumps(strip(record["config"]), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load(folder: Path, by_config: bool, ignore: set[str]) -> dict[str, tuple[dict, list[str]]]:
    """key -> (cell record, its per-sample lines)."""
    out = {}
    for path in sorted((folder / "cells").glob("*.json")):
        record = json.loads(path.read_text())
        samples = path.with_name(path.stem + ".samples.jsonl")
        lines = samples.read_text().splitlines() if samples.is_file() else []
        out[_key(record, by_config, ignore)] = (record, lines)
    return out


def compare(a: Path, b: Path, by_config: bool = False, ignore: set[str] = frozenset()) -> list[str]:
    """The differences between two results folders, as lines (empty when they agree)."""
    left, right = load(a, by_config, ignore), load(b, by_config, ignore)
    problems = [f"only in {a}: {k} {left[k][0]['run_id']}" for k in sorted(set(left) - set(right))]
    problems += [f"only in {b}: {k} {right[k][0]['run_id']}" for k in sorted(set(right) - set(left))]
    for k in sorted(set(left) & set(right)):
        (ra, sa), (rb, sb) = left[k], right[k]
        label = ra["run_id"] if ra["run_id"] == rb["run_id"] else f"{ra['run_id']}/{rb['run_id']}"
        if ra["status"] != rb["status"]:
            problems.append(f"{label}: status {ra['status']} vs {rb['status']}")
        rows_a = [{c: v for c, v in r.items() if c != "run_id"} for r in ra["rows"]]
        rows_b = [{c: v for c, v in r.items() if c != "run_id"} for r in rb["rows"]]
        if rows_a != rows_b:
            diff = next((x, y) for x, y in zip(rows_a + [None] * len(rows_b), rows_b + [None] * len(rows_a))
                        if x != y)
            problems.append(f"{label}: rows differ ({len(rows_a)} vs {len(rows_b)}); first: {diff[0]} vs {diff[1]}")
        if sa != sb:
            i = next((i for i, (x, y) in enumerate(zip(sa, sb)) if x != y), min(len(sa), len(sb)))
            problems.append(f"{label}: samples differ ({len(sa)} vs {len(sb)} lines; first at line {i + 1})")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--by-config", action="store_true", help="match cells by configuration instead of id")
    ap.add_argument("--ignore-key", action="append", default=[], help="config keys left out with --by-config")
    args = ap.parse_args(argv)
    problems = compare(args.before, args.after, args.by_config, set(args.ignore_key))
    n = len(load(args.before, args.by_config, set(args.ignore_key)))
    kinds: dict[str, int] = {}
    for p in problems:
        kind = p.split(":")[1].split("(")[0].strip() if ":" in p else p
        kinds[kind] = kinds.get(kind, 0) + 1
        if kinds[kind] <= 20:
            print(p)
    print(f"{n} cells in {args.before}: {len(problems)} differences" + (" (identical)" if not problems else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
