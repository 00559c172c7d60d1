"""What the steering search picked: the layer set, read position, window and strength each steering cell chose.

CAA found mid layers best on 7B models; on a 30-layer model the question is whether the search goes there. Read from
each cell's `provenance.chosen` (no model is run): per model, target and steering method at the reference condition,
how often each layer set was chosen, the most frequent position and window, and the median strength.

    rows = steering_choices(results.cells, ref)
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

REF_KEYS = {"anticipation": ("anticipation",), "labeler_noise": ("labeler", "noise"),
            "labeler_misspec": ("labeler", "misspec")}


def _at(config: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        config = (config or {}).get(key)  # type: ignore[assignment]
    return config


def steering_choices(cells: dict[str, dict[str, Any]], ref: dict[str, float]) -> list[dict[str, Any]]:
    """One row per (model, target, method) whose cells chose layers: counts of layer sets, the commonest position and
    window, the median strength, and how many cells chose no steering at all (the base model stood)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for cell in cells.values():
        cfg, chosen = cell.get("config") or {}, (cell.get("provenance") or {}).get("chosen")
        if not isinstance(chosen, dict) or "layers" not in chosen:
            continue
        if cfg.get("coverage", "anticipation") != "anticipation":  # ceiling cells are not a condition
            continue
        if any(dial in ref and _at(cfg, path) != ref[dial] for dial, path in REF_KEYS.items()):
            continue
        model = (cfg.get("model") or {}).get("name", "?")
        groups.setdefault((model, (cfg.get("target") or {}).get("name", "?"), cfg["method"]["name"]), []).append(chosen)
    rows = []
    for (model, target, method), chosen in sorted(groups.items()):
        steered = [c for c in chosen if c.get("layers")]
        windows = Counter("all" if c.get("window") is None else str(c["window"]) for c in steered)
        layers = Counter("+".join(map(str, c["layers"])) for c in steered)
        rows.append({"model": model, "target": target, "method": method, "cells": len(chosen),
                     "base_stood": len(chosen) - len(steered), "layers": dict(layers.most_common()),
                     "position": Counter(str(c.get("position")) for c in steered).most_common(1)[0][0]
                     if steered else None,
                     "window": windows.most_common(1)[0][0] if steered else None,
                     "strength_median": statistics.median(float(c.get("strength") or 0.0) for c in steered)
                     if steered else None})
    return rows


def choice_lines(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    lines = ["## What the steering search chose", "",
             "Per steering method, the layer sets its cells chose at the reference condition (count of cells), the "
             "commonest read position and window, and the median strength (x the layer's residual norm; x the vector "
             "for a learned one). \"base\" counts cells where no candidate beat the base model.", "",
             "| model | target | method | layers chosen | position | window | median strength | base |",
             "| --- " * 8 + "|"]
    for r in rows:
        layers = ", ".join(f"{k} ({v})" for k, v in r["layers"].items()) or "-"
        strength = "-" if r["strength_median"] is None else f"{r['strength_median']:.3g}"
        lines.append(f"| {r['model']} | {r['target']} | {r['method']} | {layers} | {r['position'] or '-'} | "
                     f"{r['window'] or '-'} | {strength} | {r['base_stood']} |")
    return lines + [""]
