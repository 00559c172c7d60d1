"""Load the results store into one tidy table: one row per (cell, split, metric), ok cells only.

A cell file that is malformed, truncated or missing required fields is skipped and named, never fatal: a study that is
still running (or crashed half-way) must still report on what it has. Failed cells are listed apart. Where the store
has a `study.json` (the runner's index of the study's cells), only its cells are read: cells of an earlier config or
code in the same directory are counted in `others` and left out, so a report never mixes two versions of a study.

Besides the runner's row fields the table has `model_id`, the model's identity from the cell's config (organism key
without the pretraining draw, or Hugging Face path and revision), and `model` is made one-to-one with it, so that two
models that share a display name are never averaged together. Draws of one organism config share a `model_id` (they
are replicates of one model) and differ in `draw` (the pretraining seed; null, pandas <NA>, for a Hugging Face model).
`coverage` is "anticipation" for the grid's cells and "ceiling" for the cells whose feedback covered every context.

    results = read_results("results/default")   # .table, .skipped, .failed, .cells
    df = load_table("results/default")           # the table alone; skipped files are warned about
"""

from __future__ import annotations

import errno
import hashlib
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
    "draw": "int?",  # the organism's pretraining draw (train.seed); null for a Hugging Face model
    "budget": "int",
    "feedback_cost": "value",  # null where a runner could not count it (kept as NaN, never plotted)
    "labels_used": "int",
    "coverage": "coverage",  # "anticipation" (the grid's cells) or "ceiling" (feedback on every context)
    "anticipation": "float",
    "labeler_noise": "float",
    "labeler_misspec": "float",
    "seed": "int",
    "split": "str",
    "metric": "str",
    "value": "value",
    "n": "int",
}
COVERAGES = ("anticipation", "ceiling")
# Fields that rows of stores written before they existed lack; `_default` fills them in (see there).
OPTIONAL_FIELDS = ("draw", "coverage")
# The organism config field that makes one pretraining draw of an organism config differ from another.
DRAW_FIELD = ("train", "seed")
# Derived when reading, not written by the runner: the model's identity (see `model_identity`).
TABLE_COLUMNS = ["run_id", "model", "model_id"] + [k for k in ROW_FIELDS if k not in ("run_id", "model")]
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
    others: list[str] = field(default_factory=list)  # cell files that study.json does not list: not read

    def draws(self) -> pd.DataFrame:
        """model_id -> family, draw, sharing: which models are draws of one organism config (see `organism_draws`)."""
        return organism_draws({rid: c["config"] for rid, c in self.cells.items()})

    def models(self) -> list[dict[str, Any]]:
        """One entry per model identity: {"name" (the table's label), "id", "cells"}, in label order."""
        t = self.table
        if t.empty:
            return []
        per = t.groupby(["model_id", "model"], sort=True)["run_id"].nunique().reset_index()
        return [{"name": m, "id": i, "cells": int(n)} for i, m, n in
                sorted(per.itertuples(index=False), key=lambda r: (r[1], r[0]))]


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
    elif kind == "coverage":
        if value in COVERAGES:
            return value
    elif kind in ("int", "int?"):
        if value is None and kind == "int?":
            return None
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


def _default(name: str, config: dict[str, Any]) -> Any:
    """The value of optional row field `name` for a row written before the field existed. `coverage`: such stores
    ran anticipation cells only. `draw`: treated as 0, the one draw such a study ran, unless the cell's organism
    config names its pretraining seed (`train.seed`), which is what a draw is."""
    if name == "coverage":
        return "anticipation"
    model = config.get("model")
    org = model.get("organism") if isinstance(model, dict) else None
    train = org.get(DRAW_FIELD[0]) if isinstance(org, dict) else None
    seed = train.get(DRAW_FIELD[1]) if isinstance(train, dict) else None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else 0


def parse_cell(path: Path) -> dict[str, Any]:
    """Read and validate one cell file against the row contract; raise ValueError with a one-line reason.

    The store (study/run/store.py) counts a cell as stored only if this accepts it, so the table and the runner never
    disagree on which cells exist."""
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
        missing = [k for k in ROW_FIELDS if k not in row and k not in OPTIONAL_FIELDS]
        if missing:
            raise _Malformed(f"rows[{i}] lacks {', '.join(missing)} (partial cell?)")
        row = {k: _default(k, cell["config"]) for k in OPTIONAL_FIELDS if k not in row} | row
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


_parse_cell = parse_cell  # the old, private name


def _cells_dir(results_dir: str | Path) -> Path:
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such results directory (expected <results>/cells/<run_id>.json)")
    cells = root / "cells"
    # Accept the cells folder itself, so both `results/x` and `results/x/cells` work.
    return cells if cells.is_dir() else root


def empty_table() -> pd.DataFrame:
    kinds = {"str": str, "version": str, "coverage": str, "int": np.int64, "int?": "Int64", "float": np.float64,
             "value": np.float64}
    return pd.DataFrame({k: pd.Series([], dtype=kinds[ROW_FIELDS.get(k, "str")]) for k in TABLE_COLUMNS})


def model_identity(config: dict[str, Any], name: str) -> str:
    """What makes two cells' models the same model: the organism's key without its pretraining draw (`model_key`, the
    key of its config at train.seed 0, so that draws are replicates of one model), or the Hugging Face path (with its
    revision where one is given). Stores written before draws existed have no `model_key`: their organism key names
    the draw too (`organism_draws` pools such draws). A config whose `model` is a bare string (older or hand-written
    stores) is identified by it; with no model config at all, by the rows' display name."""
    model = config.get("model")
    if isinstance(model, dict):
        key = model.get("model_key") or model.get("organism_key")
        if isinstance(key, str) and key:
            return f"organism:{key}"
        path = model.get("path")
        if isinstance(path, str) and path:
            rev = model.get("revision")
            return f"{path}@{rev}" if isinstance(rev, str) and rev else path
        model = model.get("name")
    return model if isinstance(model, str) and model else name


def organism_draws(configs: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per model identity: `model_id`, `family` (what its draws share), `draw` and `sharing`.

    Organisms whose configs differ only in the pretraining seed (`organism.train.seed`) are draws of one family,
    `organism-draws:<hash of the rest>`, treated as a random effect; with one draw (or a model whose config does not
    say, or a Hugging Face model) the family is the model itself and its draw 0. `sharing` is the world's
    representation-sharing dial (`organism.world.sharing`), NaN where the config does not carry it.
    """
    rows: dict[str, dict[str, Any]] = {}
    for config in configs.values():
        model = config.get("model")
        mid = model_identity(config, str(model.get("name", "")) if isinstance(model, dict) else str(model))
        org = model.get("organism") if isinstance(model, dict) else None
        fam, draw, sharing = mid, 0, math.nan
        if isinstance(org, dict):
            rest = json.loads(json.dumps(org))
            seed = (rest.get(DRAW_FIELD[0]) or {}).pop(DRAW_FIELD[1], None) if isinstance(
                rest.get(DRAW_FIELD[0]), dict) else None
            if isinstance(seed, int) and not isinstance(seed, bool):
                digest = hashlib.sha1(json.dumps(rest, sort_keys=True).encode()).hexdigest()[:16]
                fam, draw = f"organism-draws:{digest}", seed
            world = org.get("world")
            share = world.get("sharing") if isinstance(world, dict) else None
            if isinstance(share, (int, float)) and not isinstance(share, bool):
                sharing = float(share)
        rows[mid] = {"model_id": mid, "family": fam, "draw": draw, "sharing": sharing}
    out = pd.DataFrame(list(rows.values()), columns=["model_id", "family", "draw", "sharing"])
    # A family of one model is that model: only several draws make a random effect.
    per = out.groupby("family")["model_id"].transform("nunique") if len(out) else out["family"]
    alone = per <= 1 if len(out) else per.astype(bool)
    out.loc[alone, "family"] = out.loc[alone, "model_id"]
    out.loc[alone, "draw"] = 0
    return out.sort_values("model_id").reset_index(drop=True)


def model_labels(table: pd.DataFrame) -> pd.Series:
    """A display name per row that is one-to-one with `model_id`: the rows' name, with the identity added only where
    two identities share a name (and names joined where one identity was run under several)."""
    names = table.groupby("model_id", sort=True)["model"].agg(lambda s: " / ".join(sorted(set(s))))
    shared = names.duplicated(keep=False)
    labels = names.where(~shared, names + " (" + names.index.to_series() + ")")
    return table["model_id"].map(labels)


def study_run_ids(cells_dir: Path) -> set[str] | None:
    """The run ids that the store's `study.json` lists, or None where it has none."""
    path = (cells_dir.parent if cells_dir.name == "cells" else cells_dir) / "study.json"
    if not path.is_file():
        return None
    try:
        ids = json.loads(path.read_text())["run_ids"]
        if not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
            raise ValueError("run_ids is not a list of strings")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a readable study index ({exc}); remove it to read every cell in "
                         f"{cells_dir}") from None
    return set(ids)


def read_results(results_dir: str | Path) -> Results:
    """Read the `cells/*.json` under `results_dir` (those study.json lists, where there is one): ok cells into the
    table, the rest into skipped/failed; files of other studies into `others`."""
    cells_dir = _cells_dir(results_dir)
    listed = study_run_ids(cells_dir)
    others: list[str] = []
    skipped: list[SkippedFile] = []
    failed: list[FailedCell] = []
    cells: dict[str, dict[str, Any]] = {}
    columns: dict[str, list[Any]] = {k: [] for k in TABLE_COLUMNS}
    # Sorted so the table (and everything downstream) does not depend on directory order; hidden files are the
    # runner's temporary names before its atomic rename.
    for path in sorted(p for p in cells_dir.glob("*.json") if not p.name.startswith(".")):
        if listed is not None and path.stem not in listed:
            others.append(path.name)
            continue
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
            columns["model_id"].append(model_identity(cell["config"], row["model"]))
    table = pd.DataFrame(columns) if cells else empty_table()
    if cells:
        table = table.astype({k: np.int64 if v == "int" else "Int64" for k, v in ROW_FIELDS.items()
                              if v in ("int", "int?")})
        # Never average across models: rows are grouped by identity, and the label says which model is which.
        table["model"] = model_labels(table)
    return Results(table=table, skipped=skipped, failed=failed, cells=cells, cells_dir=cells_dir, others=others)


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
    """Write durably to a temporary name beside `path`, then rename, so a crash never leaves a half-written file.

    The data is fsynced before the rename and the folder after it: without the first, a power loss can leave the new
    name pointing at an empty file; without the second, the rename itself may be lost. The file gets the user's
    umask (0o666 & ~umask), as `open` would give it. The temporary name `.<name>.<pid>@<host>.<hex>.tmp` says
    which process wrote it, so a cleaner can tell a dead writer's leftovers from a live one's (Store.clean_temporary).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    host = "".join(c if c.isalnum() or c == "-" else "-" for c in os.uname().nodename)[:40]
    tmp = path.parent / f".{path.name}.{os.getpid()}@{host}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(dir_fd)
    except OSError as exc:  # some file systems (a few network ones) cannot fsync a folder; the rename stands
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(dir_fd)
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
