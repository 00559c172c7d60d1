"""What the base organism does before any intervention: fluency, base rates per behavior and context, samples.

    summary = summarize(model, tokenizer, World(cfg.world), n_samples=200, prompts_per_context=48)
    summary["base_rates"]["sentiment"]["hotel/chat"]   # share of positive completions there
"""

from __future__ import annotations

import random

from study.lm.generation import sample
from study.organism.oracle import Oracle
from study.organism.world import BEHAVIORS, World


def summarize(model, tokenizer, world: World, *, n_samples: int = 200, prompts_per_context: int = 48,
              seed: int = 0) -> dict:
    oracle = Oracle(world)
    docs = sample(model, tokenizer, [""], n=n_samples, temperature=1.0, max_new_tokens=96, seed=seed)[0]
    fluency = sum(oracle.fluent(d) for d in docs) / len(docs)

    rng = random.Random(seed)
    prompts, keys = [], []
    for b in BEHAVIORS:
        for c in world.contexts:
            for _ in range(prompts_per_context):
                prompts.append(" ".join(world.sample_pair(rng, b, c).prompt))
                keys.append((b, c))
    comps = sample(model, tokenizer, prompts, n=1, temperature=1.0, max_new_tokens=16, seed=seed + 1)
    hits: dict[tuple[str, str], list[float]] = {}
    scorable = 0
    for (b, c), p, (comp,) in zip(keys, prompts, comps):
        s = oracle.score(p, comp, b)
        if s is not None:
            hits.setdefault((b, c), []).append(s)
            scorable += 1
    base_rates = {b: {c: (round(sum(v) / len(v), 4) if (v := hits.get((b, c))) else None) for c in world.contexts}
                  for b in BEHAVIORS}
    return {
        "fluency": round(fluency, 4),
        "completion_fluency": round(scorable / len(prompts), 4),
        "base_rates": base_rates,
        "samples": docs[:8],
    }
