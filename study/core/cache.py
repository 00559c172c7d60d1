"""The harness's cache folder: pretrained organisms and converted models live there, reused across runs.

    default_cache_dir()    # $RLHF_VS_STEERING_CACHE, else $XDG_CACHE_HOME/rlhf-vs-steering, else ~/.cache/rlhf-vs-steering
"""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    env = os.environ.get("RLHF_VS_STEERING_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rlhf-vs-steering"
