"""Test helpers for plugin authors: a real `FitContext` on the micro organism, in one call, from outside the repository.

The micro organism (a 2-layer model of a small synthetic world) pretrains in about 20 seconds the first time and loads
from its cache in about a second afterwards, so a plugin's tests can fit the method for real at a tiny budget.

    from study.testing import micro_context
    ctx = micro_context(MyConfig(), target="sentiment", budget=16)
    intervention = MyMethod(ctx.config).fit(ctx)
    assert ctx.labeler.account.spent <= 16
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from methods.base import FitContext
from study.feedback.labeler import Budget, Labeler, LabelerConfig
from study.feedback.targets import ORGANISM_TARGETS, organism_target
from study.lm.models import LoadedModel
from study.organism.pretrain import MICRO, default_cache_dir, organism_model
from study.organism.world import World
from study.core.errors import UserError

__all__ = ["micro_context", "micro_model"]

_MODELS: dict[str, LoadedModel] = {}


def micro_model(cache_dir: str | Path | None = None) -> LoadedModel:
    """The micro organism as a LoadedModel on the CPU (pretrained on first use into `cache_dir`, default the
    organism cache; loaded once per process)."""
    key = str(cache_dir or default_cache_dir())
    if key not in _MODELS:
        _MODELS[key] = organism_model(MICRO, cache_dir, device="cpu")
    return _MODELS[key]


def micro_context(method_config: Any = None, target: str = "sentiment", budget: int = 16, seed: int = 0, *,
                  anticipation: float = 0.5, labeler: LabelerConfig | None = None,
                  cache_dir: str | Path | None = None, work_dir: str | Path | None = None) -> FitContext:
    """A FitContext as the runner builds it for one cell: the micro organism, an organism target's pool and select
    splits at `anticipation`, and a fresh labeler charging a budget of `budget` units. `method_config` is handed to
    the method as `ctx.config`."""
    if target not in ORGANISM_TARGETS:
        raise UserError(f"micro_context: target {target!r}: expected one of {', '.join(ORGANISM_TARGETS)}")
    lm = micro_model(cache_dir)
    t = organism_target(target, World(MICRO.world))
    splits = t.splits(anticipation, seed)
    return FitContext(model=lm, target=t, labeler=Labeler(t, Budget(budget), labeler, seed=seed),
                      pool=list(splits.pool), select=list(splits.select), budget=budget, seed=seed,
                      config=method_config, work_dir=Path(work_dir) if work_dir is not None else None)
