"""Steering methods (CAA `steering`, PCA `steering_pca`): vector arithmetic, hooks through the intervention only,
read positions, labels counted, selection, save/load, stacking and per-sample reliability."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from methods.base import FitContext, Intervention, Stacked
from methods.registry import resolve
from methods.steering import Steering, SteeringConfig, default_layer_sets
from methods.steering_vectors import (PairScorer, SteeringIntervention, contrast_activations,
                                      first_principal_component, mean_difference, read_index, reliability)
from methods.steering_pca import SteeringPCA, SteeringPCAConfig
from study.core.errors import ConfigError
from study.lm.hooks import record_activations, steer
from study.feedback.labeler import Budget, Labeler
from study.lm.models import LoadedModel, decoder_blocks
from study.feedback.splits import SplitSizes
from study.feedback.targets import organism_target
from tiny_models import PAD, tiny_model

FAMILIES = ["llama", "qwen2", "gpt2", "gpt_neox"]
IDS = torch.tensor([[PAD, PAD, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13]])
SIZES = SplitSizes(pool=64, select=16, test=8, neutral=4)
FAST = SteeringConfig(strengths=(0.25, 1.0), positions=("answer", "last"), finalists=2, folds=2, screen_prompts=8,
                      reliability_fractions=(-1.0, 0.0, 1.0))


pytestmark = pytest.mark.usefixtures("one_thread")


def _lm(model, tokenizer, name: str = "tiny") -> LoadedModel:
    tokenizer.pad_token = tokenizer.pad_token or "<pad>"
    tokenizer.padding_side = "left"
    blocks = decoder_blocks(model)
    config = model.config.get_text_config()
    return LoadedModel(model, tokenizer, name, config.model_type, blocks, config.hidden_size, len(blocks))


def _hooks(blocks) -> list[int]:
    return [len(b._forward_hooks) + len(b._forward_pre_hooks) for b in blocks]


def _vector(seed: int = 1, dim: int = 32, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(dim, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def micro(micro_lm):
    return micro_lm


def _ctx(lm, world, target: str = "sentiment", budget: int = 32, seed: int = 0, **kw) -> FitContext:
    t = organism_target(target, world)
    splits = t.splits(1.0, 0, SIZES)
    labeler = Labeler(t, Budget(budget), seed=seed)
    judge = kw.pop("select_score", None)
    ctx = FitContext(model=lm, target=t, labeler=labeler, pool=list(splits.pool), select=list(splits.select),
                     budget=budget, seed=seed, config=None, **kw)
    if judge is not None:  # a stand-in judge: shadows the real FitContext.select_score on this instance
        ctx.select_score = judge
    return ctx


# ---- directions -------------------------------------------------------------------------------------------------
def test_mean_difference_is_the_mean_and_pca_is_the_sign_corrected_axis():
    g = torch.Generator().manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(16, generator=g), dim=0)
    coef = 2.0 + 0.3 * torch.randn(40, 1, generator=g)
    diffs = coef * u + 0.05 * torch.randn(40, 16, generator=g)
    assert torch.allclose(mean_difference(diffs), diffs.mean(0))
    for d in (diffs, -diffs):  # either orientation of the input: the component points along the mean difference
        pc = first_principal_component(d)
        assert torch.dot(pc, d.mean(0)) > 0
        assert torch.nn.functional.cosine_similarity(pc, d.mean(0), dim=0) > 0.99
        # scaled by the mean projection: the mean difference's component along the axis
        axis = pc / pc.norm()
        assert torch.allclose(pc, axis * torch.dot(d.mean(0), axis), atol=1e-5)


def test_pca_differs_from_the_mean_when_variance_lies_elsewhere():
    g = torch.Generator().manual_seed(1)
    mean_dir, var_dir = torch.eye(8)[0], torch.eye(8)[1]
    diffs = 0.2 * mean_dir + torch.randn(200, 1, generator=g) * 3.0 * var_dir
    pc = first_principal_component(diffs)
    assert abs(float(torch.dot(pc / pc.norm(), var_dir))) > 0.99
    assert float(torch.dot(pc, diffs.mean(0))) >= 0


def test_read_positions():
    ends = {9}
    pos, neg = [5, 1, 9, 2, 9], [5, 3, 9, 2, 2, 9]
    assert read_index(pos, neg, "answer", ends) == ([1], [1])  # first token where the completions differ
    assert read_index(pos, neg, "sentence_end", ends) == ([2], [2])
    assert read_index(pos, neg, "last", ends) == ([4], [5])
    assert read_index(pos, neg, "mean", ends) == ([1, 2, 3, 4], [1, 2, 3, 4, 5])


def test_default_layer_sets_are_layer_0_and_middle_depths():
    assert default_layer_sets(4) == ((0,), (1,), (2,), (3,))
    assert default_layer_sets(32) == ((0,), (8,), (16,), (24,))
    assert default_layer_sets(2) == ((0,), (1,))


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@torch.no_grad()
def test_decision_margin_reads_only_the_first_differing_token(family):
    """PairScorer.decisions: log p(positive token) - log p(negative token) where the completions first differ, the
    same whatever follows; a pair that differs only in length falls back to the whole completions."""
    from study.lm.logprobs import sequence_logprobs

    model, tok = tiny_model(family)
    lm = _lm(model, tok)
    prompts = ["w1 w2", "w4", "w7 w8"]
    pos, neg = ["w3 w5 w6 .", "w9", "w3"], ["w3 w10 w11", "w12 w13 w14", "w3 w5"]
    margins = PairScorer(lm, prompts, pos, neg).decisions(None)
    a, _ = sequence_logprobs(model, tok, ["w1 w2 w3", "w4"], ["w5", "w9"])
    b, _ = sequence_logprobs(model, tok, ["w1 w2 w3", "w4"], ["w10", "w12"])
    assert margins[:2] == pytest.approx([a[0] - b[0], a[1] - b[1]], abs=1e-5)
    whole_pos, _ = sequence_logprobs(model, tok, prompts[2:], pos[2:])
    whole_neg, _ = sequence_logprobs(model, tok, prompts[2:], neg[2:])
    assert margins[2] == pytest.approx(whole_pos[0] - whole_neg[0], abs=1e-5)  # "w3" vs "w3 w5": no differing token
    # other tails, the same decisions; the summed log-probabilities do change
    scorer = PairScorer(lm, prompts, ["w3 w5 w20 w21 w22", "w9 w9", "w3"], ["w3 w10", "w12", "w3 w5"])
    assert scorer.decisions(None)[:2] == pytest.approx(margins[:2], abs=1e-6)
    steer = SteeringIntervention(lm.blocks, {0: _vector(scale=3.0)}, 1.0)
    want = PairScorer(lm, prompts, pos, neg).decisions(steer)[:2]
    assert scorer.decisions(steer)[:2] == pytest.approx(want, abs=1e-6)
    assert PairScorer(lm, prompts, pos, neg)(None)[0][:2] != pytest.approx(scorer(None)[0][:2], abs=1e-3)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@torch.no_grad()
def test_contrast_differences_match_unpadded_single_sequences(family):
    """Batched, padded extraction reads exactly the activation of each unpadded sequence at the named token."""
    model, tok = tiny_model(family)
    lm = _lm(model, tok)
    prompts, pos, neg = ["w1 w2 w3", "w4"], ["w10 w11 . w12", "the cat"], ["w20 w11 .", "the mat sat"]
    acts = contrast_activations(lm, prompts, pos, neg, [0, 1], ("answer", "last"), batch_size=1)
    diffs = acts.diffs
    assert set(acts.scale) == {0, 1} and all(v > 0 for v in acts.scale.values())

    def act(text: str, layer: int, index: int) -> torch.Tensor:
        with record_activations(lm.blocks, [layer]) as acts:  # (hidden_states[-1] is after the final norm)
            model(torch.tensor([tok(text)["input_ids"]]))
        return acts[layer][0][0, index]

    for layer in (0, 1):
        # pair 0: answer = completion token 0 (w10 vs w20); pair 1: token 1 (cat vs mat)
        for i, (a_idx_pos, a_idx_neg) in enumerate([(3, 3), (2, 2)]):
            want = act(f"{prompts[i]} {pos[i]}", layer, a_idx_pos) - act(f"{prompts[i]} {neg[i]}", layer, a_idx_neg)
            assert torch.allclose(diffs[(layer, "answer")][i], want, atol=1e-5)
            want = act(f"{prompts[i]} {pos[i]}", layer, -1) - act(f"{prompts[i]} {neg[i]}", layer, -1)
            assert torch.allclose(diffs[(layer, "last")][i], want, atol=1e-5)


# ---- the intervention's hooks -------------------------------------------------------------------------------
def _run(model, blocks, intervention=None, width=None):
    """Each block's output for IDS, with `intervention` active (all positions, or from prompt width `width`)."""
    with (intervention or Intervention()).active(prompt_width=width), record_activations(blocks, [0, 1]) as acts:
        model(IDS)
    return acts[0][0], acts[1][0]


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_intervention_adds_exactly_the_vector_and_leaves_no_hook(family):
    model, _ = tiny_model(family)
    blocks = decoder_blocks(model)
    before = _hooks(blocks)
    vector = _vector()
    iv = SteeringIntervention(blocks, {1: vector}, 1.5)
    base = _run(model, blocks)
    with iv:  # `with intervention:` steers every position
        with record_activations(blocks, [0, 1]) as acts:
            model(IDS)
    assert torch.equal(acts[0][0], base[0])  # the other block is untouched
    assert torch.equal(acts[1][0], base[1] + 1.5 * vector)
    late = _run(model, blocks, iv, width=4)  # from the last prompt position (3) on
    assert torch.equal(late[1][:, :3], base[1][:, :3])
    assert torch.equal(late[1][:, 3:], base[1][:, 3:] + 1.5 * vector)
    assert _hooks(blocks) == before
    with pytest.raises(RuntimeError, match="boom"):
        with iv.active(prompt_width=4):
            assert _hooks(blocks) != before
            raise RuntimeError("boom")
    assert _hooks(blocks) == before


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_a_window_steers_only_its_positions(family):
    """study.lm.hooks.steer's stop_positions, used by a window: exactly the vector inside [start, stop), nothing else."""
    model, _ = tiny_model(family)
    blocks = decoder_blocks(model)
    vector = _vector()
    base = _run(model, blocks)
    with steer(blocks, {0: vector}, -1.5, start_positions=torch.tensor([2, 4]), stop_positions=torch.tensor([3, 6])), \
            record_activations(blocks, [0]) as acts:
        model(IDS)
    want = base[0].clone()
    want[0, 2:3] += -1.5 * vector
    want[1, 4:6] += -1.5 * vector
    assert torch.equal(acts[0][0], want)
    one = _run(model, blocks, SteeringIntervention(blocks, {0: vector}, 2.0, window=1), width=4)
    assert torch.equal(one[0][:, 3], base[0][:, 3] + 2.0 * vector)  # the last prompt position alone
    assert torch.equal(one[0][:, :3], base[0][:, :3]) and torch.equal(one[0][:, 4:], base[0][:, 4:])
    assert not torch.allclose(one[1][:, 4:], base[1][:, 4:])  # later positions see it through attention
    assert _hooks(blocks) == [0, 0]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@torch.no_grad()
def test_windowed_generation_same_with_and_without_cache(family):
    model, tok = tiny_model(family)
    lm = _lm(model, tok)
    ids = torch.tensor([[PAD, PAD, 4, 5, 6], [7, 8, 9, 10, 11]])
    kwargs = dict(attention_mask=(ids != PAD).long(), max_new_tokens=5, do_sample=False, pad_token_id=PAD)
    iv = SteeringIntervention(lm.blocks, {0: _vector(scale=8.0)}, 1.0, window=1)
    runs = {}
    for use_cache in (True, False):
        with iv.active(prompt_width=ids.shape[1]):
            runs[use_cache] = model.generate(ids, use_cache=use_cache, **kwargs)
    assert torch.equal(runs[True], runs[False])
    assert not torch.equal(runs[True], model.generate(ids, **kwargs))


@pytest.mark.parametrize("family", FAMILIES + ["gemma", "mistral"])
@pytest.mark.parametrize("window", [None, 1])
def test_pair_scorer_matches_the_evaluator(family, window):
    """The screen's fast scorer (prompt cache reused across interventions) equals study.run.evaluate's log-probs."""
    from study.lm.logprobs import sequence_logprobs

    model, tok = tiny_model(family)
    lm = _lm(model, tok)
    prompts, pos, neg = ["w1 w2 w3", "w4", "the cat sat on"], ["w10 w11 . w12", "the cat", "a mat"], \
        ["w20 w11 .", "the mat sat", "w5"]
    scorer = PairScorer(lm, prompts, pos, neg)
    for iv in (None, SteeringIntervention(lm.blocks, {1: _vector()}, 2.0, window=window)):
        a, b = scorer(iv)
        want_a, _ = sequence_logprobs(model, tok, prompts, pos, iv)
        want_b, _ = sequence_logprobs(model, tok, prompts, neg, iv)
        assert a == pytest.approx(want_a, abs=1e-5) and b == pytest.approx(want_b, abs=1e-5)
    assert _hooks(lm.blocks) == [0, 0]


@torch.no_grad()
def test_all_positions_option_and_zero_multiplier():
    model, _ = tiny_model("llama")
    blocks = decoder_blocks(model)
    vector = _vector()
    base = _run(model, blocks)
    steered = _run(model, blocks, SteeringIntervention(blocks, {0: vector}, 2.0, all_positions=True), width=4)
    assert torch.equal(steered[0], base[0] + 2.0 * vector)
    before = _hooks(blocks)
    with SteeringIntervention(blocks, {0: vector}, 0.0).active(prompt_width=4):
        assert _hooks(blocks) == before  # the base model exactly: no hook registered


@torch.no_grad()
def test_stacked_steering_parts_add_both_vectors():
    model, _ = tiny_model("qwen2")
    blocks = decoder_blocks(model)
    a, b = _vector(1), _vector(2)
    base = _run(model, blocks)
    steered = _run(model, blocks, Stacked([SteeringIntervention(blocks, {1: a}, 1.0),
                                           SteeringIntervention(blocks, {1: b}, -0.5)]))
    assert torch.allclose(steered[1], base[1] + a - 0.5 * b, atol=1e-6)


@torch.no_grad()
def test_save_load_round_trip(tmp_path):
    model, tok = tiny_model("gpt_neox")
    lm = _lm(model, tok)
    iv = SteeringIntervention(lm.blocks, {0: _vector(3), 1: _vector(4)}, 2.5, chosen={"layers": [0, 1], "x": 1},
                              window=2)
    iv.save(tmp_path / "iv")
    assert sorted(p.name for p in (tmp_path / "iv").iterdir()) == ["intervention.json", "vectors.safetensors"]
    back = SteeringIntervention.load(tmp_path / "iv", lm)
    assert back.chosen == iv.chosen and back.multiplier == 2.5 and back.window == 2
    with iv.active(prompt_width=3):
        want = model(IDS).logits
    with back.active(prompt_width=3):
        got = model(IDS).logits
    assert torch.equal(want, got)
    assert isinstance(SteeringIntervention.load(tmp_path / "iv", model), SteeringIntervention)  # bare HF model


# ---- config and registry ----------------------------------------------------------------------------------------
def test_registry_and_config_validation():
    assert resolve("steering") is Steering and resolve("steering_pca") is SteeringPCA
    with pytest.raises(ConfigError, match="min_gain_share"):
        SteeringConfig(min_gain_share=1.5).validate()
    assert SteeringPCA.Config is SteeringPCAConfig and SteeringPCA.direction == "pca"
    with pytest.raises(ConfigError, match="positions"):
        SteeringConfig(positions=("middle",)).validate()
    with pytest.raises(ConfigError, match="contrast_share"):
        SteeringConfig(contrast_share=0.0).validate()
    with pytest.raises(ConfigError, match="reliability_fractions"):
        SteeringConfig(reliability_fractions=(1.0, 1.0)).validate()
    with pytest.raises(ConfigError, match="strengths"):
        SteeringConfig(strengths=(0.0, 1.0)).validate()
    with pytest.raises(ConfigError, match="windows"):
        SteeringConfig(windows=(0,)).validate()
    from study.core.config import from_dict

    cfg = from_dict(SteeringConfig, {"layer_sets": [[1], [1, 2]], "strengths": [1, 2], "windows": [None, 1]})
    assert cfg.layer_sets == ((1,), (1, 2)) and cfg.strengths == (1.0, 2.0) and cfg.windows == (None, 1)


# ---- fitting on the micro organism ------------------------------------------------------------------------------
@pytest.mark.parametrize("method", [Steering, SteeringPCA])
def test_fit_counts_every_label_and_stores_its_choices(micro, method):
    lm, world = micro
    ctx = _ctx(lm, world, budget=32)
    before = _hooks(lm.blocks)
    iv = method(method.Config(**dataclasses.asdict(FAST))).fit(ctx)
    c = iv.chosen
    budget = ctx.labeler.account
    assert budget.spent <= 32 and c["labels_spent"] == budget.spent
    assert c["pairs"] == 12 and c["labels_pairs"] == 24 == budget.costs["contrast"]  # 3/4 of 32 at 2 per pair
    assert c["labels_select"] == budget.costs.get("judge", 0) > 0
    assert c["direction"] == method.direction
    assert c["position"] in FAST.positions and FAST.strengths[0] <= c["strength"] <= FAST.strengths[-1]
    assert c["multiplier"] > 0 and c["candidates_screened"] >= c["candidates_judged"] > 0
    assert tuple(c["layers"]) in default_layer_sets(lm.num_layers)
    assert set(iv.vectors) == set(c["layers"]) and all(v.shape == (lm.hidden_size,) for v in iv.vectors.values())
    assert _hooks(lm.blocks) == before  # fitting leaves no hook behind
    again = method(method.Config(**dataclasses.asdict(FAST))).fit(_ctx(lm, world, budget=32))
    assert {k: v for k, v in again.chosen.items() if not k.endswith("seconds")} == \
        {k: v for k, v in c.items() if not k.endswith("seconds")}
    assert all(torch.equal(again.vectors[k], iv.vectors[k]) for k in iv.vectors)


def test_tiny_budgets(micro):
    lm, world = micro
    ctx = _ctx(lm, world, budget=1)  # not even one pair: the base model, honestly
    iv = Steering(FAST).fit(ctx)
    assert iv.chosen["pairs"] == 0 and iv.multiplier == 0.0 and ctx.labeler.account.spent == 0
    ctx = _ctx(lm, world, budget=5)  # two pairs and nothing to judge with: the screen decides
    iv = Steering(FAST).fit(ctx)
    assert iv.chosen["pairs"] == 2 and iv.chosen["labels_select"] == 0 and iv.chosen["candidates_judged"] == 0
    assert ctx.labeler.account.spent == 4


def test_several_layers_steer_together(micro):
    lm, world = micro
    cfg = dataclasses.replace(FAST, layer_sets=((0, 1),), positions=("mean",))
    iv = Steering(cfg).fit(_ctx(lm, world, budget=24))
    assert iv.chosen["layers"] == [0, 1] and set(iv.vectors) == {0, 1} and set(iv.chosen["vector_norm"]) == {"0", "1"}
    before = _run_lm(lm)
    with iv.active(prompt_width=2):
        after = _run_lm(lm)
    w = iv.window or after[0].shape[1]
    assert torch.allclose(after[0][:, 1:1 + w], before[0][:, 1:1 + w] + iv.multiplier * iv.vectors[0], atol=1e-5)
    assert not torch.equal(after[1][:, 1:], before[1][:, 1:])


def _run_lm(lm):
    ids = torch.tensor([lm.tokenizer("review of hotel : the bed was")["input_ids"]])
    with torch.no_grad(), record_activations(lm.blocks, [0, 1]) as acts:
        lm.model(ids)
    return acts[0][0], acts[1][0]


def test_selection_keeps_the_best_judged_candidate(micro):
    """With judges that prefer weaker steering, successive halving ends on the weakest finalist and spends the
    selection half of the budget in two rounds."""
    lm, world = micro
    calls = []

    def judge(intervention, records, seed):
        calls.append((intervention.multiplier, len(records)))
        ctx.labeler.account.charge(len(records), "judge")
        return {"behavior": 1.0 / (1.0 + intervention.multiplier), "fluency": 1.0, "labels": len(records),
                "n": len(records)}

    cfg = dataclasses.replace(FAST, positions=("last",), layer_sets=((0,),), strengths=(0.125, 0.25, 0.5, 1.0),
                              finalists=4, max_mass_drop=1e9, max_nll_increase=1e9, min_gain_share=0.0,
                              windows=(1,))
    ctx = _ctx(lm, world, budget=64, select_score=judge)
    iv = Steering(cfg).fit(ctx)
    judged = sorted({m for m, _ in calls})
    assert len(judged) == 4 and iv.chosen["candidates_judged"] == 4
    assert iv.multiplier == judged[0]
    assert [n for _, n in calls] == [2, 2, 2, 2, 4, 4]  # 16 units: 4 x 2 in round 1, 2 x 4 in round 2
    assert ctx.labeler.account.spent == 64 == iv.chosen["labels_spent"]


def test_screen_scores_the_pole_decision_not_the_tail(micro):
    """Pairs whose completions agree after the first differing token, and the same pairs with the positive's tail
    swapped into the negative, screen to the same decision gains (vectors fixed): only the decision is scored."""
    import random

    from methods.steering import _screen
    from study.feedback.labeler import Pair

    lm, world = micro
    ctx = _ctx(lm, world, budget=64)
    ctx.select = []  # no sampled fluency check: the teacher-forced screen alone
    pairs = [ctx.labeler.contrast(r) for r in ctx.pool[:12]]
    tok = lm.tokenizer
    swapped = []
    for p in pairs:  # the negative's decision word, then the positive's tail
        a, b = tok.tokenize(" " + p.positive), tok.tokenize(" " + p.negative)
        j = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
        swapped.append(Pair(p.prompt, p.positive, tok.convert_tokens_to_string(b[: j + 1] + a[j + 1:])))
    assert any(s.negative != p.negative for s, p in zip(swapped, pairs))
    cfg = dataclasses.replace(FAST, min_gain_share=0.0, max_mass_drop=1e9, fluency_weight=0.0)
    method = Steering(cfg)
    prompts = [p.prompt for p in pairs]
    found = method.directions(ctx, prompts, pairs, ((0,), (1,)))
    first, _ = _screen(lm, ctx, prompts, pairs, ((0,), (1,)), cfg, found, random.Random(0))
    second, _ = _screen(lm, ctx, prompts, swapped, ((0,), (1,)), cfg, found, random.Random(0))
    assert first and set(first) == set(second)
    for c in first:
        assert second[c].propensity_gain == pytest.approx(first[c].propensity_gain, abs=1e-5)
    assert any(abs(second[c].mass_drop - first[c].mass_drop) > 1e-4 for c in first)  # the tails were scored apart


def test_gain_floor_keeps_near_no_ops_from_the_judges(micro):
    """With fluency weighed heavily the weakest strengths score best, yet a strength that barely moves the decision
    never reaches the judges while a stronger one passes the gates."""
    lm, world = micro
    seen = []

    def judge(intervention, records, seed):
        seen.append(intervention.multiplier)
        ctx.labeler.account.charge(len(records), "judge")
        return {"behavior": 0.5, "fluency": 1.0, "labels": len(records), "n": len(records)}

    cfg = dataclasses.replace(FAST, layer_sets=((1,),), positions=("mean",), strengths=(0.002, 0.01, 0.25, 0.5, 1.0),
                              windows=(1,), fluency_weight=50.0, finalists=6)  # every candidate can be a finalist
    ctx = _ctx(lm, world, budget=128, select_score=judge)
    iv = Steering(cfg).fit(ctx)
    c = iv.chosen
    unit = iv.multiplier / c["strength"]  # one line (layer 1, mean): multiplier = strength x unit
    assert seen and not [m for m in seen if m < 0.02 * unit]  # strengths 0.002 and 0.01 were never judged
    assert c["strength"] > 0.01 and c["screen_propensity_gain"] > 0.0


# ---- evaluation: reliability and stacking ------------------------------------------------------------------------
def test_reliability_rows_and_samples(micro):
    from study.lm.logprobs import sequence_logprobs

    lm, world = micro
    t = organism_target("sentiment", world)
    splits = t.splits(0.5, 0, SIZES)
    iv = SteeringIntervention(lm.blocks, {1: 0.05 * _vector(5, lm.hidden_size)}, 2.0,
                              reliability_fractions=(-1.0, 0.0, 1.0))
    rows, slopes = iv.extra_metrics(lm, t, splits)
    table = {r["metric"]: r["value"] for r in rows}
    assert {r["split"] for r in rows} == {"all"}  # the analysis reads these four metrics on split `all`
    assert table["slope_p10"] <= table["slope_p50"] <= table["slope_p90"] and 0 <= table["anti_steerable"] <= 1
    assert len(slopes) == len(splits.test_covered) + len(splits.test_uncovered)
    assert {s["split"] for s in slopes} == {"covered", "uncovered"} and {s["kind"] for s in slopes} == {"slope"}
    first = splits.test_covered[0]
    lds = []
    for m in (-2.0, 0.0, 2.0):  # the fractions of the chosen multiplier 2
        steer = iv.with_multiplier(m)
        a, _ = sequence_logprobs(lm.model, lm.tokenizer, [first.prompt], [first.positive], steer)
        b, _ = sequence_logprobs(lm.model, lm.tokenizer, [first.prompt], [first.negative], steer)
        lds.append(a[0] - b[0])
    assert slopes[0]["prompt_id"] == first.id
    assert slopes[0]["slope"] == pytest.approx((lds[2] - lds[0]) / 2.0, abs=1e-4)  # per chosen multiplier
    share = splits.covered_share  # covered and uncovered weighted by their share of contexts
    assert table["anti_steerable"] == pytest.approx(
        share * sum(s["slope"] < 0 for s in slopes if s["split"] == "covered") / len(splits.test_covered)
        + (1 - share) * sum(s["slope"] < 0 for s in slopes if s["split"] == "uncovered") / len(splits.test_uncovered))


def test_fixed_grid_reliability_does_not_depend_on_the_chosen_multiplier(micro):
    """Tan's protocol: slopes on the fixed strength grid (x the raw multiplier per unit of strength) read the same
    whether the chosen strength was large or near zero; the chosen-fraction slopes do not."""
    lm, world = micro
    t = organism_target("sentiment", world)
    splits = t.splits(0.5, 0, SIZES)
    vec = {1: 0.05 * _vector(5, lm.hidden_size)}
    big = SteeringIntervention(lm.blocks, vec, 2.0, chosen={"strength": 0.5})  # 4 raw per unit of strength
    tiny = SteeringIntervention(lm.blocks, vec, 0.02, chosen={"strength": 0.005})
    (rows_big, s_big), (rows_tiny, s_tiny) = reliability(lm, t, splits, big), reliability(lm, t, splits, tiny)
    assert [s["slope_fixed"] for s in s_big] == pytest.approx([s["slope_fixed"] for s in s_tiny], rel=1e-4, abs=1e-6)
    assert [s["slope"] for s in s_big] != pytest.approx([s["slope"] for s in s_tiny], rel=1e-2)
    fixed = {(r["split"], r["metric"]): r["value"] for r in rows_big if "fixed" in r["metric"]}
    assert set(fixed) == {(sp, m) for sp in ("covered", "uncovered", "all")
                          for m in ("anti_steerable_fixed", "slope_fixed_p50")}
    unc = [s for s in s_big if s["split"] == "uncovered"]
    assert fixed[("uncovered", "anti_steerable_fixed")] == pytest.approx(
        sum(s["slope_fixed"] < 0 for s in unc) / len(unc))
    assert s_big[0]["strengths_fixed"] == [-1.0, -0.5, 0.0, 0.5, 1.0]


def test_stacked_reliability_keeps_the_other_parts_active(micro):
    from methods.prompting import PromptIntervention

    lm, world = micro
    t = organism_target("sentiment", world)
    splits = t.splits(1.0, 0, SIZES)
    iv = SteeringIntervention(lm.blocks, {1: 0.05 * _vector(5, lm.hidden_size)}, 1.0)
    alone, _ = reliability(lm, t, splits, iv)
    prefix = PromptIntervention("system : be negative .")
    stacked, samples = reliability(lm, t, splits, iv, [prefix])
    assert {r["metric"] for r in stacked} == {"anti_steerable", "slope_p10", "slope_p50", "slope_p90"}
    assert [r["value"] for r in stacked] != [r["value"] for r in alone]  # the prefix was in the prompt


def test_fit_on_top_of_a_prior_part(micro):
    """Stacking (`dpo+steering`): fitted as study.run.cell does, the earlier part active and in `ctx.prior`; the vector is
    read on prompts as the stack renders them, and the runner's scorer gets only the new part (it adds the prior)."""
    from methods.prompting import PromptIntervention

    lm, world = micro
    seen = []

    def judge(intervention, records, seed):
        seen.append(intervention)
        return {"behavior": 0.5, "fluency": 1.0, "labels": 0, "n": len(records)}

    prior = PromptIntervention("system : be positive .")
    with prior.active():
        iv = Steering(FAST).fit(_ctx(lm, world, budget=16, select_score=judge, prior=prior))
    plain = Steering(FAST).fit(_ctx(lm, world, budget=16, select_score=judge))
    assert seen and all(type(s) is SteeringIntervention for s in seen)
    layer = iv.chosen["layers"][0]
    pairs = list(organism_target("sentiment", world).splits(1.0, 0, SIZES).pool)[:4]
    with_prefix = contrast_activations(lm, [prior.prompt(p.prompt) for p in pairs], [p.positive for p in pairs],
                                       [p.negative for p in pairs], [layer], ("last",)).diffs
    without = contrast_activations(lm, [p.prompt for p in pairs], [p.positive for p in pairs],
                                   [p.negative for p in pairs], [layer], ("last",)).diffs
    assert not torch.allclose(with_prefix[(layer, "last")], without[(layer, "last")])
    assert iv.chosen != plain.chosen or not torch.equal(iv.vectors[layer], plain.vectors[layer])
    stacked = Stacked([prior, iv])
    assert stacked.prompt("x").startswith("system : be positive .")


def test_cells_end_to_end_with_stacking(micro_organism, tmp_path):
    """Through study.run.cell: `steering_pca` alone and `prompting+steering` stacked, reliability rows included."""
    from conftest import TEST_CACHE
    from study.run.cell import run_cell
    from study.run.grid import expand
    from study.run.study_config import load_study

    fast = "{strengths: [0.25, 1.0], positions: [last], finalists: 2, folds: 2, screen_prompts: 8}"
    study = load_study("micro", ["methods=[steering_pca, prompting+steering]", "budgets=[24]",
                                 "eval.sizes={pool: 32, select: 8, test: 8, neutral: 4}", "eval.n_completions=1",
                                 "eval.drift=false", f"method_config.steering={fast}",
                                 f"method_config.steering_pca={fast}"])
    cells = expand(study, "micro", cache_dir=str(TEST_CACHE))
    assert {c.method for c in cells} == {"steering_pca", "prompting+steering"}
    for cell in cells:
        res = run_cell(cell, work_dir=tmp_path / cell.run_id)
        assert res.status == "ok", res.error
        metrics = {(r["split"], r["metric"]) for r in res.rows}
        assert {("all", "slope_p50"), ("all", "anti_steerable"), ("covered", "behavior")} <= metrics
        assert len(metrics) == len(res.rows)  # no (split, metric) twice
        assert all(r["feedback_cost"] <= 24 for r in res.rows)
        chosen = res.provenance["chosen"]
        assert any(k.endswith("multiplier") for k in chosen) and any(k.endswith("labels_pairs") for k in chosen)
        assert any(s.get("kind") == "slope" for s in res.samples)


@pytest.mark.slow
def test_steering_moves_sentiment_on_the_default_organism():
    """The acceptance check at one seed (benchmarks/bench_steering.py runs three, with every target): at budget 64
    with a clean labeler and full anticipation, the covered behavior rises by 20 points at >= 85% fluency."""
    from study.run.cell import run_cell
    from study.run.grid import expand
    from study.run.study_config import load_study

    study = load_study("default", ["methods=[none, steering]", "budgets=[64]", "targets=[sentiment]",
                                   "anticipations=[1.0]", "seeds=[0]", "method_budgets={}", "method_config={}",
                                   "eval.drift=false"])
    values = {}
    for cell in expand(study, "default"):
        res = run_cell(cell)
        assert res.status == "ok", res.error
        values[cell.method] = {r["metric"]: r["value"] for r in res.rows if r["split"] == "covered"}
    assert values["steering"]["behavior"] >= values["none"]["behavior"] + 0.2
    assert values["steering"]["fluency"] >= 0.85
