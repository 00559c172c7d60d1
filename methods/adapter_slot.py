"""One LoRA slot per shared model for the length of a cell: the adapters a cell judges and evaluates (a trained
method's snapshots, then the chosen one) are injected into the model once and take turns in it.

Injecting a LoRA adapter walks the whole model and builds new modules (about 30 ms on the default organism, nine
times in a trained cell). Inside `parking(model)` a `LoraIntervention` that leaves does not strip its layers: it
disables them (PEFT's disabled LoRA layer returns its base layer's output, so the model computes what the base model
computes) and leaves them parked; the next adapter with the same PEFT config loads its weights into the parked
layers instead of injecting its own. The scope's end strips them, so after it the model is the base model, bit for
bit, as the cell's pristine check demands. A trainer about to wrap the model calls `release` first.

    with parking(lm.model):
        intervention = method.fit(ctx)      # snapshots judged: one injection
        evaluate(lm, target, intervention)  # the chosen one loaded into the same layers
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator


@dataclass
class Slot:
    """What is parked in one model: the adapter name and config signature of its LoRA layers, whether an adapter is
    in them now (`busy`), and how to strip them (set by the intervention that injected them)."""

    name: str | None = None
    signature: str | None = None
    busy: bool = False
    strip: Callable[[], None] | None = None
    owner: dict[str, Any] = field(default_factory=dict)  # the injecting intervention's saved flags

    def clear(self) -> None:
        strip, self.strip = self.strip, None
        self.name, self.signature, self.busy, self.owner = None, None, False, {}
        if strip is not None:
            strip()


_SLOTS: dict[int, Slot] = {}


@contextmanager
def parking(model: Any) -> Iterator[Slot]:
    """Adapters of `model` take turns in one set of LoRA layers until the block ends (nested scopes share it)."""
    if id(model) in _SLOTS:
        yield _SLOTS[id(model)]
        return
    slot = _SLOTS[id(model)] = Slot()
    try:
        yield slot
    finally:
        del _SLOTS[id(model)]
        slot.clear()


def slot_of(model: Any) -> Slot | None:
    """The model's slot while a `parking` scope is open, else None."""
    return _SLOTS.get(id(model))


def release(model: Any) -> None:
    """Strip what is parked in `model` now (a trainer is about to inject its own adapter)."""
    slot = _SLOTS.get(id(model))
    if slot is not None:
        if slot.busy:
            raise RuntimeError("an adapter is active on the model a trainer is about to wrap")
        slot.clear()
