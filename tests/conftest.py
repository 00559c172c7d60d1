"""Shared fixtures: the micro organism, pretrained once into the repository's gitignored `.cache/` and reused.

    def test_something(micro_organism):
        model, tokenizer, world = micro_organism
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
