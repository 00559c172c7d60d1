"""The results store: one JSON file per cell, per-sample JSONL beside it, and one tidy table over all of them.

    <results>/cells/<run_id>.json            {"run_id", "status": "ok" | "failed", "error", "config", "provenance",
                                              "rows": [tidy rows, see analysis/table.py ROW_FIELDS]}
    <results>/cells/<run_id>.samples.jsonl   one JSON object per completion or per-sample measurement
    <results>/table.parquet                  the tidy table of the study's ok cells, rewritten after every run
    <results>/study.json                     the study's config and the ids of its cells

Every file is written under a temporary dot-name beside its final name and renamed (`os.replace`), the samples first
and the cell file last: a cell file exists only once its samples do, and a crash at any moment leaves either the old
state or the new one, never a partial file that a reader would take (readers skip dot-names).

    store = Store("results/micro")
    store.status()                 # {run_id: "ok" | "failed"} of the cells stored so far
    df = store.table()             # one row per (cell, split, metric)
    store.export_parquet()         # results/micro/table.parquet
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from study.core.errors import UserError
from analysis.table import atomic_write_bytes, empty_table, export_parquet, read_results

STALE_TEMP_SECONDS = 60  # a temporary file this old belongs to a writer that died (writes take milliseconds)


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


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.cells = self.root / "cells"

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    def ensure_writable(self) -> None:
        """Create the store's folders and prove a file can be written there; a one-line UserError otherwise."""
        try:
            self.cells.mkdir(parents=True, exist_ok=True)
            probe = self.cells / f".probe-{os.getpid()}.tmp"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise UserError(f"results directory {self.root}: not writable ({exc.strerror or exc})") from None

    def clean_temporary(self) -> int:
        """Remove temporary files left by writers that were killed; returns how many."""
        if not self.cells.is_dir():
            return 0
        n, now = 0, time.time()
        for p in self.cells.glob(".*.tmp"):
            try:
                if now - p.stat().st_mtime > STALE_TEMP_SECONDS:
                    p.unlink()
                    n += 1
            except OSError:
                pass
        return n

    def status(self) -> dict[str, str]:
        """{run_id: "ok" | "failed"} of every readable cell file. An unreadable one counts as absent (recomputed)."""
        out: dict[str, str] = {}
        if not self.cells.is_dir():
            return out
        for p in self.cells.glob("*.json"):
            if p.name.startswith("."):
                continue
            try:
                cell = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(cell, dict) and cell.get("run_id") == p.stem and cell.get("status") in ("ok", "failed"):
                out[p.stem] = cell["status"]
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
        return export_parquet(self.table(run_ids), path or self.root / "table.parquet")

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
