"""The trained methods (lora_sft, dpo, rlhf, bon) at tiny budgets on the micro organism: TRL trainers run, the adapter
trains, every label is bought and counted, and outside `with` the shared model is exactly the base model.

The micro organism is barely fluent, so most pairs of its samples are ties (both unreadable); these tests train on
ties (`train_on_ties`) so that the trainers have data. Behavior is checked on the default organism by
benchmarks/bench_trained.py, not here.
"""

from __future__ import annotations

import pytest
import torch

from methods.base import FitContext, Intervention
from study.feedback.labeler import Budget, Labeler
from study.lm.models import LoadedModel, decoder_blocks
from study.feedback.targets import organism_target

PROMPTS = ["review of hotel : the bed was", "user : how was the soup at the restaurant ? assistant : it was"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models train far faster on one intra-op thread, and the CI machine is shared.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def lm(micro_organism):
    model, tok, world = micro_organism
    blocks = decoder_blocks(model)
    return LoadedModel(model, tok, "micro", "llama", blocks, model.config.hidden_size, len(blocks)), world


def make_ctx(lm, budget: int, config, seed: int = 0, target: str = "sentiment") -> FitContext:
    lm, world = lm
    t = organism_target(target, world)
    splits = t.splits(1.0, seed=seed)
    labeler = Labeler(t, Budget(budget), seed=seed)
    return FitContext(model=lm, target=t, labeler=labeler, pool=list(splits.pool), select=list(splits.select),
                      budget=budget, seed=seed, config=config)


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
    # every unit of the budget bought a label, and no more (at 40 the selection share is too small to use)
    assert ctx.labeler.budget.spent == budget
    kind = "demonstrate" if name == "lora_sft" else "compare"
    assert ctx.labeler.budget.counts == {kind: budget // ctx.labeler.cost(kind)}
    assert iv.chosen["selection"] == []
    # the adapter trained: LoRA's B matrices start at zero
    lora_b = [v for k, v in iv.state.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)
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


def test_selection_spends_the_rest_of_the_budget(lm):
    iv, ctx = fit("dpo", lm, 128, **FAST)
    assert ctx.labeler.budget.spent == 128
    assert ctx.labeler.budget.counts["compare"] == 96  # 25% kept for selection: 4 snapshots x 8 judgments
    table = iv.chosen["selection"]
    assert [row["candidate"] for row in table] == [2, 3, 4, 6]  # snapshots at 1/4, 1/2, 3/4 and all of the run
    assert sum(row["labels"] for row in table) == ctx.labeler.budget.counts["judge"] == 32
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
    assert ctx.labeler.budget.spent == 32 and ctx.labeler.budget.counts == {"compare": 32}
    tok, model = lm[0].tokenizer, lm[0].model
    with iv:
        picked = sample(model, tok, PROMPTS, n=2, max_new_tokens=10, seed=3)
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


def test_no_decisive_comparison_returns_the_base_model(lm):
    iv, ctx = fit("dpo", lm, 8, min_steps=2, max_steps=2)  # the micro organism's pairs are all ties
    assert type(iv) is Intervention and iv.chosen["pairs_trained"] == 0
    assert ctx.labeler.budget.spent == 8


def test_split_budget_rule():
    from methods.selection import split_budget

    class L:
        def cost(self, kind, record_backed=False):
            return 1

    assert split_budget(L(), 256, 0.25, 3) == (192, 64)
    assert split_budget(L(), 64, 0.25, 3) == (64, 0)  # 16 < 3 x 8: all to training labels
    assert split_budget(L(), 256, 0.25, 1) == (256, 0)
    assert split_budget(L(), 256, 0.0, 3) == (256, 0)


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
    from study.lm.models import decoder_blocks

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
        assert labeler.budget.counts == {"compare": n}  # each record's pair once, at one unit each
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
