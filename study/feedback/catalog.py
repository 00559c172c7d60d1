"""Targets by name: the organism's behaviors or a data file, resolved in one place.

    resolve_target("sentiment", world)                  # an OrganismTarget on that world
    resolve_target("data/refusal_ab.json")              # an ExternalTarget (study.feedback.external)
"""

from __future__ import annotations

from pathlib import Path

from study.core.errors import UserError
from study.feedback.external import load_external
from study.feedback.splits import BehaviorTarget
from study.feedback.targets import ORGANISM_TARGETS, organism_target
from study.organism.world import World, WorldConfig


def available_targets() -> list[str]:
    return list(ORGANISM_TARGETS)


def resolve_target(spec: str, world=None, scorer: str | None = None) -> BehaviorTarget:
    """A target by name ("sentiment", ...) on `world`, or an external data file/folder (see study.feedback.external)."""
    if spec in ORGANISM_TARGETS:
        if world is None:
            world = World(WorldConfig())
        return organism_target(spec, world)
    if Path(spec).exists():
        return load_external(spec, scorer=scorer)
    raise UserError(f"unknown target {spec!r}; valid: {', '.join(ORGANISM_TARGETS)}, or a path to an A/B JSON(L) "
                    f"file, a preference JSONL file or a saved `datasets` folder")
