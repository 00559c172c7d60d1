"""The trained methods (lora_sft, dpo, rlhf, bon) at tiny budgets on the micro organism: TRL trainers run, the adapter
trains, every label is bought and counted, and outside `with` the shared model is exactly the base model.

These tests train on ties too (`train_on_ties`), so that the trainers have data at the smallest budgets. Behavior
moving in the right direction is checked on the micro organism by tests/test_micro_behavior.py, and on the default
organism by benchmarks/bench_trained.py.
"""

from __future__ import annotations

import pytest
import torch

from methods.base import FitContext, Intervention
from conftest import fit_context
from study.feedback.labeler import Budget, Labeler

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["review of hotel : the bed was", "user : how was the soup at the restaurant ? assistant : it was"]




@pytest.fixture(scope="module")
def lm(micro_lm):
    return micro_lm


def make_ctx(lm, budget: int, config, seed: int = 0, target: str = "sentiment") -> FitContext:
    return fit_context(lm, budget, config, seed, target)


def base_outputs(lm) -> tuple[list[torch.Tensor], list[list[str]]]:
    from study.lm.generation import sample

    lm = lm[0]
    ids = [lm.tokenizer(p, return_tensors="pt")["input_ids"] for p in PROMPTS]
    with torch.no_grad():
        outs = [lm.model(input_ids=i).logits for i in ids]
    return outs, sample(lm.model, lm.tokenizer, PROMPTS, n=3, max_new_tokens=10, seed=5)


def fit(name: str, lm, budget: int, **config):
    from methods.registry import resolve

    cls = resolve(name)
    cfg = cls.Config(**config)
    ctx = make_ctx(lm, budget, cfg)
    return cls(cfg).fit(ctx), ctx


def assert_base_exactly(lm, before) -> None:
    logits_now, samples_now = base_outputs(lm)
    assert all(torch.equal(a, b) for a, b in zip(before[0], logits_now)), "the model changed outside `with`"
    assert samples_now == before[1]
    model = lm[0].model
    from peft.tuners.tuners_utils import BaseTunerLayer

    assert not any(isinstance(m, BaseTunerLayer) for m in model.modules()), "an adapter layer was left behind"
    assert "peft_config" not in model.__dict__ and "forward" not in model.__dict__
    assert all(p.requires_grad for p in model.parameters())  # TRL freezes the base; we give it back as it was


def assert_records_adapter(iv, model, rank: int = 8) -> None:
    """`chosen` names the modules that got a LoRA layer and counts the adapter's parameters (r x (in + out) each)."""
    names = iv.chosen["lora_modules"]
    assert names and names == sorted(set(names))
    modules = dict(model.named_modules())
    assert all(type(modules[n]).__name__ == "Linear" for n in names)  # base-model names, adapter layers gone
    assert {n.rsplit(".", 1)[1] for n in names} >= {"q_proj", "v_proj", "down_proj"}
    expected = sum(rank * (modules[n].in_features + modules[n].out_features) for n in names)
    assert iv.chosen["trainable_parameters"] == iv.num_parameters() == expected > 0


FAST = dict(min_steps=4, max_steps=6, batch_size=8, train_on_ties=True)


@pytest.mark.parametrize("name,budget,config,trainer", [
    ("lora_sft", 40, dict(min_steps=4, max_steps=6, batch_size=8), "SFTTrainer"),
    ("dpo", 40, FAST, "DPOTrainer"),
    ("rlhf", 40, dict(steps=4, batch_size=8, num_generations=2, rm_epochs=1.0, train_on_ties=True), "RLOOTrainer"),
    ("rlhf", 40, dict(trainer="grpo", steps=4, batch_size=8, num_generations=2, rm_epochs=1.0, train_on_ties=True),
     "GRPOTrainer"),
])
def test_trained_method_adapter(lm, tmp_path, name, budget, config, trainer):
    before = base_outputs(lm)
    iv, ctx = fit(name, lm, budget, **config)
    # TRL's trainer did the training, and it is recorded with the cell
    assert iv.chosen["trainer"] == f"trl.{trainer}"
    # every unit of the budget bought a label, and no more: a quarter (10) judged the snapshots, the rest trained
    assert ctx.labeler.account.spent == budget == iv.chosen["labels_spent"]
    kind = "demonstrate" if name == "lora_sft" else "compare"
    assert ctx.labeler.account.counts[kind] == (budget - 10) // ctx.labeler.cost(kind)
    assert iv.chosen["labels_train"] == ctx.labeler.account.costs[kind]
    assert iv.chosen["selection"] and iv.chosen["labels_select"] == ctx.labeler.account.costs["judge"] >= 10
    # the adapter trained: LoRA's B matrices start at zero
    lora_b = [v for k, v in iv.state.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)
    assert_records_adapter(iv, lm[0].model)
    # outside `with` the model is the base model, bit for bit; inside, it is not
    assert_base_exactly(lm, before)
    ids = lm[0].tokenizer(PROMPTS[0], return_tensors="pt")["input_ids"]
    with iv, torch.no_grad():
        inside = lm[0].model(input_ids=ids).logits
    assert not torch.equal(inside, before[0][0])
    assert_base_exactly(lm, before)
    # save/load round trip (PEFT's format: adapter_config.json + adapter_model.safetensors)
    iv.save(tmp_path / name)
    assert (tmp_path / name / "adapter_model.safetensors").is_file()
    again = type(iv).load(tmp_path / name, lm[0])
    with again, torch.no_grad():
        assert torch.equal(lm[0].model(input_ids=ids).logits, inside)
    assert_base_exactly(lm, before)
    if name == "lora_sft":  # memorization: the share of test completions that repeat a demonstration word for word
        assert 0 < len(iv.demonstrations) == iv.chosen["distinct_demonstrations"] <= iv.chosen["demonstrations"]
        splits = ctx.target.splits(0.5, 0)
        with iv.session():
            rows, _ = iv.extra_metrics(lm[0], ctx.target, splits)
        got = {(r["split"], r["metric"]): r for r in rows}
        assert set(got) == {(sp, m) for sp in ("covered", "uncovered") for m in ("memorized", "memorized_base")}
        assert all(0.0 <= r["value"] <= 1.0 for r in rows)
        assert got[("covered", "memorized")]["n"] == len(splits.test_covered)
        assert_base_exactly(lm, before)


def test_selection_spends_the_rest_of_the_budget(lm):
    iv, ctx = fit("dpo", lm, 128, **FAST)
    assert ctx.labeler.account.spent == 128
    assert ctx.labeler.account.counts["compare"] == 96  # 25% kept for selection: 4 snapshots x 8 judgments
    table = iv.chosen["selection"]
    assert [row["candidate"] for row in table] == [2, 3, 4, 6]  # snapshots at 1/4, 1/2, 3/4 and all of the run
    assert sum(row["labels"] for row in table) == ctx.labeler.account.counts["judge"] == 32
    assert iv.chosen["steps"] in (2, 3, 4, 6)


def test_nested_activation_injects_once(lm):
    iv, _ = fit("dpo", lm, 24, **FAST)
    before = base_outputs(lm)
    ids = lm[0].tokenizer(PROMPTS[0], return_tensors="pt")["input_ids"]
    with iv, torch.no_grad():
        once = lm[0].model(input_ids=ids).logits
        with iv.active(prompt_width=3):
            twice = lm[0].model(input_ids=ids).logits
        again = lm[0].model(input_ids=ids).logits
    assert torch.equal(once, twice) and torch.equal(once, again)
    assert_base_exactly(lm, before)


def test_best_of_n_keeps_the_reward_models_favourite(lm, tmp_path):
    from study.lm.generation import sample

    before = base_outputs(lm)
    iv, ctx = fit("bon", lm, 32, n=4, rm_epochs=1.0, train_on_ties=True)
    assert ctx.labeler.account.spent == 32 and ctx.labeler.account.counts == {"compare": 32}
    tok, model = lm[0].tokenizer, lm[0].model
    with iv, iv.active():  # nested: generate is wrapped once, and unwrapped when the outer block exits
        picked = sample(model, tok, PROMPTS, n=2, max_new_tokens=10, seed=3)
    assert "generate" not in model.__dict__
    # the same seed without the intervention draws the n candidates of each row in one batch
    candidates = sample(model, tok, [p for p in PROMPTS for _ in range(2) for _ in range(4)], n=1,
                        max_new_tokens=10, seed=3)
    assert_base_exactly(lm, before)
    for i, p in enumerate(PROMPTS):
        for j in range(2):
            group = [c[0] for c in candidates[(i * 2 + j) * 4:(i * 2 + j + 1) * 4]]
            scores = iv.reward_model.score([p] * 4, group)
            assert picked[i][j] == group[max(range(4), key=scores.__getitem__)]
    iv.save(tmp_path / "bon")
    again = type(iv).load(tmp_path / "bon", lm[0])
    assert again.reward_model.score([PROMPTS[0]], ["cozy ."]) == pytest.approx(
        iv.reward_model.score([PROMPTS[0]], ["cozy ."]), abs=1e-5)


def test_no_decisive_comparison_returns_the_base_model(lm, monkeypatch):
    from study.feedback.labeler import Labeler

    monkeypatch.setattr(Labeler, "_compare", lambda self, rng, prompt, a, b: (rng.random() < 0.5, True))  # all ties
    iv, ctx = fit("dpo", lm, 8, min_steps=2, max_steps=2)
    assert type(iv) is Intervention and iv.chosen["pairs_trained"] == 0
    assert ctx.labeler.account.spent == 8


def test_split_budget_rule():
    from methods.selection import split_budget

    class L:
        def cost(self, kind, record_backed=False):
            return 1

    assert split_budget(L(), 256, 0.25, 3) == (192, 64)
    assert split_budget(L(), 64, 0.25, 4) == (48, 16)
    assert split_budget(L(), 16, 0.25, 4) == (16, 0)  # 4 < 2 rounds x 4 snapshots: all to training labels
    assert split_budget(L(), 16, 0.5, 4) == (8, 8)
    assert split_budget(L(), 256, 0.25, 1) == (256, 0)
    assert split_budget(L(), 256, 0.0, 3) == (256, 0)


@pytest.mark.parametrize("name", ["lora_sft", "dpo"])
def test_training_length_grows_with_the_labels_bought(lm, name):
    """The labels that budgets 16 and 64 buy (the real purchase on the micro organism, the budget rule applied)
    train for more steps at 64; the rule is epochs over the examples, clamped."""
    from methods.registry import resolve
    from methods.selection import split_budget

    cls = resolve(name)
    method = cls(cls.Config())
    steps = {}
    for budget in (16, 64):
        ctx = make_ctx(lm, budget, method.config)
        fit_units, _ = split_budget(ctx.labeler, budget, method.config.select_share, len(method.config.snapshots))
        data, _ = method.buy(ctx, fit_units)
        steps[budget] = method.train_steps(data)
        cfg = method.config
        passes = -(-int(cfg.epochs * len(data)) // cfg.batch_size)  # ceil(epochs * n / batch_size)
        assert steps[budget] == max(cfg.min_steps, min(cfg.max_steps, passes))
    assert steps[64] > steps[16] >= method.config.min_steps


def test_registry_and_configs():
    from methods.registry import available, resolve
    from study.core.config import from_dict

    for name in ("lora_sft", "dpo", "rlhf", "bon"):
        assert name in available()
        cls = resolve(name)
        assert cls.name == name
        from_dict(cls.Config, {})
    from study.core.errors import UserError

    with pytest.raises(UserError, match="batch_size"):
        from_dict(resolve("rlhf").Config, {"batch_size": 30, "num_generations": 4})


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox"])
def test_dpo_and_reward_model_on_a_preference_data_set(family, tmp_path):
    """Data-set targets: the record's own pair is the comparison (one record = one unit), on other architectures."""
    from tiny_models import tiny_model

    from study.feedback.external import load_external
    from study.lm.models import LoadedModel, decoder_blocks

    model, tok = tiny_model(family)
    tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    lm_ = (LoadedModel(model, tok, family, family, decoder_blocks(model), 32, 2), None)
    target = load_external("tests/data/sample_preference.jsonl")
    splits = target.splits(1.0, seed=0)
    n = len(splits.pool)
    for name, config in (("dpo", dict(min_steps=2, max_steps=2, batch_size=4, select_share=0.0)),
                         ("bon", dict(n=2, rm_epochs=1.0))):
        from methods.registry import resolve

        cls = resolve(name)
        cfg = cls.Config(**config)
        labeler = Labeler(target, Budget(n + 5), seed=0)
        ctx = FitContext(model=lm_[0], target=target, labeler=labeler, pool=list(splits.pool),
                         select=list(splits.select), budget=n + 5, seed=0, config=cfg)
        ids = tok(splits.pool[0].prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            before = model(input_ids=ids).logits
        iv = cls(cfg).fit(ctx)
        assert labeler.account.counts == {"compare": n}  # each record's pair once, at one unit each
        with torch.no_grad():
            assert torch.equal(model(input_ids=ids).logits, before)
        if name == "dpo":
            assert iv.chosen["trainer"] == "trl.DPOTrainer" and iv.chosen["pairs_trained"] > 0
            with iv, torch.no_grad():
                assert not torch.equal(model(input_ids=ids).logits, before)
            with torch.no_grad():
                assert torch.equal(model(input_ids=ids).logits, before)
        else:
            assert iv.chosen["reward_model"]["trainer"] == "trl.RewardTrainer"


TRAINED = ("lora_sft", "dpo", "rlhf", "bon")
# The defaults as the study's stored cells were computed with (their ids hash every field): a refactoring of the
# configs must leave them exactly so. (lora_sft and dpo: 8 passes in batches of 4, floor 4, cap 200, since the fair
# training-length rule; before it, 6 and 4 passes in batches of 16 with a floor of 12 steps.)
DEFAULTS = {
    "lora_sft": dict(alpha=16.0, batch_size=4, epochs=8.0, labels="demonstrations", learning_rate=3e-3,
                     max_steps=200, min_steps=4, precision="auto", rank=8, select_share=0.25,
                     snapshots=[0.25, 0.5, 0.75, 1.0]),
    "dpo": dict(alpha=16.0, batch_size=4, beta=0.1, epochs=8.0, labels="comparisons", learning_rate=1e-3,
                max_steps=200, min_steps=4, precision="auto", rank=8, select_share=0.25,
                snapshots=[0.25, 0.5, 0.75, 1.0], temperature=1.0, train_on_ties=False),
    "rlhf": dict(alpha=16.0, batch_size=32, kl_coef=0.5, learning_rate=3e-3, num_generations=4, precision="auto",
                 rank=8, rm_epochs=16.0, rm_learning_rate=3e-3, rm_rank=8, select_share=0.25,
                 snapshots=[0.25, 0.5, 0.75, 1.0], steps=40, temperature=1.0, train_on_ties=False, trainer="rloo"),
    "bon": dict(n=8, precision="auto", rm_epochs=16.0, rm_learning_rate=3e-3, rm_rank=8, temperature=1.0,
                train_on_ties=False),
}


def test_trained_config_defaults_stay_as_the_cells_were_computed():
    from methods.registry import resolve
    from methods.trained import TrainedConfig
    from study.core.config import to_dict

    for name in TRAINED:
        config = resolve(name).Config
        assert issubclass(config, TrainedConfig)
        assert to_dict(config()) == DEFAULTS[name], name


BAD_SHARED = [
    {"batch_size": 0}, {"min_steps": 10, "max_steps": 5}, {"min_steps": 0}, {"select_share": 1.0},
    {"select_share": -0.1}, {"learning_rate": 0.0}, {"epochs": 0.0}, {"rank": 0}, {"alpha": 0.0},
    {"snapshots": (0.5, 1.5)}, {"precision": "fp16"}, {"temperature": 0.0}, {"rm_learning_rate": -1e-3},
    {"rm_epochs": 0.0}, {"rm_rank": 0}, {"labels": "essays"},
]


@pytest.mark.parametrize("bad", BAD_SHARED, ids=lambda bad: ",".join(f"{k}={v}" for k, v in bad.items()))
def test_trained_configs_reject_the_same_bad_shared_values(bad):
    """A shared field is checked by the shared validate: every trained method that has it rejects the same value."""
    import dataclasses

    from methods.registry import resolve
    from study.core.config import from_dict
    from study.core.errors import ConfigError

    having = [n for n in TRAINED if set(bad) <= {f.name for f in dataclasses.fields(resolve(n).Config)}]
    assert len(having) >= 2, f"{bad} is not a shared field"
    for name in having:
        config = resolve(name).Config
        with pytest.raises(ConfigError, match=next(iter(bad))):
            from_dict(config, bad)
        with pytest.raises(ConfigError):
            resolve(name)(config(**bad))  # the method checks a config built in code too


def test_every_shared_field_has_a_bad_value_above():
    """Each field that two or more trained methods share (bon's included) is tried with a bad value above."""
    import collections
    import dataclasses

    from methods.registry import resolve

    count = collections.Counter(f.name for n in TRAINED for f in dataclasses.fields(resolve(n).Config))
    shared = {name for name, k in count.items() if k >= 2} - {"train_on_ties"}  # a bool: no bad value
    assert shared == {k for bad in BAD_SHARED for k in bad}
    bon = {f.name for f in dataclasses.fields(resolve("bon").Config)}
    assert bon - {"n", "train_on_ties"} <= shared


def test_chosen_names_the_adapted_modules(lm):
    iv, _ = fit("lora_sft", lm, 8, min_steps=2, max_steps=2, batch_size=2, rank=4, snapshots=(1.0,))
    assert_records_adapter(iv, lm[0].model, rank=4)
    assert iv.chosen["trainable_parameters"] == sum(v.numel() for v in iv.state.values())


def test_dpo_reference_log_probs_are_the_base_models_computed_once(lm, monkeypatch):
    """DPO's reference is the base model (adapter off), fixed, so TRL computes its log-probabilities once before
    training: every pair carries them, and they are the base model's teacher-forced log-probabilities."""
    import trl

    from study.lm.logprobs import continuation_logprobs

    seen = []
    real = trl.DPOTrainer.__init__

    def grab(self, *a, **k):
        real(self, *a, **k)
        seen.append(self)

    monkeypatch.setattr(trl.DPOTrainer, "__init__", grab)
    fit("dpo", lm, 40, **FAST)
    data = seen[0].train_dataset
    assert {"ref_chosen_logps", "ref_rejected_logps"} <= set(data.column_names) and len(data) > 0
    model, tok = lm[0].model, lm[0].tokenizer
    for side in ("chosen", "rejected"):
        base = []
        for logp, ids, mask in continuation_logprobs(model, tok, data["prompt"], data[side]):
            base += (logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1) * mask).sum(-1).tolist()
        assert data[f"ref_{side}_logps"] == pytest.approx(base, abs=1e-4)
