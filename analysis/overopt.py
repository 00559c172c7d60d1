"""Reward over-optimization (Gao et al. 2023, "Scaling Laws for Reward Model Overoptimization"): the learned reward
against the true one as the policy moves away from the base model.

Every rlhf cell stores, on the same samples, the reward model's score (`learned_reward`) and the target's true reward
(`true_reward`), for test completions (covered, uncovered) and for the RL run's own samples (first and last quarter of
its steps: `rl_first`, `rl_last`), beside KL(policy || base) on neutral prompts (`kl`). Variants of rlhf with other KL
coefficients or run lengths (`rlhf@kl0.05`, `rlhf@steps120` in `full.yaml`) trace the curve: over-optimization reads
as learned reward still rising with KL while the true reward flattens or falls.

    rows = overoptimization(table, ref)     # one row per rlhf-family method and budget at the reference condition
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from analysis import metrics as M

SPLITS = ("covered", "uncovered", "rl_first", "rl_last")


def overoptimization(table: pd.DataFrame, ref: dict[str, float]) -> list[dict[str, Any]]:
    """Per method with reward rows (rlhf and its variants) and budget, at the reference condition: mean KL and the
    mean learned and true reward per split, with n (organisms x seeds), ordered by KL."""
    t = M.at_reference(table, ref)
    runs = t.loc[t["metric"] == "learned_reward", "run_id"].unique()
    if not len(runs):
        return []
    t = t[t["run_id"].isin(runs)]
    out = []
    for (model, target, method, budget), grp in t.groupby(["model", "target", "method", "budget"], sort=True):
        def mean(metric: str, split: str) -> float | None:
            v = grp.loc[(grp["metric"] == metric) & (grp["split"] == split), "value"]
            return float(v.mean()) if len(v) and np.isfinite(v).any() else None

        units = grp[["draw", "seed"]].drop_duplicates() if "draw" in grp else grp[["seed"]].drop_duplicates()
        out.append({"model": model, "target": target, "method": method, "budget": int(budget),
                    "kl": mean("kl", "neutral"), "n": len(units),
                    **{f"{m}_{sp}": mean(m, sp) for m in ("learned_reward", "true_reward") for sp in SPLITS}})
    return sorted(out, key=lambda r: (r["model"], r["target"], r["budget"], r["kl"] if r["kl"] is not None else 0))


def overoptimization_lines(rows: list[dict[str, Any]]) -> list[str]:
    """REPORT.md: per target, learned vs true reward of the rlhf family's policies, ordered by KL; shown only when
    some target has two or more such policies (a curve, not a point)."""
    frame = pd.DataFrame(rows)
    if frame.empty or frame.groupby(["model", "target"]).size().max() < 2:
        return []

    def f(v: Any) -> str:
        return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.3g}"

    lines = ["## Reward over-optimization", "",
             "RL policies (rlhf and its variants) ordered by KL to the base model: the learned reward model's score "
             "beside the true reward on the same samples, on test prompts (covered) and on the RL run's last quarter. "
             "Over-optimization reads as the learned reward rising with KL while the true reward does not.", ""]
    for (model, target), grp in frame.groupby(["model", "target"], sort=True):
        lines += [f"### {target}" + (f" ({model})" if frame["model"].nunique() > 1 else ""), "",
                  "| method | budget | KL (nats/token) | learned reward, covered | true reward, covered | "
                  "learned reward, RL last quarter | true reward, RL last quarter | n |", "| --- " * 8 + "|"]
        for r in grp.itertuples(index=False):
            lines.append(f"| {r.method} | {r.budget} | {f(r.kl)} | {f(r.learned_reward_covered)} | "
                         f"{f(r.true_reward_covered)} | {f(r.learned_reward_rl_last)} | {f(r.true_reward_rl_last)} | "
                         f"{r.n} |")
        lines.append("")
    return lines
