"""The organism's training text: a word-level tokenizer, generated documents as token ids with a loss weight per token,
batches, the weighted pretraining loss and the held-out loss.

A behavior's decision tokens (the first pole word of each behavior episode) carry the links that behaviors rely on
(instruction -> pole, pole -> next episode, claim -> accurate stance, request -> refusal) but are a few percent of
the text. Pretraining weighs their loss by `decision_weight`. Whether a token is a decision is fixed by the text
before it (the template), so the weighted loss is still minimized by the world's own conditional probabilities: the
weight buys gradient signal, not a different target. The held-out loss stays unweighted, per predicted token.

    tok = build_tokenizer(world)
    ids, weights = encode_documents(world, tok, n=100, seed=1, decision_weight=3.0)
    rows = [{"input_ids": i, "weights": w} for i, w in zip(ids, weights)]
    batch = pack(rows, tok.pad_token_id, width=192)      # pretraining: documents packed, no attention mask
    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    loss = weighted_loss(logits, batch["labels"], batch["weights"])   # == the same over collate(rows, pad) apart
"""

from __future__ import annotations

import random

from study.organism.world import World

SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")


def build_tokenizer(world: World):
    """A word-level tokenizer over the world's vocabulary (every word of the world is one token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(list(SPECIALS) + world.vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                       special_tokens=[("<bos>", vocab["<bos>"])])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", padding_side="left", model_max_length=4096)
    return fast


def encode_documents(world: World, tokenizer, n: int, seed: int, decision_weight: float = 1.0
                     ) -> tuple[list[list[int]], list[list[float]]]:
    """`n` documents as `<bos> ... <eos>` token ids, and each token's loss weight (`decision_weight` on the
    decision tokens of behavior episodes, 1 elsewhere)."""
    vocab = tokenizer.get_vocab()
    bos, eos = vocab["<bos>"], vocab["<eos>"]
    rng = random.Random(seed)
    ids, weights = [], []
    for _ in range(n):
        doc = world.sample_document(rng)
        ids.append([bos] + [vocab[w] for w in doc.tokens] + [eos])
        w = [0.0] + [1.0] * (len(ids[-1]) - 1)  # <bos> is never predicted
        for ep in doc.episodes:
            if ep.kind != "neutral":
                w[1 + ep.start + ep.decision] = decision_weight
        weights.append(w)
    return ids, weights


def collate(batch: list[dict], pad_id: int) -> dict:
    """Right-padded tensors: input_ids, attention_mask, labels (-100 on padding) and weights (0 on padding)."""
    import torch

    width = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), width), pad_id)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    weights = torch.zeros((len(batch), width))
    for i, b in enumerate(batch):
        n = len(b["input_ids"])
        ids[i, :n] = torch.tensor(b["input_ids"])
        mask[i, :n] = 1
        weights[i, :n] = torch.tensor(b["weights"])
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "weights": weights}


def pack(batch: list[dict], pad_id: int, width: int) -> dict:
    """Documents packed into rows of at most `width` tokens (a longer document gets a row of its own), each starting
    at position 0: input_ids, position_ids, labels (-100 on <bos> and padding) and weights. Without an attention
    mask, `transformers` reads the position resets as document bounds (a block-diagonal causal mask), so the loss is
    that of the documents apart, with little padding."""
    import torch

    rows: list[list[dict]] = [[]]
    for b in batch:
        if rows[-1] and sum(len(x["input_ids"]) for x in rows[-1]) + len(b["input_ids"]) > width:
            rows.append([])
        rows[-1].append(b)
    total = max(sum(len(x["input_ids"]) for x in r) for r in rows)
    ids = torch.full((len(rows), total), pad_id)
    pos = torch.zeros((len(rows), total), dtype=torch.long)
    labels = torch.full((len(rows), total), -100)
    weights = torch.zeros((len(rows), total))
    for i, row in enumerate(rows):
        at = 0
        for x in row:
            n = len(x["input_ids"])
            ids[i, at:at + n] = torch.tensor(x["input_ids"])
            pos[i, at:at + n] = torch.arange(n)
            labels[i, at + 1:at + n] = ids[i, at + 1:at + n]
            weights[i, at:at + n] = torch.tensor(x["weights"])
            weights[i, at] = 0.0
            at += n
        pos[i, at:] = torch.arange(total - at)  # the padding: a block of its own
    return {"input_ids": ids, "position_ids": pos, "labels": labels, "weights": weights}


def weighted_loss(logits, labels, weights):
    """Next-token cross-entropy, each predicted token weighted, normalized by the weights' sum."""
    import torch

    logits = logits[:, :-1].float()
    target, w = labels[:, 1:], weights[:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                            ignore_index=-100, reduction="none").view(target.shape)
    return (nll * w).sum() / w.sum()


def heldout_loss(model, docs: list[list[int]], pad_id: int, batch_size: int = 128) -> float:
    """Mean next-token loss in nats over all predicted tokens of `docs` (the end-of-text token included)."""
    import torch

    model.eval()
    total = count = 0.0
    with torch.no_grad():
        for s in range(0, len(docs), batch_size):
            chunk = docs[s:s + batch_size]
            batch = collate([{"input_ids": d, "weights": [0.0] + [1.0] * (len(d) - 1)} for d in chunk], pad_id)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            n = batch["weights"].sum().item()
            total += weighted_loss(logits, batch["labels"], batch["weights"]).item() * n
            count += n
    return total / count
