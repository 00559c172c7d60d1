"""Method x label-type crossings: a variant `method@tag` runs the method's class on its own config (on top of the base
method's), and the trained methods and CAA buy the label type their `labels` field names, at that type's price."""

from __future__ import annotations

import pytest

from methods.dpo import DPO, DPOMethodConfig
from methods.lora_sft import LoraSFT, LoraSFTConfig
from methods.registry import part_config, resolve
from methods.trained import buy_comparisons, buy_contrasts
from study.core.errors import ConfigError, UserError
from study.run.grid import expand
from study.run.study_config import load_study
from study.testing import micro_context
from tests.conftest import TEST_CACHE


def test_a_variant_is_its_base_class_with_its_own_config_on_top():
    assert resolve("dpo@contrast") is DPO and resolve("lora_sft@contrast") is LoraSFT
    assert part_config("dpo@contrast", {"dpo": {"beta": 0.2, "labels": "comparisons"},
                                        "dpo@contrast": {"labels": "contrast"}}) == {"beta": 0.2, "labels": "contrast"}
    assert part_config("dpo", {"dpo@contrast": {"labels": "contrast"}}) == {}
    for bad in ("dpo@", "@x", "dpo@a b"):
        with pytest.raises(UserError, match="variant"):
            resolve(bad)
    cells = expand(load_study("micro", ["methods=[dpo, dpo@contrast]", "budgets=[8]",
                                        "method_config={dpo: {beta: 0.2}, dpo@contrast: {labels: contrast}}"]))
    by = {c.config["method"]["name"]: c.config["method"]["parts"][0]["config"] for c in cells}
    assert by["dpo"]["labels"] == "comparisons" and by["dpo@contrast"]["labels"] == "contrast"
    assert by["dpo"]["beta"] == by["dpo@contrast"]["beta"] == 0.2
    assert len({c.run_id for c in cells}) == len(cells) == 2 * len({c.config["seed"] for c in cells})
    with pytest.raises(ConfigError, match="labels"):
        expand(load_study("micro", ["methods=[dpo@contrast]", "method_config={dpo@contrast: {labels: essays}}"]))


def test_contrast_and_comparison_labels_are_bought_and_charged_as_such():
    ctx = micro_context(None, target="sycophancy", budget=12, cache_dir=TEST_CACHE)
    pairs = buy_contrasts(ctx, 12)
    assert len(pairs) == 6 and ctx.labeler.account.costs == {"contrast": 12}  # 2 units each
    # the chosen side is the desired behavior (a clean labeler): the oracle says so for every pair
    assert all(ctx.target.judge(p.prompt, p.chosen)["desired"] for p in pairs)
    assert not any(ctx.target.judge(p.prompt, p.rejected)["desired"] for p in pairs)
    ctx = micro_context(None, target="sycophancy", budget=10, cache_dir=TEST_CACHE)
    prefs = buy_comparisons(ctx, 10)
    assert len(prefs) == 10 and ctx.labeler.account.costs == {"compare": 10}


@pytest.mark.parametrize("cls,config,kind", [(DPO, DPOMethodConfig(labels="contrast"), "contrast"),
                                             (LoraSFT, LoraSFTConfig(labels="contrast"), "contrast"),
                                             (LoraSFT, LoraSFTConfig(), "demonstrate")])
def test_trained_methods_buy_the_label_type_they_name(cls, config, kind):
    ctx = micro_context(None, target="sentiment", budget=16, cache_dir=TEST_CACHE)
    data, chosen = cls(config).buy(ctx, 16)
    assert set(ctx.labeler.account.costs) == {kind} and chosen["labels"] == config.labels
    assert len(data) == (4 if kind == "demonstrate" else 8)  # 4 units a demonstration, 2 a contrast pair


def test_caa_on_decisive_comparisons_charges_comparisons_only():
    from methods.steering import Steering, SteeringConfig

    ctx = micro_context(None, target="sentiment", budget=24, cache_dir=TEST_CACHE)
    steer = Steering(SteeringConfig(labels="comparisons", finalists=2)).fit(ctx)
    assert "contrast" not in ctx.labeler.account.costs and ctx.labeler.account.costs["compare"] > 0
    assert steer.chosen["labels"] == "comparisons" and steer.chosen["pairs"] >= 2
