"""Sampling in low precision: logits are drawn as float32 and non-finite ones raise a clear error, on CPU with tiny
random-init models in bfloat16."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import LogitsProcessor

import study.lm.generation as generation
from study.lm.generation import FiniteFloat32Logits, sample
from tiny_models import WORDS, tiny_model

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["the cat sat", "a mat w1 w2 w3"]


def test_processor_casts_to_float32_and_lets_masks_through():
    scores = torch.tensor([[1.0, -math.inf, 2.5], [0.5, 0.25, -1.0]], dtype=torch.bfloat16)
    out = FiniteFloat32Logits(torch.bfloat16)(torch.zeros(2, 3, dtype=torch.long), scores)
    assert isinstance(FiniteFloat32Logits(), LogitsProcessor)
    assert out.dtype == torch.float32 and torch.equal(out, scores.float())


@pytest.mark.parametrize("bad", [math.nan, math.inf, "row"])
def test_processor_rejects_nan_inf_and_rows_with_nothing_finite(bad):
    scores = torch.zeros(3, 5, dtype=torch.float16)
    if bad == "row":
        scores[1] = -math.inf
    else:
        scores[1, 2] = bad
    with pytest.raises(RuntimeError, match=r"non-finite logits while sampling \(dtype float16\): 1 of 3 sequences"):
        FiniteFloat32Logits()(torch.zeros(3, 4, dtype=torch.long), scores)


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_sampling_a_bfloat16_model(temperature):
    model, tokenizer = tiny_model("llama")
    model = model.to(torch.bfloat16)
    tokenizer.pad_token = tokenizer.eos_token

    texts = sample(model, tokenizer, PROMPTS, n=3, temperature=temperature, max_new_tokens=6, seed=1,
                   stop_at_eos=False)

    assert len(texts) == 2 and all(len(t) == 3 for t in texts)
    assert all(len(c.split()) == 6 and set(c.split()) <= set(WORDS) for t in texts for c in t)
    assert texts == sample(model, tokenizer, PROMPTS, n=3, temperature=temperature, max_new_tokens=6, seed=1,
                           stop_at_eos=False)
    if temperature == 0:
        assert all(len(set(t)) == 1 for t in texts)  # greedy: the three copies agree


def test_float32_sampling_draws_the_same_tokens_as_without_the_processor(monkeypatch):
    model, tokenizer = tiny_model("qwen2")
    tokenizer.pad_token = tokenizer.eos_token
    kwargs = dict(n=4, temperature=1.0, max_new_tokens=8, seed=7)
    guarded = sample(model, tokenizer, PROMPTS, **kwargs)
    monkeypatch.setattr(generation, "_finite_float32_class", lambda: lambda dtype: lambda ids, scores: scores)
    assert sample(model, tokenizer, PROMPTS, **kwargs) == guarded


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_nan_logits_raise_a_clear_error(monkeypatch, temperature):
    model, tokenizer = tiny_model("llama")
    model = model.to(torch.bfloat16)
    tokenizer.pad_token = tokenizer.eos_token
    forward = model.forward

    def nan_forward(*args, **kwargs):
        out = forward(*args, **kwargs)
        out.logits = torch.full_like(out.logits, math.nan)
        return out

    monkeypatch.setattr(model, "forward", nan_forward)
    with pytest.raises(RuntimeError, match=r"non-finite logits while sampling \(dtype bfloat16\)") as err:
        sample(model, tokenizer, PROMPTS, n=2, temperature=temperature, max_new_tokens=4)
    assert "probability tensor" not in str(err.value) and "4 of 4 sequences" in str(err.value)


def test_importing_generation_stays_light():
    code = ("import sys, study.lm.generation as g\n"
            "assert 'transformers' not in sys.modules and 'torch' not in sys.modules, 'heavy import'\n"
            "from study.lm.generation import FiniteFloat32Logits\n"
            "from transformers import LogitsProcessor\n"
            "assert issubclass(FiniteFloat32Logits, LogitsProcessor) and g.FiniteFloat32Logits is FiniteFloat32Logits\n"
            "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_finite_float32_logits_casts_checks_and_leaves_no_hook():
    """The guard TRL's online RL trains under: float32 logits from a bf16 model, a clear error on NaN, no hook left."""
    from study.lm.generation import finite_float32_logits

    model = tiny_model("llama")[0].to(torch.bfloat16)
    ids = torch.tensor([[1, 2, 3]])
    with finite_float32_logits(model):
        assert model(input_ids=ids).logits.dtype == torch.float32
    assert model(input_ids=ids).logits.dtype == torch.bfloat16
    head = model.get_output_embeddings()
    assert not head._forward_hooks
    with torch.no_grad():
        head.weight[0, 0] = float("nan")
    with pytest.raises(RuntimeError, match="non-finite logits"), finite_float32_logits(model):
        model(input_ids=ids)
    assert not head._forward_hooks
