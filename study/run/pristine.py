"""Is the base model still as it was loaded? A cell must leave its worker's model pristine for the next cell.

Checked after each cell (study.run.cell): no forward/backward hook or pre-hook left registered (on a module or
globally) beyond those present at load, no PEFT adapter layer left injected, the same parameters with the same
checksums. The checksum is a float64 sum of up to `SAMPLE` evenly strided elements per tensor, compared exactly: it
catches a merged adapter, an optimizer step or a rescaled weight (which change every element), not an edit of a
single element between two samples.

    snap = snapshot(lm.model)          # right after loading
    ...                                # fit and evaluate the method
    leftovers(lm.model, snap)          # [] or ['a forward hook on model.layers.1', ...]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

SAMPLE = 65_536  # elements summed per tensor
_HOOK_KINDS = {"_forward_hooks": "forward hook", "_forward_pre_hooks": "forward pre-hook",
               "_backward_hooks": "backward hook", "_backward_pre_hooks": "backward pre-hook"}
_GLOBAL_HOOKS = {"_global_forward_hooks": "global forward hook", "_global_forward_pre_hooks": "global forward pre-hook",
                 "_global_backward_hooks": "global backward hook",
                 "_global_backward_pre_hooks": "global backward pre-hook"}


@dataclass(frozen=True)
class Snapshot:
    hooks: frozenset[tuple[str, str, int]]  # (module name or "<torch>", kind, hook id) registered at load
    params: dict[str, float]  # parameter name -> checksum


def _hooks(model: Any) -> set[tuple[str, str, int]]:
    import torch.nn.modules.module as torch_module

    out = set()
    for name, module in model.named_modules():
        for attr, kind in _HOOK_KINDS.items():
            out.update((name or "<root>", kind, hid) for hid in (getattr(module, attr, None) or {}))
    for attr, kind in _GLOBAL_HOOKS.items():
        out.update(("<torch>", kind, hid) for hid in (getattr(torch_module, attr, None) or {}))
    return out


def _checksums(model: Any) -> dict[str, float]:
    import torch

    names, sums = [], []
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            names.append(name)
            sums.append(flat[::max(1, flat.numel() // SAMPLE)].to(torch.float64).sum())
    return dict(zip(names, torch.stack(sums).tolist())) if sums else {}


def _same(a: float, b: float) -> bool:
    return a == b or (a != a and b != b)  # a NaN weight that stayed NaN is unchanged


def snapshot(model: Any) -> Snapshot:
    return Snapshot(frozenset(_hooks(model)), _checksums(model))


def leftovers(model: Any, snap: Snapshot) -> list[str]:
    """What differs from `snap`, one phrase each ("a forward hook on model.layers.1"); [] when pristine."""
    out = [f"a {kind} on {name}" if name != "<torch>" else f"a {kind} (torch.nn.modules.module)"
           for name, kind, _ in sorted(_hooks(model) - snap.hooks)]
    tuners = sys.modules.get("peft.tuners.tuners_utils")  # never imported: no adapter can have been injected
    if tuners is not None:
        out += [f"a PEFT adapter layer ({type(m).__name__}) injected at {name}" for name, m in model.named_modules()
                if isinstance(m, tuners.BaseTunerLayer)]
    now = _checksums(model)
    if set(now) != set(snap.params):
        added, gone = sorted(set(now) - set(snap.params)), sorted(set(snap.params) - set(now))
        out.append(f"parameters added ({', '.join(added[:3]) or 'none'}) or removed ({', '.join(gone[:3]) or 'none'})")
    out += [f"changed parameter {name}" for name, value in now.items()
            if name in snap.params and not _same(value, snap.params[name])]
    return out
