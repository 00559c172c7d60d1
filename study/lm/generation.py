"""Batched sampling from a causal LM: left padding, several completions per prompt, seeded; with an intervention.

    texts = sample(model, tokenizer, ["review of hotel : the bed was"], n=4, temperature=1.0, max_new_tokens=12)
    texts[0]   # four completions of the first prompt, special tokens stripped
    comps = generate(model, tokenizer, [render(tokenizer, iv, p, chat=False) for p in prompts], iv, n=2, ...)
    model.generate(**enc, logits_processor=[FiniteFloat32Logits(model.dtype)])   # what sample() draws with
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

from study.core.timing import phase
from study.lm.intervention import Intervention
from study.lm.models import chat_format


class _FiniteFloat32:
    """The logic of FiniteFloat32Logits, kept free of transformers so that importing this module stays light."""

    def __init__(self, dtype: Any = None):
        self.dtype = dtype  # the model's dtype, for the error message (scores may arrive already cast)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        dtype = self.dtype or scores.dtype
        scores = scores.float()
        # -inf alone is a mask (suppressed tokens, min_new_tokens); NaN, +inf or a row with nothing finite cannot be
        # sampled: torch.multinomial would fail, on CUDA with a device-side assert that kills the process.
        bad = torch.isnan(scores).any(-1) | torch.isposinf(scores).any(-1) | ~torch.isfinite(scores).any(-1)
        if bool(bad.any()):
            raise RuntimeError(
                f"non-finite logits while sampling (dtype {str(dtype).removeprefix('torch.')}): {int(bad.sum())} of "
                f"{bad.numel()} sequences at length {input_ids.shape[-1]} have NaN, +inf or no finite logit; the "
                f"model overflowed or holds NaN weights (try float32, a lower learning rate, or check the adapter)")
        return scores


@cache
def _finite_float32_class() -> type:
    from transformers import LogitsProcessor

    return type("FiniteFloat32Logits", (_FiniteFloat32, LogitsProcessor), {
        "__module__": __name__,
        "__doc__": "A transformers LogitsProcessor that casts the scores to float32 and raises a clear RuntimeError "
                   "on NaN/+inf logits (or a row with no finite one) instead of letting sampling fail inside "
                   "torch.multinomial: `logits_processor=[FiniteFloat32Logits(model.dtype)]`; reusable by trainers."})


def __getattr__(name: str) -> Any:
    # `from study.lm.generation import FiniteFloat32Logits` builds the class on first use: it subclasses
    # transformers' LogitsProcessor, and importing transformers here would slow `study --help`.
    if name == "FiniteFloat32Logits":
        return _finite_float32_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@contextmanager
def finite_float32_logits(model: Any) -> Iterator[None]:
    """Inside the block, every forward pass of `model` returns float32 logits and raises the clear RuntimeError of
    FiniteFloat32Logits on NaN/+inf: for samplers that are not ours (TRL's online RL generates and trains through
    the same forward), so a bf16/fp16 model fails its cell with a message instead of a device-side assert."""
    check = _FiniteFloat32(next(model.parameters()).dtype)

    def hook(module: Any, args: Any, output: Any) -> Any:
        return check(_Length(output.shape[-2] if output.dim() > 2 else 1), output)

    handle = model.get_output_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class _Length:
    """Stands in for input_ids in the check's message: only its last dimension is read."""

    def __init__(self, n: int):
        self.shape = (n,)


def sample(model, tokenizer, prompts: Sequence[str], *, n: int = 1, temperature: float = 1.0,
           max_new_tokens: int = 16, batch_size: int = 256, seed: int = 0, stop_at_eos: bool = True,
           device: str | None = None) -> list[list[str]]:
    """`n` sampled completions for each prompt (greedy when temperature is 0), drawn from float32 logits; raises
    RuntimeError if the model yields NaN/inf logits (see FiniteFloat32Logits)."""
    import torch
    from transformers import LogitsProcessorList

    if not prompts:
        return []
    device = device or next(model.parameters()).device
    finite = _finite_float32_class()(next(model.parameters()).dtype)
    tokenizer.padding_side = "left"
    flat = [p for p in prompts for _ in range(n)]
    out: list[str] = []
    gen = torch.Generator(device="cpu").manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        for s in range(0, len(flat), batch_size):
            chunk = flat[s:s + batch_size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True).to(device)
            # A seed per batch (drawn from one generator) keeps results independent of batching elsewhere.
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                          eos_token_id=tokenizer.eos_token_id if stop_at_eos else None,
                          logits_processor=LogitsProcessorList([finite]))
            if temperature > 0:
                kwargs.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
            else:
                kwargs.update(do_sample=False)
            with torch.no_grad():
                ids = model.generate(**enc, **kwargs)
            new = ids[:, enc["input_ids"].shape[1]:]
            out += tokenizer.batch_decode(new, skip_special_tokens=True)
    finally:
        model.train(was_training)
    return [[t.strip() for t in out[i * n:(i + 1) * n]] for i in range(len(prompts))]


def render(tokenizer: Any, intervention: Intervention | None, prompt: str, chat: bool) -> str:
    """The prompt as the (intervened) model sees it: rewritten by a prompting method, then in the chat template."""
    text = intervention.prompt(prompt) if intervention is not None else prompt
    return chat_format(tokenizer, text) if chat else text


def generate(model: Any, tokenizer: Any, prompts: Sequence[str], intervention: Intervention | None, *, n: int,
             temperature: float, max_new_tokens: int, seed: int, batch_size: int = 512) -> list[list[str]]:
    """`n` completions per (rendered) prompt, the intervention active with each batch's padded prompt width."""
    per = max(1, batch_size // n)
    out: list[list[str]] = []
    iv = intervention or Intervention()
    with iv.session(), phase("generate"):  # an adapter is injected once for all batches
        for k, s in enumerate(range(0, len(prompts), per)):
            chunk = list(prompts[s:s + per])
            width = tokenizer(chunk, return_tensors="pt", padding=True)["input_ids"].shape[1]
            with iv.active(prompt_width=width):
                out += sample(model, tokenizer, chunk, n=n, temperature=temperature, max_new_tokens=max_new_tokens,
                              batch_size=len(chunk) * n, seed=seed * 1_000_003 + k)
    return out
