"""Console output of a run: the live cell table with progress and ETA, and a progress bar for pretraining.

    with Display(todo, total=len(cells), done_before=0, concurrency=2, console=console) as display:
        run_local(todo, store, 2, display.event)
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from study.organism.pretrain import OrganismConfig, load_organism
from study.run.grid import Cell


def progress_bar(description: str, console: Console) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                    transient=False)


def pretrain_with_progress(cfg: OrganismConfig, cache_dir: str | None, console: Console) -> tuple[Any, Any]:
    """(model, tokenizer) of the organism, pretrained first (with a progress bar on a terminal) when not cached."""
    if not console.is_terminal:
        return load_organism(cfg, cache_dir)
    with progress_bar("pretraining organism", console) as bar:
        task = bar.add_task("pretraining organism", total=cfg.train.steps, info="")

        def update(step: int, total: int, loss: float | None) -> None:
            bar.update(task, completed=step, total=total, **({"info": f"loss {loss:.3f}"} if loss else {}))

        out = load_organism(cfg, cache_dir, progress=update)
        bar.update(task, completed=cfg.train.steps)
    return out


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Display:
    """Cells done/total, each running cell with its stage, elapsed time and an estimate of what is left.

    On a terminal a live panel; elsewhere (logs, CI, tests) one line per finished cell.
    """

    def __init__(self, cells: list[Cell], total: int, done_before: int, concurrency: int, console: Console):
        self.labels = {c.run_id: c.label for c in cells}
        self.total, self.done, self.concurrency = total, done_before, max(1, concurrency)
        self.todo = len(cells)
        self.finished = 0
        self.failed = 0
        self.durations: list[float] = []
        self.running: dict[str, list[Any]] = {}  # run_id -> [stage, started, node]
        self.console = console
        self.t0 = time.perf_counter()
        self.live = Live(get_renderable=self._render, console=console, refresh_per_second=4, transient=False) \
            if console.is_terminal else None

    def __enter__(self) -> "Display":
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def eta(self) -> float | None:
        if not self.durations:
            return None
        mean = sum(self.durations) / len(self.durations)
        now = time.perf_counter()
        waiting = self.todo - self.finished - len(self.running)
        in_flight = sum(max(0.0, mean - (now - r[1])) for r in self.running.values())
        return (waiting * mean + in_flight) / self.concurrency

    def event(self, ev: tuple) -> None:
        kind, run_id = ev[0], ev[1]
        if kind == "start":  # Ray says on which node
            self.running[run_id] = ["starting", time.perf_counter(), ev[2] if len(ev) > 2 and ev[2] else ""]
        elif kind == "stage":
            self.running.setdefault(run_id, ["", time.perf_counter(), ""])[0] = ev[2]
        elif kind == "done":
            status, error, seconds = ev[2], ev[3], ev[4]
            self.running.pop(run_id, None)
            self.finished += 1
            self.done += 1
            self.failed += status != "ok"
            self.durations.append(float(seconds))
            if self.live is None:
                width = len(str(self.total))
                line = (f"[{self.done:>{width}}/{self.total}] {status:<6} {run_id} {self.labels.get(run_id, '')} "
                        f"({seconds:.1f} s; elapsed {fmt_seconds(time.perf_counter() - self.t0)}, "
                        f"eta {fmt_seconds(self.eta())})")
                self.console.print(line + (f": {error}" if error else ""), highlight=False, soft_wrap=True)
            elif status != "ok":
                self.console.print(f"[red]failed[/red] {run_id} {self.labels.get(run_id, '')}: {error}",
                                   highlight=False, soft_wrap=True)

    def _render(self) -> Group:
        now = time.perf_counter()
        head = Table.grid(padding=(0, 1))
        head.add_row(Text("cells", style="bold"), ProgressBar(total=max(1, self.total), completed=self.done, width=40),
                     Text(f"{self.done}/{self.total}"), Text(f"elapsed {fmt_seconds(now - self.t0)}"),
                     Text(f"eta {fmt_seconds(self.eta())}"),
                     Text(f"{self.failed} failed" if self.failed else "", style="red"))
        body = Table.grid(padding=(0, 2))
        for run_id, (stage, started, node) in sorted(self.running.items(), key=lambda kv: kv[1][1]):
            body.add_row(Text(f"  {self.labels.get(run_id, run_id)}"), Text(stage, style="cyan"),
                         Text(fmt_seconds(now - started), style="dim"), Text(node, style="dim"))
        return Group(head, body)
