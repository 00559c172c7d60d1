"""The study configuration: what a YAML file under `study/configs/` holds.

    cfg = load_study("default", overrides=["organism.world.sharing=0.6"])
    cfg.organism.world.sharing   # 0.6
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from study.config import check, load_config
from study.organism.pretrain import OrganismConfig


@dataclass(frozen=True)
class StudyConfig:
    name: str = "study"
    organism: OrganismConfig = field(default_factory=OrganismConfig)
    cache_dir: str | None = None  # organism cache; default: ~/.cache/rlhf-vs-steering (or $RLHF_VS_STEERING_CACHE)
    results_dir: str = "results"

    def validate(self) -> None:
        check(bool(self.name.strip()), "name", self.name, "must not be empty")


def load_study(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> StudyConfig:
    return load_config(StudyConfig, path, overrides)
