"""Phase timings of one cell: seconds per named phase, each second counted once (in the innermost open phase).

A cell opens a `PhaseTimer` with `timing(on)`; code anywhere below it (the evaluator, a method's fit) marks its work
with `phase("generate")` without being handed the timer. With no timer open, `phase` costs one context-variable read.

    with timing(True) as timer:
        with phase("train"):
            with phase("generate"):   # these seconds count as generate, not train
                ...
    timer.seconds()    # {'train': 1.2, 'generate': 0.4}
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator


class PhaseTimer:
    """Exclusive seconds per phase: time spent in a nested phase is not counted in the enclosing one."""

    def __init__(self) -> None:
        self.excl: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._stack: list[list] = []  # [name, start, seconds claimed by nested phases]

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        frame = [name, time.perf_counter(), 0.0]
        self._stack.append(frame)
        try:
            yield
        finally:
            self._stack.pop()
            elapsed = time.perf_counter() - frame[1]
            self.excl[name] = self.excl.get(name, 0.0) + elapsed - frame[2]
            self.calls[name] = self.calls.get(name, 0) + 1
            if self._stack:
                self._stack[-1][2] += elapsed

    def seconds(self, digits: int = 3) -> dict[str, float]:
        return {k: round(v, digits) for k, v in self.excl.items()}


_CURRENT: ContextVar[PhaseTimer | None] = ContextVar("rlhf_vs_steering_phase_timer", default=None)


@contextmanager
def timing(on: bool = True) -> Iterator[PhaseTimer | None]:
    """Open a timer for the block (None and no timing when `on` is false)."""
    if not on:
        yield None
        return
    timer = PhaseTimer()
    token = _CURRENT.set(timer)
    try:
        yield timer
    finally:
        _CURRENT.reset(token)


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Count the block's seconds as `name` in the open timer, if any."""
    timer = _CURRENT.get()
    if timer is None:
        yield
        return
    with timer.phase(name):
        yield
