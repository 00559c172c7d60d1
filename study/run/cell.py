"""One cell of the study, start to finish: model, target splits, labeler, method fit, evaluation, record.

`run_cell` never raises for a failure of the cell itself (a method bug, a spent budget, a model that will not load):
it returns a CellResult with status "failed" and the error, so a study goes on. Stages are reported through
`progress` for the runner's display.

Stacked methods ("dpo+steering") are fitted part by part by `methods.stacking.fit_parts`, which also splits the budget.

A cell leaves its worker as it found it, or says so: after evaluation the base model must be pristine
(study.run.pristine: no hook left registered, no adapter left injected, parameters unchanged). If it is not, the cell
fails ("method X left a forward hook on model.layers.1") and `CellResult.retire` tells the executor to replace the
worker, as after an error that breaks the CUDA context; a poisoned worker's drift baselines are never reused. A method
whose source changed since the grid was planned (its code fingerprint differs) fails before it runs.

A worker process keeps what is safe to keep between its cells: the loaded model (one, keyed by the cell's model config
and cache; its pristine snapshot is taken when it is first loaded and every later cell is checked against it), the
target splits (cached in study.feedback.targets) and the drift baselines. A retiring worker drops all of them, so a
process that cannot be replaced (a Ray task worker) loads the model afresh.

An organism cell's provenance names the exact weights it ran on: `organism_weights_sha256` (study.organism.pretrain's
hash, from the organism's cache or of the loaded model) and the organism's `organism_behavior_check` (its
pretraining check of the behavior-carrying tokens) where the cache records one. A ceiling cell (`coverage: "ceiling"`)
builds its splits with `target.splits(..., ceiling=True)`. Per-context evaluation results (`EvalResult.contexts`) go
to the cell file under "contexts".

With `profile` (or RLHF_VS_STEERING_PROFILE=1 in the worker's environment, which `study run --profile` sets), the
cell's provenance gets `phases`: exclusive seconds per phase (load, splits, buy_labels, trainer_build, train, generate,
score, kl, drift_baseline, ..., `other` for what no phase claims).

    result = run_cell(cells[0], progress=print)     # cells from study.run.grid.expand
    result.status, result.rows[0]                   # 'ok', {'run_id': ..., 'split': 'covered', 'metric': ...}
"""

from __future__ import annotations

import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from methods.adapter_slot import parking
from methods.base import Stacked
from methods.registry import resolve
from methods.stacking import fit_parts
from study.core.config import from_dict
from study.core.provenance import git_sha, package_versions
from study.core.timing import phase, timing
from study.feedback.catalog import resolve_target
from study.feedback.labeler import Budget, Labeler, LabelerConfig, model_sampler
from study.feedback.targets import ORGANISM_TARGETS, organism_target
from study.lm.models import load_model
from study.lm.smollm2 import model_source, resolve_model_path
from study.organism.pretrain import OrganismConfig, organism_info, organism_model, weights_hash
from study.organism.world import World, WorldConfig
from study.run.evaluate import evaluate
from study.run.grid import Cell, label_key, method_code
from study.run.pristine import leftovers, snapshot
from study.run.study_config import EvalConfig

_DRIFT_CACHE: dict[str, dict[str, float]] = {}  # base-model drift baselines, per process (deterministic, so reusable)
_MODEL_CACHE: dict[str, "_Loaded"] = {}  # at most one: the last model this process loaded, with its pristine snapshot
PROFILE_ENV = "RLHF_VS_STEERING_PROFILE"
BROKEN_DEVICE = ("CUDA error", "device-side assert", "CUBLAS_STATUS", "CUDNN_STATUS")  # the process's context is lost


class ModelNotPristine(RuntimeError):
    """The method left the base model changed (a hook, an adapter, edited weights)."""


@dataclass
class CellResult:
    run_id: str
    status: str  # "ok" | "failed"
    error: str | None
    config: dict[str, Any]
    provenance: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    retire: str | None = None  # why the worker process must not run another cell (None: it may)
    contexts: dict[str, Any] | None = None  # per-context results {context: {metric: [value, n]}} (EvalResult.contexts)

    def record(self) -> dict[str, Any]:
        """The cell file's content (samples go to the JSONL beside it)."""
        return {"run_id": self.run_id, "status": self.status, "error": self.error, "config": self.config,
                "provenance": self.provenance, "rows": self.rows, "contexts": self.contexts}


# ---- the pieces of a cell ----------------------------------------------------------------------------------------
@dataclass
class _Loaded:
    lm: Any  # LoadedModel
    world: Any  # World or None
    snap: Any  # the pristine snapshot taken right after loading
    tokenizer_state: dict[str, Any]  # the tokenizer's plain attributes at load (padding side, ...), put back per cell
    training: bool  # the model's train/eval mode at load, put back per cell
    grads: dict[str, bool]  # requires_grad per parameter at load, put back per cell
    organism: dict[str, Any]  # an organism's provenance: its weights' hash, its behavior check (empty otherwise)


def _organism_provenance(cell: Cell, lm: Any) -> dict[str, Any]:
    """`organism_weights_sha256` and `organism_behavior_check` of a freshly loaded organism (nothing for another
    model). The hash comes from the organism's cache; one that does not record it is hashed here, as loaded."""
    m = cell.config["model"]
    if m["path"] != "organism":
        return {}
    info = organism_info(from_dict(OrganismConfig, m["organism"]), cell.cache_dir) or {}
    out = {"organism_weights_sha256": info.get("weights_sha256") or weights_hash(lm.model)}
    if info.get("behavior_check") is not None:
        out["organism_behavior_check"] = info["behavior_check"]
    return out


def _tokenizer_state(tokenizer: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(tokenizer).items() if isinstance(v, (str, int, float, bool, type(None)))}


def _load(cell: Cell) -> tuple[Any, Any]:
    """(LoadedModel, World or None), freshly loaded."""
    m = cell.config["model"]
    if m["path"] == "organism":
        org = from_dict(OrganismConfig, m["organism"])
        return organism_model(org, cell.cache_dir, dtype=m["dtype"]), World(org.world)
    return load_model(resolve_model_path(m["path"], cell.cache_dir), dtype=m["dtype"],
                      trust_remote_code=m["trust_remote_code"]), None


def _cached_load(cell: Cell) -> tuple[_Loaded, bool]:
    """The process's model for this cell (loaded if it holds another or none) and whether it was reused."""
    key = json.dumps([cell.config["model"], str(cell.cache_dir)], sort_keys=True, default=str)
    hit = _MODEL_CACHE.get(key)
    if hit is not None:
        for k, v in hit.tokenizer_state.items():
            setattr(hit.lm.tokenizer, k, v)
        hit.lm.model.train(hit.training)
        for n, p in hit.lm.model.named_parameters():
            p.requires_grad_(hit.grads.get(n, p.requires_grad))
        return hit, True
    _MODEL_CACHE.clear()  # one model per process: a study with several models does not pile them up in memory
    lm, world = _load(cell)
    loaded = _Loaded(lm, world, snapshot(lm.model), _tokenizer_state(lm.tokenizer), lm.model.training,
                     {n: p.requires_grad for n, p in lm.model.named_parameters()}, _organism_provenance(cell, lm))
    _MODEL_CACHE[key] = loaded
    return loaded, False


def forget() -> None:
    """Drop everything this process keeps between cells (the model, its snapshot, the drift baselines)."""
    _MODEL_CACHE.clear()
    _DRIFT_CACHE.clear()
    gc.unfreeze()  # what _settle froze may now be garbage


_MODULES_SETTLED = 0  # len(sys.modules) when the heap was last frozen


def _settle() -> None:
    """After a cell that imported modules: collect, then move every live object (modules, the cached model, splits
    and baselines) to the permanent generation. Each trainer's end (accelerate's `clear_device_cache`) and every
    automatic full collection then scans only the objects of the cells since: about 0.2 s less per trainer in a
    worker holding torch, transformers and TRL (440,000 tracked objects). Cells' own cyclic garbage is still
    collected; only what is live at a settle is exempt, and `forget` returns it to the collector."""
    global _MODULES_SETTLED
    if len(sys.modules) != _MODULES_SETTLED:
        gc.collect()
        gc.freeze()
        _MODULES_SETTLED = len(sys.modules)


def _target(cell: Cell, world: Any) -> tuple[Any, list[Any]]:
    """The cell's target and the targets whose drift to report (the other organism targets)."""
    t = cell.config["target"]
    if t["spec"] in ORGANISM_TARGETS:
        world = world or World(WorldConfig())
        target = organism_target(t["spec"], world)
        others = [organism_target(n, world) for n in ORGANISM_TARGETS if n != t["spec"]]
    else:
        target, others = resolve_target(t["spec"], scorer=t["scorer"]), []
    if str(target.version) != t["version"]:
        raise RuntimeError(f"target {t['spec']!r} is at version {target.version}, the cell was planned at "
                           f"{t['version']} (the data changed while the study ran?)")
    return target, others if cell.config["eval"]["drift"] else []


def cell_splits(cell: Cell, target: Any) -> Any:
    """The cell's splits of `target`: at its anticipation and seed, or, for a ceiling cell, covering every context
    (`ceiling=True`, which only targets that build ceiling splits take; study.run.grid checks that)."""
    c = cell.config
    sizes = from_dict(EvalConfig, c["eval"]).sizes
    if cell.coverage == "ceiling":
        return target.splits(c["anticipation"], cell.run_seed, sizes, ceiling=True)
    return target.splits(c["anticipation"], cell.run_seed, sizes)


def _parts(cell: Cell) -> list[tuple[str, type, Any]]:
    """(name, method class, its Config) for each part of the cell's method."""
    out = []
    for p in cell.config["method"]["parts"]:
        cls = resolve(p["name"])
        if p.get("code") is not None and method_code(cls) != p["code"]:
            raise RuntimeError(f"method {p['name']!r}: its source changed after the study was planned (code "
                               f"{method_code(cls)}, planned {p['code']}); run the study again to plan it anew")
        out.append((p["name"], cls, from_dict(cls.Config, p["config"])))
    return out


def drift_key(cell: Cell) -> str:
    """Cells with the same key share a drift baseline (computed once per worker process): the executor keeps them on
    one worker where it can."""
    c = cell.config
    return json.dumps([c["model"], c["target"]["spec"], c["anticipation"], c.get("coverage", "anticipation"),
                       cell.run_seed, c["eval"]], sort_keys=True)


# ---- the cell ------------------------------------------------------------------------------------------------------
def run_cell(cell: Cell, progress: Callable[[str], None] | None = None, work_dir: str | Path | None = None,
             profile: bool | None = None) -> CellResult:
    """Run one cell and return its result (status "failed" with the error if anything in it went wrong).
    `profile`: store phase timings in the provenance (None: as RLHF_VS_STEERING_PROFILE says)."""
    if profile is None:
        profile = os.environ.get(PROFILE_ENV, "").strip().lower() in ("1", "true", "yes")
    with timing(profile) as timer:
        result = _run_cell(cell, progress, work_dir)
    _settle()
    if timer is not None:
        phases = timer.seconds()
        phases["other"] = round(result.provenance["durations"]["total"] - sum(phases.values()), 3)
        result.provenance["phases"] = phases
    return result


def _close(scope: ExitStack) -> None:
    try:
        scope.close()
    except Exception:  # noqa: BLE001 - a failed strip shows in the leftovers check that follows
        pass


def _run_cell(cell: Cell, progress: Callable[[str], None] | None, work_dir: str | Path | None) -> CellResult:
    stage = progress or (lambda s: None)
    c = cell.config
    t0 = time.perf_counter()
    durations: dict[str, float] = {}
    prov: dict[str, Any] = {"git_sha": git_sha(), "versions": package_versions(), "host": platform.node(),
                            "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                            "label_key": label_key(c)}
    rows: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    scratch = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix=f"cell-{cell.run_id}-"))
    status, error, retire, snap, lm, contexts = "ok", None, None, None, None, None
    adapters = ExitStack()
    try:
        import torch  # heavy: loaded in the worker, not by `study --help`

        prov["torch_threads"] = torch.get_num_threads()
        prov["run_seed"] = cell.run_seed
        stage("loading model")
        with phase("load"):
            loaded, reused = _cached_load(cell)
        lm, world, snap = loaded.lm, loaded.world, loaded.snap
        prov["model_reused"] = reused
        prov.update(model_id=c["model"].get("organism_key") or c["model"]["path"], model_family=lm.family,
                    device=str(next(lm.model.parameters()).device), **loaded.organism)
        source = model_source(lm.name)  # a converted model (smollm2-135m): its source file's hash, its quantization
        if source is not None:
            prov["model_source"] = source
        durations["load"] = time.perf_counter() - t0

        t = time.perf_counter()
        stage("building target splits")
        with phase("splits"):
            target, others = _target(cell, world)
            ev = from_dict(EvalConfig, c["eval"])
            splits = cell_splits(cell, target)
        budget = Budget(c["budget"])
        # Real-text targets buy demonstrations and contrast pairs among the base model's own samples; organism
        # targets never call the sampler.
        labeler = Labeler(target, budget, from_dict(LabelerConfig, c["labeler"]), seed=cell.run_seed,
                          sampler=model_sampler(lm, target, temperature=ev.temperature, batch_size=ev.batch_size))
        durations["target"] = time.perf_counter() - t

        t = time.perf_counter()
        adapters.enter_context(parking(lm.model))  # the cell's adapters share one injection until the check
        with phase("fit"):
            intervention = fit_parts(_parts(cell), lm, target, labeler, splits, cell.run_seed, scratch, stage)
        durations["fit"] = time.perf_counter() - t
        prov.update(method_config=json.dumps(c["method"]["parts"], sort_keys=True), chosen=intervention.chosen,
                    labels={"counts": dict(budget.counts), "costs": dict(budget.costs)},
                    samples_drawn=labeler.samples_drawn)

        t = time.perf_counter()
        stage("evaluating")
        key = drift_key(cell)
        with phase("evaluate"):
            result = evaluate(lm, target, intervention, splits=splits, others=others, base=_DRIFT_CACHE.get(key),
                              n_completions=ev.n_completions, temperature=ev.temperature,
                              drift_completions=ev.drift_completions, seed=cell.run_seed, batch_size=ev.batch_size,
                              diversity=(ev.diversity_prompts, ev.diversity_samples),
                              progress=lambda s: stage(f"evaluating: {s}"))
        adapters.close()
        with phase("pristine_check"):
            left = leftovers(lm.model, snap)
        if left:  # checked before the drift baseline is kept: a leftover hook may have skewed it
            raise ModelNotPristine(f"method {c['method']['name']} left {'; '.join(left[:5])}"
                                   + (f"; and {len(left) - 5} more" if len(left) > 5 else "")
                                   + "; a cell must leave the base model as it found it")
        _DRIFT_CACHE.setdefault(key, {}).update(result.base)
        metrics, samples, contexts = list(result.rows), list(result.samples), result.contexts or None
        parts = list(intervention.parts) if isinstance(intervention, Stacked) else [intervention]
        for i, part in enumerate(parts):
            extra = getattr(part, "extra_metrics", None)
            if extra is not None:
                stage(f"evaluating: extra metrics of {type(part).__name__}")
                others = parts[:i] + parts[i + 1:]
                with phase("extra_metrics"):
                    more_rows, more_samples = (extra(lm, target, splits, others) if others
                                               else extra(lm, target, splits))
                metrics += list(more_rows)
                samples += list(more_samples)
        durations["evaluate"] = time.perf_counter() - t

        common = {"run_id": cell.run_id, "model": c["model"]["name"], "method": c["method"]["name"],
                  "target": target.name, "target_version": str(target.version), "budget": c["budget"],
                  "feedback_cost": float(budget.spent), "labels_used": int(sum(budget.counts.values())),
                  "draw": c.get("draw"), "coverage": c.get("coverage", "anticipation"),
                  "anticipation": c["anticipation"], "labeler_noise": c["labeler"]["noise"],
                  "labeler_misspec": c["labeler"]["misspec"], "seed": c["seed"]}
        rows = [common | {"split": r["split"], "metric": r["metric"], "value": r["value"], "n": int(r["n"])}
                for r in metrics]
        if not rows:
            raise RuntimeError("the evaluation returned no metrics")
    except Exception as exc:  # the cell failed; the study goes on
        _close(adapters)  # parked adapter layers stripped before the leftovers check below
        status = "failed"
        error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:2000]
        prov["traceback"] = traceback.format_exc()[-8000:]
        rows, samples, contexts = [], [], None
        if isinstance(exc, ModelNotPristine):
            retire = "the method left the base model changed"
        elif any(m in error for m in BROKEN_DEVICE):
            retire = "the error may have broken the device context"
        elif snap is not None:  # a method that failed half-way may have left its hooks behind too
            try:
                left = leftovers(lm.model, snap)
            except Exception as check:
                left = [f"a model that cannot be checked ({type(check).__name__})"]
            if left:
                retire = "the method left the base model changed"
                prov["leftovers"] = left
        if retire:  # nothing this process computed or loaded is reused; the executor replaces it where it can
            forget()
            prov["worker_retired"] = retire
    finally:
        _close(adapters)  # an interrupt too
        with phase("cleanup"):
            shutil.rmtree(scratch, ignore_errors=True)
    durations["total"] = time.perf_counter() - t0
    prov.update(durations={k: round(v, 3) for k, v in durations.items()}, status=status, error=error)
    return CellResult(cell.run_id, status, error, c, prov, rows, samples, retire, contexts)
