"""Executors: run cells in local worker processes (here) or on Ray (study.run.ray_executor); both store each cell
through the same results store.

Both report what happens as events to one callback, for the progress display:

    ("start", run_id[, node])                a worker took the cell (Ray adds its node's address)
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

**Ray**: study.run.ray_executor (long-lived actors on a cluster, retried on node loss) reports the same events.

    run_local(cells, Store("results/x"), workers=2, on_event=print)
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

Event = tuple
INFRASTRUCTURE = "InfrastructureError"  # the error prefix of failures caused by the cluster, not the cell
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


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


def quiet() -> None:
    """No per-model 'Loading weights' bars from workers: the runner has its own display."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def failed_record(cell: Cell, error: str, infrastructure: bool = False, extra: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """A cell record for a failure outside run_cell (a worker that died, a lost Ray node). An infrastructure failure
    (error "InfrastructureError: ...", provenance `failure: "infrastructure"`) says nothing about the method: the
    runner counts such a cell as missing and computes it again."""
    prov = {"git_sha": git_sha(), "versions": package_versions(), "status": "failed", "error": error,
            "label_key": label_key(cell.config), **(extra or {})}
    if infrastructure:
        prov["failure"] = "infrastructure"
    return {"run_id": cell.run_id, "status": "failed", "error": error, "config": cell.config, "provenance": prov,
            "rows": []}


def is_infrastructure_failure(record: dict[str, Any] | None) -> bool:
    """A stored failure caused by the cluster, not by the cell (see failed_record)."""
    if not record or record.get("status") != "failed":
        return False
    prov = record.get("provenance") or {}
    return prov.get("failure") == "infrastructure" or str(record.get("error") or "").startswith(INFRASTRUCTURE + ":")


# ---- local processes ---------------------------------------------------------------------------------------------
def die_with_parent(parent: int) -> None:
    """In a child process: exit at once when the process `parent` is gone (run as the child starts)."""
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
    die_with_parent(parent)
    sys.path[:] = sys_path
    set_threads(threads)
    quiet()

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


class CellQueue:
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
    pending = CellQueue(cells)
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
