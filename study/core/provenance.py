"""Provenance: what computed a result (the checkout's commit, package versions), recorded with every cell.

    git_sha()              # '3f0c…' or None outside a checkout
    package_versions()     # {'python': '3.11.7', 'torch': '2.13.0', ...}
    node_info()            # {'host': 'gpu-3', 'node_id': '5c1f…', 'node_address': '10.0.0.3'} (node_*: in Ray only)
    code_fingerprint(Steering, packages=("methods",))   # '9a1e…': changes when steering's source (or its helpers) do
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from types import ModuleType

VERSIONED = ("torch", "transformers", "trl", "peft", "tokenizers", "numpy", "rlhf-vs-steering")


@lru_cache(maxsize=1)
def git_sha() -> str | None:
    """The checkout's commit, read from .git without running git (None outside a checkout). A Ray worker runs code
    shipped from the driver's checkout, outside any checkout: the driver passes its commit in the environment."""
    shipped = os.environ.get("RLHF_VS_STEERING_GIT_SHA")
    if shipped:
        return shipped
    git = next((p / ".git" for p in Path(__file__).resolve().parents if (p / ".git").is_dir()), None)
    if git is None:
        return None
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head  # detached
        ref = head.split(":", 1)[1].strip()
        if (git / ref).is_file():
            return (git / ref).read_text().strip()
        packed = git / "packed-refs"
        for line in packed.read_text().splitlines() if packed.is_file() else []:
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        pass
    return None


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def node_info() -> dict[str, str]:
    """Where this process runs: the host name and, in a Ray worker or driver, the Ray node's id and IP address."""
    out = {"host": platform.node()}
    ray = sys.modules.get("ray")  # only a process that already uses Ray asks it; never imported here
    if ray is not None and ray.is_initialized():
        out["node_id"] = ray.get_runtime_context().get_node_id()
        out["node_address"] = ray.util.get_node_ip_address()
    return out


def _drawn_on(module: ModuleType, roots: set[str]) -> set[str]:
    """Names of the modules under `roots` (top-level package names) that `module` imports or takes names from."""
    out = set()
    for value in list(vars(module).values()):
        try:
            name = value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", None)
        except Exception:  # an object whose attribute access fails is no module reference
            continue
        if isinstance(name, str) and name.split(".")[0] in roots and name in sys.modules:
            out.add(name)
    return out


def code_modules(cls: type, packages: Iterable[str] = (), also: Iterable[ModuleType] = ()) -> list[str]:
    """The modules whose source computes with `cls`: the module defining it, `also`, and every module they draw on
    (transitively, through imported modules, functions and classes) from the defining module's own top-level package
    or from `packages`. Third-party and lower-layer modules are left out."""
    roots = {cls.__module__.split(".")[0], *packages}
    todo = [cls.__module__, *(m.__name__ for m in also)]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in sys.modules:
            continue
        seen.add(name)
        todo.extend(_drawn_on(sys.modules[name], roots) - seen)
    return sorted(seen)


def code_fingerprint(cls: type, packages: Iterable[str] = (), also: Iterable[ModuleType] = ()) -> str:
    """sha256 (16 hex digits) of the source files of `code_modules(cls, packages, also)`, read from disk, so an edit
    to any of them changes it (and a spawned worker that imports the file sees the same version)."""
    h = hashlib.sha256()
    for name in code_modules(cls, packages, also):
        file = getattr(sys.modules[name], "__file__", None)
        try:
            data = Path(file).read_bytes() if file else b"<no source file>"
        except OSError:
            data = b"<unreadable>"
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:16]
