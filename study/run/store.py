"""The results store: one JSON file per cell, per-sample JSONL beside it, and one tidy table over all of them.

    <results>/cells/<run_id>.json            {"run_id", "status": "ok" | "failed", "error", "config", "provenance",
                                              "rows": [tidy rows, see analysis/table.py ROW_FIELDS],
                                              "contexts": {context: {metric: [value, n]}} or null}
    <results>/cells/<run_id>.samples.jsonl   one JSON object per completion or per-sample measurement
    <results>/table.parquet                  the tidy table of the study's ok cells, rewritten after every run
    <results>/study.json                     the study's config and the ids of its cells

Every file is written under a temporary dot-name beside its final name, fsynced and renamed (`os.replace`), and the
folder fsynced, the samples first and the cell file last: a cell file exists only once its samples do, and a crash or
a power loss at any moment leaves either the old state or the new one, never a partial file that a reader would take
(readers skip dot-names). A cell counts as stored only if it passes the table's contract (analysis.table.parse_cell)
and, when ok, its samples file is there; anything else is recomputed. One run at a time holds `<results>/.lock`.

    store = Store("results/micro")
    with store.lock():             # UserError (exit 2) if another study run holds this folder
        store.write(record, samples)
    store.status()                 # {run_id: "ok" | "failed"} of the cells stored so far
    df = store.table()             # one row per (cell, split, metric)
    store.export_parquet()         # results/micro/table.parquet
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import math
import os
import re
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from study.core.errors import UserError
from analysis.table import CellFileWarning, atomic_write_bytes, empty_table, parse_cell, read_results

STALE_TEMP_SECONDS = 60  # a temporary file this old belongs to a writer that died (writes take milliseconds)
# atomic_write_bytes's temporary names: .<name>.<pid>@<host>.<hex>.tmp (older ones lack the writer and age out)
_TEMP_WRITER = re.compile(r"\.(\d+)@([A-Za-z0-9-]*)\.[0-9a-f]+\.tmp$")


def clean_json(x: Any) -> Any:
    """JSON-ready: NaN/inf to None, tuples to lists, numpy/torch scalars to Python, anything else to its str."""
    if isinstance(x, dict):
        return {str(k): clean_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean_json(v) for v in x]
    if isinstance(x, bool) or x is None or isinstance(x, (int, str)):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    item = getattr(x, "item", None)  # numpy / torch scalars
    if callable(item) and getattr(x, "ndim", 0) == 0:
        return clean_json(item())
    tolist = getattr(x, "tolist", None)
    if callable(tolist):
        return clean_json(tolist())
    return str(x)


def _atomic_write(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data)


def _host() -> str:
    """This machine's name as atomic_write_bytes puts it in a temporary name."""
    return "".join(c if c.isalnum() or c == "-" else "-" for c in os.uname().nodename)[:40]


def _alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a writer's pid; leave the file to the age rule
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _stale(p: Path, now: float, host: str) -> bool:
    """A temporary file whose writer is gone: older than STALE_TEMP_SECONDS, or written here by a dead process."""
    if now - p.stat().st_mtime > STALE_TEMP_SECONDS:
        return True
    m = _TEMP_WRITER.search(p.name)
    return m is not None and m.group(2) == host and not _alive(int(m.group(1)))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:  # as in atomic_write_bytes: some file systems cannot fsync a folder
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.cells = self.root / "cells"

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    def ensure_writable(self) -> None:
        """Create the store's folders and prove a file can be written there; a one-line UserError otherwise."""
        try:
            if not self.cells.is_dir():
                self.cells.mkdir(parents=True, exist_ok=True)
                _fsync_dir(self.root)  # so the new folder survives a power loss along with the files put in it
            probe = self.cells / f".probe.{os.getpid()}@{_host()}.{os.urandom(4).hex()}.tmp"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise UserError(f"results directory {self.root}: not writable ({exc.strerror or exc})") from None

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold `<results>/.lock` (fcntl.flock) for the block: one study run per results folder at a time.

        A second holder fails at once with a one-line UserError (exit code 2) naming the holder's pid. The kernel drops
        the lock when the holder exits, however it exits, so a killed run never leaves the folder locked; the file
        itself stays (deleting it would let two runs lock two different files)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise UserError(f"results directory {self.root}: not writable ({exc.strerror or exc})") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
                pid = holder[0] if holder else "unknown"
                where = f" on {holder[1]}" if len(holder) > 1 and holder[1] != _host() else ""
                raise UserError(f"{self.root} is in use by another study run (pid {pid}{where}); wait for it or use "
                                f"another --results") from None
            except OSError as exc:  # e.g. ENOLCK: a network file system without locks; run, but unguarded
                warnings.warn(f"{self.root / '.lock'}: cannot lock ({exc.strerror or exc}); nothing stops a second "
                              f"study run from writing to {self.root} at the same time", RuntimeWarning, stacklevel=3)
            else:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {_host()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock

    def clean_temporary(self) -> int:
        """Remove temporary files (in the results folder and cells/) left by writers that died; returns how many."""
        n, now, host = 0, time.time(), _host()
        for folder in (self.root, self.cells):
            if not folder.is_dir():
                continue
            for p in folder.glob(".*.tmp"):
                try:
                    if _stale(p, now, host):
                        p.unlink()
                        n += 1
                except OSError:  # gone already (its writer finished) or not ours to remove
                    pass
        return n

    def status(self) -> dict[str, str]:
        """{run_id: "ok" | "failed"} of every valid cell file.

        Valid means what the table accepts (analysis.table.parse_cell), plus, for an ok cell, its samples file: a cell
        that fails either counts as absent, so the runner recomputes it, and a CellFileWarning names the file and why.
        """
        out: dict[str, str] = {}
        if not self.cells.is_dir():
            return out
        bad: list[str] = []
        for p in sorted(self.cells.glob("*.json")):
            if p.name.startswith("."):
                continue
            try:
                cell = parse_cell(p)
            except ValueError as exc:
                bad.append(f"{p}: {exc}")
                continue
            if cell["status"] == "ok" and not (self.cells / f"{p.stem}.samples.jsonl").is_file():
                bad.append(f"{p}: its samples file {p.stem}.samples.jsonl is missing")
                continue
            out[p.stem] = cell["status"]
        if bad:
            warnings.warn(f"{len(bad)} stored cell(s) count as missing and will be recomputed: " + "; ".join(bad),
                          CellFileWarning, stacklevel=2)
        return out

    def read(self, run_id: str) -> dict[str, Any] | None:
        p = self.cells / f"{run_id}.json"
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None

    def write(self, record: dict[str, Any], samples: list[dict[str, Any]] | None = None) -> Path:
        """Store one cell: its samples (if any), then its record; both atomically."""
        run_id = record["run_id"]
        self.cells.mkdir(parents=True, exist_ok=True)
        if samples is not None:
            lines = "".join(json.dumps(clean_json(s), sort_keys=True, allow_nan=False) + "\n" for s in samples)
            _atomic_write(self.cells / f"{run_id}.samples.jsonl", lines.encode())
        path = self.cells / f"{run_id}.json"
        _atomic_write(path, (json.dumps(clean_json(record), sort_keys=True, indent=1, allow_nan=False) + "\n").encode())
        return path

    def table(self, run_ids: set[str] | None = None):
        """The tidy table of the ok cells (pandas), sorted by run_id, split and metric; only `run_ids` if given."""

        if not self.cells.is_dir():
            return empty_table()
        df = read_results(self.root).table
        if run_ids is not None:
            df = df[df["run_id"].isin(run_ids)]
        return df.sort_values(["run_id", "split", "metric"], kind="stable").reset_index(drop=True)

    def export_parquet(self, path: str | Path | None = None, run_ids: set[str] | None = None) -> Path:
        """The table as Parquet, written like every other store file (fsynced, renamed, with the user's umask)."""
        buf = io.BytesIO()
        self.table(run_ids).to_parquet(buf, index=False)
        return atomic_write_bytes(path or self.root / "table.parquet", buf.getvalue())

    def write_index(self, name: str, config: dict[str, Any], run_ids: list[str]) -> Path:
        """`<results>/study.json`: the study's config and its cells' ids. A results directory may also hold cells of
        earlier versions of a study (another organism, other seeds); this says which ones the current study has."""
        blob = {"name": name, "config": clean_json(config), "run_ids": sorted(run_ids)}
        path = self.root / "study.json"
        _atomic_write(path, (json.dumps(blob, sort_keys=True, indent=1) + "\n").encode())
        return path


def load_results(results_dir: str | Path):
    """The tidy results table of a store (see Store.table)."""
    return Store(results_dir).table()
