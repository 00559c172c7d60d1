"""Drawing helpers shared by the figures in `analysis.figures`: facets, palette, the reproducible Agg figure, saving
a PNG with its CSV, the "no such split" panel.

    fig, axes = _figure(nrows=2, ncols=2)
    _save(fig, "reports/figures/x.png", "title", rows, columns)   # writes x.csv beside x.png
"""

from __future__ import annotations

import functools
import io
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import matplotlib

if "matplotlib.pyplot" not in sys.modules:  # headless by default; a notebook that already chose a backend keeps it
    matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis.table import BASE_METHOD, atomic_write_bytes  # noqa: E402


DPI = 100
PANEL_W, PANEL_H, LEGEND_W = 4.0, 3.0, 1.8
FIGURE_SPLITS = ("covered", "uncovered")
SPLIT_TITLES = {"covered": "covered contexts (ID)", "uncovered": "uncovered contexts (OOD)", "all": "all test contexts"}
DIAL_LABELS = {"anticipation": "anticipation", "labeler_noise": "labeler noise",
               "labeler_misspec": "labeler misspecification"}


def _palette(methods: list[str]) -> dict[str, tuple[float, float, float]]:
    """Colors keyed by method over the whole table, so a method has one color in every figure; the base is gray."""
    others = [m for m in methods if m != BASE_METHOD]
    colors = sns.color_palette("colorblind", max(len(others), 1))
    return {BASE_METHOD: (0.4, 0.4, 0.4)} | {m: colors[i % len(colors)] for i, m in enumerate(others)}


def _facets(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """One facet per (model, target); the model is named only when there are several."""
    several = frame["model"].nunique() > 1
    return [(f"{m} / {t}" if several else str(t), g) for (m, t), g in frame.groupby(["model", "target"], sort=True)]


def _same_facet(frame: pd.DataFrame, facet: pd.DataFrame) -> pd.DataFrame:
    """Rows of `frame` with the model and target of `facet`."""
    return frame[(frame["model"] == facet["model"].iloc[0]) & (frame["target"] == facet["target"].iloc[0])]


def _records(frame: pd.DataFrame, columns: list[str], **fixed: object) -> list[dict[str, object]]:
    """Rows of `frame` as CSV records: the `fixed` fields, and the rest of `columns` from `frame`."""
    return [fixed | r for r in frame[[c for c in columns if c not in fixed]].to_dict("records")]


def _styled(fn: Callable[..., Path | None]) -> Callable[..., Path | None]:
    """Draw inside one seaborn style/context (read when axes and text are created), without touching global rc."""
    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> Path | None:
        with sns.axes_style("whitegrid"), sns.plotting_context("paper"):
            return fn(*args, **kwargs)
    return wrapper


def _figure(nrows: int, ncols: int) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(PANEL_W * ncols + LEGEND_W, PANEL_H * nrows), dpi=DPI)
    FigureCanvasAgg(fig)  # always the Agg renderer (whatever pyplot's backend), so the bytes are reproducible
    axes = fig.subplots(nrows, ncols, squeeze=False)
    width, height = PANEL_W * ncols + LEGEND_W, PANEL_H * nrows
    fig.subplots_adjust(left=0.9 / width, right=1 - LEGEND_W / width, top=1 - 0.8 / height, bottom=0.75 / height,
                        wspace=0.35, hspace=0.6)
    return fig, axes


def data_path(path: str | Path) -> Path:
    """Where the CSV of the figure at `path` goes: beside it, same stem."""
    return Path(path).with_suffix(".csv")


def _save(fig: Figure, path: str | Path, title: str, data: list[dict[str, object]], columns: list[str]) -> Path:
    """Write the plotted rows as CSV, then the PNG. Floats to 10 significant digits, so the bytes do not hang on the
    last bit of a bootstrap mean; `inf` means never reached, an empty field undefined."""
    frame = pd.DataFrame(data, columns=columns)
    text = frame.to_csv(index=False, lineterminator="\n", float_format="%.10g")
    atomic_write_bytes(data_path(path), text.encode())
    fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 12)), fontsize=10)
    handles: dict[str, object] = {}
    for ax in fig.axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        fig.legend(list(handles.values()), list(handles.keys()), loc="center right", fontsize=8, frameon=False)
    buf = io.BytesIO()
    # No Software/creation metadata: two renders of the same table must be the same bytes.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return atomic_write_bytes(path, buf.getvalue())


def _skip(notes: list[str] | None, name: str, reason: str) -> None:
    if notes is not None:
        notes.append(f"{name}: not drawn ({reason})")
    return None


def _band(ax: Axes, d: pd.DataFrame, x: str, color: object, label: str, dashed: bool = False) -> None:
    d = d.sort_values(x)
    ax.plot(d[x], d["mean"], marker="o", ms=3, lw=1.4, color=color, label=label, ls="--" if dashed else "-")
    ax.fill_between(d[x], d["ci_lo"], d["ci_hi"], color=color, alpha=0.18, lw=0)


def _cost_ticks(costs: list[float], most: int = 8) -> list[float]:
    """At most `most` of the costs, spread evenly (always the smallest and the largest)."""
    if len(costs) <= most:
        return costs
    idx = np.unique(np.round(np.linspace(0, len(costs) - 1, most)).astype(int))
    return [costs[i] for i in idx]


def _largest_budget(frame: pd.DataFrame) -> pd.DataFrame:
    """Each method's rows at its largest budget (the base model has one budget anyway)."""
    top = frame.groupby("method")["budget"].transform("max")
    return frame[frame["budget"] == top]


def _ref_text(ref: dict[str, float], skip: str | None = None) -> str:
    return ", ".join(f"{DIAL_LABELS[k]} {v:g}" for k, v in ref.items() if k != skip)


NO_SPLIT = {"uncovered": "no uncovered split:\nevery record is in one context,\nso anticipation has no effect",
            "covered": "no covered split"}


def _no_split(ax: Axes, split: str) -> None:
    """A panel whose facet has no rows in `split` (a target without contexts has no uncovered split): say so rather
    than draw empty axes."""
    ax.set_axis_off()
    ax.text(0.5, 0.5, NO_SPLIT.get(split, f"no {split} split"), ha="center", va="center", fontsize=8,
            color=(0.3, 0.3, 0.3), transform=ax.transAxes)
