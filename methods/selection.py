"""Choosing among candidates with labels, the same rule for every method: the budget split and judged selection on the
select split by successive halving.

**The budget rule** (`split_budget`), the same for every method that selects and every budget: a share of the cell's
budget (`SELECT_SHARE` by default: steering's `1 - contrast_share`, the trained methods' `select_share`) is kept for
judged selection; the rest buys the method's training labels (contrast pairs, demonstrations, comparisons). The share
is kept only when it pays what successive halving needs to judge every candidate at least once
(`min_selection_units`); otherwise everything buys training labels and the last (or the screen's first) candidate
stands. Training labels that the units cannot buy (a demonstration costs 4) go to selection too.

**Judged selection** (`successive_halving`): candidates, in order of preference (the steering screen's ranking, or
adapter snapshots from the last, the label-free default), are judged in rounds on fresh select prompts shared by all
survivors (a paired comparison: one sampled completion per prompt, one judgment each), the better half surviving each
round; the last round's contestants are judged on until the units are spent. Score: `behavior - DISFLUENCY_PENALTY *
(1 - fluency)`, plus whatever a method adds (steering: a KL and a fluency cost); ties go to the preferred candidate.
Judgments the labeler answers from its cache cost nothing and roll over.

    fit_units, select_units = split_budget(ctx.labeler, ctx.budget, share=SELECT_SHARE, candidates=4)
    best, table = select_best(ctx, [(step, intervention), ...], units=select_units)
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

from methods.base import FitContext, Intervention
from study.feedback.labeler import BudgetExhausted

SELECT_SHARE = 0.25  # of a cell's budget, kept for judged selection by every method that selects
DISFLUENCY_PENALTY = 2.0  # weight of (1 - fluency) in every judged score


def halving_rounds(candidates: int) -> int:
    return max(1, math.ceil(math.log2(max(1, candidates))))


def min_selection_units(labeler: Any, candidates: int) -> int:
    """What successive halving needs to judge each of `candidates` once in its first round."""
    return halving_rounds(candidates) * candidates * labeler.cost("judge")


def split_budget(labeler: Any, budget: int, share: float, candidates: int) -> tuple[int, int]:
    """(units for training labels, units kept for selection): `share` of the budget when there are several candidates
    and it pays `min_selection_units`; else (budget, 0)."""
    keep = int(round(share * budget)) if candidates > 1 else 0
    if keep < min_selection_units(labeler, candidates):
        keep = 0
    return budget - keep, keep


def judged_summary(s: dict[str, float], penalty: float = DISFLUENCY_PENALTY) -> dict[str, float]:
    """Pooled judgments {behavior_sum, readable, n, labels} -> {score, behavior, fluency, labels, n}."""
    behavior = s["behavior_sum"] / s["readable"] if s["readable"] else 0.0
    fluency = s["readable"] / s["n"] if s["n"] else 0.0
    return {"score": round(behavior - penalty * (1.0 - fluency), 4), "behavior": round(behavior, 4),
            "fluency": round(fluency, 4), "labels": int(s["labels"]), "n": int(s["n"])}


def successive_halving(ctx: FitContext, candidates: Sequence[Any], build: Callable[[Any], Intervention], units: int,
                       summary: Callable[[Any, dict[str, float]], dict[str, float]] | None = None,
                       measure: Callable[[Intervention, list, int], dict[str, float]] | None = None,
                       salt: str = "select", max_extra_rounds: int = 8
                       ) -> tuple[dict[Any, dict[str, float]], list[Any]]:
    """Judge `candidates` (keys, best-first by prior preference) on select prompts, spending `units`.

    Each round gives the survivors the same fresh prompts and keeps the better half by `summary(key, stats)["score"]`
    (default `judged_summary`); ties go to the earlier candidate. The last round's contestants are judged again on
    fresh prompts while units are left (what the labeler's cache saved rolls over; at most `max_extra_rounds` more,
    and none once a round charges nothing), so the selection spends what it was given. `build(key)` makes the
    intervention judged; `measure(intervention, records, round)` may add label-free sums pooled per judgment (e.g.
    {"kl_sum": ...}). Returns each judged candidate's summary and the survivors, best first ([] if nothing was
    judged)."""
    summary = summary or (lambda key, s: judged_summary(s))
    records = list(ctx.select)
    random.Random(f"{ctx.seed}:{salt}").shuffle(records)
    alive = list(candidates)
    order = {c: i for i, c in enumerate(alive)}
    rounds, cost = halving_rounds(len(alive)), ctx.labeler.cost("judge")
    stats: dict[Any, dict[str, float]] = {}
    start, cursor, r = ctx.labeler.account.spent, 0, 0
    survivors: list[Any] = []
    while records and r < rounds + max_extra_rounds:
        last = r >= rounds - 1
        left = min(ctx.labeler.account.left, units - (ctx.labeler.account.spent - start)) // cost
        if last:  # the final contestants share what is left, the first ones one judgment more
            quota = [left // len(alive) + (1 if i < left % len(alive) else 0) for i in range(len(alive))]
        else:
            quota = [left // ((rounds - r) * len(alive))] * len(alive)
        if max(quota) < 1 or any(q < 1 and c not in stats for c, q in zip(alive, quota)):
            break  # nothing to buy, or some contestant would go unjudged: no comparison to make
        chunk = [records[(cursor + i) % len(records)] for i in range(max(quota))]
        cursor += max(quota)
        charged = 0
        for cand, q in zip(alive, quota):
            if q < 1:
                continue
            iv = build(cand)
            try:
                res = ctx.select_score(iv, chunk[:q], seed=ctx.seed * 1009 + r)
            except BudgetExhausted:
                continue
            s = stats.setdefault(cand, {"behavior_sum": 0.0, "readable": 0, "n": 0, "labels": 0})
            readable = round(res["fluency"] * res["n"])
            if readable:
                s["behavior_sum"] += res["behavior"] * readable
            s["readable"] += readable
            s["n"] += res["n"]
            s["labels"] += res["labels"]
            charged += res["labels"]
            for k, v in (measure(iv, chunk[:q], r) if measure else {}).items():
                s[k] = s.get(k, 0.0) + v * res["n"]
        r += 1
        scored = {c: summary(c, stats[c])["score"] for c in alive if c in stats}
        if not scored:
            break
        survivors = sorted(scored, key=lambda c: (-scored[c], order[c]))
        if not last:
            alive = survivors[: max(1, math.ceil(len(survivors) / 2))]
        elif charged == 0:
            break
    return {c: summary(c, s) for c, s in stats.items()}, survivors


def select_best(ctx: FitContext, candidates: list[tuple[Any, Intervention]],
                units: int | None = None) -> tuple[int, list[dict]]:
    """Index of the best candidate (key, intervention) by successive halving, spending at most `units` (default: what
    is left of the account), and the table of what each judged candidate scored. The candidates are snapshots along
    one run, earliest first; the last is the label-free default, so it is preferred on ties (a few judgments tie
    often, and a tie says nothing for stopping early). With one candidate, or too few units to judge each once: the
    last."""
    left = ctx.labeler.account.left if units is None else min(units, ctx.labeler.account.left)
    k = len(candidates)
    if k == 1 or left < min_selection_units(ctx.labeler, k):
        return k - 1, []
    judged, survivors = successive_halving(ctx, list(reversed(range(k))), lambda i: candidates[i][1], left)
    table = [{"candidate": candidates[i][0], **judged[i]} for i in range(k) if i in judged]
    return (survivors[0] if survivors else k - 1), table
