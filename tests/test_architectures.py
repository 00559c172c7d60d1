"""LoRA targets and decoder blocks across architectures: tiny random-init models of eleven layouts, each adapted on
every attention and MLP projection of its decoder blocks and nothing else (no LM head, no vision tower)."""

from __future__ import annotations

import io
import types

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers.pytorch_utils import Conv1D

from methods.trl_presets import lora_config
from study.core.errors import UserError
from study.lm.architectures import adapted_modules, lora_target_modules, modules_outside_blocks
from study.lm.models import decoder_blocks, final_norm, load_model
from tiny_models import FAMILIES, MORE_FAMILIES, tiny_model

LLAMA = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
EXPECTED = {
    "llama": LLAMA, "qwen2": LLAMA, "mistral": LLAMA, "gemma": LLAMA, "gemma3_text": LLAMA, "gemma3": LLAMA,
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "phi3": ["o_proj", "qkv_proj", "gate_up_proj", "down_proj"],
    "phi": ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
    "gptj": ["k_proj", "v_proj", "q_proj", "out_proj", "fc_in", "fc_out"],
}
# The list lora_config passed before it looked at the model; PEFT kept the names a model has.
OLD_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
               "c_attn", "c_proj", "c_fc", "query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]


def _block_projections(model) -> set[str]:
    inside = {id(m) for block in decoder_blocks(model) for m in block.modules()}
    return {name for name, m in model.named_modules() if id(m) in inside and isinstance(m, (nn.Linear, Conv1D))}


@pytest.mark.parametrize("family", FAMILIES + MORE_FAMILIES)
def test_lora_adapts_every_attention_and_mlp_projection(family):
    model, _ = tiny_model(family)
    assert len(decoder_blocks(model)) == 2 and isinstance(final_norm(model), nn.Module)
    assert lora_target_modules(model) == EXPECTED[family]
    projections = _block_projections(model)

    peft_model = get_peft_model(model, lora_config(model, rank=2, alpha=4))

    adapted = adapted_modules(peft_model)
    assert set(adapted) == projections  # everything in the blocks, nothing outside (LM head, vision tower)
    assert any("attn" in n or "attention" in n for n in adapted) and any(".mlp." in n for n in adapted)
    assert not any(n.startswith(("lm_head", "model.vision_tower")) for n in adapted)
    with torch.no_grad():
        assert peft_model(torch.tensor([[4, 5, 6]])).logits.shape == (1, 3, model.config.get_text_config().vocab_size)


def test_image_text_model_keeps_its_vision_tower_out():
    model, _ = tiny_model("gemma3")
    assert [id(b) for b in decoder_blocks(model)] == [id(b) for b in model.model.language_model.layers]
    assert final_norm(model) is model.model.language_model.norm
    outside = modules_outside_blocks(model, lora_target_modules(model))
    assert outside and all(n.startswith("model.vision_tower.") for n in outside)
    # Leaf names alone would adapt the tower's q/k/v too: lora_config excludes them.
    naive = adapted_modules(get_peft_model(tiny_model("gemma3")[0], LoraConfig(r=2, target_modules=LLAMA)))
    assert set(outside) <= set(naive)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2", "gpt_neox"])
def test_lora_is_unchanged_on_the_families_it_covered(family):
    """The organism (a Llama) and the other old families get the same adapters, initialised identically."""
    model, _ = tiny_model(family)
    old = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=OLD_TARGETS, task_type="CAUSAL_LM",
                     bias="none", fan_in_fan_out=family == "gpt2")
    torch.manual_seed(3)
    before = get_peft_model(model, old)
    model, _ = tiny_model(family)
    config = lora_config(model, 8, 16)
    torch.manual_seed(3)
    after = get_peft_model(model, config)

    assert config.exclude_modules is None and config.fan_in_fan_out == old.fan_in_fan_out
    assert adapted_modules(after) == adapted_modules(before)
    old_state, new_state = before.state_dict(), after.state_dict()
    assert old_state.keys() == new_state.keys()
    assert all(torch.equal(old_state[k], new_state[k]) for k in old_state)


def test_explicit_targets_are_used_as_given():
    model, _ = tiny_model("llama")
    assert lora_config(model, 2, 4, targets=("q_proj",)).target_modules == {"q_proj"}


def test_adapted_modules_of_a_plain_model_is_empty():
    assert adapted_modules(tiny_model("llama")[0]) == []


class _NoProjections(nn.Module):
    """A model with decoder blocks (model.layers) that hold a norm and a router, but no projection."""

    def __init__(self):
        super().__init__()
        self.config = types.SimpleNamespace(name_or_path="toy/no-proj", model_type="toy")
        block = nn.ModuleDict({"norm": nn.LayerNorm(4), "router": nn.Linear(4, 2)})
        self.model = nn.Module()
        self.model.layers = nn.ModuleList([block])


def test_a_model_without_projections_is_a_user_error():
    with pytest.raises(UserError) as err:
        lora_target_modules(_NoProjections())
    text = str(err.value)
    assert text.startswith("model 'toy/no-proj' (architecture _NoProjections): no attention or MLP projection found")
    assert "router" in text and "q_proj" in text and "\n" not in text


def test_a_model_missing_one_role_is_a_user_error():
    """LoRA must not silently adapt attention only (a MoE whose experts are fused tensors looks like this)."""
    model, _ = tiny_model("llama")
    for block in decoder_blocks(model):
        block.mlp = nn.Identity()
    with pytest.raises(UserError, match=r"LlamaForCausalLM\): LoRA found attention projections .* but no mlp"):
        lora_target_modules(model)


def test_a_model_without_blocks_is_a_user_error():
    with pytest.raises(UserError, match="cannot find the decoder blocks of Linear"):
        lora_target_modules(nn.Linear(2, 2))


@pytest.mark.parametrize("family", MORE_FAMILIES)
def test_load_saved_model_of_more_families(family, tmp_path):
    model, tokenizer = tiny_model(family)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    lm = load_model(str(tmp_path), device="cpu")

    assert type(lm.model) is type(model) and lm.family == model.config.get_text_config().model_type
    assert lm.num_layers == 2 == len(lm.blocks) and lm.hidden_size == 32
    assert [id(b) for b in lm.blocks] == [id(b) for b in decoder_blocks(lm.model)]
    assert isinstance(lm.final_norm, nn.Module)
    ids = torch.tensor([[4, 5, 6, 7]])
    with torch.no_grad():
        assert torch.allclose(lm.model(ids).logits, model(ids).logits, atol=1e-6)


def test_a_study_that_trains_lora_refuses_such_an_architecture_before_any_cell_runs(tmp_path):
    """Mixtral's experts are fused tensors in transformers 5: LoRA would adapt attention alone. A study with a LoRA
    method on it stops in preflight (also in --dry-run), naming the model; without a LoRA method it plans."""
    from transformers import MixtralConfig

    from study.run.runner import run_study

    MixtralConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, num_local_experts=2).save_pretrained(tmp_path / "mixtral")
    base = [f"models=[{tmp_path / 'mixtral'}]", "targets=[tests/data/sample_ab.json]"]
    with pytest.raises(UserError, match=r"models\[0\]: model .*MixtralForCausalLM.*no mlp projection"):
        run_study("micro", base + ["methods=[none,lora_sft]"], dry_run=True, results=tmp_path / "r", out=io.StringIO())
    summary = run_study("micro", base + ["methods=[none,steering]"], dry_run=True, results=tmp_path / "r",
                        out=io.StringIO())
    assert summary.total > 0 and not (tmp_path / "r").exists()
