"""How the cost-to-threshold comparison depends on the label prices, without re-running a model.

Every cell stores what it spent on labels by kind (`provenance.labels`: demonstrations, contrast pairs, comparisons,
judgments; counts and units). Its feedback cost under other prices is that spending repriced; the
behavior it reached does not change. So each method's behavior-vs-cost curve can be redrawn under any price vector and
its cost to the threshold re-read (`analysis.metrics.cost_to_threshold`, the same interpolation and intervals). The
sensitivity curve scales one label kind's price at a time by `FACTORS` (the others at the study's prices) and reports,
per target and split, each method's cost to threshold and the lowest estimate: an ordering of estimates, not a
winner call (the winner calls and their tests are the headline's, at the study's prices).

A price is per label, in the study's cost units; the factors apply to what each cell was charged for that kind
(`provenance.labels.costs`). Methods that buy a kind the factor scales get dearer; the others do not move.

    rows = price_sensitivity(table, cells, threshold=0.8, ref={"anticipation": 0.5, "noise": 0.0, "misspec": 0.0})
    rows[0]   # {"kind": "demonstrate", "factor": 0.5, "target": ..., "split": "covered", "method": "lora_sft", ...}
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from analysis import metrics as M

KINDS = ("demonstrate", "contrast", "compare", "judge")
FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)


def _costs(cell: dict[str, Any]) -> dict[str, float] | None:
    """Units the cell spent per label kind (`provenance.labels.costs`): counts x the price each label was charged
    (a data-set record's own label may cost less than a written one), so scaling them is repricing."""
    labels = (cell.get("provenance") or {}).get("labels")
    if not isinstance(labels, dict) or not isinstance(labels.get("costs"), dict):
        return None
    return {str(k): float(v) for k, v in labels["costs"].items()}


def repriced(table: pd.DataFrame, cells: dict[str, dict[str, Any]], kind: str, factor: float) -> pd.DataFrame:
    """`table` with each cell's `feedback_cost` recomputed from what it spent per label kind, `kind`'s price times
    `factor`. A cell whose spending was not recorded gets NaN (never a guessed cost)."""
    cost = {}
    for rid, cell in cells.items():
        spent = _costs(cell)
        cost[rid] = math.nan if spent is None else float(
            sum(v * (factor if k == kind else 1.0) for k, v in spent.items()))
    out = table.copy()
    out["feedback_cost"] = out["run_id"].map(cost).astype(float)
    return out


def price_sensitivity(table: pd.DataFrame, cells: dict[str, dict[str, Any]], threshold: float,
                      ref: dict[str, float], factors: tuple[float, ...] = FACTORS) -> list[dict[str, Any]]:
    """One row per (label kind, factor, model, target, split, method) at the reference condition: the cost to
    threshold (`cost`, `lo`, `hi`; inf where not reached), `reached`, `n`, and `lowest` (whether it is the lowest
    estimate among the methods that reached it there)."""
    kinds = [k for k in KINDS if any((_costs(c) or {}).get(k) for c in cells.values())]
    rows: list[dict[str, Any]] = []
    for kind in kinds:
        for factor in factors:
            cost = M.at_reference(M.cost_to_threshold(repriced(table, cells, kind, factor), threshold), ref)
            for (model, target, split), grp in cost.groupby(["model", "target", "split"], sort=True):
                reached = grp[grp["reached"] & np.isfinite(grp["feedback_cost"])]
                best = reached["feedback_cost"].min() if len(reached) else math.nan
                for r in grp.itertuples(index=False):
                    c = float(r.feedback_cost) if r.reached else math.inf
                    rows.append({"kind": kind, "factor": factor, "model": model, "target": target, "split": split,
                                 "method": r.method, "cost": c, "lo": float(r.cost_lo), "hi": float(r.cost_hi),
                                 "reached": bool(r.reached), "n": int(r.n), "lowest": bool(r.reached and c == best)})
    return rows


def price_lines(rows: list[dict[str, Any]], split: str = "covered") -> list[str]:
    """REPORT.md: per model and target, the method with the lowest estimated cost to threshold on `split` at each label
    kind's price factor (its cost in brackets), "-" where no method reached the threshold."""
    if not rows:
        return []
    frame = pd.DataFrame([r for r in rows if r["split"] == split])
    if frame.empty:
        return []
    factors = sorted(frame["factor"].unique())
    lines = ["## Cost to threshold under other label prices", "",
             f"Each cell's feedback cost recomputed from the labels it bought, one label kind's price scaled at a time "
             f"(the others at the study's prices); the method with the lowest estimated cost to threshold on "
             f"{split} contexts, its cost in brackets. An ordering of estimates, not a tested win "
             "(`summary.json` `price_sensitivity` has every method's cost and interval).", ""]
    for (model, target), grp in frame.groupby(["model", "target"], sort=True):
        lines += [f"### {target}" + (f" ({model})" if frame["model"].nunique() > 1 else ""), "",
                  "| label kind | " + " | ".join(f"price x{f:g}" for f in factors) + " |",
                  "| --- " * (len(factors) + 1) + "|"]
        for kind, kg in grp.groupby("kind", sort=False):
            cells = []
            for f in factors:
                low = kg[(kg["factor"] == f) & kg["lowest"]]
                cells.append("-" if low.empty else " / ".join(f"{r.method} ({r.cost:.0f})"
                                                             for r in low.itertuples(index=False)))
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines
