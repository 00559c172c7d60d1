"""The evaluator: exact KL against brute force, perplexity, metric rows on the micro organism, select_score."""

from __future__ import annotations

import math
import types
from contextlib import contextmanager

import pytest
import torch

from methods.base import Intervention
from study.run.evaluate import drift_baseline, evaluate
from study.lm.logprobs import kl_divergence, sequence_logprobs
from study.feedback.judging import judged_score as select_score
from study.lm.hooks import steer
from study.feedback.labeler import Budget, BudgetExhausted, Labeler, LabelerConfig
from study.lm.models import decoder_blocks
from study.feedback.targets import ORGANISM_TARGETS, organism_target
from study.feedback.splits import SplitSizes
from tiny_models import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["the cat sat", "user : w1 w2 w3 w4 w5 assistant :", "a"]
CONTS = ["on a mat", "w7 w8", "w9 w10 w11 w12"]




def tiny_lm(family: str = "llama"):
    model, tokenizer = tiny_model(family)
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return types.SimpleNamespace(model=model, tokenizer=tokenizer, blocks=decoder_blocks(model))


class Steer(Intervention):
    """Adds `vector` after block `layer` from the last prompt position on (as steering methods do)."""

    def __init__(self, blocks, layer: int, vector: torch.Tensor):
        super().__init__()
        self.blocks, self.layer, self.vector = blocks, layer, vector

    @contextmanager
    def _activate(self, prompt_width):
        starts = None if prompt_width is None else torch.tensor([prompt_width - 1])
        with steer(self.blocks, {self.layer: self.vector}, start_positions=starts):
            yield


class Prefix(Intervention):
    def prompt(self, text: str) -> str:
        return "w50 w51 " + text


def brute_force_logprobs(lm, intervention, prompt: str, cont: str) -> list[list[float]]:
    """log p(. | prefix) over the vocabulary at each continuation token: one unpadded sequence, float64, by hand."""
    p = lm.tokenizer(prompt)["input_ids"]
    c = lm.tokenizer(" " + cont, add_special_tokens=False)["input_ids"]
    with torch.no_grad(), (intervention or Intervention()).active(prompt_width=len(p)):
        logits = lm.model(torch.tensor([p + c])).logits[0].double()
    out = []
    for j in range(len(c)):
        row = logits[len(p) - 1 + j].tolist()
        z = math.log(sum(math.exp(x) for x in row))
        out.append([x - z for x in row])
    return out


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_kl_of_the_base_against_itself_is_exactly_zero(family):
    lm = tiny_lm(family)
    zero = Steer(lm.blocks, 0, torch.zeros(32))
    for intervention in (Intervention(), zero):
        kls, counts = kl_divergence(lm.model, lm.tokenizer, PROMPTS, PROMPTS, CONTS, intervention)
        assert kls == [0.0, 0.0, 0.0] and counts == [3, 2, 4]


@pytest.mark.parametrize("intervention", ["steer", "prefix"])
def test_kl_matches_brute_force_for_a_known_perturbation(intervention):
    lm = tiny_lm("llama")
    torch.manual_seed(1)
    iv = Steer(lm.blocks, 0, torch.randn(32)) if intervention == "steer" else Prefix()
    policy = [iv.prompt(p) for p in PROMPTS]
    kls, counts = kl_divergence(lm.model, lm.tokenizer, policy, PROMPTS, CONTS, iv)
    for i, (p, c) in enumerate(zip(PROMPTS, CONTS)):
        lp = brute_force_logprobs(lm, iv, iv.prompt(p), c)
        lq = brute_force_logprobs(lm, None, p, c)
        expected = sum(math.exp(a) * (a - b) for row_p, row_q in zip(lp, lq) for a, b in zip(row_p, row_q))
        assert counts[i] == len(lp) and expected > 1e-4
        assert kls[i] == pytest.approx(expected, rel=1e-5, abs=1e-9)


def test_sequence_logprobs_match_brute_force():
    lm = tiny_lm("gpt_neox")
    sums, counts = sequence_logprobs(lm.model, lm.tokenizer, PROMPTS, CONTS)
    for i, (p, c) in enumerate(zip(PROMPTS, CONTS)):
        rows = brute_force_logprobs(lm, None, p, c)
        ids = lm.tokenizer(" " + c, add_special_tokens=False)["input_ids"]
        assert sums[i] == pytest.approx(sum(r[t] for r, t in zip(rows, ids)), rel=1e-5)
        assert counts[i] == len(ids)


def _nan_safe(rows: list[dict]) -> list[tuple]:
    return [(r["split"], r["metric"], r["n"], None if math.isnan(r["value"]) else r["value"]) for r in rows]


SIZES = SplitSizes(pool=32, select=16, test=12, neutral=8)


def test_evaluate_reports_every_metric_on_the_micro_organism(micro_organism):
    model, tokenizer, world = micro_organism
    lm = types.SimpleNamespace(model=model, tokenizer=tokenizer, blocks=decoder_blocks(model))
    targets = [organism_target(n, world) for n in ORGANISM_TARGETS]
    refusal = targets[2]
    splits = refusal.splits(0.5, seed=0, sizes=SIZES)
    base = evaluate(lm, refusal, None, splits=splits, others=targets, n_completions=2, seed=0)
    table = base.table()
    assert set(table) == {"covered", "uncovered", "all", "neutral"}
    assert set(table["covered"]) == {"behavior", "fluency", "over_refusal"}
    assert table["neutral"]["kl"] == 0.0 and table["neutral"]["perplexity"] > 1.0
    assert table["all"]["drift:sentiment"] == 0.0 == table["all"]["drift:sycophancy"]
    n_samples = (len(splits.test_covered) + len(splits.test_uncovered)) * 2
    assert len([s for s in base.samples if "score" in s]) == n_samples
    assert {r["n"] for r in base.rows if r["metric"] == "fluency" and r["split"] == "all"} == {n_samples}
    # the same call twice gives the same rows (seeded sampling)
    again = evaluate(lm, refusal, None, splits=splits, others=targets, n_completions=2, seed=0)
    assert _nan_safe(again.rows) == _nan_safe(base.rows)

    # a real perturbation: positive KL, drift measured against the base model with the hook removed
    torch.manual_seed(0)
    iv = Steer(lm.blocks, 0, 3 * torch.randn(model.config.hidden_size))
    res = evaluate(lm, refusal, iv, splits=splits, others=targets[:1], n_completions=2, seed=0)
    t = res.table()
    assert t["neutral"]["kl"] > 0.01 and "drift:sentiment" in t["all"]
    again = drift_baseline(lm, targets[:1], splits, n_completions=1, seed=0)
    assert str(res.base) == str(again) and set(again) == {"sentiment"}  # str(): NaN where nothing was scorable
    drifted = [s["score"] for s in res.samples if s["split"] == "drift:sentiment" and s["score"] is not None]
    assert len(drifted) == dict((r["metric"], r["n"]) for r in res.rows)["drift:sentiment"]
    assert not decoder_blocks(model)[0]._forward_hooks  # the hook is gone


def test_select_score_buys_judgments_and_refuses_beyond_the_budget(micro_organism):
    model, tokenizer, world = micro_organism
    target = organism_target("sentiment", world)
    select = target.splits(1.0, seed=0, sizes=SIZES).select
    labeler = Labeler(target, Budget(40), LabelerConfig(), seed=0)
    out = select_score(model, tokenizer, target, labeler, select, Intervention(), n_per_prompt=2, max_labels=20)
    assert out["n"] == 20 and 0 < out["labels"] <= 20 and labeler.account.counts["judge"] == out["labels"]
    assert 0.0 <= out["fluency"] <= 1.0
    spent = labeler.account.spent
    again = select_score(model, tokenizer, target, labeler, select, Intervention(), n_per_prompt=2, max_labels=20)
    assert again["labels"] == 0 and labeler.account.spent == spent  # identical judgments are not paid twice
    with pytest.raises(BudgetExhausted):
        select_score(model, tokenizer, target, labeler, select, Intervention(), n_per_prompt=4, seed=1)
    assert labeler.account.spent == spent  # refused up front: nothing charged


def test_study_evaluate_prints_every_split_as_json(micro_organism):
    import json

    from typer.testing import CliRunner

    from conftest import TEST_CACHE
    from study.cli import app

    args = ["evaluate", "--config", "micro", "--cache-dir", str(TEST_CACHE), "--target", "sycophancy", "--target",
            "refusal", "--prompts", "8", "--completions", "1", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(out) == {"sycophancy", "refusal"}
    assert set(out["refusal"]) == {"covered", "uncovered", "all", "neutral"}
    assert out["refusal"]["all"]["drift:sycophancy"] == 0.0 and out["sycophancy"]["neutral"]["kl"] == 0.0
    bad = CliRunner().invoke(app, ["evaluate", "--config", "micro", "--target", "honesty"])
    assert bad.exit_code == 2 and "unknown target 'honesty'" in bad.output
