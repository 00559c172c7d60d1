"""Load the results store into one tidy table: one row per (cell, split, metric), ok cells only.

A cell file that is malformed, truncated or missing required fields is skipped and named, never fatal: a study that is
still running (or crashed half-way) must still report on what it has. Failed cells are listed apart.

    results = read_results("results/default")   # .table, .skipped, .failed, .cells
    df = load_table("results/default")           # the table alone; skipped files are warned about
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# The row contract written by the runner: column -> kind. Order here is the table's column order.
ROW_FIELDS: dict[str, str] = {
    "run_id": "str",
    "model": "str",
    "method": "str",
    "target": "str",
    "target_version": "version",
    "budget": "int",
    "feedback_cost": "value",  # null where a runner could not count it (kept as NaN, never plotted)
    "labels_used": "int",
    "anticipation": "float",
    "labeler_noise": "float",
    "labeler_misspec": "float",
    "seed": "int",
    "split": "str",
    "metric": "str",
    "value": "value",
    "n": "int",
}
SPLITS = ("covered", "uncovered", "all", "neutral", "select")
BASE_METHOD = "none"


class CellFileWarning(UserWarning):
    """Some cell files could not be read and were skipped."""


@dataclass(frozen=True)
class SkippedFile:
    """A cell file left out of the table, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class FailedCell:
    """A cell whose run failed (status "failed"); its config says what it was."""

    run_id: str
    name: str
    error: str
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class Results:
    """Everything read from a results store: the tidy table of ok cells, plus what was left out."""

    table: pd.DataFrame
    skipped: list[SkippedFile]
    failed: list[FailedCell]
    cells: dict[str, dict[str, Any]]  # run_id -> {"config": ..., "provenance": ...} of ok cells
    cells_dir: Path


class _Malformed(ValueError):
    pass


def _check_value(kind: str, value: Any, name: str) -> Any:
    """Return `value` converted to the column's kind, or raise _Malformed naming the field."""
    if kind == "str":
        if isinstance(value, str) and value:
            return value
    elif kind == "version":  # runners may write a version as "1" or 1; the table keeps a string
        if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
            return str(value)
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif kind == "value":  # a metric may be undefined (e.g. no scorable sample): null or NaN, kept as NaN
        if value is None:
            return math.nan
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    shown = repr(value)
    raise _Malformed(f"field '{name}' = {shown[:60] + '...' if len(shown) > 60 else shown} is not a valid {kind}")


def _parse_cell(path: Path) -> dict[str, Any]:
    """Read and validate one cell file; raise _Malformed with a one-line reason."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _Malformed(f"unreadable ({exc.__class__.__name__})") from None
    try:
        cell = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Malformed(f"not valid JSON (truncated?) at line {exc.lineno}, column {exc.colno}") from None
    if not isinstance(cell, dict):
        raise _Malformed(f"expected a JSON object, got {type(cell).__name__}")
    for key in ("run_id", "status"):
        if not isinstance(cell.get(key), str) or not cell[key]:
            raise _Malformed(f"missing or invalid '{key}'")
    if cell["run_id"] != path.stem:
        raise _Malformed(f"run_id {cell['run_id']!r} does not match the file name")
    if cell["status"] == "failed":
        return cell
    if cell["status"] != "ok":
        raise _Malformed(f"status {cell['status']!r} is neither 'ok' nor 'failed'")
    for key in ("config", "provenance"):
        if not isinstance(cell.get(key), dict):
            raise _Malformed(f"missing or invalid '{key}' (expected an object)")
    rows = cell.get("rows")
    if not isinstance(rows, list) or not rows:
        raise _Malformed("missing or empty 'rows'")
    clean, seen = [], set()
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise _Malformed(f"rows[{i}] is not an object")
        missing = [k for k in ROW_FIELDS if k not in row]
        if missing:
            raise _Malformed(f"rows[{i}] lacks {', '.join(missing)} (partial cell?)")
        try:
            out = {k: _check_value(kind, row[k], k) for k, kind in ROW_FIELDS.items()}
        except _Malformed as exc:
            raise _Malformed(f"rows[{i}]: {exc}") from None
        if out["run_id"] != cell["run_id"]:
            raise _Malformed(f"rows[{i}] has run_id {out['run_id']!r}, not the cell's")
        key = (out["split"], out["metric"])
        if key in seen:  # two values for one (split, metric) cannot both be right
            raise _Malformed(f"rows[{i}] repeats split/metric {key}")
        seen.add(key)
        clean.append(out)
    cell["rows"] = clean
    return cell


def _cells_dir(results_dir: str | Path) -> Path:
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such results directory (expected <results>/cells/<run_id>.json)")
    cells = root / "cells"
    # Accept the cells folder itself, so both `results/x` and `results/x/cells` work.
    return cells if cells.is_dir() else root


def empty_table() -> pd.DataFrame:
    kinds = {"str": str, "version": str, "int": np.int64, "float": np.float64, "value": np.float64}
    return pd.DataFrame({k: pd.Series([], dtype=kinds[v]) for k, v in ROW_FIELDS.items()})


def read_results(results_dir: str | Path) -> Results:
    """Read every `cells/*.json` under `results_dir`: ok cells into the table, the rest into skipped/failed."""
    cells_dir = _cells_dir(results_dir)
    skipped: list[SkippedFile] = []
    failed: list[FailedCell] = []
    cells: dict[str, dict[str, Any]] = {}
    columns: dict[str, list[Any]] = {k: [] for k in ROW_FIELDS}
    # Sorted so the table (and everything downstream) does not depend on directory order; hidden files are the
    # runner's temporary names before its atomic rename.
    for path in sorted(p for p in cells_dir.glob("*.json") if not p.name.startswith(".")):
        try:
            cell = _parse_cell(path)
        except _Malformed as exc:
            skipped.append(SkippedFile(path.name, str(exc)))
            continue
        if cell["status"] == "failed":
            config = cell.get("config") if isinstance(cell.get("config"), dict) else {}
            failed.append(FailedCell(cell["run_id"], path.name, str(cell.get("error") or "no error recorded"), config))
            continue
        cells[cell["run_id"]] = {"config": cell["config"], "provenance": cell["provenance"]}
        for row in cell["rows"]:
            for k in ROW_FIELDS:
                columns[k].append(row[k])
    table = pd.DataFrame(columns) if cells else empty_table()
    if cells:
        table = table.astype({k: np.int64 for k, v in ROW_FIELDS.items() if v == "int"})
    return Results(table=table, skipped=skipped, failed=failed, cells=cells, cells_dir=cells_dir)


def load_table(results_dir: str | Path) -> pd.DataFrame:
    """The tidy table of ok cells; warns (CellFileWarning) naming every skipped file."""
    results = read_results(results_dir)
    if results.skipped:
        names = "; ".join(f"{s.name}: {s.reason}" for s in results.skipped)
        warnings.warn(f"skipped {len(results.skipped)} cell file(s): {names}", CellFileWarning, stacklevel=2)
    return results.table


def failed_cells(results_dir: str | Path) -> list[FailedCell]:
    """The cells whose run failed, with their error."""
    return read_results(results_dir).failed


def load_slopes(cells_dir: Path, run_ids: list[str]) -> pd.DataFrame:
    """Per-sample steering slopes (`{"kind": "slope", ...}` lines) from the JSONL beside the given cells.

    Missing files and malformed lines are ignored: the quantile rows in the table are the fallback.
    """
    out: dict[str, list[Any]] = {"run_id": [], "prompt_id": [], "context": [], "slope": []}
    for run_id in sorted(run_ids):
        path = cells_dir / f"{run_id}.samples.jsonl"
        if not path.is_file():
            continue
        with path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if '"slope"' not in line:  # cheap filter: most lines are completions, not slopes
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                slope = rec.get("slope") if isinstance(rec, dict) else None
                if rec.get("kind") != "slope" or not isinstance(slope, (int, float)) or not math.isfinite(slope):
                    continue
                out["run_id"].append(run_id)
                out["prompt_id"].append(str(rec.get("prompt_id", "")))
                out["context"].append(str(rec.get("context", "")))
                out["slope"].append(float(slope))
    return pd.DataFrame(out)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write to a temporary name beside `path`, then rename, so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def export_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    """Write the table to Parquet atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
