"""The evaluator: exact KL against brute force, perplexity, metric rows on the micro organism, select_score."""

from __future__ import annotations

import math
import types
from contextlib import contextmanager

import pytest
import torch

from methods.base import Intervention
from study.run import evaluate as evaluate_module
from study.run.evaluate import drift_baseline, evaluate, sample_metrics
from study.lm.logprobs import kl_divergence, sequence_logprobs
from study.feedback.judging import judged_score as select_score
from study.lm.hooks import steer
from study.feedback.labeler import Budget, BudgetExhausted, Labeler, LabelerConfig
from study.lm.models import decoder_blocks
from study.feedback.targets import ORGANISM_TARGETS, organism_target
from study.feedback.splits import SplitSizes
from study.organism.pretrain import MICRO
from study.organism.world import World
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
    assert set(table["covered"]) == {"behavior", "fluency", "desired", "behavior_domain", "behavior_shared",
                                     "shared_share", "refusal", "over_refusal", "balanced"}
    assert set(base.contexts) == set(splits.covered) | set(splits.held_out)
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
    assert t["neutral"]["kl"] > 1e-3 and "drift:sentiment" in t["all"]  # a no-op gives exactly 0
    again = drift_baseline(lm, targets[:1], splits, n_completions=1, seed=0)
    assert str(res.base) == str(again) and set(again) == {"sentiment"}  # str(): NaN where nothing was scorable
    drifted = [s["score"] for s in res.samples if s["split"] == "drift:sentiment" and s["score"] is not None]
    assert len(drifted) == dict((r["metric"], r["n"]) for r in res.rows)["drift:sentiment"]
    assert not decoder_blocks(model)[0]._forward_hooks  # the hook is gone


def _sample(score, request=None, **oracle):
    return {"score": score, **({"request": request} if request else {}), **oracle}


def test_conditional_behavior_is_the_joint_rate_on_hand_built_samples():
    # blanket refusal: every forbidden and every benign request refused (6 and 2 fluent samples), one unscorable
    blanket = [_sample(1.0, "forbidden")] * 6 + [_sample(1.0, "benign")] * 2 + [_sample(None, "forbidden")]
    m = sample_metrics(blanket)
    assert m["behavior"] == (0.0, 8)  # 1.0 on forbidden x 0.0 on benign, not the pooled 6/8
    assert m["balanced"] == (0.5, 8)  # balanced accuracy beside it
    assert m["refusal"] == (1.0, 6) and m["over_refusal"] == (1.0, 2)
    assert m["fluency"] == pytest.approx((8 / 9, 9)) and m["desired"] == pytest.approx((6 / 9, 9))
    # 2 of 3 forbidden refused, the one benign request helped: 2/3 x 1
    mixed = [_sample(1.0, "forbidden"), _sample(1.0, "forbidden"), _sample(0.0, "forbidden"), _sample(0.0, "benign")]
    m = sample_metrics(mixed)
    assert m["behavior"] == pytest.approx((2 / 3, 4)) and m["over_refusal"] == (0.0, 1)
    assert m["balanced"] == pytest.approx((5 / 6, 4))
    assert m["desired"] == pytest.approx((3 / 4, 4))
    # sycophancy's kinds are claims, read through the oracle's `desired`: always agreeing is right on right claims
    # only (joint 0); correcting 3 of 4 wrong claims and agreeing with 1 of 2 right ones is 3/4 x 1/2
    agree = [_sample(1.0, claim="right", desired=True), _sample(0.0, claim="wrong", desired=False)]
    assert sample_metrics(agree)["behavior"] == (0.0, 2) and sample_metrics(agree)["over_correction"] == (0.0, 1)
    mixed = ([_sample(1.0, claim="wrong", desired=True)] * 3 + [_sample(0.0, claim="wrong", desired=False)]
             + [_sample(1.0, claim="right", desired=True), _sample(0.0, claim="right", desired=False)])
    m = sample_metrics(mixed)
    assert m["behavior"] == pytest.approx((3 / 8, 6)) and m["correction"] == pytest.approx((3 / 4, 4))
    assert m["over_correction"] == pytest.approx((1 / 2, 2)) and "refusal" not in m
    # a kind with no fluent sample leaves the joint rate undefined, not the other kind's rate
    assert math.isnan(sample_metrics([_sample(1.0, "forbidden"), _sample(None, "benign")])["behavior"][0])
    # without requests (sentiment, data files): the mean score
    assert sample_metrics([_sample(1.0), _sample(0.0), _sample(1.0), _sample(None)])["behavior"] == (2 / 3, 3)
    assert "behavior_domain" not in sample_metrics([_sample(1.0)])  # no oracle: no decomposition rows


WORLD = World(MICRO.world)


def _words(behavior: str, domain: str, act: str) -> tuple[str, str]:
    """(a domain's own word, the shared word) for one act of the behavior."""
    words = WORLD.act_words(behavior, domain, act)
    return words[0], words[-1]


def _completions(r, held_out: bool) -> list[str]:
    """Four hand-built completions of a refusal record: a mix in covered contexts, blanket refusal in held-out ones
    (written with the domain's own refusal word on forbidden requests and the shared "sorry" on benign ones)."""
    refuse, sorry = _words("refusal", r.context.split("/")[0], "refuse")
    comply, okay = _words("refusal", r.context.split("/")[0], "comply")
    # A reply is two words of one act; the first is the decision word. The second is the domain's own word.
    refuse, sorry = f"{refuse} {refuse}", f"{sorry} {refuse}"
    comply, okay = f"{comply} {comply}", f"{okay} {comply}"
    if held_out:
        return [f"{refuse} ."] * 4 if r.request == "forbidden" else [f"{sorry} ."] * 4
    if r.request == "forbidden":  # desired 1, 1, 0, 0; shared 0, 1, 0, 1
        return [f"{refuse} .", f"{sorry} .", f"{comply} .", f"{okay} ."]
    return [f"{comply} .", f"{okay} .", f"{sorry} .", "the the"]  # desired 1, 1, 0, -; shared 0, 1, 1, -


def test_decomposition_rows_per_split_and_context_on_hand_built_completions(monkeypatch):
    import dataclasses

    target = organism_target("refusal", WORLD)
    splits = dataclasses.replace(target.splits(0.5, seed=0, sizes=SIZES), neutral=())
    records = {r.prompt: (r, held) for held, recs in ((False, splits.test_covered), (True, splits.test_uncovered))
               for r in recs}
    calls = []

    def fake_generate(model, tokenizer, prompts, intervention, *, n, **_):
        calls.append(len(prompts))
        if prompts[0] not in records:  # another target's prompts
            return [["the the"] * n for _ in prompts]
        if intervention is None:  # the base model refuses everything with the shared word
            words = [_words("refusal", records[p][0].context.split("/")[0], "refuse") for p in prompts]
            return [[f"{shared} {own} ."] * n for own, shared in words]
        return [_completions(*records[p])[:n] for p in prompts]

    class Policy(Intervention):  # an intervention that changes nothing but is not the base model
        pass

    monkeypatch.setattr(evaluate_module, "generate", fake_generate)
    lm = types.SimpleNamespace(model=None, tokenizer=None)
    res = evaluate(lm, target, Policy(), splits=splits, n_completions=4)
    assert calls == [len(splits.test_covered) + len(splits.test_uncovered)]  # covered and uncovered in one call
    t = res.table()
    cov, unc = t["covered"], t["uncovered"]
    assert cov["behavior"] == pytest.approx(0.5 * 2 / 3) and cov["refusal"] == 0.5
    assert cov["balanced"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert cov["over_refusal"] == pytest.approx(1 / 3) and cov["fluency"] == pytest.approx(7 / 8)
    assert cov["desired"] == pytest.approx(4 / 8)
    assert cov["behavior_domain"] == pytest.approx(2 / 3) and cov["behavior_shared"] == pytest.approx(2 / 4)
    assert cov["shared_share"] == pytest.approx(4 / 7)
    # held out: blanket refusal, domain words on forbidden requests (desired), the shared word on benign (not)
    assert unc["behavior"] == 0.0 and unc["refusal"] == 1.0 == unc["over_refusal"] and unc["desired"] == 0.5
    assert unc["behavior_domain"] == 1.0 and unc["behavior_shared"] == 0.0 and unc["shared_share"] == 0.5
    share = splits.covered_share
    assert share == 3 / 8 and t["all"]["behavior"] == pytest.approx(share * cov["behavior"])
    n = {(r["split"], r["metric"]): r["n"] for r in res.rows}
    assert n[("covered", "behavior_domain")] == 3 * len(splits.test_covered) // 2
    assert n[("all", "fluency")] == 4 * (len(splits.test_covered) + len(splits.test_uncovered))
    # per context: the covered ones mixed, the held-out ones blanket refusal
    assert set(res.contexts) == set(splits.covered) | set(splits.held_out)
    for c, m in res.contexts.items():
        assert set(m) == {"behavior", "fluency", "desired", "behavior_domain"}
        expected = 0.0 if c in splits.held_out else 0.5 * 2 / 3
        assert m["behavior"][0] == pytest.approx(expected) and m["fluency"][1] == 4 * len(
            [r for r in splits.test_covered + splits.test_uncovered if r.context == c])
    # per sample: the oracle's desired and shared where the completion parses
    garbage = [s for s in res.samples if s["completion"] == "the the"]
    assert garbage and all("desired" not in s and "shared" not in s for s in garbage)
    assert all(isinstance(s["desired"], bool) and isinstance(s["shared"], bool) for s in res.samples
               if s["score"] is not None)
    # drift of refusal is its joint rate: the base (blanket refusal) scores 0, not its refusal rate 1.0
    other = organism_target("sentiment", WORLD)
    res = evaluate(lm, other, Policy(), splits=dataclasses.replace(other.splits(0.5, 0, SIZES), neutral=()),
                   others=[target], n_completions=4, drift_completions=4)
    assert res.base == {"refusal": 0.0}
    assert res.table()["all"]["drift:refusal"] == pytest.approx(share * cov["behavior"])


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


def test_output_diversity_counts_distinct_completions_per_prompt(monkeypatch):
    """Kirk et al.'s per-input diversity: 8 samples of each of 4 prompts (2 covered, 2 held out); a policy that repeats
    itself on covered prompts scores 1/8 there, one that never repeats scores 1 on held-out ones."""
    target = organism_target("sentiment", WORLD)
    splits = target.splits(0.5, seed=0, sizes=SIZES)
    covered = {r.prompt for r in splits.test_covered}
    seen = []

    def fake_generate(model, tokenizer, prompts, intervention, *, n, **_):
        seen.append((len(prompts), n))
        return [["good ."] * n if p in covered else [f"w{i} ." for i in range(n)] for p in prompts]

    monkeypatch.setattr(evaluate_module, "generate", fake_generate)
    out = evaluate_module._diversity(None, None, target, splits, None, 4, 8, temperature=1.0, max_new_tokens=None,
                                     seed=0, batch_size=64)
    assert seen == [(4, 8)]
    assert out == {"covered": (1 / 8, 2), "uncovered": (1.0, 2), "all": ((1 / 8 + 1) / 2, 4)}
