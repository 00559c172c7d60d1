"""Executors: run cells in local worker processes or as Ray tasks; both write through the same results store.

Both report what happens as events to one callback, for the progress display:

    ("start", run_id)                        a worker took the cell
    ("stage", run_id, text)                  the cell moved to a new stage ("fitting prompting", "evaluating: ...")
    ("done", run_id, status, error, seconds) the cell is stored, status "ok" or "failed"

**Local**: N worker processes (spawned, so no state leaks from the parent), each with `threads` torch threads (the
runner passes 1 for organism studies, whose small model runs fastest on one thread; otherwise the cores divided
between the workers). Cells that share a drift baseline (`drift_key`) go to the same worker where possible. The parent hands one cell at a time to each worker over its own pipe, so it always knows which cell a worker
holds. No cell blocks the study: a worker that dies (out of memory, a segfault, SIGKILL) has its cell stored as failed
("WorkerDied: ..."), one whose cell runs past `cell_timeout` seconds (counted from the cell's start, not the worker's)
is killed and its cell stored as failed ("CellTimeout: timed out after N s"), and either is replaced by a fresh worker.
A worker whose cell left the model changed or broke the CUDA context (`CellResult.retire`) stores the cell, says so
and exits; a fresh worker takes its place. Workers store each cell themselves the moment it is done, so killing the
parent loses only the cells in flight; a worker whose parent is gone exits at once (PR_SET_PDEATHSIG where Linux
offers it, a watchdog thread everywhere).

**Ray**: each cell is a Ray task (`num_cpus` = torch threads per cell) on the cluster at `address`, or on a local Ray
instance started for the run. A task returns its record and samples and the driver writes them, so the workers need
no shared filesystem (but they do need the organism cache, which the runner fills on the driver's machine before
any task starts). A task past
`cell_timeout` (from its "start" event) is cancelled with force, which kills its worker process; a task whose worker
dies fails the cell. A task whose cell asks to retire its worker cannot end that process from inside (Ray reuses
task workers): its drift baselines are dropped (run_cell does that), but a broken CUDA context stays with that Ray
worker process until Ray recycles it.

    run_local(cells, Store("results/x"), workers=2, on_event=print)
    run_ray(cells, Store("results/x"), workers=2, address=None, on_event=print)
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import deque
from typing import Any, Callable

from study.run.grid import Cell, label_key
from study.run.store import Store
from study.core.provenance import git_sha, package_versions
from study.run.cell import drift_key, run_cell
from study.core.errors import UserError

Event = tuple
ENV_PREFIXES = ("HF_", "TRANSFORMERS_", "RLHF_VS_STEERING", "XDG_CACHE_HOME", "TOKENIZERS_", "OMP_")
# OpenMP threads that spin while waiting stall badly when the cores are shared (other workers, other users): a cell
# of the organism took 30-50 s on 2 spinning threads against 5-7 s with passive waiting on a loaded 2-core machine
# (benchmarks/results/runner.json). Workers wait passively unless the user's environment says otherwise.
WORKER_ENV = {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    return max(1, cpu_count() // max(1, workers))


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


def _quiet() -> None:
    """No per-model 'Loading weights' bars from workers: the runner has its own display."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def failed_record(cell: Cell, error: str) -> dict[str, Any]:
    """A cell record for a failure outside run_cell (a worker that died, a Ray task that crashed)."""

    return {"run_id": cell.run_id, "status": "failed", "error": error, "config": cell.config,
            "provenance": {"git_sha": git_sha(), "versions": package_versions(), "status": "failed", "error": error,
                           "label_key": label_key(cell.config)},
            "rows": []}


# ---- local processes ---------------------------------------------------------------------------------------------
def _die_with_parent(parent: int) -> None:
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watchdog").start()
    if os.getppid() != parent:  # the parent died before the hook was set
        os._exit(1)


def _worker_main(conn: Any, threads: int, sys_path: list[str], store_root: str, parent: int) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the workers
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)  # before torch is imported
    os.environ.update(WORKER_ENV)
    _die_with_parent(parent)
    sys.path[:] = sys_path
    _set_threads(threads)
    _quiet()

    store = Store(store_root)
    while True:
        try:
            cell = conn.recv()
        except (EOFError, OSError):
            return
        if cell is None:
            return
        conn.send(("start", cell.run_id))
        result = run_cell(cell, progress=lambda s, rid=cell.run_id: conn.send(("stage", rid, s)),
                          work_dir=store.root / "work" / cell.run_id)
        store.write(result.record(), result.samples)
        if result.retire:  # said before "done", so the parent never hands this worker another cell
            conn.send(("retire", cell.run_id, result.retire))
        conn.send(("done", cell.run_id, result.status, result.error, result.provenance["durations"]["total"]))
        if result.retire:
            return


_EXITING: list = []  # finished workers still shutting down, reaped by the next run_local


class _Queue:
    """Pending cells in groups that share work within a process (study.run.cell.drift_key). A free worker continues
    its own group, else starts a group nobody has started, else helps with the largest group left."""

    def __init__(self, cells: list[Cell]):
        self.groups: dict[str, deque[Cell]] = {}
        for c in cells:
            self.groups.setdefault(drift_key(c), deque()).append(c)
        self.owner: dict[str, int] = {}

    def __bool__(self) -> bool:
        return any(self.groups.values())

    def put_back(self, cell: Cell) -> None:
        self.groups[drift_key(cell)].appendleft(cell)

    def take(self, worker: int) -> Cell:
        mine = [k for k, w in self.owner.items() if w == worker and self.groups[k]]
        free = [k for k, g in self.groups.items() if g and k not in self.owner]
        key = (mine or free or [max(self.groups, key=lambda k: len(self.groups[k]))])[0]
        self.owner.setdefault(key, worker)
        return self.groups[key].popleft()


class _Worker:
    def __init__(self, ctx: Any, threads: int, store: Store):
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        self.conn = parent_conn
        self.proc = ctx.Process(target=_worker_main, args=(child_conn, threads, list(sys.path), str(store.root),
                                                           os.getpid()), daemon=True, name="study-worker")
        self.proc.start()
        child_conn.close()
        self.cell: Cell | None = None
        self.handed = 0.0  # when the cell was handed over
        self.started: float | None = None  # when the worker began it (its "start" event)
        self.retiring = False

    def give(self, cell: Cell) -> bool:
        """Hand over a cell; False if the worker is gone (the cell was not handed over)."""
        try:
            self.conn.send(cell)
        except (OSError, ValueError):
            return False
        self.cell, self.handed, self.started = cell, time.perf_counter(), None
        return True

    def read(self, on_event: Callable[[Event], None]) -> bool:
        """Pass on the worker's pending events (until its cell is done); False if the worker is gone."""
        try:
            while self.cell is not None and self.conn.poll():
                msg = self.conn.recv()
                if msg[0] == "retire":
                    self.retiring = True
                    continue
                if msg[0] == "start":
                    self.started = time.perf_counter()
                on_event(msg)
                if msg[0] == "done":
                    self.cell = None
        except (EOFError, OSError):
            return False
        return True


def _died(proc: Any) -> str:
    code = proc.exitcode
    if code is not None and code < 0:
        try:
            how = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"killed by signal {-code}"
        how += " (out of memory?)" if code == -9 else ""
    else:
        how = f"exit code {code}"
    return f"WorkerDied: the worker process running this cell died ({how}); a new worker took its place"


def run_local(cells: list[Cell], store: Store, workers: int, on_event: Callable[[Event], None],
              threads: int | None = None, cell_timeout: float = 0.0) -> None:
    """Run `cells` in `workers` spawned processes (threads each: cores / workers unless given); a cell running longer
    than `cell_timeout` seconds (0: no limit) is stopped and stored as failed."""
    import multiprocessing as mp
    from multiprocessing.connection import wait

    if not cells:
        return
    ctx = mp.get_context("spawn")
    threads = threads or threads_per_worker(workers)
    pending = _Queue(cells)
    pool: list[_Worker] = []
    finished = False

    def feed(w: _Worker) -> None:
        cell = pending.take(id(w))
        if not w.give(cell):  # died between two cells: its replacement takes the cell
            pending.put_back(cell)
            replace(w, stop=True)

    def replace(w: _Worker, stop: bool) -> None:
        """Take `w` out of the pool (stopping its process now, or letting it exit) and start a fresh worker."""
        pool.remove(w)
        w.conn.close()
        if stop:
            w.proc.kill()
            w.proc.join()
        else:
            _EXITING.append(w.proc)
        if pending:
            pool.append(_Worker(ctx, threads, store))
            feed(pool[-1])

    def fail(w: _Worker, error: str) -> None:
        assert w.cell is not None
        store.write(failed_record(w.cell, error))
        on_event(("done", w.cell.run_id, "failed", error, time.perf_counter() - (w.started or w.handed)))
        w.cell = None

    for old in _EXITING[:]:  # reap the workers of an earlier run
        old.join(0.1)
        if not old.is_alive():
            _EXITING.remove(old)
    try:
        for _ in range(min(workers, len(cells))):
            pool.append(_Worker(ctx, threads, store))
            feed(pool[-1])
        while any(w.cell is not None for w in pool):
            busy = [w for w in pool if w.cell is not None]
            wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=0.25 if cell_timeout else 1.0)
            for w in busy:
                alive = w.read(on_event)
                if w.cell is None:  # done
                    if w.retiring:
                        replace(w, stop=False)
                    elif pending:
                        feed(w)
                elif not alive or not w.proc.is_alive():
                    w.proc.join(1.0)  # for its exit code
                    fail(w, _died(w.proc))
                    replace(w, stop=True)
                elif cell_timeout and w.started is not None and time.perf_counter() - w.started > cell_timeout:
                    w.proc.kill()
                    fail(w, f"CellTimeout: timed out after {cell_timeout:g} s (cell_timeout); its worker was "
                            f"stopped and a new worker took its place")
                    replace(w, stop=True)
        finished = True
    finally:
        for w in pool:
            try:
                w.conn.send(None)
            except (OSError, ValueError):
                pass
            if finished:  # every cell is stored: the workers exit on their own while the table is written
                _EXITING.append(w.proc)
            else:  # interrupted: stop them now (their cells are lost; nothing is half-written)
                w.proc.kill()
                w.proc.join()


# ---- Ray -----------------------------------------------------------------------------------------------------------
def _ray_cell(cell: Cell, threads: int, sys_path: list[str], env: dict[str, str], queue: Any) -> tuple[dict, list]:
    for p in reversed(sys_path):
        if p not in sys.path:
            sys.path.insert(0, p)
    os.environ.update(env)
    _set_threads(threads)
    _quiet()

    def say(*event: Any) -> None:
        try:
            queue.put_nowait(event)
        except Exception:  # the display is best effort; the result is what matters
            pass

    say("start", cell.run_id)
    result = run_cell(cell, progress=lambda s: say("stage", cell.run_id, s))
    return result.record(), result.samples


def run_ray(cells: list[Cell], store: Store, workers: int, on_event: Callable[[Event], None],
            address: str | None = None, threads: int | None = None, cell_timeout: float = 0.0) -> None:
    """Run `cells` as Ray tasks: on the cluster at `address`, or on a local Ray with `workers` concurrent cells; a
    task running longer than `cell_timeout` seconds (0: no limit) is cancelled and its cell stored as failed."""
    if not cells:
        return
    try:
        import ray
        from ray.util.queue import Empty, Queue
    except ImportError:

        raise UserError("--executor ray: ray is not installed (pip install 'rlhf-vs-steering[ray]')") from None
    threads = threads or (1 if address else threads_per_worker(workers))
    started_here = not ray.is_initialized()
    if started_here:
        kwargs: dict[str, Any] = {"address": address} if address else {"num_cpus": workers * threads,
                                                                           "include_dashboard": False}
        ray.init(log_to_driver=False, configure_logging=False, runtime_env={"env_vars": WORKER_ENV}, **kwargs)
    try:
        queue = Queue(actor_options={"num_cpus": 0})
        task = ray.remote(num_cpus=threads, max_retries=0)(_ray_cell)
        env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
        futures = {task.remote(c, threads, list(sys.path), env, queue): c for c in cells}
        began = {c.run_id: time.perf_counter() for c in cells}
        started: dict[str, float] = {}  # run_id -> when its task began (its "start" event)
        timed_out: set[str] = set()

        def drain() -> None:
            while True:
                try:
                    event = queue.get_nowait()
                except Empty:
                    return
                if event[0] == "start":
                    started[event[1]] = time.perf_counter()
                on_event(event)

        while futures:
            done, _ = ray.wait(list(futures), num_returns=len(futures), timeout=0.5)
            drain()
            for f, cell in list(futures.items()):
                t = started.get(cell.run_id)
                if cell_timeout and f not in done and t is not None and time.perf_counter() - t > cell_timeout \
                        and cell.run_id not in timed_out:
                    timed_out.add(cell.run_id)
                    ray.cancel(f, force=True)  # kills the task's worker process; Ray starts another
            for f in done:
                cell = futures.pop(f)
                try:
                    record, samples = ray.get(f)
                except Exception as exc:  # a crashed task or worker: the cell fails, the study goes on
                    text = " ".join(str(exc).split())
                    error = (f"CellTimeout: timed out after {cell_timeout:g} s (cell_timeout); its task was cancelled"
                             if cell.run_id in timed_out else f"RayTaskError: {text[:1000]}")
                    record, samples = failed_record(cell, error), None
                store.write(record, samples)
                seconds = (record.get("provenance") or {}).get("durations", {}).get("total",
                                                                                    time.perf_counter() - began[
                                                                                        cell.run_id])
                on_event(("done", cell.run_id, record["status"], record["error"], seconds))
        drain()
    finally:
        if started_here:
            ray.shutdown()

