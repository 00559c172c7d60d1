"""Model loading: tiny random-init models of six families saved to disk and loaded back through load_model."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from study.core.errors import UserError
from study.lm.models import chat_format, decoder_blocks, final_norm, load_model
from study.organism import pretrain
from tiny_models import FAMILIES, tiny_model, tiny_tokenizer


@pytest.mark.parametrize("family", FAMILIES)
def test_load_saved_model(family, tmp_path):
    model, tokenizer = tiny_model(family)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    lm = load_model(str(tmp_path), device="cpu")

    assert lm.family == family and lm.name == str(tmp_path)
    assert lm.num_layers == 2 == len(lm.blocks) and lm.hidden_size == 32
    assert [id(b) for b in lm.blocks] == [id(b) for b in decoder_blocks(lm.model)]
    assert isinstance(lm.final_norm, nn.Module)
    assert lm.tokenizer.pad_token == lm.tokenizer.eos_token == "<eos>"
    assert lm.tokenizer.padding_side == "left" and not lm.model.training
    assert lm.tokenizer("the cat sat").input_ids == tokenizer("the cat sat").input_ids == [100, 101, 102]
    ids = torch.tensor([[4, 5, 6, 7]])
    with torch.no_grad():
        assert torch.allclose(lm.model(ids).logits, model(ids).logits, atol=1e-6)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_decoder_blocks_through_peft(family):
    from peft import LoraConfig, get_peft_model

    model, _ = tiny_model(family)
    blocks = decoder_blocks(model)
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules="all-linear"))
    assert [id(b) for b in decoder_blocks(wrapped)] == [id(b) for b in blocks]
    assert final_norm(wrapped) is final_norm(model)


def test_unsupported_model_lists_families():
    with pytest.raises(UserError, match="gpt2.*llama.*gpt_neox"):
        decoder_blocks(nn.Linear(2, 2))


def test_missing_local_path_is_a_one_line_user_error(tmp_path):
    spec = str(tmp_path / "no-such-model")
    with pytest.raises(UserError) as err:
        load_model(spec)
    assert spec in str(err.value) and "\n" not in str(err.value)


def test_folder_without_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="config.json"):
        load_model(str(tmp_path))
    tiny_model("llama")[0].save_pretrained(tmp_path)  # weights but no tokenizer files
    with pytest.raises(UserError) as err:
        load_model(str(tmp_path))
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.skipif(os.environ.get("HF_HUB_OFFLINE") != "1", reason="would reach the network")
def test_unknown_hub_name_offline_is_a_user_error():
    with pytest.raises(UserError, match="nobody-xyz/no-such-model"):
        load_model("nobody-xyz/no-such-model")


def test_bad_dtype_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="float33"):
        load_model(str(tmp_path), dtype="float33")


def test_organism_spec_calls_load_organism(monkeypatch, tmp_path):
    calls = []

    def load_organism(config, cache_dir=None):
        calls.append((config, cache_dir))
        return tiny_model("llama")

    monkeypatch.setattr(pretrain, "load_organism", load_organism)

    lm = pretrain.organism_model({"seed": 1}, cache_dir=tmp_path, device="cpu")

    assert calls == [({"seed": 1}, tmp_path)]
    assert lm.family == "llama" and lm.num_layers == 2 and lm.tokenizer.padding_side == "left"
    assert lm.tokenizer.pad_token is not None


def test_chat_format_uses_template_only_when_present():
    plain = tiny_tokenizer()
    assert chat_format(plain, "the cat") == "the cat"
    templated = tiny_tokenizer(chat_template="{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} "
                                             "{% endfor %}{% if add_generation_prompt %}assistant :{% endif %}")
    assert chat_format(templated, "the cat") == "user : the cat assistant :"
