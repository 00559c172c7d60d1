"""Choosing among candidates with labels: the budget rule and judged selection on the select split, for every method.

The budget rule, the same for every trained method and every budget (`split_budget`): a share `select_share` of the
cell's budget is kept for selection when it buys at least `MIN_JUDGMENTS` judgments per candidate; the rest buys the
method's training labels. Candidates (adapter snapshots along one training run, steering settings, ...) are judged on
the same select prompts with each one active (`FitContext.select_score`, charged); the best share of completions
rated good wins, ties going to the earlier candidate (closer to the base model).

    fit_units, select_units = split_budget(ctx.labeler, ctx.budget, share=0.25, candidates=4)
    best, table = select_best(ctx, [(step, intervention), ...])
"""

from __future__ import annotations

import random
from typing import Any

from methods.base import FitContext, Intervention

MIN_JUDGMENTS = 8  # per candidate: below this, selection is noise and the budget goes to training labels instead


def split_budget(labeler: Any, budget: int, share: float, candidates: int) -> tuple[int, int]:
    """(units for training labels, units kept for selection). Selection only when there are several candidates and
    the kept share pays MIN_JUDGMENTS judgments for each."""
    keep = int(round(share * budget)) if candidates > 1 else 0
    if keep < candidates * MIN_JUDGMENTS * labeler.cost("judge"):
        keep = 0
    return budget - keep, keep


def judge(ctx: FitContext, intervention: Intervention | None, units: int, seed: int) -> dict[str, float]:
    """Buy up to `units` judgments of completions sampled with `intervention` active on select prompts (in an order
    that mixes contexts, the same for every candidate). Returns {"good": share rated good (unreadable counts as not
    good), "n": ratings, "labels": units charged}."""
    records = list(ctx.select)
    random.Random(f"{ctx.seed}:select").shuffle(records)
    good = n = spent = 0.0
    for rnd in range(8):
        left = min(units - int(spent), ctx.labeler.account.left)
        if left < ctx.labeler.cost("judge"):
            break
        res = ctx.select_score(intervention, records, n_per_prompt=1, max_labels=left // ctx.labeler.cost("judge"),
                    seed=seed * 1009 + rnd, max_new_tokens=ctx.target.max_new_tokens)
        behavior = res["behavior"] if res["behavior"] == res["behavior"] else 0.0  # nan: nothing readable
        good += behavior * res["fluency"] * res["n"]
        n += res["n"]
        spent += res["labels"]
    return {"good": good / n if n else float("nan"), "n": int(n), "labels": int(spent)}


def select_best(ctx: FitContext, candidates: list[tuple[Any, Intervention]]) -> tuple[int, list[dict]]:
    """Index of the best candidate (key, intervention) by judged share of good completions, spending what is left of
    the budget evenly across candidates; ties go to the earlier one. With one candidate or no budget: the last."""
    left = ctx.labeler.account.left
    k = len(candidates)
    if k == 1 or left < k * MIN_JUDGMENTS * ctx.labeler.cost("judge"):
        return k - 1, []
    table = []
    for i, (key, cand) in enumerate(candidates):
        units = left // k + (1 if i < left % k else 0)
        res = judge(ctx, cand, units, seed=ctx.seed)
        table.append({"candidate": key, **res})
    best = max(range(k), key=lambda i: (table[i]["good"] if table[i]["n"] else -1.0, -i))
    return best, table
