"""Methods for the runner's tests, named as `runner_helpers:Class` (tests/ is on sys.path under pytest).

    Spender: buys judgments until its budget share is spent; records what it saw in `chosen`.
    Flaky: fails while the file named by $RUNNER_FLAKY_MARKER exists.
    Crash: kills its own worker process.
    Hang: never returns (sleeps for an hour).
    CudaFail: raises an error that reads like a broken CUDA context.
    LeaveHook: leaves a forward hook (scaling the output of model.layers.1 by -50) registered on the base model.
    NoFit: a class that does not satisfy the Method protocol.
"""

from __future__ import annotations

import os
import time
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
        start = ctx.labeler.account.spent
        cost = ctx.labeler.cost("judge")
        i = 0
        while ctx.labeler.account.can_afford(cost) and ctx.labeler.account.spent - start < self.config.max_units:
            ctx.labeler.judge(ctx.pool[i % len(ctx.pool)].prompt, f"completion {i}")
            i += 1
        out = Intervention()
        out.chosen = {"budget": ctx.budget, "spent": ctx.labeler.account.spent - start, "prior": ctx.prior is not None}
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


class Hang:
    """Never returns, as a deadlocked method would."""

    name = "hang"
    Config = FlakyConfig
    uses_labels = False

    def __init__(self, config: FlakyConfig | None = None):
        self.config = config

    def fit(self, ctx: FitContext) -> Intervention:
        time.sleep(3600)
        raise AssertionError("unreachable")


class CudaFail:
    name = "cuda_fail"
    Config = FlakyConfig
    uses_labels = False

    def __init__(self, config: FlakyConfig | None = None):
        self.config = config

    def fit(self, ctx: FitContext) -> Intervention:
        raise RuntimeError("CUDA error: device-side assert triggered (simulated)")


class Marked(Intervention):
    """Changes nothing, but is not the no-op Intervention, so the evaluator measures its drift."""


class LeaveHook:
    """Registers a forward hook that scales the output of model.layers.1 by -50 and never removes it."""

    name = "leave_hook"
    Config = FlakyConfig
    uses_labels = False

    def __init__(self, config: FlakyConfig | None = None):
        self.config = config

    def fit(self, ctx: FitContext) -> Intervention:
        def scramble(module, args, out):
            return (out[0] * -50.0, *out[1:]) if isinstance(out, tuple) else out * -50.0

        ctx.model.model.get_submodule("model.layers.1").register_forward_hook(scramble)
        return Marked()
