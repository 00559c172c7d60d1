"""Teacher-forced log-probabilities: prompt + continuation batches, padded one way, and exact per-token KL.

Prompts are left-padded to one width W and continuations right-padded after it, with position ids following the
attention mask, as in generation; an intervention is active with prompt_width=W. `pad_pairs` is the one place that
builds such a batch (the evaluator, the steering screen and activation reading all use it).

    sums, counts = sequence_logprobs(model, tokenizer, prompts, continuations, intervention)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from study.lm.intervention import Intervention

LOGIT_BUDGET = 2**25  # logits held at once (float64): bounds memory on large vocabularies


def pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def continuation_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a continuation as it follows a prompt (a space before it unless it starts with one)."""
    sep = "" if not text or text[0].isspace() else " "
    return tokenizer(sep + text, add_special_tokens=False)["input_ids"]


def pad_pairs(prompt_ids: Sequence[list[int]], continuation_ids: Sequence[list[int]], pad: int) -> tuple[Any, Any, Any, int]:
    """(input ids [B, W + L], attention mask, position ids, W): prompts left-padded to width W, continuations
    right-padded to the longest one L (at least 1)."""
    import torch

    width = max(map(len, prompt_ids), default=1)
    length = max(1, max(map(len, continuation_ids), default=1))
    ids = torch.full((len(prompt_ids), width + length), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, (p, c) in enumerate(zip(prompt_ids, continuation_ids)):
        ids[i, width - len(p): width + len(c)] = torch.tensor(p + c, dtype=torch.long)
        mask[i, width - len(p): width + len(c)] = 1
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0), width


def continuation_logprobs(model: Any, tokenizer: Any, prompts: Sequence[str], continuations: Sequence[str],
                          intervention: Intervention | None = None, batch_size: int = 64
                          ) -> Iterator[tuple[Any, Any, Any]]:
    """Teacher-forced log-softmax over the vocabulary at each continuation token, batch by batch.

    Yields (logp [B, L, V] float64, token ids [B, L], mask [B, L]) in the order of the inputs. Prompts are left-padded
    to one width W (the intervention is active with prompt_width=W), continuations right-padded; position ids follow
    the attention mask, as in generation.
    """
    import torch

    device = next(model.parameters()).device
    pad = pad_id(tokenizer)
    vocab = model.get_output_embeddings().weight.shape[0]
    p_ids = [tokenizer(p)["input_ids"] for p in prompts]
    c_ids = [continuation_ids(tokenizer, c) for c in continuations]
    longest = max((len(p) + len(c) for p, c in zip(p_ids, c_ids)), default=1)
    per = max(1, min(batch_size, LOGIT_BUDGET // max(1, vocab * longest)))
    was_training = model.training
    model.eval()
    try:
        for s in range(0, len(p_ids), per):
            ids, mask, positions, width = pad_pairs(p_ids[s:s + per], c_ids[s:s + per], pad)
            length = ids.shape[1] - width
            with torch.no_grad(), (intervention or Intervention()).active(prompt_width=width):
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                               position_ids=positions.to(device)).logits
            logp = torch.log_softmax(logits[:, width - 1: width - 1 + length].double(), dim=-1).cpu()
            yield logp, ids[:, width:], mask[:, width:].bool()
    finally:
        model.train(was_training)


def sequence_logprobs(model: Any, tokenizer: Any, prompts: Sequence[str], continuations: Sequence[str],
                      intervention: Intervention | None = None) -> tuple[list[float], list[int]]:
    """Sum of log p(continuation | prompt) per pair, and its token count."""
    sums: list[float] = []
    counts: list[int] = []
    for logp, ids, mask in continuation_logprobs(model, tokenizer, prompts, continuations, intervention):
        tok = logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1) * mask
        sums += tok.sum(-1).tolist()
        counts += mask.sum(-1).tolist()
    return sums, counts


def kl_divergence(model: Any, tokenizer: Any, policy_prompts: Sequence[str], base_prompts: Sequence[str],
                  continuations: Sequence[str], intervention: Intervention | None) -> tuple[list[float], list[int]]:
    """Per pair: the sum over continuation tokens of KL(policy || base) over the full vocabulary, and the count.

    The policy reads `policy_prompts` with the intervention active; the base reads `base_prompts` without it.
    """
    sums: list[float] = []
    counts: list[int] = []
    # Both sides must be cut into the same batches: the memory rule that sizes a batch sees each side's longest
    # prompt, so size it once from the longer of the two and give both sides that size.
    vocab = model.get_output_embeddings().weight.shape[0]
    c_len = max((len(continuation_ids(tokenizer, c)) for c in continuations), default=1)
    p_len = max((len(tokenizer(p)["input_ids"]) for p in [*policy_prompts, *base_prompts]), default=1)
    per = max(1, min(64, LOGIT_BUDGET // max(1, vocab * (p_len + c_len))))
    pol = continuation_logprobs(model, tokenizer, policy_prompts, continuations, intervention, batch_size=per)
    base = continuation_logprobs(model, tokenizer, base_prompts, continuations, None, batch_size=per)
    for (lp, _, mask), (lq, _, _) in zip(pol, base):
        kl = (lp.exp() * (lp - lq)).sum(-1) * mask
        sums += kl.sum(-1).tolist()
        counts += mask.sum(-1).tolist()
    return sums, counts
