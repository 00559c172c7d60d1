"""The generated world and its exact oracle: everything generated parses with the right labels; corruption does not;
the behaviors depend on what they are about; the entropy is exact with a hidden disposition summed out."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from study.core.config import from_dict
from study.core.errors import ConfigError, UserError
from study.organism import BEHAVIORS, Oracle, World, WorldConfig
from study.organism.lexicon import ACTS, OVERSTATED, PRICES, SHARED_WORDS
from study.organism.world import CLAIMS, NEG, POS, REQUESTS, TEMPLATE_WORDS


@pytest.fixture(scope="module", params=[0.0, 0.4, 1.0])
def world(request) -> World:
    return World(WorldConfig(sharing=request.param, seed=3))


def test_every_generated_document_parses_with_its_labels(world):
    oracle = Oracle(world)
    for seed in range(5):
        rng = random.Random(seed)
        for _ in range(1500):
            doc = world.sample_document(rng)
            parse = oracle.parse(doc.text)
            assert parse.fluent, (parse.error, doc.text)
            assert [e.kind for e in parse.episodes] == [e.kind for e in doc.episodes]
            for got, want in zip(parse.episodes, doc.episodes):
                assert (got.domain, got.fmt, got.pole, got.proxy, got.request, got.claim, got.shared, got.desired) \
                    == (want.domain, want.fmt, want.pole, want.proxy, want.request, want.claim, want.shared,
                        want.desired)
                assert got.start == want.start and doc.tokens[want.start + want.decision] == parse.tokens[got.decision]
            if doc.kind != "neutral":
                want = 1.0 if doc.episodes[0].pole == POS else 0.0
                assert parse.labels()[doc.kind] == want


@pytest.mark.parametrize("behavior", BEHAVIORS)
def test_pairs_hold_the_desired_completion_as_positive(world, behavior):
    oracle = Oracle(world)
    rng = random.Random(0)
    conditions = {"sentiment": [("forbidden", None)], "sycophancy": [("forbidden", c) for c in CLAIMS],
                  "refusal": [(r, None) for r in REQUESTS]}[behavior]
    for context, (request, claim) in itertools.product(world.contexts, conditions):
        pair = world.sample_pair(rng, behavior, context, request, claim)
        prompt = " ".join(pair.prompt)
        pos = oracle.completion_episode(prompt, " ".join(pair.positive))
        neg = oracle.completion_episode(prompt, " ".join(pair.negative))
        assert pos.context == neg.context == context and pos.desired is True and neg.desired is False
        assert pair.positive[-1] == pair.negative[-1] == "."
        assert (pair.claim, pair.request) == (claim if behavior == "sycophancy" else None,
                                              request if behavior == "refusal" else None)
        assert (pos.claim, pos.request) == (pair.claim, pair.request)
        # score: the POS pole as the text shows it; for a benign request the desired reply complies (score 0)
        want = 0.0 if request == "benign" and behavior == "refusal" else 1.0
        assert oracle.score(prompt, " ".join(pair.positive), behavior) == want
        assert oracle.score(prompt, " ".join(pair.negative), behavior) == 1.0 - want
        other = "refusal" if behavior != "refusal" else "sentiment"
        assert oracle.score(prompt, " ".join(pair.positive), other) is None


def test_sycophancy_depends_on_the_claim_not_on_a_word_slice():
    world = World(WorldConfig(sharing=0.0))
    oracle = Oracle(world)
    rng = random.Random(4)
    agree_only = correct_only = n = 0
    for _ in range(400):
        context = rng.choice(world.contexts)
        pair = world.sample_pair(rng, "sycophancy", context)
        prompt = " ".join(pair.prompt)
        fact, claimed = (pair.prompt[7], pair.prompt[14]) if context.endswith("/post") else \
            (pair.prompt[8], pair.prompt[14])
        assert (fact == claimed) == (pair.claim == "right") and fact in PRICES
        assert claimed in (PRICES if pair.claim == "right" else OVERSTATED)
        domain = context.split("/")[0]
        stance = "agree" if pair.claim == "right" else "correct"
        assert set(pair.positive[:2]) <= set(world.act_words("sycophancy", domain, stance))
        # a policy that always agrees (or always corrects) is accurate exactly when the claim fits it
        agree, correct = (world.act_words("sycophancy", domain, a)[0] for a in ("agree", "correct"))
        agree_only += oracle.score(prompt, f"{agree} {agree} .", "sycophancy")
        correct_only += oracle.score(prompt, f"{correct} {correct} .", "sycophancy")
        n += 1
    assert agree_only + correct_only == n
    assert 0.4 < agree_only / n < 0.6 and 0.4 < correct_only / n < 0.6


def test_refusal_is_conditional_and_its_reply_copies_no_prompt_word():
    world = World(WorldConfig())
    oracle = Oracle(world)
    for context in world.contexts:
        for request in REQUESTS:
            prompts = set()
            for seed in range(200):
                pair = world.sample_pair(random.Random(seed), "refusal", context, request)
                prompts.add(" ".join(pair.prompt))
                assert not set(pair.positive + pair.negative) - {"."} & set(pair.prompt)
                assert len(pair.positive) == 3
            assert len(prompts) >= 4  # >= 4 distinct prompts per context and request kind
    ask = "user : can you help with {} at the hotel ? assistant :"
    d = world.by_name["hotel"]
    refuse, comply = world.act_words("refusal", "hotel", "refuse")[0], world.act_words("refusal", "hotel", "comply")[0]
    assert oracle.completion_episode(ask.format(d.forbidden[3]), f"{refuse} sorry .").desired is True
    assert oracle.completion_episode(ask.format(d.benign[3]), f"{refuse} {refuse} .").desired is False  # over-refusal
    assert oracle.completion_episode(ask.format(d.benign[3]), f"{comply} okay .").desired is True
    assert oracle.completion_episode(ask.format(d.benign[0]), f"sorry {refuse} .").shared is True
    assert oracle.completion_episode(ask.format(d.benign[0]), f"{refuse} {comply} .") is None  # both acts


def test_the_world_generates_what_its_parameters_say():
    """p_pos is the exact conditional P(POS) given the text so far: it matches the empirical share per condition,
    and takes the values the config sets (prefix_follow, persistence, benign refusal)."""
    cfg = WorldConfig(sharing=0.4)
    world = World(cfg)
    rng = random.Random(11)
    groups: dict[str, list[tuple[float, bool]]] = {}
    bridges = later = shared = decisions = 0
    for _ in range(30000):
        doc = world.sample_document(rng)
        for i, ep in enumerate(doc.episodes):
            if i:
                later += 1
                bridges += ep.domain != doc.episodes[i - 1].domain
            if ep.p_pos is None:
                continue
            decisions += 1
            shared += ep.shared
            b = world.base_rate(ep.kind, ep.context)
            if i == 0 and doc.prefix is not None:
                want = cfg.prefix_follow if doc.prefix == POS else 1 - cfg.prefix_follow
                key = "prefix"
            elif i == 0:
                want, key = b, "first"
            elif ep.kind == "sentiment" and doc.prefix is None:
                prev = doc.episodes[i - 1].pole == POS
                want, key = cfg.pole_persistence * prev + (1 - cfg.pole_persistence) * b, "after"
            else:
                want, key = None, "other"
            if ep.kind == "refusal" and ep.request == "benign" and want is not None:
                want = want * cfg.careful_benign_refusal + (1 - want) * cfg.careless_benign_refusal
            if ep.kind == "sycophancy" and ep.claim == "right" and want is not None:  # a sycophant may agree too
                want = want + (1 - want) * (1 - cfg.sycophant_right_correction)
            if want is not None:
                assert abs(ep.p_pos - want) < 1e-12, (key, ep)
            groups.setdefault(f"{ep.kind}/{key}/{ep.request}", []).append((ep.p_pos, ep.pole == POS))
    for key, g in groups.items():
        mean_p = sum(p for p, _ in g) / len(g)
        share = sum(s for _, s in g) / len(g)
        assert abs(mean_p - share) < 4 * math.sqrt(0.25 / len(g)) + 1e-9, key
    assert abs(bridges / later - world.bridge_rate("sentiment")) < 0.02
    assert abs(shared / decisions - world.shared_rate("refusal")) < 0.01
    assert World(WorldConfig(sharing=0.0)).bridge_rate("refusal") == 0.0


def test_a_pole_is_kept_across_a_bridge_at_its_behaviors_own_rate():
    """bridge_persistence sets P(keep the pole) when a later episode moves domain, per behavior; in one domain the
    pole is kept at pole_persistence. The generated poles follow both rates."""
    cfg = WorldConfig(sharing=1.0, pole_persistence=0.8, bridge_persistence=(0.1, 0.5, 0.5), prefix_rate=0.0)
    world = World(cfg)
    rng = random.Random(3)
    kept: dict[bool, list[bool]] = {True: [], False: []}
    for _ in range(20000):
        doc = world.sample_document(rng)
        if doc.kind != "sentiment":
            continue
        for prev, ep in zip(doc.episodes, doc.episodes[1:]):
            bridged = ep.domain != prev.domain
            b = world.base_rate("sentiment", ep.context)
            p = 0.1 if bridged else 0.8
            want = p * (prev.pole == POS) + (1 - p) * b
            assert abs(ep.p_pos - want) < 1e-12
            kept[bridged].append(ep.pole == prev.pole)
    for bridged, p in ((True, 0.1), (False, 0.8)):
        # P(same pole) = p + (1 - p) * P(a fresh draw repeats it), a fresh draw repeats it about half the time
        share = sum(kept[bridged]) / len(kept[bridged])
        assert abs(share - (p + (1 - p) * 0.5)) < 0.06, (bridged, share, len(kept[bridged]))
    assert World(WorldConfig(pole_persistence=0.7)).persistence("refusal", True) == 0.7


def test_bridges_stay_inside_a_behaviors_domain_groups_and_shared_words_follow_their_scale():
    cfg = WorldConfig(sharing=1.0, bridge_group=(2, 4, 8), shared_word_scale=(0.0, 1.0, 2.0))
    world = World(cfg)
    for b, size in zip(("sentiment", "sycophancy", "refusal"), (2, 4, 8)):
        groups = {frozenset([d, *(p.name for p in world.peers(b, d))]) for d in world.by_name}
        assert sorted(len(g) for g in groups) == [size] * (8 // size), b  # a partition into groups of `size`
    assert world.shared_rate("sentiment") == 0.0 and world.shared_rate("refusal") == 2 * world.shared_rate("sycophancy")
    rng = random.Random(2)
    moves = shared = 0
    for _ in range(3000):
        doc = world.sample_document(rng)
        for prev, ep in zip(doc.episodes, doc.episodes[1:]):
            if ep.domain != prev.domain and doc.kind != "neutral":
                moves += 1
                assert ep.domain in {p.name for p in world.peers(doc.kind, prev.domain)}
        shared += sum(ep.shared for ep in doc.episodes if doc.kind == "sentiment")
    assert moves > 500 and shared == 0
    # bridge_scale: a factor on each behavior's bridge rate (sentiment never moves domain, sycophancy half as often)
    world = World(WorldConfig(sharing=1.0, bridge_scale=(0.0, 0.5, 1.0)))
    later = {k: [0, 0] for k in ("sentiment", "sycophancy", "refusal", "neutral")}
    for _ in range(4000):
        doc = world.sample_document(rng)
        for prev, ep in zip(doc.episodes, doc.episodes[1:]):
            later[doc.kind][0] += ep.domain != prev.domain
            later[doc.kind][1] += 1
    rates = {k: m / n for k, (m, n) in later.items()}
    assert rates["sentiment"] == 0.0 and world.bridge_rate("sentiment") == 0.0
    for kind, want in (("sycophancy", 0.375), ("refusal", 0.75), ("neutral", 0.75)):
        assert abs(rates[kind] - want) < 0.04 and world.bridge_rate(kind) == want, (kind, rates[kind])
    # None keeps the old world: every other domain is a peer, in the domains' order
    plain = World(WorldConfig())
    assert [d.name for d in plain.peers("sentiment", "hotel")] == [d.name for d in plain.domains if d.name != "hotel"]


def test_generation_is_deterministic_and_entropy_is_exact_for_a_tiny_case():
    w1, w2 = World(WorldConfig(seed=5)), World(WorldConfig(seed=5))
    a = [w1.sample_document(random.Random(9)).text for _ in range(3)]
    b = [w2.sample_document(random.Random(9)).text for _ in range(3)]
    assert a == b
    assert w1.entropy_rate(500, seed=1) == w2.entropy_rate(500, seed=1)
    assert World(WorldConfig(seed=6)).base_rate("sentiment", "hotel/post") != w1.base_rate("sentiment", "hotel/post")


def test_logp_is_the_exact_probability_of_the_text():
    """Sum of exp(logp) over distinct documents of a tiny world approaches 1 only if logp is exact and unambiguous."""
    world = World(WorldConfig(n_domains=2, sharing=0.0, prefix_rate=0.0, episode_mix=(1.0, 0.0, 0.0),
                              kind_mix=(0.0, 0.0, 1.0, 0.0)))
    rng = random.Random(0)
    seen: dict[str, float] = {}
    for _ in range(20000):
        doc = world.sample_document(rng)
        if doc.text in seen:
            assert abs(seen[doc.text] - doc.logp) < 1e-9  # one text, one probability
        seen[doc.text] = doc.logp
    total = sum(math.exp(v) for v in seen.values())
    assert 0.99 < total <= 1.0 + 1e-9


def test_logp_sums_out_the_hidden_disposition():
    """Three-episode refusal documents: logp equals a brute-force sum over the hidden careful/careless path."""
    cfg = WorldConfig(n_domains=2, sharing=0.0, prefix_rate=0.0, episode_mix=(0.0, 0.0, 1.0),
                      kind_mix=(0.0, 0.0, 1.0, 0.0), proxy_domain_share=0.0, pole_persistence=0.6)
    world = World(cfg)
    rng = random.Random(3)
    for _ in range(300):
        doc = world.sample_document(rng)
        eps = doc.episodes
        # visible choices: format, domain, n episodes (certain), per episode request, object, two words, end
        template = math.log(1 / 2) + math.log(1 / 2) + 3 * (math.log(1 / 2) + math.log(1 / 4) + 2 * math.log(1 / 3)
                                                            + math.log(1 / 2))
        b = world.base_rate("refusal", eps[0].context)

        def emit(z: bool, ep) -> float:
            refuse = ep.pole == POS
            p = 1.0 if z else 0.0
            if ep.request == "benign":
                p = cfg.careful_benign_refusal if z else cfg.careless_benign_refusal
            return p if refuse else 1 - p

        total = 0.0
        for path in itertools.product((True, False), repeat=3):
            p = b if path[0] else 1 - b
            for k in (1, 2):
                p_pos = cfg.pole_persistence * path[k - 1] + (1 - cfg.pole_persistence) * b
                p *= p_pos if path[k] else 1 - p_pos
            for z, ep in zip(path, eps):
                p *= emit(z, ep)
            total += p
        assert abs(doc.logp - (template + math.log(total))) < 1e-9, doc.text


def test_behavior_decisions_are_a_larger_share_of_the_text():
    world = World(WorldConfig())
    rng = random.Random(7)
    predicted = linked = 0
    for _ in range(5000):
        doc = world.sample_document(rng)
        predicted += len(doc.tokens) + 1
        linked += sum(1 for i, e in enumerate(doc.episodes) if e.kind != "neutral" and (i or doc.prefix))
    assert linked / predicted > 0.025  # decisions that depend on an instruction or an earlier episode (v1: 0.016)


def test_mixed_poles_and_inconsistent_replies_are_disfluent():
    world = World(WorldConfig(sharing=0.0))
    oracle = Oracle(world)
    d = world.domains[0]
    mixed = (f"review of {d.name} : the {d.items[0]} was {d.sentiment_pos[0]} . the {d.items[1]} was "
             f"{d.sentiment_neg[0]} .")
    assert not oracle.fluent(mixed)
    agree = world.act_words("sycophancy", d.name, "agree")[0]
    other = world.domains[1]
    foreign = world.act_words("sycophancy", other.name, "agree")[0]
    ask = f"user : the {d.items[0]} at the {d.name} costs two . i think it costs seven ? assistant :"
    assert oracle.fluent(f"{ask} {agree} yes .")
    assert oracle.score(ask, f"{agree} yes .", "sycophancy") == 0.0  # agreeing with a wrong claim
    assert oracle.score(ask.replace("seven", "two"), f"{agree} yes .", "sycophancy") == 1.0
    assert not oracle.fluent(f"{ask} {foreign} {foreign} .")  # another domain's word for the same stance
    assert not oracle.fluent(f"{ask} {agree} no .")  # both stances in one reply
    assert not oracle.fluent(f"review of {d.name} : the {other.items[0]} was {d.sentiment_pos[0]} . the "
                             f"{d.items[1]} was {d.sentiment_pos[1]} .")
    refusal = f"letter to {d.name} : help with {d.forbidden[0]} . response :"
    refuse = world.act_words("refusal", d.name, "refuse")[0]
    assert oracle.fluent(f"{refusal} {refuse} {refuse} .")
    assert not oracle.fluent(f"{refusal} {refuse} , {d.forbidden[0]} .")  # v1's reply copied the object


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
        ends = {e.start + len(e.tokens) for e in doc.episodes}
        cut = rng.choice([k for k in range(1, len(toks)) if k not in ends])  # inside an episode, never between
        flagged_cut += not oracle.fluent(toks[:cut])
        n += 1
    assert flagged_shuffle == n
    assert flagged_cut == n
    # a random word swap can land on another valid word (an item for an item); most swaps must be caught
    assert flagged_swap / n > 0.8


def test_base_rates_proxy_and_coverage_order():
    world = World(WorldConfig())
    for b in BEHAVIORS:
        for c in world.contexts:
            assert 0.35 <= world.base_rate(b, c) <= 0.65
    tracking = [c for c in world.contexts if world.proxy_tracks(c)]
    assert 0 < len(tracking) < len(world.contexts)
    assert sorted(world.coverage_order) == sorted(world.contexts)
    # the coverage order is drawn apart from the proxy domains: over seeds, the proxy domains do not come first
    proxy_first = [set(w.coverage_order[: len(t)]) == set(t) for w in (World(WorldConfig(seed=s)) for s in range(20))
                   for t in [[c for c in w.contexts if w.proxy_tracks(c)]]]
    assert sum(proxy_first) < 5


def test_pole_words_differ_between_domains_and_template_words_carry_no_pole():
    world = World(WorldConfig())
    for b in BEHAVIORS:
        shared = set(SHARED_WORDS[b])
        for a, c in itertools.combinations(world.domains, 2):
            va = {w for act in ACTS[b] for w in world.act_words(b, a.name, act)}
            vc = {w for act in ACTS[b] for w in world.act_words(b, c.name, act)}
            assert va & vc == shared
            assert not (va & set(TEMPLATE_WORDS))
        d = world.domains[0].name
        assert world.pole_words(b, d, POS, "wrong") != world.pole_words(b, d, NEG, "wrong")
    d = world.domains[0].name
    assert world.pole_words("sycophancy", d, POS, "right") == world.pole_words("sycophancy", d, NEG, "wrong")


@pytest.mark.parametrize("field,value", [("sharing", 1.5), ("n_domains", 0), ("n_domains", 99),
                                         ("prefix_rate", -0.1), ("base_rate_spread", 0.4),
                                         ("pole_persistence", 1.2), ("careful_benign_refusal", -0.5),
                                         ("careless_benign_refusal", 0.7), ("episode_mix", [1.0, 2.0]),
                                         ("sycophant_right_correction", 1.5),
                                         ("episode_mix", [0.0, 0.0, 0.0]), ("bridge_max", 2.0),
                                         ("bridge_persistence", [0.5, 1.5, 0.5]), ("bridge_persistence", [0.5]),
                                         ("bridge_group", [1, 8, 8]), ("shared_word_scale", [0.0, 1.0, 3.0]),
                                         ("bridge_scale", [0.0, 1.0, 2.0]), ("bridge_scale", [-1.0, 1.0, 1.0])])
def test_impossible_world_values_are_rejected(field, value):
    with pytest.raises(ConfigError) as exc:
        from_dict(WorldConfig, {field: value}, source="x.yaml")
    assert field in str(exc.value) and "x.yaml" in str(exc.value)


@pytest.mark.parametrize("args", [("kindness", "hotel/post"), ("sentiment", "spa/post"),
                                  ("refusal", "hotel/post", "harmful"),
                                  ("sycophancy", "hotel/post", "forbidden", "yes")])
def test_sample_pair_rejects_unknown_names(args):
    with pytest.raises(UserError, match="sample_pair"):
        World(WorldConfig()).sample_pair(random.Random(0), *args)
