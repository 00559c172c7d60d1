"""One registry of short method names, resolved lazily to `module:Class` so that importing it stays light.

A user's own method needs no edit here: name it in a study config as `my_package.my_module:MyMethod`.

    cls = resolve("steering")                 # methods.steering:Steering, imported on first use
    resolve("my_pkg.methods:ShinyMethod")     # any importable class satisfying methods.base.Method
"""

from __future__ import annotations

import dataclasses

from study.core.errors import UserError
from study.core.imports import import_attr

REGISTRY: dict[str, str] = {
    "none": "methods.none:NoMethod",
    "prompting": "methods.prompting:Prompting",
    "steering": "methods.steering:Steering",
    "steering_pca": "methods.steering_pca:SteeringPCA",
    "steering_learned": "methods.steering_learned:LearnedSteering",
    "lora_sft": "methods.lora_sft:LoraSFT",
    "dpo": "methods.dpo:DPO",
    "rlhf": "methods.rlhf:RLHF",
    "bon": "methods.bon:BestOfN",
}


def available() -> list[str]:
    return sorted(REGISTRY)


def resolve(name: str) -> type:
    """The method class for a short name or a `module:Class` path; a clear UserError otherwise."""
    if "+" in name:
        raise UserError(f"method '{name}': a stacked method is resolved part by part (split it on '+')")
    path = REGISTRY.get(name)
    if path is None:
        if ":" not in name:
            raise UserError(f"unknown method '{name}'; valid: {', '.join(available())} "
                            f"(or a 'module:Class' path to your own)")
        path = name
    cls = import_attr(path, what="method", attr_kind="class")
    missing = [a for a in ("name", "Config", "fit") if not hasattr(cls, a)]
    if missing:
        raise UserError(f"method '{name}': {path} does not satisfy the Method protocol (missing "
                        f"{', '.join(missing)}; see methods/base.py)")
    if not isinstance(cls, type) or not callable(cls.fit) or not dataclasses.is_dataclass(cls.Config):
        raise UserError(f"method '{name}': {path} does not satisfy the Method protocol (it must be a class with a "
                        f"`fit` method and a dataclass `Config`; see methods/base.py)")
    return cls
