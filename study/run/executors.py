"""Executors: run cells in local worker processes or as Ray tasks; both write through the same results store.

Both report what happens as events to one callback, for the progress display:

    ("start", run_id)                        a worker took the cell
    ("stage", run_id, text)                  the cell moved to a new stage ("fitting prompting", "evaluating: ...")
    ("done", run_id, status, error, seconds) the cell is stored, status "ok" or "failed"

**Local**: N worker processes (spawned, so no state leaks from the parent), each with 1/N of the CPU cores as torch
threads. The parent hands one cell at a time to each worker over its own pipe, so it always knows which cell a worker
holds: a worker that dies (out of memory, a segfault) has its cell stored as failed and is replaced. Workers store
each cell themselves the moment it is done, so killing the parent loses only the cells in flight; a worker whose parent
is gone exits at once (PR_SET_PDEATHSIG where Linux offers it, a watchdog thread everywhere).

**Ray**: each cell is a Ray task (`num_cpus` = torch threads per cell) on the cluster at `address`, or on a local Ray
instance started for the run. A task returns its record and samples and the driver writes them, so the workers need
no shared filesystem (but they do need the organism cache, which `ensure` fills on the driver's machine).

    run_local(cells, Store("results/x"), workers=2, on_event=print)
    run_ray(cells, Store("results/x"), workers=2, address=None, on_event=print)
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from typing import Any, Callable

from study.run.grid import Cell
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
            "provenance": {"git_sha": git_sha(), "versions": package_versions(), "status": "failed", "error": error},
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
        conn.send(("done", cell.run_id, result.status, result.error, result.provenance["durations"]["total"]))


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
        self.started = 0.0

    def give(self, cell: Cell) -> bool:
        """Hand over a cell; False if the worker is gone (the cell was not handed over)."""
        try:
            self.conn.send(cell)
        except (OSError, ValueError):
            return False
        self.cell, self.started = cell, time.perf_counter()
        return True


def run_local(cells: list[Cell], store: Store, workers: int, on_event: Callable[[Event], None],
              threads: int | None = None) -> None:
    """Run `cells` in `workers` spawned processes (threads each: cores / workers unless given)."""
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
            pool.remove(w)
            replacement = _Worker(ctx, threads, store)
            pool.append(replacement)
            feed(replacement)

    for old in _EXITING[:]:  # reap the workers of an earlier run
        old.join(0.1)
        if not old.is_alive():
            _EXITING.remove(old)
    try:
        for _ in range(min(workers, len(cells))):
            pool.append(_Worker(ctx, threads, store))
            feed(pool[-1])
        while any(w.cell is not None for w in pool):
            ready = wait([w.conn for w in pool if w.cell] + [w.proc.sentinel for w in pool if w.cell], timeout=1.0)
            for w in list(pool):
                if w.cell is None:
                    continue
                dead = False
                if w.conn in ready or w.proc.sentinel in ready:
                    try:
                        while w.conn.poll():
                            msg = w.conn.recv()
                            on_event(msg)
                            if msg[0] == "done":
                                w.cell = None
                                break
                    except (EOFError, OSError):
                        dead = True
                if w.cell is not None and (dead or not w.proc.is_alive()):
                    cell, code = w.cell, w.proc.exitcode
                    error = f"WorkerDied: the worker process running this cell exited (code {code})"
                    store.write(failed_record(cell, error))
                    on_event(("done", cell.run_id, "failed", error, time.perf_counter() - w.started))
                    pool.remove(w)
                    w.conn.close()
                    if pending:  # replace it
                        w = _Worker(ctx, threads, store)
                        pool.append(w)
                    else:
                        continue
                if w.cell is None and pending:
                    feed(w)
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
            address: str | None = None, threads: int | None = None) -> None:
    """Run `cells` as Ray tasks: on the cluster at `address`, or on a local Ray with `workers` concurrent cells."""
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

        def drain() -> None:
            while True:
                try:
                    on_event(queue.get_nowait())
                except Empty:
                    return

        while futures:
            done, _ = ray.wait(list(futures), num_returns=len(futures), timeout=0.5)
            drain()
            for f in done:
                cell = futures.pop(f)
                try:
                    record, samples = ray.get(f)
                except Exception as exc:  # a crashed task or worker: the cell fails, the study goes on
                    text = " ".join(str(exc).split())
                    record, samples = failed_record(cell, f"RayTaskError: {text[:1000]}"), None
                store.write(record, samples)
                seconds = (record.get("provenance") or {}).get("durations", {}).get("total",
                                                                                    time.perf_counter() - began[
                                                                                        cell.run_id])
                on_event(("done", cell.run_id, record["status"], record["error"], seconds))
        drain()
    finally:
        if started_here:
            ray.shutdown()

