"""Methods for the runner's tests, named as `runner_helpers:Class` (tests/ is on sys.path under pytest).

    Spender: buys judgments until its budget share is spent; records what it saw in `chosen`.
    Flaky: fails while the file named by $RUNNER_FLAKY_MARKER exists.
    Crash: kills its own worker process.
    NoFit: a class that does not satisfy the Method protocol.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from methods.base import FitContext, Intervention


@dataclass(frozen=True)
class SpenderConfig:
    max_units: int = 1_000_000


class Spender:
    name = "spender"
    Config = SpenderConfig

    def __init__(self, config: SpenderConfig | None = None):
        self.config = config or SpenderConfig()

    def fit(self, ctx: FitContext) -> Intervention:
        start = ctx.labeler.budget.spent
        cost = ctx.labeler.cost("judge")
        i = 0
        while ctx.labeler.budget.can_afford(cost) and ctx.labeler.budget.spent - start < self.config.max_units:
            ctx.labeler.judge(ctx.pool[i % len(ctx.pool)].prompt, f"completion {i}")
            i += 1
        out = Intervention()
        out.chosen = {"budget": ctx.budget, "spent": ctx.labeler.budget.spent - start, "prior": ctx.prior is not None}
        return out


@dataclass(frozen=True)
class FlakyConfig:
    pass


class Flaky:
    name = "flaky"
    Config = FlakyConfig
    uses_labels = False

    def __init__(self, config: FlakyConfig | None = None):
        self.config = config

    def fit(self, ctx: FitContext) -> Intervention:
        marker = os.environ.get("RUNNER_FLAKY_MARKER")
        if marker and Path(marker).exists():
            raise RuntimeError("flaky method failed on purpose")
        return Intervention()


class NoFit:
    name = "nofit"
    Config = FlakyConfig


class Crash:
    """Kills its own worker process (as an out-of-memory kill would)."""

    name = "crash"
    Config = FlakyConfig
    uses_labels = False

    def __init__(self, config: FlakyConfig | None = None):
        self.config = config

    def fit(self, ctx: FitContext) -> Intervention:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")
