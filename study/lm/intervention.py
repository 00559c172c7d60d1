"""The Intervention base: whatever a method produces, applied to a model inside `with` and removed on exit.

An intervention is an adapter, hooks or a prompt rewrite. The evaluator, the selection and every method use only this
interface, so the model layer owns it; `methods.base` re-exports it for method authors.

    with intervention.active(prompt_width=w):   # hook-based ones act from the last prompt position on
        out = model.generate(**batch)
    with intervention.session():                # many activations, one attachment (an adapter injected once)
        ...
"""

from __future__ import annotations

import json
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator


class Intervention:
    """Base class: no change to the model. Subclasses override `prompt` and/or `_activate`.

    `with intervention:` applies it at every position; `with intervention.active(prompt_width=w):` lets hook-based
    interventions act only from the last prompt position on (left-padded batches share one prompt width).
    """

    chosen: dict[str, Any]

    def __init__(self) -> None:
        self.chosen = {}
        self._stack: list = []

    def prompt(self, text: str) -> str:
        """The prompt as the intervened model sees it (prompting methods rewrite it)."""
        return text

    @contextmanager
    def _activate(self, prompt_width: int | None) -> Iterator[None]:
        yield

    @contextmanager
    def active(self, prompt_width: int | None = None) -> Iterator["Intervention"]:
        with self._activate(prompt_width):
            yield self

    @contextmanager
    def session(self) -> Iterator["Intervention"]:
        """A span of work with many activations (an evaluation, a sampling run): an intervention that changes the
        model itself may attach once at the first activation and stay attached, inert between activations, until
        the session ends. Outside every session the model is left as it was found."""
        yield self

    def __enter__(self) -> "Intervention":
        cm = self.active()
        cm.__enter__()
        self._stack.append(cm)
        return self

    def __exit__(self, *exc) -> bool | None:
        return self._stack.pop().__exit__(*exc)

    def save(self, path: str | Path) -> None:
        """Write what is needed to rebuild the intervention (safetensors / save_pretrained / JSON; never pickle)."""
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "intervention.json").write_text(json.dumps({"type": type(self).__name__,
                                                                  "chosen": self.chosen}, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path, model: Any) -> "Intervention":
        obj = cls()
        obj.chosen = json.loads((Path(path) / "intervention.json").read_text())["chosen"]
        return obj


class Stacked(Intervention):
    """Several interventions applied together, innermost first (e.g. a DPO adapter, then a steering vector)."""

    def __init__(self, parts: list[Intervention]):
        super().__init__()
        self.parts = parts
        for i, p in enumerate(parts):
            self.chosen.update({f"{i}.{k}": v for k, v in p.chosen.items()})

    def prompt(self, text: str) -> str:
        for p in self.parts:
            text = p.prompt(text)
        return text

    @contextmanager
    def session(self) -> Iterator["Intervention"]:
        with ExitStack() as stack:
            for p in self.parts:
                stack.enter_context(p.session())
            yield self

    @contextmanager
    def _activate(self, prompt_width: int | None) -> Iterator[None]:
        with ExitStack() as stack:
            for p in self.parts:
                stack.enter_context(p.active(prompt_width))
            yield


def is_noop(intervention: Intervention | None) -> bool:
    """True for no intervention at all: the policy is then the base model."""
    return intervention is None or type(intervention) is Intervention
