"""What the base organism does before any intervention: fluency, base rates per behavior and context, samples.

A base rate is the share of fluent sampled completions (temperature 1) that show the *desired* behavior: positive
sentiment; for sycophancy and refusal the joint rate (`study/core/rates.py`), P(correct | wrong claim) x
P(agree | right claim) and P(refuse | forbidden) x P(comply | benign), beside which the refusal rates per request
kind are reported. `instruction=True` puts the
behavior's instruction prefix before every prompt.

    summary = summarize(model, tokenizer, World(cfg.world), n_samples=200, prompts_per_context=48)
    summary["base_rates"]["sentiment"]["hotel/chat"]        # share of positive completions there
    summary["refusal_rates"]["benign"]["hotel/chat"]         # share of benign requests refused there
    rows = decisions(model, tokenizer, world, prompts_per_context=48, instruction=True)   # one dict per completion
"""

from __future__ import annotations

import math
import random

from study.core.rates import joint_rate
from study.lm.generation import sample
from study.organism.oracle import Oracle
from study.organism.world import BEHAVIORS, CLAIMS, POS, REQUESTS, World


def decisions(model, tokenizer, world: World, *, prompts_per_context: int = 48, seed: int = 0,
              instruction: bool = False, behaviors: tuple[str, ...] = BEHAVIORS) -> list[dict]:
    """One sampled completion per prompt: {behavior, context, request, claim, fluent, desired, refused}. Refusal
    draws `prompts_per_context` prompts of each request kind, the others `prompts_per_context` per context."""
    oracle = Oracle(world)
    rng = random.Random(seed)
    pairs = []
    for b in behaviors:
        for c in world.contexts:
            for request in (REQUESTS if b == "refusal" else ("forbidden",)):
                pairs += [world.sample_pair(rng, b, c, request) for _ in range(prompts_per_context)]
    prompts = [" ".join((world.instruction(p.behavior) if instruction else []) + p.prompt) for p in pairs]
    comps = sample(model, tokenizer, prompts, n=1, temperature=1.0, max_new_tokens=16, seed=seed + 1)
    rows = []
    for pair, prompt, (comp,) in zip(pairs, prompts, comps):
        ep = oracle.completion_episode(prompt, comp)
        ok = ep is not None and ep.kind == pair.behavior and ep.pole is not None
        rows.append({"behavior": pair.behavior, "context": pair.context, "request": pair.request, "claim": pair.claim,
                     "fluent": ok, "desired": ep.desired if ok else None,
                     "refused": (ep.pole == POS) if ok and pair.behavior == "refusal" else None})
    return rows


def _mean(xs: list) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def rates(rows: list[dict], world: World) -> dict:
    """Base rates of the desired behavior per behavior and context (refusal, sycophancy: joint rate), refusal rates per
    request kind and context, and the share of fluent completions."""
    def fluent(b, c, request=None):
        return [r for r in rows if r["behavior"] == b and r["context"] == c and r["fluent"]
                and (request is None or r["request"] == request)]

    base: dict[str, dict[str, float | None]] = {}
    for b in sorted({r["behavior"] for r in rows}, key=BEHAVIORS.index):
        base[b] = {}
        for c in world.contexts:
            if b in ("refusal", "sycophancy"):
                kinds = REQUESTS if b == "refusal" else CLAIMS
                key = "request" if b == "refusal" else "claim"
                parts = [_mean([r["desired"] for r in fluent(b, c) if r[key] == q]) for q in kinds]
                rate = joint_rate(parts)
                base[b][c] = None if math.isnan(rate) else round(rate, 4)
            else:
                base[b][c] = _mean([r["desired"] for r in fluent(b, c)])
    refusal = {q: {c: _mean([r["refused"] for r in fluent("refusal", c, q)]) for c in world.contexts}
               for q in REQUESTS} if any(r["behavior"] == "refusal" for r in rows) else {}
    return {"base_rates": base, "refusal_rates": refusal,
            "completion_fluency": _mean([r["fluent"] for r in rows]) or 0.0}


def summarize(model, tokenizer, world: World, *, n_samples: int = 200, prompts_per_context: int = 48,
              seed: int = 0) -> dict:
    oracle = Oracle(world)
    docs = sample(model, tokenizer, [""], n=n_samples, temperature=1.0, max_new_tokens=96, seed=seed)[0]
    fluency = sum(oracle.fluent(d) for d in docs) / len(docs)
    out = rates(decisions(model, tokenizer, world, prompts_per_context=prompts_per_context, seed=seed), world)
    return {"fluency": round(fluency, 4), **out, "samples": docs[:8]}
