"""The `study` command line: thin Typer commands over plain functions.

    study organism --config micro --json
    study run study/configs/default.yaml --set seeds=[0,1]
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from rich.markup import escape
from rich.table import Table

from study.core.errors import UserError
from study.organism.pretrain import load_organism, organism_info
from study.organism.summary import summarize
from study.organism.world import World
from study.run.display import pretrain_with_progress
from study.run.evaluate import evaluate_model
from study.run.cell import PROFILE_ENV
from study.run.runner import describe_methods, describe_targets, run_study
from study.run.study_config import load_study

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
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def build_organism(cfg, cache_dir: str | None, quiet: bool = False):
    """Load the organism from the cache, pretraining it with a progress bar when it is not there yet."""
    if organism_info(cfg, cache_dir) is not None or quiet:
        return load_organism(cfg, cache_dir)
    return pretrain_with_progress(cfg, cache_dir, err)


@app.command()
def organism(config: ConfigOpt = None, set_: SetOpt = None,
             as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
             cache_dir: Annotated[Optional[str], typer.Option(help="Organism cache directory.")] = None,
             samples: Annotated[int, typer.Option(help="Unconditional samples for the fluency figure.")] = 200,
             prompts: Annotated[int, typer.Option(help="Prompts per behavior and context for base rates.")] = 48):
    """Build (or load from the cache) the model organism and print its summary."""
    with user_errors():
        if samples < 1 or prompts < 1:
            raise UserError(f"--samples {samples} / --prompts {prompts}: must be positive")
        cfg = load_study(config, set_ or [])
        cache = cache_dir or cfg.cache_dir
        t0 = time.perf_counter()
        model, tokenizer = build_organism(cfg.organism, cache, quiet=as_json)
        load_seconds = time.perf_counter() - t0

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


# ---- study evaluate -------------------------------------------------------------------------------------------------
@app.command("evaluate")
def evaluate_cmd(model: Annotated[str, typer.Option(help="'organism' (from --config), a Hugging Face name or a "
                                                         "local folder.")] = "organism",
                 target: Annotated[Optional[list[str]], typer.Option(
                     "--target", "-t", help="sentiment, sycophancy, refusal, or an A/B / preference / open-ended "
                                            "(question only, with --scorer) JSON(L) file or datasets folder, or "
                                            "'name=N;train=A.json;test=B.json' (repeatable; default: the organism's "
                                            "three). Files with the same name are told apart as folder/name.")
                 ] = None,
                 config: ConfigOpt = None, set_: SetOpt = None,
                 as_json: Annotated[bool, typer.Option("--json", help="Print {target: {split: {metric: value}}}.")]
                 = False,
                 anticipation: Annotated[float, typer.Option(help="Share of contexts counted as covered.")] = 0.5,
                 completions: Annotated[int, typer.Option(help="Completions per test prompt.")] = 4,
                 prompts: Annotated[int, typer.Option(help="Test prompts per split.")] = 200,
                 temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 1.0,
                 seed: Annotated[int, typer.Option(help="Seed of the splits and the sampling.")] = 0,
                 scorer: Annotated[Optional[str], typer.Option(help="Scorer for open-ended completions of external "
                                                                    "targets: module:function or a reward-model "
                                                                    "folder.")] = None,
                 device: Annotated[Optional[str], typer.Option(help="cpu, cuda, ... (default: cuda if "
                                                                    "available).")] = None,
                 cache_dir: Annotated[Optional[str], typer.Option(help="Organism cache directory.")] = None):
    """Evaluate a model with no intervention on every split: where it starts, before any feedback."""
    with user_errors():
        if completions < 1 or prompts < 1:
            raise UserError(f"--completions {completions} / --prompts {prompts}: must be positive")
        out = evaluate_model(model, list(target or []), config=config, overrides=set_ or [], anticipation=anticipation,
                             n_completions=completions, n_test=prompts, temperature=temperature, seed=seed,
                             scorer=scorer, device=device, cache_dir=cache_dir, quiet=as_json,
                             load_organism=build_organism)
        if as_json:
            typer.echo(json.dumps(out, sort_keys=True))
            return
        _print_evaluation(out)


def _print_evaluation(out: dict) -> None:
    con = Console()
    for name, splits in out.items():
        table = Table(title=f"{name}: base model, no intervention")
        table.add_column("metric")
        for split in splits:
            table.add_column(split, justify="right")
        for m in dict.fromkeys(m for values in splits.values() for m in values):
            cells = []
            for values in splits.values():
                v = values.get(m, "")
                cells.append("-" if v is None else v if v == "" else str(v) if m == "records" else f"{v:.3f}")
            table.add_row(m, *cells)
        con.print(table)


# ---- study run / list / report ------------------------------------------------------------------------------------
@app.command()
def run(config: Annotated[Optional[str], typer.Argument(help="A YAML file or a name under study/configs/ "
                                                             "(default: default).")] = None,
        set_: SetOpt = None,
        executor: Annotated[str, typer.Option(help="local (worker processes) or ray.")] = "local",
        workers: Annotated[Optional[int], typer.Option(help="Cells at a time (default: the config's `workers`; "
                                                             "0 there: one per core for organism studies).")] = None,
        address: Annotated[Optional[str], typer.Option(help="Ray cluster address (default: a local Ray).")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="List the cells, marking the stored ones; "
                                                                "run nothing.")] = False,
        results: Annotated[Optional[str], typer.Option(help="Results directory (default: the config's "
                                                            "results_dir).")] = None,
        retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Run the cells stored as failed "
                                                                          "again.")] = False,
        profile: Annotated[bool, typer.Option("--profile", help="Store each cell's phase timings (load, splits, "
                                                                "labels, training, generation, scoring, KL, drift) "
                                                                "in its provenance.")] = False):
    """Run a study: every cell of the grid not stored yet. Interrupted runs resume where they stopped."""
    if profile:  # read by run_cell in each worker (spawned workers and Ray tasks inherit it)
        os.environ[PROFILE_ENV] = "1"
    with user_errors():
        try:
            summary = run_study(config, set_ or [], executor=executor, workers=workers, address=address,
                                dry_run=dry_run, results=results, retry_failed=retry_failed, console=err)
        except KeyboardInterrupt:
            err.print("interrupted: finished cells are stored; run the same command again to resume", highlight=False)
            raise typer.Exit(130) from None
    raise typer.Exit(summary.exit_code)


@app.command("list")
def list_(what: Annotated[str, typer.Argument(help="methods or targets")]):
    """List the registered methods (with their config fields) or the built-in targets."""
    with user_errors():
        if what not in ("methods", "targets"):
            raise UserError(f"study list {what!r}: expected 'methods' or 'targets'")
        for line in describe_methods() if what == "methods" else describe_targets():
            typer.echo(line)


@app.command()
def report(results: Annotated[str, typer.Option(help="Results directory of a study.")] = "results/default",
           out: Annotated[str, typer.Option(help="Where REPORT.md and the figures go.")] = "reports"):
    """Write REPORT.md and the figures from a results directory (analysis.report.write_report)."""
    with user_errors():
        root = Path(results)
        if not root.is_dir():
            what = "a file, not a results directory" if root.exists() else "no such results directory"
            raise UserError(f"--results {results}: {what} (run `study run` first)")
        cells = root / "cells" if (root / "cells").is_dir() else root
        if not any(not p.name.startswith(".") for p in cells.glob("*.json")):
            raise UserError(f"--results {results}: no cells in {cells} (expected <results>/cells/<run_id>.json; "
                            f"run `study run` first)")
        from analysis.report import check_index, write_report  # lazy: seaborn and matplotlib take a second to import

        try:
            check_index(cells)
        except ValueError as exc:
            raise UserError(f"--results {results}: {exc}") from None
        _check_out(Path(out))

        try:
            write_report(results, out)
        except OSError as exc:
            raise UserError(f"--out {out}: cannot write the report ({exc.strerror or exc}: "
                            f"{exc.filename or out})") from None
        typer.echo(f"wrote {Path(out) / 'REPORT.md'}")


@app.command()
def compare(a: Annotated[str, typer.Option(help="A report's summary.json (e.g. the organism's).")],
            b: Annotated[str, typer.Option(help="Another report's summary.json (e.g. SmolLM2's).")],
            pair: Annotated[list[str], typer.Option(help="target_in_a=target_in_b, repeatable.")],
            out: Annotated[str, typer.Option(help="The markdown file to write.")],
            names: Annotated[str, typer.Option(help="Display names of the two, comma-separated.")] = "A,B"):
    """Two reports side by side on matching targets: held-out gain and cost to threshold per method, and whether the
    rankings agree (analysis.compare). No model is run."""

    with user_errors():
        pairs = {}
        for p in pair:
            left, sep, right = p.partition("=")
            if not sep or not left or not right:
                raise UserError(f"--pair {p!r}: expected target_in_a=target_in_b, e.g. sentiment=real_sentiment")
            pairs[left] = right
        summaries = []
        for opt, path in (("--a", a), ("--b", b)):
            try:
                summaries.append(json.loads(Path(path).read_text()))
            except (OSError, ValueError) as exc:
                raise UserError(f"{opt} {path}: not a readable summary.json ({exc}); run `study report` first") \
                    from None
        label = tuple(x.strip() for x in names.split(","))
        if len(label) != 2 or not all(label):
            raise UserError(f"--names {names!r}: expected two names, comma-separated")
        _check_out(Path(out).parent)
        from analysis.compare import compare as compare_reports  # lazy: pandas is not needed by the other commands

        lines, _ = compare_reports(summaries[0], summaries[1], pairs, label)  # type: ignore[arg-type]
        Path(out).write_text("\n".join(lines) + "\n")
        typer.echo(f"wrote {out}")


def _check_out(out: Path) -> None:
    """--out must be a folder we can write, or one we can create; checked before anything is written."""
    existing = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if existing == out and not out.is_dir():
        raise UserError(f"--out {out}: a file, not a folder")
    if existing != out and not existing.is_dir():
        raise UserError(f"--out {out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: {existing} is not writable (read-only file system or no permission)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
