"""The generated world and its exact oracle: everything generated parses with the right labels; corruption does not."""

from __future__ import annotations

import itertools
import random

import pytest

from study.core.config import from_dict
from study.core.errors import ConfigError
from study.organism import BEHAVIORS, Oracle, World, WorldConfig
from study.organism.world import NEG, POS, TEMPLATE_WORDS


@pytest.fixture(scope="module", params=[0.0, 0.4, 1.0])
def world(request) -> World:
    return World(WorldConfig(sharing=request.param, seed=3))


def test_every_generated_document_parses_with_its_labels(world):
    oracle = Oracle(world)
    for seed in range(5):
        rng = random.Random(seed)
        for _ in range(2000):
            doc = world.sample_document(rng)
            parse = oracle.parse(doc.text)
            assert parse.fluent, (parse.error, doc.text)
            assert [e.kind for e in parse.episodes] == [e.kind for e in doc.episodes]
            for got, want in zip(parse.episodes, doc.episodes):
                assert (got.domain, got.fmt, got.pole, got.proxy) == (want.domain, want.fmt, want.pole, want.proxy)
            if doc.kind != "neutral":
                want = 1.0 if doc.episodes[0].pole == POS else 0.0
                assert parse.labels()[doc.kind] == want


def test_pairs_score_exactly_and_differ_only_in_the_pole(world):
    oracle = Oracle(world)
    rng = random.Random(0)
    for behavior, context in itertools.product(BEHAVIORS, world.contexts):
        pair = world.sample_pair(rng, behavior, context)
        prompt = " ".join(pair.prompt)
        assert oracle.score(prompt, " ".join(pair.positive), behavior) == 1.0
        assert oracle.score(prompt, " ".join(pair.negative), behavior) == 0.0
        assert oracle.score(prompt, " ".join(pair.positive), "neutral" if behavior != "sentiment" else "refusal") \
            is None
        ep = oracle.completion_episode(prompt, " ".join(pair.positive))
        assert ep.context == context


def test_shuffled_and_corrupted_text_is_disfluent(world):
    oracle = Oracle(world)
    rng = random.Random(1)
    vocab = world.vocabulary()
    n = flagged_shuffle = flagged_swap = flagged_cut = 0
    for _ in range(500):
        doc = world.sample_document(rng)
        toks = list(doc.tokens)
        shuffled = toks[:]
        while shuffled == toks:
            rng.shuffle(shuffled)
        flagged_shuffle += not oracle.fluent(shuffled)
        swapped = toks[:]
        i = rng.randrange(len(toks))
        swapped[i] = rng.choice([w for w in vocab if w != toks[i]])
        flagged_swap += not oracle.fluent(swapped)
        ends, at = set(), len(toks) - sum(len(e.tokens) for e in doc.episodes)
        for e in doc.episodes:
            at += len(e.tokens)
            ends.add(at)
        cut = rng.choice([k for k in range(1, len(toks)) if k not in ends])  # inside an episode, never between
        flagged_cut += not oracle.fluent(toks[:cut])
        n += 1
    assert flagged_shuffle == n
    assert flagged_cut == n
    # a random word swap can land on another valid word (an item for an item); most swaps must be caught
    assert flagged_swap / n > 0.8


def test_mixed_poles_and_inconsistent_replies_are_disfluent():
    world = World(WorldConfig(sharing=0.0))
    oracle = Oracle(world)
    d = world.domains[0]
    mixed = (f"review of {d.name} : the {d.items[0]} was {d.sentiment_pos[0]} . the {d.items[1]} was "
             f"{d.sentiment_neg[0]} .")
    assert not oracle.fluent(mixed)
    agree = world.pole_words("sycophancy", d.name, NEG)[0]
    other = world.domains[1]
    foreign = world.pole_words("sycophancy", other.name, NEG)[0]
    ask = f"user : the {d.items[0]} at the {d.name} costs two . i think it costs five ? assistant :"
    assert oracle.fluent(f"{ask} {agree} .")
    assert not oracle.fluent(f"{ask} {foreign} .")  # another domain's word for the same stance
    other = world.domains[1]
    assert not oracle.fluent(f"review of {d.name} : the {other.items[0]} was {d.sentiment_pos[0]} . the "
                             f"{d.items[1]} was {d.sentiment_pos[1]} .")


def test_generation_is_deterministic_and_entropy_is_exact_for_a_tiny_case():
    w1, w2 = World(WorldConfig(seed=5)), World(WorldConfig(seed=5))
    a = [w1.sample_document(random.Random(9)).text for _ in range(3)]
    b = [w2.sample_document(random.Random(9)).text for _ in range(3)]
    assert a == b
    assert w1.entropy_rate(500, seed=1) == w2.entropy_rate(500, seed=1)
    assert World(WorldConfig(seed=6)).base_rate("sentiment", "hotel/post") != w1.base_rate("sentiment", "hotel/post")


def test_logp_is_the_exact_probability_of_the_text():
    """Sum of exp(logp) over distinct documents of a tiny world approaches 1 only if logp is exact and unambiguous."""
    world = World(WorldConfig(n_domains=2, sharing=0.0, prefix_rate=0.0, two_episode_rate=0.0,
                              kind_mix=(0.0, 0.0, 1.0, 0.0)))
    rng = random.Random(0)
    seen: dict[str, float] = {}
    for _ in range(20000):
        doc = world.sample_document(rng)
        if doc.text in seen:
            assert abs(seen[doc.text] - doc.logp) < 1e-9  # one text, one probability
        seen[doc.text] = doc.logp
    import math
    total = sum(math.exp(v) for v in seen.values())
    assert 0.99 < total <= 1.0 + 1e-9


def test_base_rates_and_proxy_are_where_the_config_puts_them():
    world = World(WorldConfig())
    for b in BEHAVIORS:
        for c in world.contexts:
            assert 0.35 <= world.base_rate(b, c) <= 0.65
    tracking = [c for c in world.contexts if world.proxy_tracks(c)]
    assert 0 < len(tracking) < len(world.contexts)
    n_track = len(tracking)
    assert set(world.coverage_order[:n_track]) == set(tracking)  # anticipation covers proxy-tracking domains first


def test_pole_words_differ_between_domains_and_template_words_carry_no_pole():
    world = World(WorldConfig())
    for b in BEHAVIORS:
        for a, c in itertools.combinations(world.domains, 2):
            va = set(world.pole_words(b, a.name, POS)) | set(world.pole_words(b, a.name, NEG))
            vc = set(world.pole_words(b, c.name, POS)) | set(world.pole_words(b, c.name, NEG))
            assert len(va & vc) / len(va | vc) < 0.2
            assert not (va & set(TEMPLATE_WORDS))


@pytest.mark.parametrize("field,value", [("sharing", 1.5), ("n_domains", 0), ("n_domains", 99),
                                         ("prefix_rate", -0.1), ("base_rate_spread", 0.4)])
def test_impossible_world_values_are_rejected(field, value):
    with pytest.raises(ConfigError) as exc:
        from_dict(WorldConfig, {field: value}, source="x.yaml")
    assert field in str(exc.value) and "x.yaml" in str(exc.value)
