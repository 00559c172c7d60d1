"""Judging candidates on prompts: completions sampled with an intervention, rated by the labeler for a price.

The one way any method scores a candidate on the `select` split (`FitContext.select_score` binds it to a cell). Every
judgment is charged to the cell's budget, noisy and misspecified like every label.

    res = judged_score(lm, None, target, labeler, splits.select, intervention, max_labels=16)
    res["behavior"], res["fluency"], res["labels"], res["n"]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from study.feedback.labeler import BudgetExhausted, Labeler
from study.feedback.splits import BehaviorTarget, Record
from study.lm.generation import generate, render
from study.lm.intervention import Intervention


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def judged_score(model: Any, tokenizer: Any, target: BehaviorTarget, labeler: Labeler, records: Sequence[Record],
                 intervention: Intervention | None = None, n_per_prompt: int = 1, max_labels: int | None = None,
                 seed: int = 0, temperature: float = 1.0, max_new_tokens: int | None = None,
                 batch_size: int = 512) -> dict[str, float | int]:
    """Score an intervention on select records by judgments bought from the labeler (noisy and misspecified like
    every label, charged to the cell's budget).

    Samples `n_per_prompt` completions per record (at most `max_labels` judgments in all) with the intervention
    active. If the budget cannot pay for every judgment this needs, raises BudgetExhausted before charging any.
    Returns {"behavior": mean rating of the readable ones, "fluency": share readable, "labels": units charged}.
    `model` may be a LoadedModel (then `tokenizer` may be None).
    """
    if tokenizer is None:
        model, tokenizer = model.model, model.tokenizer
    recs = list(records)
    if max_labels is not None:
        recs = recs[: max(0, max_labels // n_per_prompt)]
    if not recs:
        raise BudgetExhausted("judged_score: no select records to judge (max_labels too small or none given)")
    prompts = [render(tokenizer, intervention, r.prompt, target.chat) for r in recs]
    comps = generate(model, tokenizer, prompts, intervention, n=n_per_prompt, temperature=temperature,
                     max_new_tokens=max_new_tokens or target.max_new_tokens, seed=seed, batch_size=batch_size)
    queries = list(dict.fromkeys((r.prompt, c) for r, cs in zip(recs, comps) for c in cs))
    need = sum(labeler.cost("judge") for p, c in queries if not labeler.is_cached("judge", p, c))
    if need > labeler.account.left:
        raise BudgetExhausted(f"judged_score: {need} judgment unit(s) needed, {labeler.account.left} left")
    before = labeler.account.spent
    ratings = [labeler.judge(r.prompt, c) for r, cs in zip(recs, comps) for c in cs]
    readable = [x for x in ratings if x is not None]
    return {"behavior": _mean(readable), "fluency": len(readable) / len(ratings),
            "labels": labeler.account.spent - before, "n": len(ratings)}
