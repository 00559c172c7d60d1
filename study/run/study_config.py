"""The study configuration: what a YAML file under `study/configs/` holds.

    cfg = load_study("default", overrides=["organism.world.sharing=0.6"])
    cfg.organism.world.sharing   # 0.6

The grid (expanded into cells by study.run.grid): models (each organism model once per pretraining draw in
`organism_draws`) x methods x targets x budgets x anticipations x labeler noise x labeler misspecification x seeds,
every combination (`design: factorial`) or each of the three dials varied alone around its first value
(`design: one_at_a_time`). An optional `ceiling` adds one cell per (model, draw, target, seed) that covers every
context, held-out ones included (see CeilingConfig). See study/configs/default.yaml for a commented example.

    cfg = load_study("micro", overrides=["organism_draws=[0,1,2]", "ceiling={method: dpo, budget: 256}"])
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from study.core.config import check, from_dict, load_config
from study.feedback.labeler import LabelerConfig
from study.organism.pretrain import OrganismConfig
from study.feedback.targets import SplitSizes

DRAW_STRIDE = 1_000_003  # a cell of organism draw d runs at seed + DRAW_STRIDE * d (study.run.grid.run_seed)


@dataclass(frozen=True)
class ModelSpec:
    """One entry of `models`: a plain string is shorthand for {name: s, path: s}."""

    name: str = "organism"  # the `model` column of the results
    path: str = "organism"  # "organism" (the study's organism section), a Hugging Face name or a local folder
    organism: dict[str, Any] = field(default_factory=dict)  # overrides of the organism section, e.g. {world: {sharing: 0.1}}
    dtype: str = "auto"
    trust_remote_code: bool = False

    def validate(self) -> None:
        check(bool(self.name.strip()), "name", self.name, "must not be empty")
        check(bool(self.path.strip()), "path", self.path, "must not be empty")
        check(self.path == "organism" or not self.organism, "organism", self.organism,
              "organism overrides apply only to path 'organism'")


@dataclass(frozen=True)
class EvalConfig:
    """How each cell is evaluated (study.run.evaluate): split sizes, completions per prompt, sampling temperature."""

    sizes: SplitSizes = field(default_factory=SplitSizes)
    n_completions: int = 4
    temperature: float = 1.0
    drift: bool = True  # report the other organism targets' drift (side effects)
    drift_completions: int = 1
    batch_size: int = 512
    diversity_prompts: int = 8  # test prompts sampled `diversity_samples` times for output diversity; 0: none
    diversity_samples: int = 8

    def validate(self) -> None:
        for name in ("n_completions", "drift_completions", "batch_size"):
            check(getattr(self, name) >= 1, name, getattr(self, name), "must be a positive integer")
        check(self.temperature >= 0, "temperature", self.temperature, "must be >= 0")
        check(self.diversity_prompts >= 0, "diversity_prompts", self.diversity_prompts, "must be >= 0 (0: none)")
        check(self.diversity_samples >= 2, "diversity_samples", self.diversity_samples,
              "must be >= 2 (distinct completions among one)")


@dataclass(frozen=True)
class CeilingConfig:
    """`ceiling`: one extra cell per (model, draw, target, seed) whose feedback covers every context, the held-out
    ones included (`target.splits(..., ceiling=True)`), fitted by one strong method at a top budget with a clean
    labeler. Its rows carry `coverage: "ceiling"`: the level each split can reach, against which the anticipation
    cells' gap on held-out contexts reads."""

    method: str = ""  # a registry name, an "a+b" stack or "module:Class"; method_config applies to it as elsewhere
    budget: int | None = None  # feedback budget; None: the largest budget the study gives that method

    def validate(self) -> None:
        check(bool(self.method.strip()) and all(p.strip() for p in self.method.split("+")), "method", self.method,
              "must name a method (e.g. dpo)")
        check(self.budget is None or self.budget >= 0, "budget", self.budget, "must be >= 0 (null: the study's "
              "largest budget for the method)")


def _unique(name: str, values: tuple) -> None:
    check(len(values) > 0, name, list(values), "must list at least one value")
    keys = [json.dumps(v, sort_keys=True) for v in values]
    check(len(set(keys)) == len(keys), name, list(values), "lists a value twice")


@dataclass(frozen=True)
class StudyConfig:
    name: str = "study"
    organism: OrganismConfig = field(default_factory=OrganismConfig)
    cache_dir: str | None = None  # organism cache; default: ~/.cache/rlhf-vs-steering (or $RLHF_VS_STEERING_CACHE)
    results_dir: str = "results"
    # ---- the grid ----
    models: tuple[Any, ...] = ("organism",)  # names/paths, or ModelSpec mappings
    # pretraining seeds (organism.train.seed) of the organism models: each organism model runs once per draw, and
    # draws of one organism config are replicates of one model. None: one draw, each organism's own train.seed.
    organism_draws: tuple[int, ...] | None = None
    methods: tuple[str, ...] = ("none",)  # registry names, "a+b" stacks, or "module:Class"
    method_config: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> fields of its Config
    # organism targets, paths to data files, or {name, path} / {name, train, test} mappings (see study.feedback.catalog)
    targets: tuple[str | dict[str, str], ...] = ("sentiment",)
    scorer: str | None = None  # for external open-ended targets: "module:function" or a reward-model folder
    budgets: tuple[int, ...] = (64,)  # feedback budget per cell, in cost units
    method_budgets: dict[str, tuple[int, ...]] = field(default_factory=dict)  # method -> its own budgets instead
    anticipations: tuple[float, ...] = (0.5,)
    labeler_noise: tuple[float, ...] = (0.0,)
    labeler_misspec: tuple[float, ...] = (0.0,)
    seeds: tuple[int, ...] = (0,)
    ceiling: CeilingConfig | None = None  # None: no ceiling cells
    design: Literal["factorial", "one_at_a_time"] = "factorial"
    # one_at_a_time only: the budgets at which the varied dials run (the centre condition runs every budget), e.g.
    # [64]: a budget curve at the centre, and each dial's slope at one budget. None: every budget everywhere.
    dial_budgets: tuple[int, ...] | None = None
    labeler: LabelerConfig = field(default_factory=LabelerConfig)  # label costs (noise/misspec: the lists above)
    eval: EvalConfig = field(default_factory=EvalConfig)
    workers: int = 0  # local worker processes; 0: one per CPU core for organism-only studies, else 1
    threads: int = 0  # torch threads per worker (or Ray task); 0: 1 for organism studies, else the cores per worker
    cell_timeout: float = 0.0  # seconds a cell may run before its worker is stopped and it is stored failed; 0: none
    # ---- --executor ray (README, Running on a cluster) ----
    ray_retries: int = 3  # times a cell whose Ray worker or node was lost runs again before it is stored failed
    ray_gpus_per_cell: float | None = None  # GPU share per cell of a Hugging Face model; None: 1 if the cluster has GPUs

    def validate(self) -> None:
        check(bool(self.name.strip()), "name", self.name, "must not be empty")
        for name in ("methods", "targets", "budgets", "anticipations", "labeler_noise", "labeler_misspec", "seeds"):
            _unique(name, getattr(self, name))
        for s in self.seeds:
            check(0 <= s < DRAW_STRIDE, "seeds", s, f"must be an integer in [0, {DRAW_STRIDE}) (a cell runs at seed + "
                  f"{DRAW_STRIDE} x draw, study.run.grid.run_seed, so a larger one would repeat another draw's)")
        if self.organism_draws is not None:
            _unique("organism_draws", self.organism_draws)
            for d in self.organism_draws:
                check(d >= 0, "organism_draws", d, "must be a non-negative integer (a pretraining seed)")
        check(len(self.models) > 0, "models", list(self.models), "must list at least one model")
        names = [m.name for m in self.model_specs()]
        check(len(set(names)) == len(names), "models", names, "two models share a name")
        for b in self.budgets:
            check(b >= 0, "budgets", b, "must be >= 0")
        for m, bs in self.method_budgets.items():
            check(m in self.methods, f"method_budgets.{m}", list(bs), f"'{m}' is not among the study's methods")
            _unique(f"method_budgets.{m}", bs)
            for b in bs:
                check(b >= 0, f"method_budgets.{m}", b, "must be >= 0")
        for a in self.anticipations:
            check(0.0 < a <= 1.0 and not math.isnan(a), "anticipations", a,
                  "must lie in (0, 1]: the share of the feedback side's contexts covered, at least one")
        if self.dial_budgets is not None:
            _unique("dial_budgets", self.dial_budgets)
            check(self.design == "one_at_a_time", "dial_budgets", list(self.dial_budgets),
                  "applies to design: one_at_a_time only (remove it, or set the design)")
            for b in self.dial_budgets:
                check(b >= 0, "dial_budgets", b, "must be >= 0")
        for e in self.labeler_noise:
            check(0.0 <= e <= 0.5, "labeler_noise", e, "must lie in [0, 0.5]")
        for p in self.labeler_misspec:
            check(0.0 <= p <= 1.0, "labeler_misspec", p, "must lie in [0, 1]")
        check(self.labeler.noise == 0 and self.labeler.misspec == 0, "labeler", {"noise": self.labeler.noise,
              "misspec": self.labeler.misspec}, "set noise and misspecification with labeler_noise/labeler_misspec")
        for m in self.methods:
            check(bool(m.strip()) and all(p.strip() for p in m.split("+")), "methods", m, "empty method name")
        check(self.workers >= 0, "workers", self.workers, "must be >= 0 (0: automatic)")
        check(self.threads >= 0, "threads", self.threads, "must be >= 0 (0: automatic)")
        check(self.cell_timeout >= 0 and not math.isnan(self.cell_timeout), "cell_timeout", self.cell_timeout,
              "must be a number of seconds >= 0 (0: no limit)")
        check(self.ray_retries >= 0, "ray_retries", self.ray_retries, "must be >= 0")
        check(self.ray_gpus_per_cell is None or self.ray_gpus_per_cell >= 0, "ray_gpus_per_cell",
              self.ray_gpus_per_cell, "must be >= 0 (a fraction shares a GPU between cells) or null (automatic)")

    def draws(self, organism: OrganismConfig | None = None) -> tuple[int, ...]:
        """The pretraining draws of an organism model (default: the study's organism): `organism_draws`, or its own
        train.seed when that is not set."""
        if self.organism_draws is not None:
            return self.organism_draws
        return ((organism or self.organism).train.seed,)

    def ceiling_budget(self) -> int | None:
        """The ceiling cells' budget: `ceiling.budget`, or the largest budget the study gives the ceiling method."""
        if self.ceiling is None:
            return None
        if self.ceiling.budget is not None:
            return self.ceiling.budget
        return max(self.method_budgets.get(self.ceiling.method, self.budgets))

    def model_specs(self) -> list[ModelSpec]:
        """`models` as ModelSpecs (a string s is {name: s, path: s})."""
        out = []
        for i, m in enumerate(self.models):
            if isinstance(m, str):
                m = {"name": m, "path": m}
            elif isinstance(m, dict) and "name" in m and "path" not in m and "organism" in m:
                m = {**m, "path": "organism"}
            out.append(from_dict(ModelSpec, m, prefix=f"models[{i}]"))
        return out


def load_study(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> StudyConfig:
    return load_config(StudyConfig, path, overrides)
