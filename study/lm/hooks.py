"""Activation hooks on decoder blocks, only through context managers: record the residual stream, or steer it.

    with record_activations(lm.blocks, [1, 2], positions=-1) as acts:
        lm.model(**batch)                                    # acts[1][0]: [batch, hidden] after block 1
    prompt_len = batch["input_ids"].shape[1]                 # left padding: every prompt ends here
    with steer(lm.blocks, {1: vector}, 2.0, start_positions=torch.full((n,), prompt_len)):
        lm.model.generate(**batch, max_new_tokens=20)        # steers the generated tokens only

A block's output in transformers 5 is a plain tensor (in 4.x a tuple whose first item is the hidden state); both
are handled. Hooks never modify an output in place: they return a new tensor (or a new tuple around it).

Positions are absolute indices into the (padded) sequence, counted across generation steps: with a KV cache each
forward call sees only the new tokens, so the steering hook reads how many tokens the block's layer already holds
in the `Cache` that the block receives (`cache=`, `layer_past=` or positionally, depending on the family) just
before the block runs. Without a cache the call sees the whole sequence and the offset is 0. Cached prompt
positions were steered (or not) once, when they were computed, and are never touched again.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

from study.core.errors import UserError

Positions = int | Sequence[int] | slice | None


def _hidden(output: torch.Tensor | tuple) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _with_hidden(output: torch.Tensor | tuple, hidden: torch.Tensor) -> torch.Tensor | tuple:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def _check_layers(blocks: Sequence[nn.Module], layers: Sequence[int]) -> None:
    bad = [layer for layer in layers if not 0 <= layer < len(blocks)]
    if bad:
        raise UserError(f"layer(s) {bad}: the model has {len(blocks)} blocks, valid layers are 0..{len(blocks) - 1}")


@contextmanager
def record_activations(blocks: Sequence[nn.Module], layers: Sequence[int],
                       positions: Positions = None) -> Iterator[dict[int, list[torch.Tensor]]]:
    """Yield {layer: [hidden state after that block, one detached tensor per forward call]}.

    `positions` indexes the sequence dimension (e.g. -1: last token, giving [batch, hidden]); None keeps all.
    Steering hooks run first, so a recording inside `steer` sees the steered residual stream.
    """
    _check_layers(blocks, layers)
    captured: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    index = list(positions) if isinstance(positions, Sequence) else positions

    def make_hook(layer: int):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor | tuple) -> None:
            hidden = _hidden(output).detach()
            # clone: a view of the live output would change if anyone later wrote into it
            captured[layer].append((hidden if index is None else hidden[:, index]).clone())
        return hook

    with ExitStack() as stack:
        for layer in layers:
            handle = blocks[layer].register_forward_hook(make_hook(layer))
            stack.callback(handle.remove)
        yield captured


def _cache_offset(args: tuple, kwargs: dict, layer: int) -> int:
    """How many positions the block's layer already caches: the absolute index of this call's first token."""
    from transformers import Cache

    for value in (*args, *kwargs.values()):
        if isinstance(value, Cache):
            try:
                return value.get_seq_length(layer)
            except ValueError:  # hybrid caches refuse a non-attention layer index; layer 0 then counts for all
                return value.get_seq_length()
    return 0


@contextmanager
def steer(blocks: Sequence[nn.Module], vectors: dict[int, torch.Tensor], multiplier: float = 1.0, *,
          start_positions: torch.Tensor | None = None, stop_positions: torch.Tensor | None = None
          ) -> Iterator[None]:
    """Add `multiplier * vectors[layer]` to the hidden state after each listed block.

    `start_positions` ([batch], long): steer only positions >= start_positions[b] (absolute, across generation
    steps; see the module docstring); None steers every position. `stop_positions` ([batch], long; needs
    start_positions): steer only positions < stop_positions[b] too (e.g. start + 1: the last prompt position alone).
    When generation expands the batch (beams, num_return_sequences) each row's start and stop are repeated to match,
    as `generate` repeats its inputs.
    """
    _check_layers(blocks, list(vectors))
    if stop_positions is not None and start_positions is None:
        raise UserError("steer: stop_positions needs start_positions")
    offsets: dict[int, int] = {}

    def make_pre_hook(layer: int):
        def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            offsets[layer] = _cache_offset(args, kwargs, layer)
        return pre_hook

    def make_hook(layer: int):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor | tuple) -> torch.Tensor | tuple:
            hidden = _hidden(output)
            delta = multiplier * vectors[layer].to(device=hidden.device, dtype=hidden.dtype)
            if start_positions is None:
                return _with_hidden(output, hidden + delta)
            starts = start_positions.to(hidden.device)
            if hidden.shape[0] != starts.shape[0]:
                starts = starts.repeat_interleave(hidden.shape[0] // starts.shape[0])
            positions = offsets.pop(layer, 0) + torch.arange(hidden.shape[1], device=hidden.device)
            mask = positions[None, :] >= starts[:, None]
            if stop_positions is not None:
                stops = stop_positions.to(hidden.device)
                if hidden.shape[0] != stops.shape[0]:
                    stops = stops.repeat_interleave(hidden.shape[0] // stops.shape[0])
                mask = mask & (positions[None, :] < stops[:, None])
            mask = mask.unsqueeze(-1)
            return _with_hidden(output, torch.where(mask, hidden + delta, hidden))
        return hook

    with ExitStack() as stack:
        for layer in vectors:
            if start_positions is not None:
                pre = blocks[layer].register_forward_pre_hook(make_pre_hook(layer), with_kwargs=True)
                stack.callback(pre.remove)
            # prepend: transformers' own output_hidden_states hooks and record_activations then see the steered state
            handle = blocks[layer].register_forward_hook(make_hook(layer), prepend=True)
            stack.callback(handle.remove)
        yield
