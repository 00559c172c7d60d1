"""Do the organism's targets measure what their names say? The acceptance table of each target, per organism draw.

Read from a results store (no model is run): for each target and organism draw,

- `base min/max`: the base model's (`none` cells) desired rate per context, pooled over the draw's clean-labeler
  `none` cells (seeds and anticipation levels; weighted by samples), lowest and highest over all contexts the store
  evaluated (covered and held-out; refusal and sycophancy: the joint rate), among contexts with at least
  `--min-samples` samples (a covered context is tested only at the anticipation levels that cover it; `base_samples`
  has every context's count). Each sample counts once: a held-out context's samples are the same at every level
  (same prompts, same sampling stream), and the `none` cells under a noisy or misspecified labeler repeat the clean
  one's, so those are not pooled again. Wanted: 0.25-0.65 everywhere. `bench_world.py --study NAME` gives the exact
  rates.
- `instr`: instruction-only prompting (`prompting` at budget 0) on covered / held-out contexts. Wanted: at least 0.2
  below the threshold.
- `top gains`: at the largest budget of the clean-labeler centre condition, each labeled method's covered gain over
  `none` (same draw, seed and anticipation); wanted: at least two methods >= +0.25.
- `domain share`: the best method's (largest covered gain) held-out gain among samples whose decision word is a
  domain's own word (`behavior_domain`), as a share of its covered gain. Wanted: 20%-80%.

    python benchmarks/bench_targets.py results/default            # prints the table, writes results/targets.json
    python benchmarks/bench_targets.py results/default --output benchmarks/results/targets.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.table import read_results  # noqa: E402

UNLABELED = ("none", "prompting")


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return sum(xs) / len(xs) if xs else math.nan


def _cfg(cell: dict) -> dict:
    c = cell["config"]
    return {"method": c["method"]["name"], "target": c["target"]["name"], "budget": c.get("budget", 0),
            "anticipation": c.get("anticipation"), "seed": c.get("seed"), "draw": c.get("draw", 0) or 0,
            "coverage": c.get("coverage", "anticipation"), "noise": c.get("labeler", {}).get("noise", 0.0),
            "misspec": c.get("labeler", {}).get("misspec", 0.0)}


def _uncovered_contexts(samples: Path) -> set[str]:
    """The contexts a cell tested as held-out (from its samples file; empty if it has none)."""
    out: set[str] = set()
    try:
        with samples.open() as f:
            for line in f:
                s = json.loads(line)
                if s.get("split") == "uncovered":
                    out.add(s["context"])
    except (OSError, ValueError, KeyError):
        pass
    return out


def acceptance(results_dir: str | Path, threshold: float = 0.8, min_samples: int = 100) -> list[dict]:
    res = read_results(results_dir)
    rows_of: dict[str, dict[tuple[str, str], float]] = defaultdict(dict)
    for r in res.table.itertuples(index=False):
        rows_of[r.run_id][(r.split, r.metric)] = r.value
    cells = []
    for rid, cell in res.cells.items():
        info = _cfg(cell)
        if info["coverage"] != "anticipation" or info["noise"] or info["misspec"]:
            continue  # the clean-labeler cells (a `none` cell under another labeler repeats the clean one's samples)
        contexts = {}
        path = res.cells_dir / f"{rid}.json"
        try:
            contexts = json.loads(path.read_text()).get("contexts") or {}
        except (OSError, ValueError):
            pass
        cells.append({**info, "run_id": rid, "rows": rows_of[rid], "contexts": contexts})
    out = []
    for (target, draw) in sorted({(c["target"], c["draw"]) for c in cells}):
        mine = [c for c in cells if c["target"] == target and c["draw"] == draw]
        base = [c for c in mine if c["method"] == "none"]
        per_ctx: dict[str, list[tuple[float, int]]] = defaultdict(list)
        held_seen: set[tuple] = set()
        for c in sorted(base, key=lambda c: (c["seed"], c["anticipation"])):
            held = _uncovered_contexts(res.cells_dir / f"{c['run_id']}.samples.jsonl")
            for ctx, metrics in c["contexts"].items():
                if ctx in held:  # the same prompts and sampling stream at every anticipation: count them once
                    if (c["seed"], ctx) in held_seen:
                        continue
                    held_seen.add((c["seed"], ctx))
                v = metrics.get("behavior")
                if isinstance(v, list) and v[0] is not None and not math.isnan(v[0]) and v[1]:
                    per_ctx[ctx].append((v[0], v[1]))
        ctx_n = {k: sum(n for _, n in v) for k, v in per_ctx.items()}
        all_means = {k: sum(x * n for x, n in v) / sum(n for _, n in v) for k, v in per_ctx.items() if v}
        ctx_means = {k: m for k, m in all_means.items() if ctx_n[k] >= min_samples}
        instr = [c for c in mine if c["method"] == "prompting" and c["budget"] == 0]
        base_by = {(c["seed"], c["anticipation"]): c["rows"] for c in base}
        labeled = [c for c in mine if c["method"] not in UNLABELED]
        top = max((c["budget"] for c in labeled), default=None)
        gains: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for c in labeled:
            if c["budget"] != top or (c["seed"], c["anticipation"]) not in base_by:
                continue
            b = base_by[(c["seed"], c["anticipation"])]
            for key, split, metric in (("covered", "covered", "behavior"), ("uncovered", "uncovered", "behavior"),
                                       ("domain", "uncovered", "behavior_domain")):
                m, z = c["rows"].get((split, metric)), b.get((split, metric))
                if m is not None and z is not None:
                    gains[c["method"]][key].append(m - z)
        gain = {m: {k: _mean(v) for k, v in g.items()} for m, g in gains.items()}
        best = max(gain, key=lambda m: gain[m].get("covered", -1), default=None)
        share = (gain[best].get("domain", math.nan) / gain[best]["covered"]
                 if best and gain[best].get("covered", 0) > 0 else math.nan)
        out.append({
            "target": target, "draw": draw, "base_cells": len(base),
            "base_min": min(ctx_means.values(), default=math.nan), "base_max": max(ctx_means.values(), default=math.nan),
            "base_contexts": all_means, "base_samples": ctx_n, "base_contexts_judged": len(ctx_means),
            "instr_covered": _mean([c["rows"].get(("covered", "behavior")) for c in instr]),
            "instr_uncovered": _mean([c["rows"].get(("uncovered", "behavior")) for c in instr]),
            "top_budget": top, "gains": gain, "best": best, "domain_share": share,
            "ok": {
                "base_in_range": bool(ctx_means) and all(0.25 <= v <= 0.65 for v in ctx_means.values()),
                "instr_below": bool(instr) and max(_mean([c["rows"].get((s, "behavior")) for c in instr])
                                                   for s in ("covered", "uncovered")) <= threshold - 0.2,
                "two_gain": sum(g.get("covered", 0) >= 0.25 for g in gain.values()) >= 2,
                "domain_share": 0.2 <= share <= 0.8 if not math.isnan(share) else False},
        })
    return out


def show(table: list[dict]) -> str:
    lines = [f"{'target':<11}{'draw':>5}{'base min':>10}{'base max':>10}{'instr cov':>11}{'instr held':>11}"
             f"{'budget':>8}  gains on covered (>= +0.25)            best   domain share  ok"]
    for r in table:
        g = " ".join(f"{m}:{v.get('covered', math.nan):+.2f}" for m, v in sorted(r["gains"].items()))
        ok = "".join("y" if v else "n" for v in r["ok"].values())
        lines.append(f"{r['target']:<11}{r['draw']:>5}{r['base_min']:>10.2f}{r['base_max']:>10.2f}"
                     f"{r['instr_covered']:>11.2f}{r['instr_uncovered']:>11.2f}{str(r['top_budget']):>8}  "
                     f"{g:<40} {str(r['best']):<16}{r['domain_share']:>6.0%}  {ok}")
    lines.append("ok columns: base rate 0.25-0.65 in every context, instruction-only <= threshold - 0.2, two methods "
                 "gain >= 0.25 on covered, best method's held-out domain-word gain 20-80% of its covered gain")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results")
    p.add_argument("--threshold", type=float, default=0.8)
    p.add_argument("--min-samples", type=int, default=100, help="judge base rates on contexts with this many")
    p.add_argument("--output", default=None)
    a = p.parse_args()
    table = acceptance(a.results, a.threshold, a.min_samples)
    print(show(table))
    out = Path(a.output or Path(a.results) / "targets.json")
    out.write_text(json.dumps({"command": "python " + " ".join(sys.argv), "threshold": a.threshold,
                               "min_samples": a.min_samples,
                               "table": table}, indent=1, default=str))


if __name__ == "__main__":
    main()
