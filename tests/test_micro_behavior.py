"""End to end on the micro organism: it is fluent, and steering, DPO and LoRA SFT each move its behavior.

Each method is fitted at a small budget on the sentiment target and evaluated by the study's evaluator on the covered
test contexts, against the base model on the same prompts and seeds. The margins sit well below the gains measured
over seeds 0-3 (behavior on covered contexts, 192 prompts x 2 completions; base 0.39-0.45):

| method | gain over base, seeds 0-3 | asserted |
| --- | --- | --- |
| steering (budget 128) | 0.31-0.38 | > 0.15 |
| dpo (budget 192, 40 steps) | 0.55-0.61 | > 0.25 |
| lora_sft (budget 48, 24 steps) | 0.54-0.61 | > 0.25 |

    HF_HUB_OFFLINE=1 python -m pytest -q tests/test_micro_behavior.py     # ~20 s once the organism is cached
"""

from __future__ import annotations

import math

import pytest

from methods.base import FitContext
from methods.registry import resolve
from study.feedback.labeler import Budget, Labeler
from study.feedback.splits import SplitSizes
from study.feedback.targets import organism_target
from study.organism.summary import exact_rates, summarize, world_rate
from study.run.evaluate import evaluate

pytestmark = pytest.mark.usefixtures("one_thread")

SEED = 0
SIZES = SplitSizes(pool=96, select=16, test=192, neutral=4)
N_COMPLETIONS = 2
# (budget, config, gain over the base model's covered behavior that must be exceeded, fluency floor)
METHODS = {
    "steering": (128, dict(strengths=(0.5, 1.0, 2.0), positions=("answer",), finalists=2, folds=2, screen_prompts=8),
                 0.15, 0.75),  # the v2 micro organism: sentiment fluency 0.95 at base, 0.79 steered (seed 0)
    "dpo": (192, dict(min_steps=40, max_steps=40, batch_size=8, learning_rate=1.5e-3, beta=0.3, select_share=0.0),
            0.25, 0.3),
    "lora_sft": (48, dict(min_steps=24, max_steps=24, batch_size=8, select_share=0.0), 0.25, 0.7),
}




@pytest.fixture(scope="module")
def setup(micro_lm):
    lm, world = micro_lm
    target = organism_target("sentiment", world)
    splits = target.splits(0.5, SEED, SIZES)
    base = evaluate(lm, target, None, splits=splits, n_completions=N_COMPLETIONS, seed=SEED).table()["covered"]
    return lm, target, splits, base


def test_the_micro_organism_is_fluent(micro_organism):
    model, tokenizer, world = micro_organism
    summary = summarize(model, tokenizer, world, n_samples=60, prompts_per_context=4)
    assert summary["fluency"] >= 0.8 and summary["completion_fluency"] >= 0.8, summary


def test_exact_base_rates_are_the_organisms_probabilities_of_the_desired_act(micro_organism):
    """`exact_rates` reads P(desired act) off the next-token distribution: it tracks the world's rate per kind of
    prompt (complying is desired for a benign request, agreeing for a right claim), and the conditional targets' base
    rate is the product of their two kinds' rates."""
    model, tokenizer, world = micro_organism
    r = exact_rates(model, tokenizer, world, prompts_per_context=6)
    errors = []
    for b, per_context in r["kind_rates"].items():
        for c, kinds in per_context.items():
            for kind, (got, want) in kinds.items():
                assert want == pytest.approx(world_rate(world, b, c, None if kind == "None" else kind), abs=1e-4)
                errors.append(abs(got - want))
            assert r["base_rates"][b][c] == pytest.approx(math.prod(m for m, _ in kinds.values()), abs=2e-4)
    assert min(v[0] for v in (k["benign"] for k in r["kind_rates"]["refusal"].values())) > 0.6  # compliance
    assert min(v[0] for v in (k["right"] for k in r["kind_rates"]["sycophancy"].values())) > 0.8  # agreement
    print(f"mean |organism - world| over {len(errors)} kind rates: {sum(errors) / len(errors):.3f}")
    assert sum(errors) / len(errors) < 0.12


def test_the_base_model_is_readable_and_undecided(setup):
    base = setup[3]
    assert base["fluency"] >= 0.8
    assert 0.2 <= base["behavior"] <= 0.7  # room to move, and not already where the methods push it


@pytest.mark.parametrize("name", list(METHODS))
def test_method_moves_covered_behavior_toward_the_target(setup, name):
    lm, target, splits, base = setup
    budget, config, margin, fluency = METHODS[name]
    cls = resolve(name)
    cfg = cls.Config(**config)
    ctx = FitContext(model=lm, target=target, labeler=Labeler(target, Budget(budget), seed=SEED),
                     pool=list(splits.pool), select=list(splits.select), budget=budget, seed=SEED, config=cfg)
    iv = cls(cfg).fit(ctx)
    after = evaluate(lm, target, iv, splits=splits, n_completions=N_COMPLETIONS, seed=SEED).table()["covered"]
    assert after["behavior"] - base["behavior"] > margin, (name, base, after, iv.chosen)
    assert after["fluency"] >= fluency, (name, base, after)
