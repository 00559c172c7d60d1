"""One cell of the study, start to finish: model, target splits, labeler, method fit, evaluation, record.

`run_cell` never raises for a failure of the cell itself (a method bug, a spent budget, a model that will not load):
it returns a CellResult with status "failed" and the error, so a study goes on. Stages are reported through
`progress` for the runner's display.

Stacked methods ("dpo+steering") are fitted part by part in order, each with the parts before it active (their hooks
and adapters; `ctx.prior` holds them). The budget is split between the parts that use labels: each takes an equal
share of what is left when its turn comes (floor division), so what an earlier part leaves unspent rolls over to the
later ones and the last part may spend all that remains. Parts share one labeler, so a query repeated by a later part
is not charged twice.

    result = run_cell(cells[0], progress=print)     # cells from study.grid.expand
    result.status, result.rows[0]                   # 'ok', {'run_id': ..., 'split': 'covered', 'metric': ...}
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import tempfile
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from study.grid import Cell

VERSIONED = ("torch", "transformers", "trl", "peft", "tokenizers", "numpy", "rlhf-vs-steering")
_DRIFT_CACHE: dict[str, dict[str, float]] = {}  # base-model drift baselines, per process (deterministic, so reusable)


@dataclass
class CellResult:
    run_id: str
    status: str  # "ok" | "failed"
    error: str | None
    config: dict[str, Any]
    provenance: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The cell file's content (samples go to the JSONL beside it)."""
        return {"run_id": self.run_id, "status": self.status, "error": self.error, "config": self.config,
                "provenance": self.provenance, "rows": self.rows}


# ---- provenance --------------------------------------------------------------------------------------------------
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


# ---- the pieces of a cell ----------------------------------------------------------------------------------------
def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _load(cell: Cell) -> tuple[Any, Any]:
    """(LoadedModel, World or None)."""
    from study.config import from_dict
    from study.models import load_model

    m = cell.config["model"]
    if m["path"] == "organism":
        from study.organism.pretrain import OrganismConfig
        from study.organism.world import World

        org = from_dict(OrganismConfig, m["organism"])
        return load_model("organism", organism_config=org, cache_dir=cell.cache_dir, dtype=m["dtype"]), World(org.world)
    return load_model(m["path"], dtype=m["dtype"], trust_remote_code=m["trust_remote_code"]), None


def _target(cell: Cell, world: Any) -> tuple[Any, list[Any]]:
    """The cell's target and the targets whose drift to report (the other organism targets)."""
    from study.targets import ORGANISM_TARGETS, organism_target, resolve_target

    t = cell.config["target"]
    if t["spec"] in ORGANISM_TARGETS:
        if world is None:
            from study.organism.world import World, WorldConfig

            world = World(WorldConfig())
        target = organism_target(t["spec"], world)
        others = [organism_target(n, world) for n in ORGANISM_TARGETS if n != t["spec"]]
    else:
        target, others = resolve_target(t["spec"], scorer=t["scorer"]), []
    if str(target.version) != t["version"]:
        raise RuntimeError(f"target {t['spec']!r} is at version {target.version}, the cell was planned at "
                           f"{t['version']} (the data changed while the study ran?)")
    return target, others if cell.config["eval"]["drift"] else []


class _PartBudget:
    """A stacked part's share of the cell's budget: charges count against both the share and the whole."""

    def __init__(self, parent: Any, total: int):
        from study.labeler import Budget

        self.parent, self.own = parent, Budget(total)

    total = property(lambda self: self.own.total)
    spent = property(lambda self: self.own.spent)
    left = property(lambda self: self.own.left)
    counts = property(lambda self: self.own.counts)
    costs = property(lambda self: self.own.costs)

    def can_afford(self, units: int) -> bool:
        return self.own.can_afford(units) and self.parent.can_afford(units)

    def charge(self, units: int, kind: str) -> None:
        self.own.charge(units, kind)
        self.parent.charge(units, kind)


def _fit(cell: Cell, lm: Any, target: Any, labeler: Any, splits: Any, seed: int, work_dir: Path,
         stage: Callable[[str], None]) -> Any:
    """Fit the cell's method (part by part for a stack); returns its intervention."""
    from methods.base import FitContext, Stacked
    from methods.registry import resolve
    from study.config import from_dict
    from study.evaluate import select_score
    from study.grid import uses_labels

    device = str(next(lm.model.parameters()).device)
    parts = []
    for p in cell.config["method"]["parts"]:
        cls = resolve(p["name"])
        cfg = from_dict(cls.Config, p["config"])
        parts.append((p["name"], cls, cfg, uses_labels(cls, cfg)))
    whole = labeler.budget
    fitted: list[Any] = []
    for i, (name, cls, cfg, labels) in enumerate(parts):
        paying = sum(1 for part in parts[i:] if part[3])
        share = (whole.left // paying if paying else 0) if labels else 0
        labeler.budget = whole if len(parts) == 1 else _PartBudget(whole, share)
        prior = (fitted[0] if len(fitted) == 1 else Stacked(list(fitted))) if fitted else None

        def scorer(intervention: Any = None, records: Any = None, *, _prior: Any = prior, **kw: Any) -> dict:
            iv = intervention if _prior is None else (Stacked([_prior, intervention]) if intervention is not None
                                                      else _prior)
            kw.setdefault("seed", seed)
            return select_score(lm, None, target, labeler, splits.select if records is None else records, iv, **kw)

        obj = cls(cfg)
        (work_dir / f"{i}-{name}").mkdir(parents=True, exist_ok=True)
        ctx = FitContext(model=lm, target=target, labeler=labeler, pool=list(splits.pool), select=list(splits.select),
                         budget=share if len(parts) > 1 else whole.total, seed=seed, config=cfg, device=device,
                         select_score=scorer, work_dir=work_dir / f"{i}-{name}", log=stage, prior=prior)
        stage(f"fitting {name}" + (f" ({i + 1}/{len(parts)})" if len(parts) > 1 else ""))
        _seed_everything(seed)
        with prior.active() if prior is not None else nullcontext():
            intervention = obj.fit(ctx)
        fitted.append(intervention)
    labeler.budget = whole
    return fitted[0] if len(fitted) == 1 else Stacked(fitted)


def drift_key(cell: Cell) -> str:
    """Cells with the same key share a drift baseline (computed once per worker process): the executor keeps them on
    one worker where it can."""
    c = cell.config
    return json.dumps([c["model"], c["target"]["spec"], c["anticipation"], c["seed"], c["eval"]], sort_keys=True)


# ---- the cell ------------------------------------------------------------------------------------------------------
def run_cell(cell: Cell, progress: Callable[[str], None] | None = None, work_dir: str | Path | None = None
             ) -> CellResult:
    """Run one cell and return its result (status "failed" with the error if anything in it went wrong)."""
    stage = progress or (lambda s: None)
    c = cell.config
    t0 = time.perf_counter()
    durations: dict[str, float] = {}
    prov: dict[str, Any] = {"git_sha": git_sha(), "versions": package_versions(), "host": platform.node(),
                            "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    rows: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    scratch = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix=f"cell-{cell.run_id}-"))
    status, error = "ok", None
    try:
        import torch

        from methods.base import Stacked
        from study.evaluate import evaluate
        from study.labeler import Budget, Labeler, LabelerConfig
        from study.schema import EvalConfig
        from study.config import from_dict

        prov["torch_threads"] = torch.get_num_threads()
        stage("loading model")
        lm, world = _load(cell)
        prov.update(model_id=c["model"].get("organism_key") or c["model"]["path"], model_family=lm.family,
                    device=str(next(lm.model.parameters()).device))
        durations["load"] = time.perf_counter() - t0

        t = time.perf_counter()
        stage("building target splits")
        target, others = _target(cell, world)
        ev = from_dict(EvalConfig, c["eval"])
        splits = target.splits(c["anticipation"], c["seed"], ev.sizes)
        budget = Budget(c["budget"])
        labeler = Labeler(target, budget, from_dict(LabelerConfig, c["labeler"]), seed=c["seed"])
        durations["target"] = time.perf_counter() - t

        t = time.perf_counter()
        intervention = _fit(cell, lm, target, labeler, splits, c["seed"], scratch, stage)
        durations["fit"] = time.perf_counter() - t
        prov.update(method_config=json.dumps(c["method"]["parts"], sort_keys=True), chosen=intervention.chosen,
                    labels={"counts": dict(budget.counts), "costs": dict(budget.costs)})

        t = time.perf_counter()
        stage("evaluating")
        key = drift_key(cell)
        result = evaluate(lm, target, intervention, splits=splits, others=others, base=_DRIFT_CACHE.get(key),
                          n_completions=ev.n_completions, temperature=ev.temperature,
                          drift_completions=ev.drift_completions, seed=c["seed"], batch_size=ev.batch_size,
                          progress=lambda s: stage(f"evaluating: {s}"))
        _DRIFT_CACHE.setdefault(key, {}).update(result.base)
        metrics, samples = list(result.rows), list(result.samples)
        parts = list(intervention.parts) if isinstance(intervention, Stacked) else [intervention]
        for i, part in enumerate(parts):
            extra = getattr(part, "extra_metrics", None)
            if extra is not None:
                stage(f"evaluating: extra metrics of {type(part).__name__}")
                others = parts[:i] + parts[i + 1:]
                more_rows, more_samples = extra(lm, target, splits, others) if others else extra(lm, target, splits)
                metrics += list(more_rows)
                samples += list(more_samples)
        durations["evaluate"] = time.perf_counter() - t

        common = {"run_id": cell.run_id, "model": c["model"]["name"], "method": c["method"]["name"],
                  "target": target.name, "target_version": str(target.version), "budget": c["budget"],
                  "feedback_cost": float(budget.spent), "labels_used": int(sum(budget.counts.values())),
                  "anticipation": c["anticipation"], "labeler_noise": c["labeler"]["noise"],
                  "labeler_misspec": c["labeler"]["misspec"], "seed": c["seed"]}
        rows = [common | {"split": r["split"], "metric": r["metric"], "value": r["value"], "n": int(r["n"])}
                for r in metrics]
        if not rows:
            raise RuntimeError("the evaluation returned no metrics")
    except Exception as exc:  # the cell failed; the study goes on
        status = "failed"
        error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:2000]
        prov["traceback"] = traceback.format_exc()[-8000:]
        rows, samples = [], []
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    durations["total"] = time.perf_counter() - t0
    prov.update(durations={k: round(v, 3) for k, v in durations.items()}, status=status, error=error)
    return CellResult(cell.run_id, status, error, c, prov, rows, samples)
