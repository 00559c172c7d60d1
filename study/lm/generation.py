"""Batched sampling from a causal LM: left padding, several completions per prompt, seeded; with an intervention.

    texts = sample(model, tokenizer, ["review of hotel : the bed was"], n=4, temperature=1.0, max_new_tokens=12)
    texts[0]   # four completions of the first prompt, special tokens stripped
    comps = generate(model, tokenizer, [render(tokenizer, iv, p, chat=False) for p in prompts], iv, n=2, ...)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from study.lm.intervention import Intervention
from study.lm.models import chat_format


def sample(model, tokenizer, prompts: Sequence[str], *, n: int = 1, temperature: float = 1.0,
           max_new_tokens: int = 16, batch_size: int = 256, seed: int = 0, stop_at_eos: bool = True,
           device: str | None = None) -> list[list[str]]:
    """`n` sampled completions for each prompt (greedy when temperature is 0)."""
    import torch

    if not prompts:
        return []
    device = device or next(model.parameters()).device
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
                          eos_token_id=tokenizer.eos_token_id if stop_at_eos else None)
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
    for k, s in enumerate(range(0, len(prompts), per)):
        chunk = list(prompts[s:s + per])
        width = tokenizer(chunk, return_tensors="pt", padding=True)["input_ids"].shape[1]
        with (intervention or Intervention()).active(prompt_width=width):
            out += sample(model, tokenizer, chunk, n=n, temperature=temperature, max_new_tokens=max_new_tokens,
                          batch_size=len(chunk) * n, seed=seed * 1_000_003 + k)
    return out
