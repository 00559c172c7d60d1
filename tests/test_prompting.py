"""The prompting method, and the guide's example method (docs/examples/logit_bias.py) on the micro organism."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from methods.base import FitContext
from methods.prompting import Prompting, PromptingConfig, PromptIntervention
from methods.registry import resolve
from study.core.errors import ConfigError, UserError
from conftest import fit_context
from test_plugin_guide import assert_adds_exactly_its_bias

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def lm(micro_lm):
    return micro_lm


def context(lm_world, budget: int, config, seed: int = 0, target: str = "sentiment") -> FitContext:
    return fit_context(lm_world, budget, config, seed, target, anticipation=0.5)


def test_instruction_only_costs_nothing_and_uses_the_worlds_instruction(lm):
    ctx = context(lm, 64, PromptingConfig(max_shots=0))
    iv = Prompting(PromptingConfig(max_shots=0)).fit(ctx)
    assert iv.prompt("review of hotel : the bed was") == "system : be positive . review of hotel : the bed was"
    assert ctx.labeler.account.spent == 0 and iv.chosen == {"instruction": True, "shots": 0}
    syc = context(lm, 0, PromptingConfig(), target="sycophancy")
    assert Prompting().fit(syc).prompt("x").startswith("system : be honest .")


def test_few_shot_demonstrations_are_bought_from_the_budget(lm):
    ctx = context(lm, 9, PromptingConfig(max_shots=3))
    iv = Prompting(PromptingConfig(max_shots=3)).fit(ctx)
    # a demonstration costs 4: a budget of 9 buys two; the model's 96-token context would hold them
    assert ctx.labeler.account.counts == {"demonstrate": 2} and ctx.labeler.account.spent == 8
    assert iv.chosen["shots"] == 2
    prefix = iv.prompt("PROMPT")
    assert prefix.startswith("system : be positive .") and prefix.endswith(" PROMPT")
    demos = [r for r in ctx.pool if f"{r.prompt} {r.positive}" in prefix]
    assert len({r.prompt for r in demos}) == 2  # two distinct pool prompts, with the desired completion
    assert all(r.context in ctx.target.splits(0.5, 0).covered for r in demos)
    # budget 3 buys none: the instruction alone
    poor = context(lm, 3, PromptingConfig(max_shots=3))
    assert Prompting(PromptingConfig(max_shots=3)).fit(poor).chosen["shots"] == 0 and poor.labeler.account.spent == 0


def test_few_shot_never_overflows_the_models_context(lm):
    ctx = context(lm, 400, PromptingConfig(max_shots=50))
    iv = Prompting(PromptingConfig(max_shots=50)).fit(ctx)
    longest = max(len(ctx.model.tokenizer(r.prompt)["input_ids"]) for r in ctx.pool)
    used = len(ctx.model.tokenizer(iv.prompt(""))["input_ids"])
    assert 0 < iv.chosen["shots"] < 50 and used + longest + ctx.target.max_new_tokens <= 96


def test_prompt_intervention_saves_and_loads(tmp_path):
    iv = PromptIntervention("system : be positive .", " ")
    iv.chosen = {"shots": 0}
    iv.save(tmp_path)
    back = PromptIntervention.load(tmp_path)
    assert back.prompt("x") == iv.prompt("x") and back.chosen == iv.chosen


def test_prompting_config_is_validated():
    from study.core.config import from_dict

    with pytest.raises(ConfigError, match="max_shots"):
        from_dict(PromptingConfig, {"max_shots": -1})
    with pytest.raises(ConfigError, match="instruction"):
        from_dict(PromptingConfig, {"max_shots": 0, "instruction": False})


def test_registry_resolves_short_names_and_user_classes(monkeypatch):
    assert resolve("prompting") is Prompting
    with pytest.raises(UserError, match="unknown method 'promting'; valid: .*prompting"):
        resolve("promting")
    monkeypatch.syspath_prepend(str(REPO))
    cls = resolve("docs.examples.logit_bias:LogitBias")
    assert cls.name == "logit_bias" and cls.Config().pair_share == 0.5


def test_guide_example_method_adds_exactly_its_bias_to_the_logits_and_removes_it(lm, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    cls = resolve("docs.examples.logit_bias:LogitBias")
    ctx = context(lm, 16, cls.Config())
    iv = cls(cls.Config()).fit(ctx)
    assert iv.chosen["pairs"] == 4 and ctx.labeler.account.counts["contrast"] == 4  # half the budget, 2 per pair
    assert ctx.labeler.account.spent <= 16 and iv.chosen["strength"] in cls.Config().strengths
    assert_adds_exactly_its_bias(iv, lm[0].model, lm[0].tokenizer)
    positive = lm[0].tokenizer("cozy", add_special_tokens=False)["input_ids"][0]
    assert iv.bias[positive] >= 0  # a desired word is never pushed down


def test_a_hook_is_removed_even_when_the_body_raises(lm, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    from docs.examples.logit_bias import LogitBiasIntervention

    model = lm[0].model
    iv = LogitBiasIntervention(model, torch.ones(model.config.vocab_size), 1.0)
    with pytest.raises(RuntimeError):
        with iv:
            raise RuntimeError("boom")
    assert not model.get_output_embeddings()._forward_hooks
