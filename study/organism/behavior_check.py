"""The behavior convergence check: does the organism predict each behavior's pole where the world puts it?

The held-out loss sits beside the world's entropy floor, but the links a behavior relies on (instruction -> pole,
pole -> next episode, the claim -> the accurate stance, the request -> refusal) are a few percent of the predicted
tokens, so a model can reach the floor's neighbourhood without them. This check looks at them directly. On held-out
documents, at every behavior episode's decision token, the model's probability of the POS pole (the mass on the POS
words of that episode's domain, claim and request, over the mass on both poles' words) is set beside the world's exact
probability of POS given the text so far (`Episode.p_pos`) and the share of episodes that did show POS.

Buckets split each behavior by position (`first`: first episode without an instruction; `prefix+` / `prefix-`: first
episode under an instruction for POS / NEG; `after+` / `after-`: a later episode after a POS / NEG one), sycophancy
also by claim (right/wrong) and refusal by request (forbidden/benign). The bucket error is |model mean - world mean|
over the same episodes, so it carries no sampling noise of its own; buckets with fewer than `min_n` episodes are shown
but left out of `max_error`. `mae` is the mean per-episode |model - world|.

    docs = [world.sample_document(rng) for _ in range(2000)]
    check = behavior_check(model, tokenizer, world, docs)
    check["max_error"], check["max_error_bucket"]   # 0.18, 'sycophancy/after-/wrong' for the default organism
    check["buckets"]["refusal/first/benign"]         # {'n': 400, 'model': 0.32, 'world': 0.30, 'empirical': ...}
"""

from __future__ import annotations

from study.organism.world import NEG, POS, Document, Episode, World


def bucket(doc: Document, index: int) -> str:
    """The check's bucket of the document's `index`-th episode, e.g. 'refusal/after-/benign'."""
    ep = doc.episodes[index]
    if index == 0:
        position = "first" if doc.prefix is None else ("prefix+" if doc.prefix == POS else "prefix-")
    else:
        position = "after+" if doc.episodes[index - 1].pole == POS else "after-"
    return "/".join([ep.kind, position] + [x for x in (ep.claim, ep.request) if x])


def pole_probabilities(model, tokenizer, world: World, docs: list[Document], batch_size: int = 128
                       ) -> list[tuple[str, Episode, float, float]]:
    """(bucket, episode, model P(POS), model mass on either pole's words) for every behavior episode of `docs`."""
    import torch

    vocab = tokenizer.get_vocab()
    bos, pad = vocab["<bos>"], tokenizer.pad_token_id
    ids_of = {}

    def word_ids(ep: Episode, pole: str):
        key = (ep.kind, ep.domain, pole, ep.claim)
        if key not in ids_of:
            ids_of[key] = torch.tensor([vocab[w] for w in world.pole_words(ep.kind, ep.domain, pole,
                                                                           ep.claim or "wrong")])
        return ids_of[key]

    out = []
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for s in range(0, len(docs), batch_size):
            chunk = docs[s:s + batch_size]
            seqs = [[bos] + [vocab[w] for w in d.tokens] for d in chunk]
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), pad)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for i, seq in enumerate(seqs):
                ids[i, : len(seq)] = torch.tensor(seq)
                mask[i, : len(seq)] = 1
            with torch.no_grad():
                probs = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().softmax(-1)
            probs = probs.cpu()
            for i, doc in enumerate(chunk):
                for k, ep in enumerate(doc.episodes):
                    if ep.p_pos is None:
                        continue
                    # document token k sits at position k + 1 (after <bos>) and is predicted by the logits at k
                    row = probs[i, ep.start + ep.decision]
                    p_pos, p_neg = row[word_ids(ep, POS)].sum().item(), row[word_ids(ep, NEG)].sum().item()
                    mass = p_pos + p_neg
                    out.append((bucket(doc, k), ep, p_pos / mass if mass > 0 else 0.5, mass))
    finally:
        model.train(was_training)
    return out


def behavior_check(model, tokenizer, world: World, docs: list[Document], *, min_n: int = 20) -> dict:
    """Per bucket: n, model mean P(POS), world mean P(POS), empirical share of POS, |model - world|, per-episode
    mean absolute error; and over all: max_error (buckets with n >= min_n), its bucket, mae, decision_mass."""
    rows = pole_probabilities(model, tokenizer, world, docs)
    groups: dict[str, list[tuple[Episode, float]]] = {}
    for key, ep, p, _ in rows:
        groups.setdefault(key, []).append((ep, p))
    buckets = {}
    for key in sorted(groups):
        g = groups[key]
        n = len(g)
        model_mean = sum(p for _, p in g) / n
        world_mean = sum(ep.p_pos for ep, _ in g) / n
        buckets[key] = {"n": n, "model": round(model_mean, 4), "world": round(world_mean, 4),
                        "empirical": round(sum(ep.pole == POS for ep, _ in g) / n, 4),
                        "error": round(abs(model_mean - world_mean), 4),
                        "mae": round(sum(abs(p - ep.p_pos) for ep, p in g) / n, 4)}
    counted = {k: v for k, v in buckets.items() if v["n"] >= min_n}
    worst = max(counted, key=lambda k: counted[k]["error"]) if counted else None
    return {
        "buckets": buckets,
        "max_error": counted[worst]["error"] if worst else None,
        "max_error_bucket": worst,
        "mae": round(sum(abs(p - ep.p_pos) for _, ep, p, _ in rows) / len(rows), 4) if rows else None,
        "decision_mass": round(sum(m for *_, m in rows) / len(rows), 4) if rows else None,
        "min_n": min_n,
        "episodes": len(rows),
    }
