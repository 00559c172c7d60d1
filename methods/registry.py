"""One registry of short method names, resolved lazily to `module:Class` so that importing it stays light.

A user's own method needs no edit here: name it in a study config as `my_package.my_module:MyMethod`.

    cls = resolve("steering")                 # methods.steering:Steering, imported on first use
    resolve("my_pkg.methods:ShinyMethod")     # any importable class satisfying methods.base.Method
    resolve("dpo@contrast")                   # a variant: the same class under another name (its own method_config)
    part_config("dpo@contrast", {"dpo": {"beta": 0.2}, "dpo@contrast": {"labels": "contrast"}})
    # {"beta": 0.2, "labels": "contrast"}: the base method's config, then the variant's

A **variant** `name@tag` runs `name`'s class with its own `method_config` entry on top of `name`'s, and is its own
method in the results (e.g. `dpo@contrast` beside `dpo`: the same method on another kind of label).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

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


VARIANT = re.compile(r"[A-Za-z0-9_.-]+")


def split_variant(name: str) -> tuple[str, str | None]:
    """`dpo@contrast` -> ("dpo", "contrast"); `dpo` -> ("dpo", None). A clear UserError on an empty or odd tag."""
    if "@" not in name:
        return name, None
    base, tag = name.split("@", 1)
    if not base or not VARIANT.fullmatch(tag):
        raise UserError(f"method '{name}': a variant is 'method@tag' with a tag of letters, digits, '_', '.' or '-'")
    return base, tag


def part_config(name: str, method_config: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The config a method part gets: its own `method_config` entry; a variant's on top of its base method's."""
    base, tag = split_variant(name)
    if tag is None:
        return dict(method_config.get(name) or {})
    return {**(method_config.get(base) or {}), **(method_config.get(name) or {})}


def resolve(name: str) -> type:
    """The method class for a short name, a `module:Class` path or a variant `name@tag` of either; a clear
    UserError otherwise."""
    if "+" in name:
        raise UserError(f"method '{name}': a stacked method is resolved part by part (split it on '+')")
    name = split_variant(name)[0]
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
