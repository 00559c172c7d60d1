"""The Ray executor: cells on a Ray cluster (or a Ray started for the run), run by long-lived actors, surviving the loss
of workers and nodes.

**Slots.** One actor per concurrent slot; each runs many cells, one at a time, so it keeps its imports and drift
baselines across cells as a local worker does. A slot asks Ray for `num_cpus` = torch threads per cell and, when the
grid has Hugging Face models, `num_gpus` = `ray_gpus_per_cell` (default 1 where the cluster has GPUs, else 0). The
number of slots is what the cluster holds (ray.cluster_resources()), capped by --workers and by the cells to run.

**Code travels.** The project's packages (study, methods, analysis) and every `module:Class` / `module:function`
plugin named by the cells go to the workers in the runtime environment (`py_modules`), so a node needs Python and the
project's dependencies, not a checkout. A node that cannot import them stops the run with one line (exit 2).

**Node loss.** The driver depends on no actor that can live on another node: the event queue for the display is
pinned to the driver's node. A cell whose actor is lost (its node died, its worker crashed, it became unavailable, its
result was lost) goes back to the queue for another slot, up to `retries` times; after that it is stored as failed with
"InfrastructureError: ..." and provenance `failure: "infrastructure"`, which the runner treats as missing, so a plain
rerun computes it again. The lost slot is replaced by a fresh actor wherever the cluster has room (if nowhere, the
surviving slots finish the study). A cell past `cell_timeout` has its actor killed and is stored as failed
("CellTimeout: ..."); a cell that asks to retire its worker (CellResult.retire) has its actor replaced.

    with connect(cells, address=None, workers=2, threads=1) as cluster:
        cluster.slots, cluster.describe()                    # 2, '1 node, 2 CPUs, 0 GPUs'
        cluster.run(cells, Store("results/x"), on_event=print, cell_timeout=0, retries=3)
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from study.core.errors import UserError
from study.core.provenance import git_sha, node_info
from study.organism.pretrain import OrganismConfig, organism_info
from study.core.config import from_dict
from study.run.cell import run_cell
from study.run.executors import (ENV_PREFIXES, INFRASTRUCTURE, WORKER_ENV, CellQueue, Event, failed_record, quiet,
                                 set_threads, threads_per_worker)
from study.run.grid import Cell

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("study", "methods", "analysis")
EXCLUDES = [".venv", ".cache", "results", "__pycache__", "*.pyc", ".git"]
START_LIMIT = 600.0  # seconds with cells to run but no slot able to start before the rest are stored as failed


# ---- on the worker -------------------------------------------------------------------------------------------------
class CellWorker:
    """One slot: a Ray actor that runs cells one after another in the same process."""

    def __init__(self, threads: int, plugins: list[str], events: Any):
        set_threads(threads)
        quiet()
        self.events = events
        for name in plugins:  # an ImportError here reaches the driver as a failed start, named
            importlib.import_module(name)

    def ready(self) -> dict[str, Any]:
        return {**node_info(), "pid": os.getpid()}

    def run(self, cell: Cell, attempt: int) -> tuple[dict[str, Any], list[dict[str, Any]] | None, str | None]:
        node = self.ready()
        missing = _missing_cache(cell)
        if missing:
            return failed_record(cell, f"{INFRASTRUCTURE}: node {node['node_address']} ({node['host']}): {missing}",
                                 infrastructure=True, extra={"node": node, "ray_attempt": attempt}), None, None

        def say(*event: Any) -> None:
            try:
                self.events.put_nowait(event)
            except Exception:  # the display is best effort; the result is what matters
                pass

        result = run_cell(cell, progress=lambda s: say("stage", cell.run_id, s))
        result.provenance.update(node=node, ray_attempt=attempt)
        return result.record(), result.samples, result.retire


def _missing_cache(cell: Cell) -> str | None:
    """Why this node cannot run the cell's organism (its cache is not here), or None."""
    model = cell.config["model"]
    if model["path"] != "organism":
        return None
    org = from_dict(OrganismConfig, model["organism"])
    if organism_info(org, cell.cache_dir) is not None:
        return None
    where = cell.cache_dir or "the default cache (~/.cache/rlhf-vs-steering or $RLHF_VS_STEERING_CACHE)"
    return (f"organism {org.key()} is not in {where} on this node; copy the driver's organism cache there or set "
            f"cache_dir to a folder every node shares")


# ---- on the driver -------------------------------------------------------------------------------------------------
def plugin_modules(cells: list[Cell]) -> list[str]:
    """Modules named as `module:Class` (methods) or `module:function` (scorers) by the cells."""
    names: set[str] = set()
    for c in cells:
        specs = [p["name"] for p in c.config["method"]["parts"]] + [c.config["target"].get("scorer") or ""]
        for spec in specs:
            module = spec.split(":", 1)[0] if ":" in spec and not os.path.exists(spec) else ""
            if module and module.split(".")[0] not in PACKAGES:
                names.add(module)
    return sorted(names)


def shipped_paths(plugins: list[str]) -> list[str]:
    """What `py_modules` carries: the project's package folders, and each plugin's top-level module (a file or a
    package folder) unless it is installed (site-packages) or part of the standard library."""
    paths = [str(PROJECT_ROOT / p) for p in PACKAGES]
    for name in plugins:
        top = sys.modules.get(name.split(".")[0]) or importlib.import_module(name.split(".")[0])
        where = list(getattr(top, "__path__", [])) or [getattr(top, "__file__", None)]
        if len(where) != 1 or where[0] is None:
            raise UserError(f"plugin {name!r}: cannot ship it to the Ray workers (a namespace package split over "
                            f"{len(where)} folders); make it a single folder or file, or install it on every node")
        path = Path(where[0]).resolve()
        if not any(part in ("site-packages", "dist-packages") for part in path.parts) and str(path) not in paths \
                and not str(path).startswith(sys.base_prefix):
            paths.append(str(path))
    return paths


def _classify(exc: BaseException) -> str:
    """'import' (a node cannot import the code), 'setup' (the runtime environment failed), 'infrastructure' (a lost
    worker, node, actor or object) or 'task' (the actor's code raised)."""
    import ray.exceptions as rex  # reason: ray is an optional dependency, loaded only by --executor ray

    text = str(exc)
    if isinstance(exc, rex.RuntimeEnvSetupError):
        return "setup"
    if "ModuleNotFoundError" in text or "ImportError" in text:
        return "import"
    lost = (rex.RayActorError, rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError,
            rex.LocalRayletDiedError, rex.RaySystemError, rex.OutOfMemoryError, rex.ObjectFetchTimedOutError)
    return "infrastructure" if isinstance(exc, lost) else "task"


def _line(exc: BaseException, limit: int = 600) -> str:
    """The last informative line of a Ray error (they run to many lines of traceback)."""
    lines = [s.strip() for s in str(exc).splitlines() if s.strip() and not s.strip().startswith(("File ", "^"))]
    text = next((s for s in reversed(lines) if "Error" in s), lines[-1] if lines else type(exc).__name__)
    return f"{type(exc).__name__}: {text}"[:limit]


class _Slot:
    def __init__(self, handle: Any, key: int):
        self.handle, self.key = handle, key
        self.ready_ref: Any = handle.ready.remote()
        self.node: dict[str, Any] | None = None  # set once the actor is up
        self.cell: Cell | None = None
        self.call: Any = None
        self.started = 0.0


class RayCluster:
    """A connection to Ray with the slots this run may use (see the module docstring)."""

    def __init__(self, cells: list[Cell], address: str | None, workers: int | None, threads: int | None,
                 gpus_per_cell: float | None = None):
        try:
            import ray  # reason: ray is an optional dependency, loaded only by --executor ray
        except ImportError:
            raise UserError("--executor ray: ray is not installed (pip install 'rlhf-vs-steering[ray]')") from None
        self.ray = ray
        self.threads = threads or (1 if address else threads_per_worker(workers or 1))
        self.plugins = plugin_modules(cells)
        env = {**{k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}, **WORKER_ENV,
               "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads),
               "RLHF_VS_STEERING_GIT_SHA": git_sha() or ""}
        self.started_here = not ray.is_initialized()
        # Ray uploads local folders only for the job as a whole (ray.init); a caller who started Ray ships the code
        # itself, and the actors get the environment variables alone.
        self.actor_env = {} if self.started_here else {"runtime_env": {"env_vars": env}}
        if self.started_here:
            kwargs: dict[str, Any] = {"address": address} if address else {
                "num_cpus": (workers or 1) * self.threads, "include_dashboard": False}
            job_env = {"py_modules": shipped_paths(self.plugins), "excludes": EXCLUDES, "env_vars": env}
            try:
                ray.init(log_to_driver=False, configure_logging=False, runtime_env=job_env, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise UserError(f"--address {address}: cannot connect to Ray ({' '.join(str(exc).split())[:300]}); "
                                f"start it with `ray start --head` (see README, Running on a cluster)") from None
        total = ray.cluster_resources()
        self.cpus, self.gpus = float(total.get("CPU", 0)), float(total.get("GPU", 0))
        self.nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        hf = any(c.config["model"]["path"] != "organism" for c in cells)
        share = gpus_per_cell if gpus_per_cell is not None else (1.0 if self.gpus else 0.0)
        self.gpus_per_cell = share if hf else 0.0
        slots = int(self.cpus // self.threads)
        if self.gpus_per_cell:
            slots = min(slots, int(self.gpus // self.gpus_per_cell))
        if slots < 1:
            self.close()
            raise UserError(f"the Ray cluster ({self.describe()}) cannot hold one cell: each asks for "
                            f"{self.threads} CPU(s) (threads) and {self.gpus_per_cell:g} GPU(s) (ray_gpus_per_cell)")
        self.slots = max(1, min(slots, workers or slots, len(cells)))

    def describe(self) -> str:
        return (f"{self.nodes} node{'s' if self.nodes != 1 else ''}, {self.cpus:g} CPUs, {self.gpus:g} GPUs")

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()

    def _events(self) -> Any:
        """The display's event queue, on the driver's node so that losing another node never loses it."""
        from ray.util.queue import Queue  # reason: as above
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(self.ray.get_runtime_context().get_node_id(), soft=False)
        return Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})

    def run(self, cells: list[Cell], store: Any, on_event: Callable[[Event], None], cell_timeout: float = 0.0,
            retries: int = 3) -> None:
        """Run `cells` in the slots, storing each as it finishes (see the module docstring)."""
        ray = self.ray
        if not cells:
            return
        from ray.util.queue import Empty  # reason: as above

        events = self._events()
        actor = ray.remote(CellWorker).options(num_cpus=self.threads, num_gpus=self.gpus_per_cell, max_restarts=0,
                                               max_task_retries=0, **self.actor_env)
        pending, attempts, keys = CellQueue(cells), {c.run_id: 0 for c in cells}, iter(range(1 << 30))
        slots: list[_Slot] = []
        no_slot_since: float | None = None

        def new_slot() -> None:
            slots.append(_Slot(actor.remote(self.threads, self.plugins, events), next(keys)))

        def drop(s: _Slot) -> None:
            slots.remove(s)
            try:
                ray.kill(s.handle, no_restart=True)
            except Exception:  # already gone with its node
                pass
            if pending:
                new_slot()

        def finish(cell: Cell, record: dict[str, Any], samples: list[dict[str, Any]] | None, began: float) -> None:
            store.write(record, samples)
            seconds = (record.get("provenance") or {}).get("durations", {}).get("total", time.perf_counter() - began)
            on_event(("done", cell.run_id, record["status"], record["error"], seconds))

        def lost(s: _Slot, exc: BaseException) -> None:
            """The slot's actor is gone with its cell: retry the cell elsewhere, or store it as an infrastructure
            failure once its retries are spent."""
            assert s.cell is not None
            cell, began = s.cell, s.started
            attempts[cell.run_id] += 1
            where = f" on node {s.node['node_address']}" if s.node else ""
            if attempts[cell.run_id] <= retries:
                pending.put_back(cell)
                on_event(("stage", cell.run_id, f"lost its worker{where}; retry {attempts[cell.run_id]}/{retries}"))
            else:
                error = (f"{INFRASTRUCTURE}: the Ray worker running this cell was lost{where} "
                         f"({attempts[cell.run_id]} tries, ray_retries={retries}): {_line(exc)}")
                finish(cell, failed_record(cell, error, infrastructure=True,
                                           extra={"node": s.node, "ray_attempt": attempts[cell.run_id]}), None, began)
            s.cell = None
            drop(s)

        def drain() -> None:
            while True:
                try:
                    on_event(events.get_nowait())
                except Empty:
                    return
                except Exception:  # the queue itself is best effort too
                    return

        try:
            for _ in range(self.slots):
                new_slot()
            while pending or any(s.cell is not None for s in slots):
                refs = [s.call if s.cell is not None else s.ready_ref for s in slots if s.cell is not None or
                        s.node is None]
                if refs:
                    ray.wait(refs, num_returns=1, timeout=0.25 if cell_timeout else 0.5)
                    done = set(ray.wait(refs, num_returns=len(refs), timeout=0)[0])
                else:
                    done = set()
                drain()
                for s in list(slots):
                    if s.node is None and s.ready_ref in done:  # an actor came up, or failed to
                        try:
                            s.node = ray.get(s.ready_ref)
                        except Exception as exc:
                            kind = _classify(exc)
                            if kind in ("import", "setup"):
                                raise UserError(f"Ray worker cannot start: {_line(exc, 400)}; install the project "
                                                f"and its dependencies on every node, or make the plugin importable "
                                                f"(README, Running on a cluster)") from None
                            drop(s)  # its node went away before it started; a fresh one takes its place
                            continue
                    if s.cell is not None and s.call in done:
                        cell, began = s.cell, s.started
                        try:
                            record, samples, retire = ray.get(s.call)
                        except Exception as exc:
                            if _classify(exc) in ("infrastructure", "import"):
                                lost(s, exc)
                                continue
                            record, samples, retire = failed_record(cell, f"RayTaskError: {_line(exc, 1000)}"), \
                                None, None
                        s.cell = None
                        finish(cell, record, samples, began)
                        if retire:
                            drop(s)
                            continue
                    elif s.cell is not None and cell_timeout and time.perf_counter() - s.started > cell_timeout:
                        cell, began = s.cell, s.started
                        s.cell = None
                        drop(s)  # kills its process
                        finish(cell, failed_record(cell, f"CellTimeout: timed out after {cell_timeout:g} s "
                                                         f"(cell_timeout); its Ray worker was stopped"), None, began)
                        continue
                    if s.node is not None and s.cell is None and pending:
                        s.cell, s.started = pending.take(s.key), time.perf_counter()
                        attempt = attempts[s.cell.run_id] + 1
                        s.call = s.handle.run.remote(s.cell, attempt)
                        on_event(("start", s.cell.run_id, s.node.get("node_address")))
                if pending and not any(s.node is not None for s in slots):
                    no_slot_since = no_slot_since or time.perf_counter()
                    if time.perf_counter() - no_slot_since > START_LIMIT:
                        while pending:
                            cell = pending.take(-1)
                            finish(cell, failed_record(cell, f"{INFRASTRUCTURE}: no Ray worker could start for "
                                                             f"{START_LIMIT:g} s ({self.describe()})",
                                                       infrastructure=True), None, time.perf_counter())
                else:
                    no_slot_since = None
            drain()
        finally:
            for s in slots:
                try:
                    ray.kill(s.handle, no_restart=True)
                except Exception:
                    pass
            try:
                ray.kill(events.actor, no_restart=True)
            except Exception:
                pass


@contextmanager
def connect(cells: list[Cell], address: str | None = None, workers: int | None = None, threads: int | None = None,
            gpus_per_cell: float | None = None) -> Iterator[RayCluster]:
    """Ray for this run (see RayCluster); a Ray started here is shut down at the end."""
    cluster = RayCluster(cells, address, workers, threads, gpus_per_cell)
    try:
        yield cluster
    finally:
        cluster.close()


def run_ray(cells: list[Cell], store: Any, workers: int, on_event: Callable[[Event], None],
            address: str | None = None, threads: int | None = None, cell_timeout: float = 0.0, retries: int = 3,
            gpus_per_cell: float | None = None) -> None:
    """Connect and run in one call (the runner connects first, to size its display by the cluster)."""
    with connect(cells, address, workers, threads, gpus_per_cell) as cluster:
        cluster.run(cells, store, on_event, cell_timeout, retries)
