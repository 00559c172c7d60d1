"""`steering_learned` (BiPO): the vector is trained by gradient descent on the contrast pairs, only the vector (the
model's weights get no gradient and stay bit-identical), inside its norm cap, and on the micro organism it moves the
pole decision toward the positive completion while spending exactly its budget."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from conftest import fit_context
from methods.registry import resolve
from methods.steering_learned import LearnedSteering, LearnedSteeringConfig, _PairBatch, train_vector
from methods.steering_vectors import PairScorer, SteeringIntervention
from study.core.errors import ConfigError
from study.lm.generation import render
from study.lm.models import LoadedModel, decoder_blocks
from tiny_models import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = LearnedSteeringConfig(strengths=(0.5, 1.0), finalists=2, screen_prompts=8, epochs=20.0, max_steps=60,
                             reliability_fractions=(-1.0, 0.0, 1.0))


def _tiny_lm(family: str) -> LoadedModel:
    model, tok = tiny_model(family)
    tok.pad_token = tok.pad_token or "<pad>"
    tok.padding_side = "left"
    blocks = decoder_blocks(model)
    config = model.config.get_text_config()
    return LoadedModel(model, tok, "tiny", config.model_type, blocks, config.hidden_size, len(blocks))


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_training_moves_only_the_vector_and_keeps_inside_the_cap(family):
    lm = _tiny_lm(family)
    before = _state(lm.model)
    prompts, pos, neg = ["w1 w2", "w4 w5 w6", "w7"], ["w3 w9 .", "w10", "w11 w12"], ["w13 w9 .", "w14", "w15 w12"]
    data = _PairBatch(lm, prompts, pos, neg)
    scale = {1: 2.0}
    cfg = dataclasses.replace(FAST, bidirectional=False, learning_rate=0.5, max_norm=0.25, all_positions=False)
    vectors, losses = train_vector(lm, data, [0, 1, 2], (1,), scale, 12, cfg, "seed")
    assert losses[0] == pytest.approx(math.log(2.0), abs=1e-5)  # v = 0: no margin, -log sigmoid(0)
    assert losses[-1] < losses[0]
    v = vectors[1]
    assert v.shape == (lm.hidden_size,) and not v.requires_grad
    assert 0 < float(v.norm()) <= 0.25 * scale[1] + 1e-5  # the cap binds at this learning rate
    after = _state(lm.model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in lm.model.parameters())
    assert all(not b._forward_hooks and not b._forward_pre_hooks for b in lm.blocks)
    # the margin it was trained on moved: log p(pos) - log p(neg) rises under the vector
    scorer = PairScorer(lm, prompts, pos, neg)
    base_pos, base_neg = scorer(None)
    steered_pos, steered_neg = scorer(SteeringIntervention(lm.blocks, vectors, 1.0))
    assert sum(a - b for a, b in zip(steered_pos, steered_neg)) > sum(a - b for a, b in zip(base_pos, base_neg))


def test_the_same_seed_learns_the_same_vector():
    lm = _tiny_lm("llama")
    data = _PairBatch(lm, ["w1", "w2 w3"], ["w4 .", "w5"], ["w6 .", "w7"])
    a, _ = train_vector(lm, data, [0, 1], (0,), {0: 1.0}, 5, FAST, "s")
    b, _ = train_vector(lm, data, [0, 1], (0,), {0: 1.0}, 5, FAST, "s")
    assert torch.equal(a[0], b[0])


def test_fit_moves_the_decision_toward_the_positive_and_spends_its_budget(micro_lm):
    lm, world = micro_lm
    before = _state(lm.model)
    ctx = fit_context(micro_lm, 64, FAST, seed=0, target="sentiment")
    held = [r for r in ctx.select][:32]  # prompts no pair was bought on
    prompts = [render(lm.tokenizer, None, r.prompt, ctx.target.chat) for r in held]
    scorer = PairScorer(lm, prompts, [r.positive for r in held], [r.negative for r in held], reuse_prefix=False)
    margin_before = sum(scorer.decisions(None)) / len(held)
    iv = LearnedSteering(FAST).fit(ctx)
    c = iv.chosen
    assert c["direction"] == "learned" and c["position"] == "learned" and c["multiplier"] > 0
    account = ctx.labeler.account
    assert account.spent == 64 == c["labels_spent"]  # exactly its budget: 3/4 on pairs, the rest judged
    # 24 pairs at 2 units (a pair the labeler already answered costs nothing), the rest judged
    assert c["pairs"] == 24 and 40 <= c["labels_pairs"] <= 48 and c["labels_pairs"] == account.costs["contrast"]
    assert c["labels_select"] == account.costs["judge"] == 64 - c["labels_pairs"] and c["candidates_judged"] == 2
    assert c["train_steps"] == 30  # 20 passes over 24 pairs in batches of 16
    margin_after = sum(scorer.decisions(iv)) / len(held)
    assert margin_after > margin_before + 0.5
    assert all(torch.equal(v, before[k]) for k, v in _state(lm.model).items())


def test_registry_config_and_budget_zero(micro_lm):
    assert resolve("steering_learned") is LearnedSteering and LearnedSteering.Config is LearnedSteeringConfig
    for bad in ({"beta": 0.0}, {"max_norm": 0.0}, {"learning_rate": -1.0}, {"min_steps": 0},
                {"train_batch": 0}, {"min_gain_share": 2.0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            LearnedSteeringConfig(**bad).validate()
    ctx = fit_context(micro_lm, 1, FAST)
    iv = LearnedSteering(FAST).fit(ctx)  # not one pair affordable: the base model, and nothing spent
    assert iv.multiplier == 0.0 and iv.chosen["pairs"] == 0 and ctx.labeler.account.spent == 0
