"""The `study` command line: thin Typer commands over plain functions.

    study organism --config micro --json
    study run study/configs/default.yaml --set seeds=[0,1]
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from study.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="rlhf-vs-steering: how much human feedback each alignment method needs, and how far it "
                       "generalizes.")
err = Console(stderr=True)


@app.callback()
def _root() -> None:
    """rlhf-vs-steering: how much human feedback each alignment method needs, and how far it generalizes."""

ConfigOpt = Annotated[Optional[str], typer.Option("--config", "-c", help="A YAML file or a name under "
                                                                           "study/configs/ (e.g. default, micro).")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config field: key=value "
                                                                    "(repeatable), e.g. organism.world.sharing=0.6")]


@contextmanager
def user_errors():
    """Bad input: one line on stderr, exit code 2, no traceback."""
    try:
        yield
    except UserError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def progress_bar(description: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=err,
                    transient=False)


def build_organism(cfg, cache_dir: str | None, quiet: bool = False):
    """Load the organism from the cache, pretraining it with a progress bar when it is not there yet."""
    from study.organism.pretrain import load_organism, organism_info

    if organism_info(cfg, cache_dir) is not None or quiet:
        return load_organism(cfg, cache_dir)
    with progress_bar("pretraining organism") as bar:
        task = bar.add_task("pretraining organism", total=cfg.train.steps, info="")

        def update(step: int, total: int, loss: float | None) -> None:
            bar.update(task, completed=step, total=total, **({"info": f"loss {loss:.3f}"} if loss else {}))

        out = load_organism(cfg, cache_dir, progress=update)
        bar.update(task, completed=cfg.train.steps)
    return out


@app.command()
def organism(config: ConfigOpt = None, set_: SetOpt = None,
             as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
             cache_dir: Annotated[Optional[str], typer.Option(help="Organism cache directory.")] = None,
             samples: Annotated[int, typer.Option(help="Unconditional samples for the fluency figure.")] = 200,
             prompts: Annotated[int, typer.Option(help="Prompts per behavior and context for base rates.")] = 48):
    """Build (or load from the cache) the model organism and print its summary."""
    with user_errors():
        from study.schema import load_study

        if samples < 1 or prompts < 1:
            raise UserError(f"--samples {samples} / --prompts {prompts}: must be positive")
        cfg = load_study(config, set_ or [])
        cache = cache_dir or cfg.cache_dir
        t0 = time.perf_counter()
        model, tokenizer = build_organism(cfg.organism, cache, quiet=as_json)
        load_seconds = time.perf_counter() - t0
        from study.organism.pretrain import organism_info
        from study.organism.summary import summarize
        from study.organism.world import World

        info = organism_info(cfg.organism, cache)
        summary = summarize(model, tokenizer, World(cfg.organism.world), n_samples=samples,
                            prompts_per_context=prompts)
        out = {"key": info["key"], "params": info["params"], "pretrain_seconds": info["pretrain_seconds"],
               "load_seconds": round(load_seconds, 2), "heldout_loss": info["heldout_loss"],
               "entropy_floor": info["entropy_floor"], "gap": info["gap"], "sharing": cfg.organism.world.sharing,
               **summary}
        if as_json:
            typer.echo(json.dumps(out, sort_keys=True))
            return
        _print_organism(out)


def _print_organism(out: dict) -> None:
    from rich.table import Table

    con = Console()
    con.print(f"[bold]organism {out['key']}[/bold]: {out['params']:,} parameters, pretrained in "
              f"{out['pretrain_seconds']:.0f} s (loaded in {out['load_seconds']:.1f} s), sharing dial "
              f"{out['sharing']}")
    con.print(f"held-out loss {out['heldout_loss']:.4f} nats/token vs entropy floor {out['entropy_floor']:.4f} "
              f"(gap {out['gap']:.4f}); fluency {out['fluency']:.1%} of samples, "
              f"{out['completion_fluency']:.1%} of completions")
    table = Table(title="base rate of the desired pole per context")
    table.add_column("context")
    behaviors = list(out["base_rates"])
    for b in behaviors:
        table.add_column(b, justify="right")
    for c in next(iter(out["base_rates"].values())):
        table.add_row(c, *[f"{out['base_rates'][b][c]:.2f}" if out["base_rates"][b][c] is not None else "-"
                           for b in behaviors])
    con.print(table)
    for s in out["samples"][:4]:
        con.print(f"  [dim]{s}[/dim]", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
