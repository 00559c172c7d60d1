"""The study runner: expand a config into cells, skip the stored ones, run the rest, show progress, summarize.

Stored cells are never recomputed: a cell whose file says "ok" is done, one that says "failed" is done too unless
`retry_failed`; a cell that failed because of the cluster (a lost Ray node or worker, "InfrastructureError: ...")
counts as missing and is always computed again. So an interrupted study (Ctrl-C, SIGKILL, a lost machine) resumes where it stopped when run again,
and a warm rerun only reads the store and rewrites `table.parquet`. A cell's id covers its method's code
(study.run.grid), so after an edit to a method's file its cells are to run again; the dry run marks them "stale" (the
same cell is stored, computed by the earlier code, and left in place).

    summary = run_study("micro", ["seeds=[0,1]"], workers=2)
    summary.ok, summary.failed, summary.exit_code          # exit_code 1 when any cell of the study failed
    summary = run_study("micro", dry_run=True)               # lists the cells and marks the stored ones

Organism draws (`organism_draws`) are pretrained before any cell runs, each once: one after another with a progress
bar, or, when two or more are missing and the run has two or more workers, in that many spawned processes at once.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from study.core.config import from_dict, to_dict
from study.core.errors import UserError
from study.organism.pretrain import OrganismConfig, ensure_organism, organism_info
from study.run.display import Display, fmt_seconds, pretrain_with_progress
from study.run.executors import (cpu_count, die_with_parent, is_infrastructure_failure, quiet, run_local,
                                 set_threads)
from study.run.grid import Cell, expand, label_key, organisms
from study.run.preflight import preflight
from study.run.ray_executor import connect
from study.run.study_config import StudyConfig, load_study
from study.run.store import Store
from methods.registry import REGISTRY, resolve
from study.organism.world import World, WorldConfig
from study.feedback.catalog import available_targets, resolve_target
from study.feedback.targets import ORGANISM_TARGETS

EXECUTORS = ("local", "ray")


@dataclass
class RunSummary:
    name: str
    results_dir: str
    total: int  # cells in the study
    stored_before: int  # already stored when the run began (and not rerun)
    computed: int = 0
    ok: int = 0  # cells of the study stored ok at the end
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (run_id, label, error) of failed cells
    seconds: float = 0.0
    table_path: str | None = None
    dry_run: bool = False
    other_cells: int = 0  # cells in the results directory that are not part of this study (left in place)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def _resolve(config: str | Path | StudyConfig | None, overrides: list[str] | tuple[str, ...]
             ) -> tuple[StudyConfig, str]:
    if isinstance(config, StudyConfig):
        if overrides:
            raise UserError("overrides apply to a config file, not to a StudyConfig object")
        return config, "<StudyConfig>"
    name = str(config) if config is not None else "default"
    return load_study(name, list(overrides)), name


def plan(config: str | Path | StudyConfig | None = None, overrides: list[str] | tuple[str, ...] = (),
         results: str | Path | None = None) -> tuple[StudyConfig, list[Cell], Store]:
    """The study, its cells and its store, with every input checked; writes nothing."""
    study, source = _resolve(config, overrides)
    if os.getcwd() not in sys.path:  # a user's `module:Class` next to their config, as `python -m` would find it
        sys.path.insert(0, os.getcwd())
    study = preflight(study, source, overrides)
    cache = str(Path(study.cache_dir).expanduser().resolve()) if study.cache_dir else None
    cells = expand(study, source, cache)
    return study, cells, Store(Path(results or study.results_dir))


def stored_status(store: Store) -> dict[str, str]:
    """Store.status() less the infrastructure failures (study.run.executors.failed_record): those cells are to run."""
    status = store.status()
    for run_id in [r for r, s in status.items() if s == "failed"]:
        try:
            if is_infrastructure_failure(store.read(run_id)):
                del status[run_id]
        except (OSError, ValueError):  # status() has read it already; a file removed since is missing anyway
            status.pop(run_id, None)
    return status


def stale_cells(cells: list[Cell], status: dict[str, str], store: Store) -> set[str]:
    """Ids of the cells not stored under their id whose same cell computed by other code (same `label_key`) is."""
    ids = {c.run_id for c in cells}
    stored = set()
    for run_id in set(status) - ids:
        try:
            rec = store.read(run_id) or {}
            stored.add(label_key(rec["config"]))
        except (OSError, ValueError, KeyError, TypeError):  # unreadable or foreign: not a stored version of a cell
            continue
    return {c.run_id for c in cells if c.run_id not in status and label_key(c.config) in stored}


def print_cells(cells: list[Cell], status: dict[str, str], out: Any = None, stale: set[str] = frozenset()) -> None:
    """One line per cell, status first (done / failed / stale / todo), as plain aligned text (it is often piped).
    Stale: to run, because the stored result was computed by an earlier version of the method's code.
    Draw: the organism's pretraining draw ("-" for a Hugging Face model); anticipation "ceiling": a ceiling cell."""
    out = out or sys.stdout
    head = ("status", "run_id", "model", "draw", "method", "target", "budget", "anticipation", "noise", "misspec",
            "seed")
    state = {"ok": "done", "failed": "failed"}
    rows = [head] + [(state.get(status.get(c.run_id, ""), "stale" if c.run_id in stale else "todo"), c.run_id, c.model,
                      "-" if c.draw is None else str(c.draw), c.method, c.target, str(c.config["budget"]),
                      "ceiling" if c.coverage == "ceiling" else f"{c.config['anticipation']:g}",
                      f"{c.config['labeler']['noise']:g}", f"{c.config['labeler']['misspec']:g}",
                      str(c.config["seed"])) for c in cells]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip(), file=out)


def _pretrain_one(config: dict[str, Any], cache: str | None, threads: int) -> tuple[str, float, str | None]:
    """In a spawned process: pretrain one organism (a draw) into the cache; (its key, seconds, error or None)."""
    set_threads(threads)
    quiet()
    org = from_dict(OrganismConfig, config)
    t0 = time.perf_counter()
    try:
        ensure_organism(org, cache)
    except UserError as exc:  # e.g. it did not converge: said in the parent, after the other draws are done
        return org.key(), time.perf_counter() - t0, str(exc)
    return org.key(), time.perf_counter() - t0, None


def pretraining_pool(n: int) -> ProcessPoolExecutor:
    """`n` spawned processes that exit when this one is gone (a killed study leaves no pretraining behind)."""
    return ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"), initializer=die_with_parent,
                               initargs=(os.getpid(),))


def _ensure_organisms(cells: list[Cell], console: Console, processes: int = 1) -> None:
    """Pretrain every organism the cells need (each draw), once, here, before workers start (they would race to do
    it): one after another, or in spawned processes when two or more are missing (with two or more
    processes allowed: all at once up to twice that many, each on one thread)."""
    cache = cells[0].cache_dir if cells else None
    missing = [org for org in organisms(cells) if organism_info(org, cache) is None]
    # k equal one-thread jobs on p cores: k processes finish in k/p rounds' time, p processes in ceil(k/p) rounds (3
    # draws on 2 cores: 1.5 against 2), so up to 2p draws all start at once
    n = len(missing) if 2 <= processes and len(missing) <= 2 * processes else min(processes, len(missing))
    if n < 2:
        for org in missing:
            console.print(f"pretraining organism {org.key()} (draw {org.train.seed}, {org.train.steps} steps; cached "
                          f"for later runs)", highlight=False, soft_wrap=True)
            pretrain_with_progress(org, cache, console)
        return
    console.print(f"pretraining {len(missing)} organisms (draws {', '.join(str(o.train.seed) for o in missing)}) in "
                  f"{n} processes; cached for later runs", highlight=False, soft_wrap=True)
    errors = []
    threads = max(1, cpu_count() // n)
    with pretraining_pool(n) as pool:
        jobs = [pool.submit(_pretrain_one, to_dict(org), cache, threads) for org in missing]
        for i, job in enumerate(as_completed(jobs), 1):
            key, seconds, error = job.result()
            console.print(f"  [{i}/{len(missing)}] organism {key}: {error or 'pretrained'} ({fmt_seconds(seconds)})",
                          highlight=False, soft_wrap=True)
            if error:
                errors.append(error)
    if errors:
        raise UserError(errors[0])


def run_study(config: str | Path | StudyConfig | None = None, overrides: list[str] | tuple[str, ...] = (), *,
              executor: str = "local", workers: int | None = None, address: str | None = None,
              dry_run: bool = False, results: str | Path | None = None, retry_failed: bool = False,
              console: Console | None = None, out: Any = None) -> RunSummary:
    """Run a study (see the module docstring). Bad input raises UserError before anything is written."""
    t0 = time.perf_counter()
    console = console or Console(stderr=True)
    if executor not in EXECUTORS:
        raise UserError(f"--executor {executor!r}: unknown; valid: {', '.join(EXECUTORS)}")
    if workers is not None and workers < 1:
        raise UserError(f"--workers {workers}: must be at least 1")
    if address and executor != "ray":
        raise UserError("--address applies to --executor ray only")
    study, cells, store = plan(config, overrides, results)
    status = stored_status(store)
    todo = [c for c in cells if c.run_id not in status or (retry_failed and status[c.run_id] == "failed")]
    summary = RunSummary(study.name, str(store.root), len(cells), len(cells) - len(todo), dry_run=dry_run)
    if dry_run:
        stale = stale_cells(cells, status, store)
        print_cells(cells, status, out, stale)
        done = sum(status.get(c.run_id) == "ok" for c in cells)
        failed = sum(status.get(c.run_id) == "failed" for c in cells)
        other = len(set(status) - {c.run_id for c in cells})
        draws = sorted({c.draw for c in cells if c.draw is not None})
        print(f"{len(cells)} cells: {done} done, {failed} failed, {len(todo)} to run"
              + (f" ({len(stale)} stale: stored from an earlier version of their method's code)" if stale else "")
              + (" (failed ones rerun with --retry-failed)" if failed and not retry_failed else "")
              + (f"; {other} other stored cell(s) are not part of this study" if other else "")
              + (f"; organism draws (pretraining seeds): {', '.join(map(str, draws))}" if draws else ""),
              file=out or sys.stdout)
        summary.seconds = time.perf_counter() - t0
        return summary

    store.ensure_writable()
    with store.lock():  # one run per results folder: a second one exits 2 instead of computing every cell twice
        status = stored_status(store)  # again, under the lock
        todo = [c for c in cells if c.run_id not in status or (retry_failed and status[c.run_id] == "failed")]
        summary.stored_before = len(cells) - len(todo)
        _run(study, cells, todo, store, summary, executor, workers, address, console)
    summary.seconds = time.perf_counter() - t0
    print_summary(summary, console)
    return summary


def _run(study: StudyConfig, cells: list[Cell], todo: list[Cell], store: Store, summary: RunSummary, executor: str,
         workers: int | None, address: str | None, console: Console) -> None:
    """Write the study's index (first, so that a report read while the study runs, or after it stopped, reads its
    cells), compute `todo` (the results folder locked), then write its table into `summary`."""
    store.clean_temporary()
    ids = {c.run_id for c in cells}
    store.write_index(study.name, to_dict(study), sorted(ids))
    if todo:
        auto = all(c.config["model"]["path"] == "organism" for c in cells)  # small models: a worker per core
        # the organisms (each draw) are pretrained here, before any worker starts, in as many processes as this
        # machine would run local workers
        _ensure_organisms(todo, console, min(workers or study.workers or (cpu_count() if auto else 1), cpu_count()))
        # The organism is too small to gain from intra-op threads: one worker ran 20 of the default study's cells in
        # 84 s on one thread and in 106 s on two (benchmarks/results/runner.json). Other models: the cores divided
        # between the workers.
        threads = study.threads or (1 if auto else None)
        with ExitStack() as stack:
            where = ""
            if executor == "local":
                n = workers or study.workers or (cpu_count() if auto else 1)
                concurrency = min(n, len(todo))
            else:  # a cluster's own size sets the concurrency (capped by --workers or `workers`)
                n = workers or study.workers or (None if address else (cpu_count() if auto else 1))
                cluster = stack.enter_context(connect(todo, address, n, threads, study.ray_gpus_per_cell))
                concurrency, where = cluster.slots, f" on Ray: {cluster.describe()}"
            console.print(f"study {study.name}: {len(cells)} cells, {summary.stored_before} stored, {len(todo)} to "
                          f"run ({executor}, {concurrency} worker{'s' if concurrency != 1 else ''}{where}); results "
                          f"in {store.root}", highlight=False, soft_wrap=True)
            display = stack.enter_context(Display(todo, len(cells), summary.stored_before, concurrency, console))
            if executor == "local":
                run_local(todo, store, concurrency, display.event, threads=threads, cell_timeout=study.cell_timeout)
            else:
                cluster.run(todo, store, display.event, cell_timeout=study.cell_timeout, retries=study.ray_retries)
        summary.computed = display.finished
        try:
            (store.root / "work").rmdir()  # each cell removes its own scratch folder
        except OSError:
            pass
    final = store.status()
    labels = {c.run_id: c.label for c in cells}
    summary.ok = sum(final.get(c.run_id) == "ok" for c in cells)
    for c in cells:
        if final.get(c.run_id) == "failed":
            rec = store.read(c.run_id) or {}
            summary.failed.append((c.run_id, labels[c.run_id], str(rec.get("error"))))
    summary.other_cells = len(set(final) - ids)
    summary.table_path = str(store.export_parquet(run_ids=ids))


def print_summary(s: RunSummary, console: Console) -> None:
    missing = s.total - s.ok - len(s.failed)
    console.print(f"study {s.name}: {s.total} cells, {s.ok} ok, {len(s.failed)} failed"
                  + (f", {missing} missing" if missing else "")
                  + f" ({s.computed} computed now, {s.stored_before} already stored) in {fmt_seconds(s.seconds)}; "
                    f"table: {s.table_path}", highlight=False, soft_wrap=True)
    if s.other_cells:
        console.print(f"  {s.other_cells} other cell(s) in {s.results_dir} are not part of this study (an earlier "
                      f"config or organism): left in place, not in the table; study.json lists this study's cells",
                      highlight=False, soft_wrap=True)
    for run_id, label, error in s.failed[:20]:
        console.print(f"  [red]failed[/red] {run_id} {label}: {error}", highlight=False, soft_wrap=True)
    if len(s.failed) > 20:
        console.print(f"  ... and {len(s.failed) - 20} more", highlight=False)
    infra = sum(error.startswith("InfrastructureError:") for _, _, error in s.failed)
    if len(s.failed) > infra:
        console.print("  rerun with --retry-failed to compute the failed cells again", highlight=False)
    if infra:
        console.print(f"  {infra} failed because of the cluster (InfrastructureError): a plain rerun computes them "
                      f"again", highlight=False)


def describe_methods() -> list[str]:
    """`study list methods`: each registered name, its class, what it is, and its config fields with defaults."""
    import dataclasses
    import importlib


    lines = []
    for name in sorted(REGISTRY):
        try:
            cls = resolve(name)
        except UserError as exc:
            lines.append(f"{name}  ({REGISTRY[name]}): not available: {exc}")
            continue
        doc = (importlib.import_module(cls.__module__).__doc__ or cls.__doc__ or "").strip().split("\n\n")[0]
        lines.append(f"{name}  ({REGISTRY[name]}): {' '.join(doc.split())}")
        fields = [f"{f.name}={f.default!r}" if f.default is not dataclasses.MISSING else f.name
                  for f in dataclasses.fields(cls.Config)]
        lines.append(f"    config ({cls.Config.__name__}): {', '.join(fields) or 'no fields'}")
    lines.append("stacks: 'a+b' fits a, then b with a active (e.g. dpo+steering); your own method: 'module:Class' "
                 "(docs/adding_a_method.md)")
    return lines


def describe_targets() -> list[str]:
    """`study list targets`: the named targets (the organism's, and the real-text ones for a real language model)
    with what they ask for, and the external formats."""

    world = World(WorldConfig())
    lines = [f"{name}  ({'organism' if name in ORGANISM_TARGETS else 'real text'}): "
             f"{resolve_target(name, world=world).description}" for name in available_targets()]
    lines.append("a path  (external): A/B JSON(L) (question, answer_matching_behavior, answer_not_matching_behavior), "
                 "preference JSONL (prompt, chosen, rejected) or a saved `datasets` folder")
    return lines
