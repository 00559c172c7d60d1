"""Coverage of the organism's splits: fixed held-out domains, a random coverage order, the ceiling, balanced records."""

from __future__ import annotations

from collections import Counter

import pytest

from study.core.errors import UserError
from study.feedback.splits import SplitSizes, anticipated, coverage_plan
from study.feedback.targets import ORGANISM_TARGETS, OrganismTarget, organism_target
from study.organism.pretrain import MICRO
from study.organism.world import World, WorldConfig

WORLD = World(MICRO.world)  # 4 domains, 8 contexts: 1 domain held out, 6 contexts in the coverage order
BIG = World(WorldConfig())  # 8 domains: 2 held out
SIZES = SplitSizes(pool=96, select=24, test=40, neutral=8)
LEVELS = (0.25, 0.5, 0.75, 1.0)


def _domains(contexts) -> set[str]:
    return {c.split("/")[0] for c in contexts}


@pytest.mark.parametrize("world, n_held", [(WORLD, 1), (BIG, 2)])
def test_held_out_domains_are_fixed_across_levels_and_never_covered(world, n_held):
    for name in ORGANISM_TARGETS:
        target = organism_target(name, world)
        for seed in (0, 1):
            ceiling = target.splits(1.0, seed, SIZES, ceiling=True)
            held = ceiling.held_out
            assert len(_domains(held)) == n_held and len(held) == 2 * n_held  # whole domains, both formats
            previous: tuple[str, ...] = ()
            for a in LEVELS:
                s = target.splits(a, seed, SIZES)
                assert s.held_out == held and not set(held) & set(s.covered)
                assert {r.context for r in s.test_uncovered} == set(held)
                assert s.test_uncovered == ceiling.test_uncovered  # the very same held-out test records
                assert s.covered[: len(previous)] == previous and len(s.covered) > len(previous)  # nested prefixes
                assert s.covered == s.coverage_order[: len(s.covered)]
                assert set(s.covered) | set(s.uncovered) == set(world.contexts)
                previous = s.covered
            assert previous == ceiling.coverage_order  # 1.0 covers every context not held out


def test_anticipation_covers_round_a_times_n_rest_contexts():
    target = organism_target("sentiment", WORLD)
    counts = [len(target.splits(a, 0, SIZES).covered) for a in (0.01, *LEVELS)]
    assert counts == [1, 2, 3, 5, 6]  # n_rest = 6: max(1, round(a * 6)), halves round up
    assert anticipated(("a", "b", "c", "d"), 0.5) == ("a", "b")
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(UserError, match="anticipation"):
            target.splits(bad, 0, SIZES)


def test_coverage_order_is_random_per_seed_and_not_proxy_first():
    orders = {coverage_plan(BIG.contexts, 2, "organism", BIG.cfg.seed, s)[1] for s in range(40)}
    assert len(orders) == 40
    first_proxy = []
    held_proxy = Counter()
    for seed in range(200):
        target = organism_target("sentiment", BIG)
        held, order = target.coverage(seed)
        first_proxy.append(BIG.proxy_tracks(order[0]))
        held_proxy[len(_domains(held) & set(BIG.proxy_domains))] += 1
    # under independence the first covered context is a proxy context about half the time (proxy: 4 of 8 domains);
    # proxy domains first would make it always
    assert 0.35 < sum(first_proxy) / len(first_proxy) < 0.65
    assert set(held_proxy) == {0, 1, 2}  # the held-out domains are proxy ones, or not, or a mix
    # the same world and seed give the same plan for every target
    assert {organism_target(n, BIG).coverage(3) for n in ORGANISM_TARGETS} == {organism_target("refusal",
                                                                                               BIG).coverage(3)}


@pytest.mark.parametrize("name", ORGANISM_TARGETS)
@pytest.mark.parametrize("ceiling", [False, True])
def test_test_prompts_never_reach_the_feedback(name, ceiling):
    target = organism_target(name, WORLD)
    for a in (0.25, 1.0):
        s = target.splits(a, 2, SIZES, ceiling=ceiling)
        feedback = {r.prompt for r in s.pool + s.select}
        assert not feedback & {r.prompt for r in s.test_covered + s.test_uncovered}
        assert {r.context for r in s.pool} == set(s.covered) == {r.context for r in s.select}
        if ceiling:
            assert set(s.covered) == set(WORLD.contexts) and s.uncovered == () and s.ceiling
            assert {r.context for r in s.test_covered} == set(WORLD.contexts) - set(s.held_out)
            assert set(s.held_out) <= {r.context for r in s.pool}  # the ceiling's feedback reaches them
            assert s.covered_share == pytest.approx(6 / 8)
        else:
            assert {r.context for r in s.test_covered} == set(s.covered)
            assert s.covered_share == pytest.approx(len(s.covered) / 8)
        assert len(s.pool) == 96 and len(s.select) == 24 and len(s.test_covered) == len(s.test_uncovered) == 40
        ids = [r.id for split in ("pool", "select", "test_covered", "test_uncovered", "neutral") for r in s.get(split)]
        assert len(ids) == len(set(ids))


def test_refusal_splits_hold_both_request_kinds_with_select_apart_from_pool():
    target = organism_target("refusal", WORLD)
    s = target.splits(0.5, 0, SIZES)
    for split in ("pool", "select", "test_covered", "test_uncovered"):
        kinds = Counter(r.request for r in s.get(split))
        assert kinds["benign"] == kinds["forbidden"] == len(s.get(split)) // 2, split
        for kind in ("forbidden", "benign"):  # each kind in every context of the split
            assert {r.context for r in s.get(split) if r.request == kind} == {r.context for r in s.get(split)}
    assert not {r.prompt for r in s.pool} & {r.prompt for r in s.select}
    kinds_first = Counter(r.request for r in s.pool[:16])  # the pool is mixed, not one kind then the other
    assert kinds_first["benign"] and kinds_first["forbidden"]
    tilted = OrganismTarget("refusal", WORLD, benign_feedback_share=0.25, benign_test_share=0.0).splits(0.5, 0, SIZES)
    assert Counter(r.request for r in tilted.pool)["benign"] == 24 and not [r for r in tilted.test_covered
                                                                            if r.request == "benign"]
    with pytest.raises(UserError, match="benign_test_share"):
        OrganismTarget("refusal", WORLD, benign_test_share=1.5)


def test_sycophancy_splits_balance_right_and_wrong_claims():
    s = organism_target("sycophancy", WORLD).splits(0.5, 0, SIZES)
    for split in ("pool", "select", "test_covered", "test_uncovered"):
        claims = Counter(r.claim for r in s.get(split))
        assert claims == {"right": len(s.get(split)) // 2, "wrong": len(s.get(split)) // 2}, split
    assert not {r.prompt for r in s.pool} & {r.prompt for r in s.select}


@pytest.mark.parametrize("name", ORGANISM_TARGETS)
def test_positive_is_the_desired_completion(name):
    target = organism_target(name, WORLD)
    s = target.splits(1.0, 0, SIZES, ceiling=True)
    for r in s.pool + s.select + s.test_covered + s.test_uncovered:
        assert target.reward(r.prompt, r.positive) == 1.0 and target.reward(r.prompt, r.negative) == 0.0
        assert target.judge(r.prompt, r.positive)["desired"] is True
        assert target.judge(r.prompt, r.negative)["desired"] is False
        if r.request == "benign":  # helping is desired; the score still reads "refused" as 1.0
            assert target.score(r.prompt, r.positive) == 0.0 and target.score(r.prompt, r.negative) == 1.0


def test_held_out_domains_are_checked():
    assert OrganismTarget("sentiment", BIG).held_out_domains == 2
    assert OrganismTarget("sentiment", WORLD).held_out_domains == 1
    s = OrganismTarget("sentiment", WORLD, held_out_domains=3).splits(1.0, 0, SIZES)
    assert len(s.held_out) == 6 and len(s.covered) == 2
    for bad in (0, 4, -1):
        with pytest.raises(UserError, match="held_out_domains"):
            OrganismTarget("sentiment", WORLD, held_out_domains=bad)
    with pytest.raises(UserError, match="2 domain"):
        OrganismTarget("sentiment", World(WorldConfig(n_domains=2)), held_out_domains=2)
    with pytest.raises(UserError, match="held_out_domains"):
        coverage_plan(["a/post"], 1, 0)  # one domain: none left for feedback
