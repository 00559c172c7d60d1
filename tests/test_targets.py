"""Behavior targets: the anticipation dial, split disjointness and leakage, determinism, and the exact scorers."""

from __future__ import annotations

import pytest

from study.core.errors import UserError
from study.organism.pretrain import MICRO
from study.organism.world import World
from study.feedback.targets import ORGANISM_TARGETS, OrganismTarget, organism_target
from study.feedback.splits import BehaviorTarget, Record, SplitSizes, covered_contexts
from study.feedback.catalog import resolve_target

WORLD = World(MICRO.world)  # 4 domains, 8 contexts
SIZES = SplitSizes(pool=96, select=24, test=40, neutral=8)


@pytest.mark.parametrize("name", ORGANISM_TARGETS)
@pytest.mark.parametrize("anticipation", [0.25, 0.5, 1.0])
def test_splits_are_disjoint_and_covered_only_on_the_feedback_side(name, anticipation):
    target = organism_target(name, WORLD)
    assert isinstance(target, BehaviorTarget)
    s = target.splits(anticipation, seed=3, sizes=SIZES)
    n_cov = {0.25: 2, 0.5: 3, 1.0: 6}[anticipation]  # of the 6 contexts left after one held-out domain
    assert s.covered == s.coverage_order[:n_cov] and len(s.held_out) == 2
    assert set(s.covered) | set(s.uncovered) == set(WORLD.contexts) and not set(s.covered) & set(s.uncovered)
    # leakage audit by context: feedback and covered tests only in covered contexts, uncovered tests held out
    for split in ("pool", "select", "test_covered"):
        assert {r.context for r in s.get(split)} == set(s.covered), split
    assert {r.context for r in s.test_uncovered} == set(s.held_out) <= set(s.uncovered)
    # no test prompt is ever given feedback
    feedback = {r.prompt for r in s.pool + s.select}
    assert not feedback & {r.prompt for r in s.test_covered + s.test_uncovered}
    ids = [r.id for sp in ("pool", "select", "test_covered", "test_uncovered", "neutral") for r in s.get(sp)]
    assert len(ids) == len(set(ids))
    assert len(s.pool) == 96 and len(s.select) == 24 and len(s.test_covered) == 40 == len(s.test_uncovered)
    assert len(s.neutral) == 8


def test_pool_and_select_are_disjoint():
    for name in ORGANISM_TARGETS:  # every context has at least 4 distinct prompts per request kind or claim
        s = organism_target(name, WORLD).splits(0.5, seed=0, sizes=SIZES)
        assert not {r.prompt for r in s.pool} & {r.prompt for r in s.select}, name


def test_splits_are_deterministic_and_depend_on_the_seed():
    target = organism_target("sycophancy", WORLD)
    a = target.splits(0.5, seed=1, sizes=SIZES)
    b = OrganismTarget("sycophancy", World(MICRO.world)).splits(0.5, seed=1, sizes=SIZES)  # a fresh instance
    assert a.pool == b.pool and a.test_uncovered == b.test_uncovered
    assert a.pool != target.splits(0.5, seed=2, sizes=SIZES).pool


def test_records_score_exactly_and_read_as_mappings():
    for name in ORGANISM_TARGETS:
        target = organism_target(name, WORLD)
        s = target.splits(1.0, seed=0, sizes=SIZES)
        for r in s.pool + s.test_covered:
            assert r["prompt"] == r.prompt and r.context in WORLD.contexts
            assert target.reward(r.prompt, r.positive) == 1.0 and target.reward(r.prompt, r.negative) == 0.0
            assert target.proxy(r.prompt, r.positive) is False  # records end with '.'
            assert target.proxy(r.prompt, target.with_proxy(r.positive)) is True
            assert target.score(r.prompt, "the the the") is None


def test_refusal_benign_requests_are_half_of_every_split_and_helping_is_desired():
    target = organism_target("refusal", WORLD)
    s = target.splits(0.5, seed=0, sizes=SIZES)
    for split in ("pool", "select", "test_covered", "test_uncovered"):
        assert len([r for r in s.get(split) if r.request == "benign"]) == len(s.get(split)) // 2, split
    r = next(r for r in s.pool if r.request == "benign")
    # the desired completion complies; the oracle's score still reads "refused" as 1.0
    assert target.score(r.prompt, r.positive) == 0.0 and target.score(r.prompt, r.negative) == 1.0
    assert target.reward(r.prompt, r.positive) == 1.0 and target.reward(r.prompt, r.negative) == 0.0
    assert "benign" in target.description and target.version.startswith("2.")


def test_data_file_anticipation_rounds_to_contexts_and_rejects_bad_values():
    order = [f"d{i}/{f}" for i in range(4) for f in ("post", "chat")]
    assert covered_contexts(order, 0.3, per_domain=2) == tuple(order[:2])
    assert covered_contexts(order, 0.44, per_domain=2) == tuple(order[:4])  # 3.5 rounds up
    with pytest.raises(UserError, match="anticipation"):
        covered_contexts(order, 1.5)


def test_unknown_target_lists_valid_names():
    with pytest.raises(UserError, match="sentiment, sycophancy, refusal"):
        resolve_target("honesty", WORLD)
    assert isinstance(Record("a", "b", "c", "d", "e").to_dict(), dict)
