"""The organism's training text: decision tokens carry the weight, packing changes the speed and not the loss."""

from __future__ import annotations

import random

import torch

from study.organism.corpus import build_tokenizer, collate, encode_documents, heldout_loss, pack, weighted_loss
from study.organism.pretrain import MICRO, build_model
from study.organism.world import World

WORLD = World(MICRO.world)
TOK = build_tokenizer(WORLD)


def test_decision_tokens_and_only_they_carry_the_decision_weight():
    ids, weights = encode_documents(WORLD, TOK, 200, seed=5, decision_weight=3.0)
    rng = random.Random(5)
    for doc_ids, w in zip(ids, weights):
        doc = WORLD.sample_document(rng)  # the same stream: the same documents
        assert TOK.convert_ids_to_tokens(doc_ids[1:-1]) == doc.tokens and w[0] == 0.0
        want = {1 + ep.start + ep.decision for ep in doc.episodes if ep.kind != "neutral"}
        assert {i for i, x in enumerate(w) if x == 3.0} == want
        assert all(x == 1.0 for i, x in enumerate(w) if i and i not in want)


def test_packed_documents_give_the_loss_of_the_documents_apart():
    torch.manual_seed(0)
    model = build_model(MICRO.model, len(TOK), TOK).eval()
    ids, weights = encode_documents(WORLD, TOK, 24, seed=1, decision_weight=3.0)
    rows = [{"input_ids": i, "weights": w} for i, w in zip(ids, weights)]
    apart, packed = collate(rows, TOK.pad_token_id), pack(rows, TOK.pad_token_id, width=120)
    assert packed["input_ids"].numel() < apart["input_ids"].numel() and packed["input_ids"].shape[1] <= 120
    with torch.no_grad():
        a = weighted_loss(model(input_ids=apart["input_ids"], attention_mask=apart["attention_mask"]).logits,
                          apart["labels"], apart["weights"])
        b = weighted_loss(model(input_ids=packed["input_ids"], position_ids=packed["position_ids"],
                                use_cache=False).logits, packed["labels"], packed["weights"])
    assert abs(a.item() - b.item()) < 1e-5
    # one predicted token per real token after each <bos>, none across documents
    n_predicted = sum(len(i) - 1 for i in ids)
    assert int((packed["labels"] != -100).sum()) == n_predicted == int((apart["labels"][:, 1:] != -100).sum())
    # the held-out loss is the unweighted mean over the same tokens
    unweighted = [{"input_ids": i, "weights": [0.0] + [1.0] * (len(i) - 1)} for i in ids]
    flat = collate(unweighted, TOK.pad_token_id)
    with torch.no_grad():
        c = weighted_loss(model(input_ids=flat["input_ids"], attention_mask=flat["attention_mask"]).logits,
                          flat["labels"], flat["weights"])
    assert abs(heldout_loss(model, ids, TOK.pad_token_id, batch_size=7) - c.item()) < 1e-5
