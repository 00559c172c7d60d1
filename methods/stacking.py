"""Stacked methods ("dpo+steering"): parts fitted in order, each with the parts before it active, on one budget.

The budget is split between the parts that use labels: each takes an equal share of what is left when its turn comes
(floor division), so what an earlier part leaves unspent rolls over to the later ones and the last part may spend all
that remains. Parts share one labeler, so a query repeated by a later part is not charged twice. A single method is
the one-part case.

    intervention = fit_parts([("dpo", DPO, DPOConfig()), ("steering", Steering, SteeringConfig())],
                             lm, target, labeler, splits, seed=0, work_dir=scratch)
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from methods.base import FitContext, Intervention, Stacked
from study.feedback.labeler import Budget, Labeler
from study.feedback.splits import BehaviorTarget, Splits
from study.lm.models import LoadedModel


def uses_labels(cls: type, config: Any) -> bool:
    """Whether a method buys labels (its `uses_labels` attribute, or that function of its Config; default yes)."""
    attr = getattr(cls, "uses_labels", True)
    return bool(attr(config)) if callable(attr) else bool(attr)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class PartBudget:
    """A stacked part's share of the cell's budget: charges count against both the share and the whole."""

    def __init__(self, parent: Any, total: int):
        self.parent, self.own = parent, Budget(total)

    total = property(lambda self: self.own.total)
    spent = property(lambda self: self.own.spent)
    left = property(lambda self: self.own.left)
    counts = property(lambda self: self.own.counts)
    costs = property(lambda self: self.own.costs)

    def can_afford(self, units: int) -> bool:
        return self.own.can_afford(units) and self.parent.can_afford(units)

    def charge(self, units: int, kind: str) -> None:
        self.own.charge(units, kind)
        self.parent.charge(units, kind)


def fit_parts(parts: Sequence[tuple[str, type, Any]], lm: LoadedModel, target: BehaviorTarget, labeler: Labeler,
              splits: Splits, seed: int, work_dir: Path, stage: Callable[[str], None] = lambda s: None
              ) -> Intervention:
    """Fit (name, method class, its Config) parts in order, each with the ones before it active; returns the
    intervention (a Stacked one for several parts). The labeler's budget is shared as the module docstring says."""
    device = str(next(lm.model.parameters()).device)
    parts = [(name, cls, cfg, uses_labels(cls, cfg)) for name, cls, cfg in parts]
    whole = labeler.account
    fitted: list[Any] = []
    for i, (name, cls, cfg, labels) in enumerate(parts):
        paying = sum(1 for part in parts[i:] if part[3])
        share = (whole.left // paying if paying else 0) if labels else 0
        labeler.account = whole if len(parts) == 1 else PartBudget(whole, share)
        prior = (fitted[0] if len(fitted) == 1 else Stacked(list(fitted))) if fitted else None

        obj = cls(cfg)
        (work_dir / f"{i}-{name}").mkdir(parents=True, exist_ok=True)
        ctx = FitContext(model=lm, target=target, labeler=labeler, pool=list(splits.pool), select=list(splits.select),
                         budget=share if len(parts) > 1 else whole.total, seed=seed, config=cfg, device=device,
                         work_dir=work_dir / f"{i}-{name}", log=stage, prior=prior)
        stage(f"fitting {name}" + (f" ({i + 1}/{len(parts)})" if len(parts) > 1 else ""))
        seed_everything(seed)
        with prior.active() if prior is not None else nullcontext():
            intervention = obj.fit(ctx)
        fitted.append(intervention)
    labeler.account = whole
    return fitted[0] if len(fitted) == 1 else Stacked(fitted)
