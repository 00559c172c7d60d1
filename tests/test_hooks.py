"""Hook arithmetic on tiny random-init models: steering adds exactly the vector where asked, nothing else changes,
no hook outlives its context, and steered generation is the same with and without a KV cache."""

from __future__ import annotations

import pytest
import torch

from study.core.errors import UserError
from study.lm.hooks import record_activations, steer
from study.lm.models import decoder_blocks
from tiny_models import PAD, tiny_model

HOOK_FAMILIES = ["llama", "qwen2", "gpt2", "gpt_neox", "mistral", "gemma"]
IDS = torch.tensor([[4, 5, 6, 7, 8, 9], [10, 11, 12, 13, 14, 15]])


def _blocks(family: str):
    model, _ = tiny_model(family)
    return model, decoder_blocks(model)


def _vector(seed: int = 1, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(32, generator=torch.Generator().manual_seed(seed))


def _no_hooks(blocks) -> bool:
    return all(not b._forward_hooks and not b._forward_pre_hooks for b in blocks)


@pytest.mark.parametrize("family", HOOK_FAMILIES)
@torch.no_grad()
def test_steer_adds_exactly_the_vector(family):
    model, blocks = _blocks(family)
    vector = _vector()
    with record_activations(blocks, [0, 1]) as base:
        base_logits = model(IDS).logits
    with steer(blocks, {1: vector}, multiplier=1.5), record_activations(blocks, [0, 1]) as steered:
        steered_logits = model(IDS).logits

    assert torch.equal(steered[0][0], base[0][0])  # upstream block untouched
    assert torch.equal(steered[1][0], base[1][0] + 1.5 * vector)
    assert not torch.allclose(steered_logits, base_logits)
    assert _no_hooks(blocks)


@pytest.mark.parametrize("family", HOOK_FAMILIES)
@torch.no_grad()
def test_start_positions_leave_earlier_positions_alone(family):
    model, blocks = _blocks(family)
    vector = _vector()
    starts = torch.tensor([2, 4])
    with record_activations(blocks, [0]) as base:
        model(IDS)
    with steer(blocks, {0: vector}, -2.0, start_positions=starts), record_activations(blocks, [0]) as steered:
        model(IDS)

    for row, start in enumerate(starts.tolist()):
        assert torch.equal(steered[0][0][row, :start], base[0][0][row, :start])
        assert torch.equal(steered[0][0][row, start:], base[0][0][row, start:] - 2.0 * vector)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_no_hook_remains_after_an_error(family):
    model, blocks = _blocks(family)
    with pytest.raises(RuntimeError, match="boom"):
        with steer(blocks, {0: _vector(), 1: _vector(2)}, start_positions=torch.tensor([1, 1])):
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        with record_activations(blocks, [0, 1]):
            raise RuntimeError("boom")
    assert _no_hooks(blocks)


def test_bad_layer_is_a_user_error_and_registers_nothing():
    model, blocks = _blocks("llama")
    with pytest.raises(UserError, match="0..1"):
        with steer(blocks, {0: _vector(), 2: _vector()}):
            pass
    with pytest.raises(UserError, match="0..1"):
        with record_activations(blocks, [-1]):
            pass
    assert _no_hooks(blocks)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2", "gpt_neox"])
@torch.no_grad()
def test_steered_generation_same_with_and_without_cache(family):
    model, blocks = _blocks(family)
    # Left-padded batch of prompts of different lengths; steering starts after the padded prompt.
    ids = torch.tensor([[PAD, PAD, 4, 5, 6], [7, 8, 9, 10, 11]])
    mask = (ids != PAD).long()
    starts = torch.full((2,), ids.shape[1])
    kwargs = dict(attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=PAD)

    plain = model.generate(ids, use_cache=True, **kwargs)
    runs = {}
    for use_cache in (True, False):
        with steer(blocks, {1: _vector(scale=8.0)}, start_positions=starts):
            runs[use_cache] = model.generate(ids, use_cache=use_cache, **kwargs)

    assert torch.equal(runs[True], runs[False])
    assert not torch.equal(runs[True], plain)  # the steering did change the continuation
    assert _no_hooks(blocks)


@torch.no_grad()
def test_steered_beam_search_expands_start_positions():
    model, blocks = _blocks("llama")
    ids = torch.tensor([[PAD, 4, 5], [6, 7, 8]])
    kwargs = dict(attention_mask=(ids != PAD).long(), max_new_tokens=4, do_sample=False, num_beams=2,
                  pad_token_id=PAD)
    runs = {}
    for use_cache in (True, False):
        with steer(blocks, {0: _vector(scale=8.0)}, start_positions=torch.full((2,), 3)):
            runs[use_cache] = model.generate(ids, use_cache=use_cache, **kwargs)
    assert torch.equal(runs[True], runs[False])


@torch.no_grad()
def test_cached_prompt_is_not_steered_again():
    # The last step of a cached generation must see the same hidden states as a full forward over the sequence.
    model, blocks = _blocks("llama")
    ids, starts = IDS[:, :3], torch.full((2,), 3)
    with steer(blocks, {0: _vector(scale=8.0)}, start_positions=starts), record_activations(blocks, [1]) as acts:
        out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=PAD)
        n_cached_calls = len(acts[1])
        model(out)
    assert [a.shape[1] for a in acts[1][:n_cached_calls]] == [3, 1, 1]  # prompt, then one new token per step
    full = acts[1][-1]
    assert torch.allclose(torch.cat(acts[1][:n_cached_calls], dim=1), full[:, :-1], atol=1e-5)


@torch.no_grad()
def test_output_hidden_states_see_the_steered_stream():
    model, blocks = _blocks("llama")
    vector = _vector()
    base = model(IDS, output_hidden_states=True).hidden_states  # installs transformers' own capture hooks first
    with steer(blocks, {0: vector}):
        steered = model(IDS, output_hidden_states=True).hidden_states
    assert torch.equal(steered[1], base[1] + vector)  # hidden_states[i + 1] is block i's output
    # transformers 5 leaves its capture hooks on the blocks for good: only ours must be gone.
    assert all(len(b._forward_hooks) == 1 for b in blocks)


@pytest.mark.parametrize("vector_dtype", [torch.float64, torch.float32])
@torch.no_grad()
def test_vector_cast_to_hidden_dtype(vector_dtype):
    model, blocks = _blocks("llama")
    model = model.to(torch.bfloat16)
    vector = _vector().to(vector_dtype)
    with record_activations(blocks, [0], positions=-1) as base:
        model(IDS)
    with steer(blocks, {0: vector}), record_activations(blocks, [0], positions=-1) as steered:
        model(IDS)
    assert steered[0][0].dtype == torch.bfloat16 and steered[0][0].shape == (2, 32)
    assert torch.equal(steered[0][0], base[0][0] + vector.to(torch.bfloat16))


@torch.no_grad()
def test_record_positions_select_sequence_positions():
    model, blocks = _blocks("gpt2")
    with record_activations(blocks, [1]) as full, record_activations(blocks, [1], positions=[0, 2]) as some:
        model(IDS)
    assert torch.equal(some[1][0], full[1][0][:, [0, 2]])
    assert full[1][0].shape == (2, 6, 32) and not full[1][0].requires_grad
