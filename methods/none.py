"""The base model with no intervention: the reference every other method is measured against.

    intervention = NoMethod(NoMethod.Config()).fit(ctx)   # spends no labels
"""

from __future__ import annotations

from dataclasses import dataclass

from methods.base import FitContext, Intervention


@dataclass(frozen=True)
class NoneConfig:
    pass


class NoMethod:
    name = "none"
    Config = NoneConfig
    uses_labels = False  # the grid runs it once per condition, at budget 0

    def __init__(self, config: NoneConfig | None = None):
        self.config = config or NoneConfig()

    def fit(self, ctx: FitContext) -> Intervention:
        return Intervention()
