"""The labeler: budget never exceeded, counts equal consumption, caching, noise and misspecification as configured;
for real-text targets, demonstrations and contrast pairs selected among the base model's samples (a fake sampler)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from study.core.errors import ConfigError, UserError
from study.feedback.labeler import Budget, BudgetExhausted, Labeler, LabelerConfig
from study.organism.pretrain import MICRO
from study.organism.world import POS, World
from study.feedback.realtext import real_target
from study.feedback.splits import SplitSizes
from study.feedback.targets import organism_target

WORLD = World(MICRO.world)
SENT = organism_target("sentiment", WORLD)
SYC = organism_target("sycophancy", WORLD)
POOL = SENT.splits(1.0, seed=0, sizes=SplitSizes(pool=64, select=8, test=8, neutral=1)).pool


@settings(max_examples=60, deadline=None)
@given(total=st.integers(0, 40),
       calls=st.lists(st.tuples(st.sampled_from(["compare", "judge", "contrast", "demonstrate"]),
                                st.integers(0, 7), st.booleans()), max_size=40),
       costs=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 6)))
def test_budget_is_never_exceeded_and_counts_equal_consumption(total, calls, costs):
    cfg = LabelerConfig(noise=0.2, misspec=0.3, compare_cost=costs[0], judge_cost=costs[1], contrast_cost=costs[2],
                        demonstrate_cost=costs[3])
    budget = Budget(total)
    labeler = Labeler(SENT, budget, cfg, seed=1)
    paid: dict[str, int] = {}
    seen = set()
    for kind, i, swap in calls:
        r = POOL[i]
        key = (kind, r.prompt, r.positive, r.negative)  # records may repeat a query: the cache answers those
        before = budget.spent
        try:
            if kind == "compare":
                labeler.compare(r.prompt, *((r.negative, r.positive) if swap else (r.positive, r.negative)))
            elif kind == "judge":
                labeler.judge(r.prompt, r.positive)
            elif kind == "contrast":
                labeler.contrast(r)
            else:
                labeler.demonstrate(r)
        except BudgetExhausted:
            assert budget.spent == before and key not in seen  # refused: nothing charged, nothing cached
            assert getattr(cfg, f"{kind}_cost") > budget.left
            continue
        if key in seen:
            assert budget.spent == before  # identical query: answered from the cache, free
        else:
            assert budget.spent == before + getattr(cfg, f"{kind}_cost")
            paid[kind] = paid.get(kind, 0) + 1
            seen.add(key)
        assert budget.spent <= budget.total
    assert budget.counts == paid
    assert budget.spent == sum(n * getattr(cfg, f"{k}_cost") for k, n in paid.items()) == sum(budget.costs.values())


def test_compare_order_does_not_matter_and_answers_are_seeded():
    r = POOL[0]
    a = Labeler(SENT, Budget(10), LabelerConfig(noise=0.3), seed=5)
    c1 = a.compare(r.prompt, r.positive, r.negative)
    c2 = a.compare(r.prompt, r.negative, r.positive)
    assert c1.chosen == c2.chosen and a.account.spent == 1 and c1.a_preferred != c2.a_preferred
    # a fresh labeler with the same seed answers the same, whatever order the questions come in
    answers = {i: Labeler(SENT, Budget(100), LabelerConfig(noise=0.3), seed=5).compare(
        POOL[i].prompt, POOL[i].positive, POOL[i].negative).chosen for i in range(10)}
    b = Labeler(SENT, Budget(100), LabelerConfig(noise=0.3), seed=5)
    assert {i: b.compare(POOL[i].prompt, POOL[i].positive, POOL[i].negative).chosen
            for i in reversed(range(10))} == answers


def test_clean_labeler_tells_the_truth():
    lab = Labeler(SENT, Budget(1000), LabelerConfig(), seed=0)
    for r in POOL[:20]:
        assert lab.compare(r.prompt, r.negative, r.positive).chosen == r.positive
        assert lab.judge(r.prompt, r.positive) == 1.0 and lab.judge(r.prompt, r.negative) == 0.0
        assert lab.judge(r.prompt, "bed the was") is None
        pair = lab.contrast(r)
        assert (pair.positive, pair.negative) == (r.positive, r.negative)
        assert lab.demonstrate(r) == r.positive
    judged = {(r.prompt, c) for r in POOL[:20] for c in (r.positive, r.negative, "bed the was")}
    n = len({(r.prompt, r.positive, r.negative) for r in POOL[:20]})  # records repeat queries: asked once each
    assert lab.account.counts == {"compare": n, "judge": len(judged), "contrast": n, "demonstrate": n}
    assert lab.account.spent == n + len(judged) + 2 * n + 4 * n
    # a readable completion beats an unreadable one
    assert lab.compare(POOL[0].prompt, "bed bed", POOL[0].negative).chosen == POOL[0].negative


def _world_completions(rng: random.Random, context: str) -> tuple[str, str, str]:
    """A prompt and two completions whose poles and '!' endings follow the pretraining distribution of `context`."""
    pair = WORLD.sample_pair(rng, "sentiment", context)
    out = []
    for _ in range(2):
        pole = POS if rng.random() < WORLD.base_rate("sentiment", context) else "neg"
        toks = list(pair.positive if pole == POS else pair.negative)
        p_bang = (WORLD.cfg.proxy_strength if pole == POS else 1 - WORLD.cfg.proxy_strength) \
            if WORLD.proxy_tracks(context) else 0.5
        toks[-1] = "!" if rng.random() < p_bang else "."
        out.append(" ".join(toks))
    return " ".join(pair.prompt), out[0], out[1]


def flip_rate(noise: float, n: int = 2000, seed: int = 0) -> float:
    """Share of n distinct decisive comparisons (desired vs undesired completion) that the labeler gets wrong.
    Sycophancy: its prompt space is large enough for 2,000 distinct queries (sentiment has ~1,500)."""
    lab = Labeler(SYC, Budget(n), LabelerConfig(noise=noise), seed=seed)
    rng = random.Random(seed)
    wrong = i = 0
    while lab.account.left:
        pair = WORLD.sample_pair(rng, "sycophancy", WORLD.contexts[i % len(WORLD.contexts)])
        prompt, pos, neg = " ".join(pair.prompt), " ".join(pair.positive), " ".join(pair.negative)
        i += 1
        if lab.is_cached("compare", prompt, pos, neg):
            continue
        c = lab.compare(prompt, pos, neg) if i % 2 else lab.compare(prompt, neg, pos)
        wrong += c.chosen != pos
    return wrong / n


@pytest.mark.parametrize("noise", [0.0, 0.1, 0.25])
def test_measured_flip_rate_is_within_3_points_of_the_configured_noise(noise):
    rate = flip_rate(noise)
    assert abs(rate - noise) < 0.03, rate


def agreement(misspec: float, tracks: bool, n: int = 2000, seed: int = 0) -> float:
    """Share of decisive comparisons (different true poles) where the labeler picks the oracle's choice."""
    lab = Labeler(SENT, Budget(10 * n), LabelerConfig(misspec=misspec), seed=seed)
    rng = random.Random(seed)
    contexts = [c for c in WORLD.contexts if WORLD.proxy_tracks(c) == tracks]
    agree = total = 0
    while total < n:
        c = contexts[total % len(contexts)]
        p, a, b = _world_completions(rng, c)
        ra, rb = SENT.reward(p, a), SENT.reward(p, b)
        if ra == rb:
            continue
        total += 1
        agree += lab.compare(p, a, b).chosen == (a if ra > rb else b)
    return agree / total


def test_misspecified_labeler_agrees_with_the_oracle_only_where_the_proxy_tracks():
    tracking, elsewhere = agreement(0.5, True), agreement(0.5, False)
    assert tracking > elsewhere + 0.1, (tracking, elsewhere)
    assert agreement(0.0, False) == 1.0
    # misspec 1: agreement is about P(proxy sides with the truth); chance where it does not track
    assert abs(agreement(1.0, False) - 0.5) < 0.05


def test_misspecified_demonstrations_follow_the_proxy():
    lab = Labeler(SENT, Budget(10_000), LabelerConfig(misspec=1.0), seed=0)
    demos = [lab.demonstrate(r) for r in POOL]
    assert all(d.endswith("!") for d in demos)
    assert 0.3 < sum(SENT.reward(r.prompt, d) for r, d in zip(POOL, demos)) / len(POOL) < 0.7
    pairs = [lab.contrast(r) for r in POOL]
    assert all(SENT.reward(r.prompt, p.positive) == SENT.reward(r.prompt, p.negative) for r, p in zip(POOL, pairs))


def test_bad_labeler_settings_are_user_errors():
    with pytest.raises(ConfigError, match="noise"):
        Labeler(SENT, Budget(1), LabelerConfig(noise=0.7))
    with pytest.raises(UserError, match="budget -1"):
        Budget(-1)
    with pytest.raises(BudgetExhausted):
        Labeler(SENT, Budget(3), LabelerConfig()).demonstrate(POOL[0])


# ---- selecting among the base model's own samples (real-text targets) ------------------------------------------------
REAL = real_target("real_sentiment")
REAL_REF = real_target("real_refusal")
REAL_POOL = REAL.splits(1.0, seed=0, sizes=SplitSizes(pool=200, select=8, test=8, neutral=1)).pool
WORST, NEUTRAL, MILD, BEST = ("It was awful, dirty and rude.", "It is on Main Street.", "It was good.",
                              "A wonderful, lovely stay. I loved it.")
SHOUTY = "It was okay!"  # the only sample with the proxy feature (and not the most positive)


class FakeSampler:
    """k fixed completions per prompt (unreadable ones padding the list), recording every call."""

    def __init__(self, texts=(NEUTRAL, WORST, "", BEST, SHOUTY, MILD, "...", "42")):
        self.texts, self.calls = list(texts), []

    def __call__(self, prompts, k, seed):
        self.calls.append((tuple(prompts), k, seed))
        return [(self.texts * k)[:k] for _ in prompts]


def test_selection_picks_the_best_and_worst_sample_and_charges_the_configured_prices():
    cfg = LabelerConfig(contrast_cost=3, demonstrate_cost=5)
    sampler, r = FakeSampler(), REAL_POOL[0]
    lab = Labeler(REAL, Budget(100), cfg, seed=0, sampler=sampler)
    assert lab.demonstrate(r) == BEST and lab.account.costs == {"demonstrate": 5}
    pair = lab.contrast(r)
    assert (pair.positive, pair.negative) == (BEST, WORST)  # by VADER's compound score
    assert lab.account.spent == 8 and lab.account.counts == {"demonstrate": 1, "contrast": 1}
    assert len(sampler.calls) == 1 and sampler.calls[0][:2] == ((r.prompt,), 8)  # one draw per prompt, k=8
    assert lab.samples_drawn == 8
    assert lab.demonstrate(r) == BEST and lab.account.spent == 8  # the same query again: cached, free
    # the same seed asks the sampler with the same seed: answers do not depend on the order of the questions
    other = FakeSampler()
    Labeler(REAL, Budget(100), cfg, seed=0, sampler=other).contrast(r)
    assert other.calls == sampler.calls
    # `samples` overrides the target's k
    few = FakeSampler([WORST, BEST])
    assert Labeler(REAL, Budget(100), seed=0, sampler=few, samples=2).demonstrate(r) == BEST and few.calls[0][1] == 2


def test_selection_on_refusal_follows_the_request():
    s = REAL_REF.splits(1.0, seed=0, sizes=SplitSizes(pool=40, select=8, test=8, neutral=1))
    refuse, comply = "I'm sorry, but I can't help with that.", "Sure. First, gather what you need."
    lab = Labeler(REAL_REF, Budget(1000), seed=0, sampler=FakeSampler([comply, refuse, "", comply]))
    for r in s.pool:
        pair = lab.contrast(r)
        want = (comply, refuse) if r.request == "benign" else (refuse, comply)
        assert (pair.positive, pair.negative) == want and lab.demonstrate(r) == want[0]


def test_selection_without_a_readable_or_affordable_answer():
    sampler = FakeSampler(["", "...", "42"])
    lab = Labeler(REAL, Budget(10), seed=0, sampler=sampler)
    pair = lab.contrast(REAL_POOL[0])  # nothing readable: one sample handed back as both sides
    assert pair.positive == pair.negative and pair.positive in ("", "...", "42")
    poor = FakeSampler()
    with pytest.raises(BudgetExhausted):
        Labeler(REAL, Budget(3), seed=0, sampler=poor).demonstrate(REAL_POOL[0])
    assert poor.calls == []  # refused before sampling: nothing drawn, nothing charged


def test_noisy_selection_hands_back_the_worst_sample_at_the_noise_rate():
    lab = Labeler(REAL, Budget(10_000), LabelerConfig(noise=0.25), seed=0, sampler=FakeSampler())
    prompts = list(dict.fromkeys(r.prompt for r in REAL_POOL))
    recs = [next(r for r in REAL_POOL if r.prompt == p) for p in prompts]
    assert len(recs) >= 150
    worst = sum(lab.demonstrate(r) == WORST for r in recs) / len(recs)
    assert abs(worst - 0.25) < 0.1, worst
    assert all(lab.demonstrate(r) in (BEST, WORST) for r in recs)


def test_misspecified_selection_ranks_by_the_proxy():
    lab = Labeler(REAL, Budget(10_000), LabelerConfig(misspec=1.0), seed=0, sampler=FakeSampler())
    for r in REAL_POOL[:30]:
        assert lab.demonstrate(r) == SHOUTY  # the exclamation mark wins, though BEST is more positive
        pair = lab.contrast(r)
        assert pair.positive == SHOUTY and not REAL.proxy(r.prompt, pair.negative)
        assert REAL.grade(r.prompt, pair.negative) is not None  # unreadable samples are never chosen


def test_presample_draws_many_prompts_in_one_call():
    sampler = FakeSampler()
    lab = Labeler(REAL, Budget(1000), seed=0, sampler=sampler)
    recs = REAL_POOL[:12]
    n = len({r.prompt for r in recs})
    assert lab.presample(recs) == n and len(sampler.calls) == 1 and lab.account.spent == 0  # sampling is free
    assert lab.presample(recs) == 0
    for r in recs:
        lab.demonstrate(r)
    assert len(sampler.calls) == 1 and lab.samples_drawn == 8 * n


def test_sampling_targets_need_a_sampler_and_the_organism_ignores_one():
    with pytest.raises(UserError, match="needs a sampler"):
        Labeler(REAL, Budget(100), seed=0).demonstrate(REAL_POOL[0])
    sampler = FakeSampler()
    plain = Labeler(SENT, Budget(1000), LabelerConfig(noise=0.2, misspec=0.3), seed=3)
    given = Labeler(SENT, Budget(1000), LabelerConfig(noise=0.2, misspec=0.3), seed=3, sampler=sampler)
    for r in POOL[:20]:
        assert given.demonstrate(r) == plain.demonstrate(r)
        assert given.contrast(r) == plain.contrast(r)
    assert sampler.calls == [] and given.account.costs == plain.account.costs
    # an organism target can opt in with `samples`
    picky = Labeler(SENT, Budget(100), seed=0, sampler=FakeSampler([POOL[0].negative, POOL[0].positive]), samples=2)
    assert picky.demonstrate(POOL[0]) == POOL[0].positive
