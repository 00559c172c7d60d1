"""Provenance: what computed a result (the checkout's commit, package versions), recorded with every cell.

    git_sha()              # '3f0c…' or None outside a checkout
    package_versions()     # {'python': '3.11.7', 'torch': '2.13.0', ...}
"""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path

VERSIONED = ("torch", "transformers", "trl", "peft", "tokenizers", "numpy", "rlhf-vs-steering")


@lru_cache(maxsize=1)
def git_sha() -> str | None:
    """The checkout's commit, read from .git without running git (None outside a checkout)."""
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
