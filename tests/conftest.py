"""Shared fixtures: the micro organism, pretrained once into the repository's gitignored `.cache/` and reused; the
same as a LoadedModel; and one intra-op thread for modules that run tiny models.

    def test_something(micro_organism):
        model, tokenizer, world = micro_organism

    pytestmark = pytest.mark.usefixtures("one_thread")     # a module of tiny-model tests
"""

from __future__ import annotations

from pathlib import Path

import pytest

TEST_CACHE = Path(__file__).resolve().parent.parent / ".cache" / "test-organism"


@pytest.fixture(scope="session")
def micro_organism():
    """(model, tokenizer, world) of the MICRO organism: ~30 s to pretrain the first time, ~1 s afterwards."""
    from study.organism.pretrain import MICRO, load_organism
    from study.organism.world import World

    model, tokenizer = load_organism(MICRO, cache_dir=TEST_CACHE)
    return model, tokenizer, World(MICRO.world)


@pytest.fixture(scope="session")
def micro_lm(micro_organism):
    """(LoadedModel, world) of the micro organism: the session's shared model, with its blocks located."""
    from study.lm.models import prepare

    model, tokenizer, world = micro_organism
    return prepare(model, tokenizer, "micro", device="cpu"), world


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run far faster on one intra-op thread; on shared cores two threads spin-wait on each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def fit_context(lm_world, budget: int, config, seed: int = 0, target: str = "sentiment", anticipation: float = 1.0):
    """A FitContext on (LoadedModel, world) with a fresh labeler and `budget` units, splits at `anticipation`."""
    from methods.base import FitContext
    from study.feedback.labeler import Budget, Labeler
    from study.feedback.targets import organism_target

    lm, world = lm_world
    t = organism_target(target, world)
    splits = t.splits(anticipation, seed=seed)
    return FitContext(model=lm, target=t, labeler=Labeler(t, Budget(budget), seed=seed), pool=list(splits.pool),
                      select=list(splits.select), budget=budget, seed=seed, config=config)


@pytest.fixture(scope="session")
def make_context():
    """`make_context(lm_world, budget, config, seed=0, target="sentiment", anticipation=1.0) -> FitContext`."""
    return fit_context
