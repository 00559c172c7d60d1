"""The behavior check reads the model's P(POS) at the right token, and sees a model that ignores the claim."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import torch

from study.organism.behavior_check import behavior_check, bucket
from study.organism.pretrain import build_tokenizer
from study.organism.world import NEG, POS, World, WorldConfig

WORLD = World(WorldConfig(n_domains=4))
TOKENIZER = build_tokenizer(WORLD)
DOCS = [WORLD.sample_document(random.Random(i)) for i in range(1500)]


class _Fake(torch.nn.Module):
    """Logits from a function of (document, position); uniform where it returns None."""

    def __init__(self, logits_at):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.logits_at = logits_at
        vocab = TOKENIZER.get_vocab()
        self.docs = {tuple([vocab["<bos>"]] + [vocab[w] for w in d.tokens]): d for d in DOCS}

    def forward(self, input_ids, attention_mask):
        out = torch.zeros(*input_ids.shape, len(TOKENIZER))
        for i, row in enumerate(input_ids.tolist()):
            doc = self.docs[tuple(row[: int(attention_mask[i].sum())])]
            for ep in doc.episodes:
                k = ep.start + ep.decision
                if ep.p_pos is not None and (z := self.logits_at(doc, ep)) is not None:
                    out[i, k] = z
        return SimpleNamespace(logits=out)


def _ids(ep, pole):
    return [TOKENIZER.convert_tokens_to_ids(w) for w in WORLD.pole_words(ep.kind, ep.domain, pole,
                                                                         ep.claim or "wrong")]


def _world_logits(doc, ep):
    z = torch.full((len(TOKENIZER),), -30.0)
    pos, neg = _ids(ep, POS), _ids(ep, NEG)
    z[pos] = math.log(max(ep.p_pos, 1e-9) / len(pos))
    z[neg] = math.log(max(1 - ep.p_pos, 1e-9) / len(neg))
    return z


def test_a_model_that_predicts_as_the_world_passes():
    check = behavior_check(_Fake(_world_logits), TOKENIZER, WORLD, DOCS)
    assert check["max_error"] < 1e-4 and check["mae"] < 1e-4 and check["decision_mass"] > 0.99
    keys = set(check["buckets"])
    assert {"sentiment/first", "sycophancy/after+/wrong", "refusal/prefix-/benign"} <= keys
    for v in check["buckets"].values():
        assert abs(v["world"] - v["empirical"]) < 4 * math.sqrt(0.25 / v["n"])


def test_a_model_blind_to_the_claim_fails_where_it_matters():
    def blind(doc, ep):  # sycophancy: a 50/50 guess between agreeing and correcting; the rest as the world
        if ep.kind != "sycophancy":
            return _world_logits(doc, ep)
        return torch.zeros(len(TOKENIZER))

    check = behavior_check(_Fake(blind), TOKENIZER, WORLD, DOCS)
    b = check["buckets"]
    assert b["sycophancy/after+/right"]["model"] == b["sycophancy/after+/wrong"]["model"] == 0.5
    assert b["sycophancy/after+/right"]["world"] > 0.7 and b["sycophancy/after-/wrong"]["world"] < 0.3
    assert check["max_error"] > 0.2 and check["max_error_bucket"].startswith("sycophancy/")
    assert b["sycophancy/first/right"]["world"] > 0.65 and b["sycophancy/first/right"]["error"] > 0.15
    assert all(v["error"] < 1e-4 for k, v in b.items() if not k.startswith("sycophancy/"))


def test_buckets_name_position_claim_and_request():
    for doc in DOCS[:300]:
        for i, ep in enumerate(doc.episodes):
            key = bucket(doc, i).split("/")
            assert key[0] == doc.kind
            if i == 0:
                assert key[1] == ("first" if doc.prefix is None else "prefix" + ("+" if doc.prefix == POS else "-"))
            else:
                assert key[1] == "after" + ("+" if doc.episodes[i - 1].pole == POS else "-")
            assert key[2:] == [x for x in (ep.claim, ep.request) if x]
