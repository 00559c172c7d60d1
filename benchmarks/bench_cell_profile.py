"""Where one cell's wall time goes, per method, in a fresh process each (first-call costs included).

For each method (default: none, prompting, steering, lora_sft, dpo, rlhf) one cell of the default organism study
(target sentiment, anticipation 0.5, seed 0, clean labeler, budget `--budget`; prompting at `--prompting-budget`) runs
through `run_cell` in a child process on one torch thread (as the study's workers run). Two passes:

1. `profile` (skipped with `--no-profile`): one child per method under cProfile (on the last `--rev`: list the
   newer tree last): the top cumulative functions and the cumulative seconds of chosen ones (sample, generate, the TRL
   trainers' __init__, Trainer.train, the log-prob helpers, drift_baseline, Oracle.score, tokenizer calls, peft ...).
   cProfile slows Python-heavy code, so its seconds are inflated; the phase table comes from pass 2.
2. `timed`: for each repeat, for each rev, for each method, a fresh child without cProfile whose chosen functions are
   wrapped by cheap timers that attribute every second to the innermost active phase (imports, load_model,
   target_splits, labels, generation, scoring, logprobs_kl, drift_baseline, trainer_args, trainer_init, accelerate,
   dataset_prep, train_steps, reward_model, peft, activations, storing, provenance, ...); what no phase claims is
   `other` (the cell's own Python), interpreter start-up is `startup`. The revs alternate, so a slow patch of the
   shared machine hits both. Reported: the median wall per method and rev, the ratio to the first rev, and the
   median phase seconds per method and rev.

`--warm`: the study's regime. Each child runs a warm-up cell and then the timed cell, both the same cell of one method,
in the SAME process (as a study worker does after its first cell: imports done, model, splits and drift baseline
kept where the rev keeps them); the reported wall and phases are the timed cell's alone. Use with `--no-profile`.

`--rev PATH` (repeatable) runs a child against another checkout: PATH goes first on PYTHONPATH and is the child's
working directory; the child imports `study.run.cell` / `study.run.grid` / `study.run.study_config`, or the older
`study.cell` / `study.grid` / `study.schema`. Without `--rev` the current tree is the only rev. Results go to
benchmarks/results/cell_profile.json (command line, date, git revisions and load average recorded).

    RLHF_VS_STEERING_CACHE=/tmp/orgcache HF_HUB_OFFLINE=1 python benchmarks/bench_cell_profile.py
    python benchmarks/bench_cell_profile.py --methods dpo rlhf --repeat 3 --rev /tmp/base --rev .
    python benchmarks/bench_cell_profile.py --no-profile --repeat 1 --methods none
    python benchmarks/bench_cell_profile.py --warm --no-profile --repeat 3 --rev /tmp/headtree --rev .
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
RESULTS = HERE.parent / "results"
METHODS = ("none", "prompting", "steering", "lora_sft", "dpo", "rlhf")

# phase -> candidate targets "module:Qualified.name" (new layout first, then the older one; missing ones skipped).
# An absorbing phase keeps the phases nested in it (labels: the labeler's oracle calls; drift_baseline: its sampling).
PHASES: list[tuple[str, tuple[str, ...], bool]] = [
    ("load_model", ("study.organism.pretrain:organism_model", "study.organism.pretrain:load_organism",
                    "study.lm.models:load_model", "study.models:load_model"), False),
    ("provenance", ("study.core.provenance:git_sha", "study.core.provenance:package_versions",
                    "study.cell:git_sha", "study.cell:package_versions"), False),
    ("target_splits", ("study.feedback.targets:OrganismTarget.splits", "study.targets:OrganismTarget.splits"), False),
    ("labels", tuple(f"{m}:Labeler.{f}" for m in ("study.feedback.labeler", "study.labeler")
                     for f in ("compare", "judge", "contrast", "demonstrate")), True),
    ("drift_baseline", ("study.run.evaluate:drift_baseline", "study.evaluate:drift_baseline"), True),
    ("generation", ("study.lm.generation:sample", "study.generation:sample",
                    "transformers.generation.utils:GenerationMixin.generate"), False),
    ("scoring", ("study.feedback.targets:OrganismTarget.score", "study.feedback.targets:OrganismTarget.reward",
                 "study.feedback.targets:OrganismTarget.proxy", "study.targets:OrganismTarget.score",
                 "study.targets:OrganismTarget.reward", "study.targets:OrganismTarget.proxy",
                 "study.organism.oracle:Oracle.score", "study.organism.oracle:Oracle.parse"), False),
    ("logprobs_kl", tuple(f"{m}:{f}" for m in ("study.lm.logprobs", "study.evaluate")
                          for f in ("continuation_logprobs", "sequence_logprobs", "kl_divergence")), False),
    ("activations", ("methods.steering_vectors:contrast_activations",), False),
    ("reward_model", ("methods.reward_model:RewardModel.raw_ids", "methods.reward_model:RewardModel.raw"), False),
    ("trainer_args", ("transformers.training_args:TrainingArguments.__post_init__",
                      "trl.trainer.sft_config:SFTConfig.__post_init__", "trl.trainer.dpo_config:DPOConfig.__post_init__",
                      "trl.trainer.reward_config:RewardConfig.__post_init__",
                      "trl.trainer.rloo_config:RLOOConfig.__post_init__",
                      "trl.trainer.grpo_config:GRPOConfig.__post_init__"), False),
    ("trainer_init", ("transformers.trainer:Trainer.__init__", "trl.trainer.sft_trainer:SFTTrainer.__init__",
                      "trl.trainer.dpo_trainer:DPOTrainer.__init__", "trl.trainer.reward_trainer:RewardTrainer.__init__",
                      "trl.trainer.rloo_trainer:RLOOTrainer.__init__", "trl.trainer.grpo_trainer:GRPOTrainer.__init__"),
     False),
    ("accelerate", ("accelerate.accelerator:Accelerator.__init__", "accelerate.accelerator:Accelerator.prepare"), False),
    ("dataset_prep", ("datasets.arrow_dataset:Dataset.map", "datasets.arrow_dataset:Dataset.filter",
                      "datasets.arrow_dataset:Dataset.from_list", "datasets.arrow_dataset:Dataset.from_dict"), False),
    ("train_steps", ("transformers.trainer:Trainer.train",), False),
    ("peft", ("peft.mapping:inject_adapter_in_model", "peft.mapping_func:get_peft_model",
              "peft.utils.save_and_load:set_peft_model_state_dict", "peft.utils.save_and_load:get_peft_model_state_dict",
              "methods.trained:strip_adapters", "methods.trained:LoraIntervention._attach",
              "methods.trained:LoraIntervention._detach"), False),
    ("storing", ("transformers.trainer:Trainer._save_checkpoint", "transformers.trainer:Trainer.save_model",
                 "shutil:rmtree"), False),
    ("tokenizer", ("transformers.tokenization_utils_base:PreTrainedTokenizerBase.__call__",
                   "transformers.tokenization_utils_base:PreTrainedTokenizerBase.batch_decode",
                   "transformers.tokenization_utils_base:PreTrainedTokenizerBase.decode",
                   "transformers.tokenization_utils_base:PreTrainedTokenizerBase.apply_chat_template"), False),
]
PHASE_ORDER = ["startup", "imports", "load_model", "provenance", "target_splits", "labels", "activations",
               "trainer_args", "trainer_init", "accelerate", "dataset_prep", "train_steps", "reward_model", "peft",
               "generation", "tokenizer", "scoring", "logprobs_kl", "drift_baseline", "storing", "patching", "other"]

# cProfile pass: chosen functions, (file suffix, function name) -> label
CHOSEN = [
    ("study/lm/generation.py", "sample"), ("study/generation.py", "sample"),
    ("study/lm/generation.py", "generate"), ("study/evaluate.py", "generate"),
    ("transformers/generation/utils.py", "generate"),
    ("transformers/trainer.py", "__init__"), ("trl/trainer/sft_trainer.py", "__init__"),
    ("trl/trainer/dpo_trainer.py", "__init__"), ("trl/trainer/reward_trainer.py", "__init__"),
    ("trl/trainer/rloo_trainer.py", "__init__"), ("trl/trainer/grpo_trainer.py", "__init__"),
    ("transformers/training_args.py", "__post_init__"), ("accelerate/accelerator.py", "__init__"),
    ("transformers/trainer.py", "train"), ("transformers/trainer.py", "training_step"),
    ("trl/trainer/rloo_trainer.py", "_generate_and_score_completions"),
    ("trl/trainer/rloo_trainer.py", "training_step"),
    ("study/lm/logprobs.py", "continuation_logprobs"), ("study/lm/logprobs.py", "sequence_logprobs"),
    ("study/lm/logprobs.py", "kl_divergence"), ("study/evaluate.py", "continuation_logprobs"),
    ("study/evaluate.py", "sequence_logprobs"), ("study/evaluate.py", "kl_divergence"),
    ("study/run/evaluate.py", "drift_baseline"), ("study/evaluate.py", "drift_baseline"),
    ("study/run/evaluate.py", "evaluate"), ("study/evaluate.py", "evaluate"),
    ("study/run/evaluate.py", "_behavior"), ("study/run/evaluate.py", "_neutral"),
    ("study/organism/oracle.py", "score"), ("study/organism/oracle.py", "parse"),
    ("study/feedback/targets.py", "score"), ("study/feedback/targets.py", "splits"),
    ("study/feedback/labeler.py", "compare"), ("study/feedback/labeler.py", "demonstrate"),
    ("study/feedback/labeler.py", "contrast"),
    ("transformers/tokenization_utils_base.py", "__call__"), ("transformers/tokenization_utils_base.py", "batch_decode"),
    ("peft/mapping.py", "inject_adapter_in_model"), ("peft/mapping_func.py", "get_peft_model"),
    ("methods/trained.py", "_attach"), ("methods/trained.py", "_detach"), ("methods/trained.py", "strip_adapters"),
    ("methods/trained.py", "train_adapter"), ("methods/trained.py", "buy_comparisons"),
    ("methods/trained.py", "buy_demonstrations"), ("methods/selection.py", "select_best"),
    ("methods/reward_model.py", "train_reward_model"), ("methods/steering_vectors.py", "contrast_activations"),
    ("datasets/arrow_dataset.py", "map"), ("datasets/arrow_dataset.py", "from_list"),
    ("study/organism/pretrain.py", "organism_model"), ("study/core/provenance.py", "git_sha"),
    ("study/core/provenance.py", "package_versions"), ("study/cell.py", "git_sha"),
    ("study/cell.py", "package_versions"), ("torch/__init__.py", "set_num_threads"),
    ("study/run/cell.py", "run_cell"), ("study/cell.py", "run_cell"),
]


# ==== child ==========================================================================================================
class _Phases:
    """Exclusive seconds per phase: each second goes to the innermost active phase (or to an absorbing ancestor)."""

    def __init__(self) -> None:
        self.clock = time.perf_counter
        self.excl: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.stack: list[list] = []  # [name, start, child_seconds]
        self.absorbing = 0
        self.pending = [(p, t, a) for p, ts, a in PHASES for t in ts]
        self.applied: list[str] = []
        self.depth = 0

    def run(self, name: str, absorb: bool, fn, args, kwargs):
        if self.absorbing:
            return fn(*args, **kwargs)
        frame = [name, self.clock(), 0.0]
        self.stack.append(frame)
        self.absorbing += absorb
        try:
            return fn(*args, **kwargs)
        finally:
            self.absorbing -= absorb
            self.stack.pop()
            elapsed = self.clock() - frame[1]
            self.excl[name] = self.excl.get(name, 0.0) + elapsed - frame[2]
            self.calls[name] = self.calls.get(name, 0) + 1
            if self.stack:
                self.stack[-1][2] += elapsed

    def wrap(self, name: str, absorb: bool, fn):
        import functools

        phases = self

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            return phases.run(name, absorb, fn, args, kwargs)

        timed.__phase_original__ = fn
        return timed

    def apply(self) -> None:
        """Wrap the targets whose module is loaded (and fully initialised); the rest wait for a later import."""
        import importlib

        if not self.pending:
            return
        t0 = self.clock()
        replaced: dict[int, object] = {}
        left = []
        for phase, target, absorb in self.pending:
            mod_name, qual = target.split(":")
            mod = sys.modules.get(mod_name)
            spec = getattr(mod, "__spec__", None)
            if mod is None or getattr(spec, "_initializing", False):
                left.append((phase, target, absorb))
                continue
            owner = mod
            parts = qual.split(".")
            try:
                for p in parts[:-1]:
                    owner = getattr(owner, p)
            except AttributeError:
                continue
            name = parts[-1]
            if isinstance(owner, type):
                raw = owner.__dict__.get(name)
                if raw is None:
                    continue
                if isinstance(raw, (classmethod, staticmethod)):
                    setattr(owner, name, type(raw)(self.wrap(phase, absorb, raw.__func__)))
                else:
                    setattr(owner, name, self.wrap(phase, absorb, raw))
            else:
                fn = getattr(owner, name, None)
                if fn is None or hasattr(fn, "__phase_original__"):
                    continue
                w = self.wrap(phase, absorb, fn)
                setattr(owner, name, w)
                replaced[id(fn)] = (fn, w)
            self.applied.append(target)
        self.pending = left
        if replaced:  # module-level `from x import f` copies of the wrapped functions
            tops = {"study", "methods"} | {getattr(fn, "__module__", "").split(".")[0] for fn, _ in replaced.values()}
            for mname, m in list(sys.modules.items()):
                if m is None or mname.split(".")[0] not in tops or mname.startswith("transformers.models."):
                    continue
                d = getattr(m, "__dict__", None)
                if not d:
                    continue
                for k, v in list(d.items()):
                    hit = replaced.get(id(v))
                    if hit is not None and hit[0] is v:
                        d[k] = hit[1]
        importlib.invalidate_caches()
        self.excl["patching"] = self.excl.get("patching", 0.0) + self.clock() - t0
        if self.stack:
            self.stack[-1][2] += self.clock() - t0

    def install_import_hook(self) -> None:
        """Import time is a phase; after each outermost import, wrap what it loaded."""
        import builtins
        import importlib

        orig_import, orig_import_module = builtins.__import__, importlib.import_module
        phases = self

        def outer(fn, args, kwargs):
            if phases.depth:
                return fn(*args, **kwargs)
            phases.depth += 1
            try:
                return phases.run("imports", False, fn, args, kwargs)
            finally:
                phases.depth -= 1
                if phases.pending:
                    phases.apply()

        def imp(name, globals=None, locals=None, fromlist=(), level=0):
            if phases.depth or (not fromlist and level == 0 and name in sys.modules):
                return orig_import(name, globals, locals, fromlist, level)
            return outer(orig_import, (name, globals, locals, fromlist, level), {})

        def import_module(name, package=None):
            if phases.depth:
                return orig_import_module(name, package)
            return outer(orig_import_module, (name, package), {})

        builtins.__import__ = imp
        importlib.import_module = import_module


def _import_study():
    try:
        from study.run.cell import run_cell
        from study.run.grid import expand
        from study.run.study_config import load_study
        layout = "study.run"
    except ImportError:
        from study.cell import run_cell
        from study.grid import expand
        from study.schema import load_study
        layout = "study"
    return run_cell, expand, load_study, layout


def _cell(expand, load_study, method: str, budget: int, target: str, anticipation: float, seed: int):
    import json

    own = (getattr(load_study("default"), "method_config", {}) or {}).get(method)  # as the default study runs it
    overrides = [f"method_config={json.dumps({method: own} if own else {})}", "method_budgets={}",
                 f"methods=[{method}]", f"budgets=[{budget}]", f"targets=[{target}]",
                 f"anticipations=[{anticipation}]", f"seeds=[{seed}]", "labeler_noise=[0.0]", "labeler_misspec=[0.0]"]
    for extra in ("ceiling=null", "organism_draws=null", "dial_budgets=null"):  # newer configs: one cell only
        try:
            load_study("default", overrides + [extra])
            overrides.append(extra)
        except Exception:  # an older tree without the field
            pass
    cells = expand(load_study("default", overrides), "default")
    if len(cells) != 1:
        raise RuntimeError(f"expected one cell, got {len(cells)}: {[c.label for c in cells]}")
    return cells[0]


def child(a: argparse.Namespace) -> None:
    t_main = time.perf_counter()
    out: dict = {"method": a.method, "pid": os.getpid(), "sys_path0": sys.path[:2]}
    prof = phases = None
    if a.profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    else:
        phases = _Phases()
        phases.install_import_hook()
    import torch

    torch.set_num_threads(a.threads)
    run_cell, expand, load_study, layout = _import_study()
    if phases:
        phases.apply()
    cell = _cell(expand, load_study, a.method, a.budget, a.target, a.anticipation, a.seed)
    if a.warm:  # as a study worker after its first cell: only the second cell is timed
        warm = run_cell(cell)
        out["warmup"] = {"status": warm.status, "seconds": round(time.perf_counter() - t_main, 3)}
        if phases:
            phases.excl, phases.calls = {}, {}
        t_main = time.perf_counter()
    t_cell = time.perf_counter()
    res = run_cell(cell)
    t_end = time.perf_counter()
    if prof:
        prof.disable()
    out.update(layout=layout, study_file=sys.modules[run_cell.__module__].__file__, status=res.status,
               error=res.error, label=cell.label, budget=cell.config["budget"], torch_threads=torch.get_num_threads(),
               cell_seconds=round(t_end - t_cell, 3), child_seconds=round(t_end - t_main, 3),
               durations=res.provenance.get("durations"), chosen_steps=(res.provenance.get("chosen") or {}).get("steps"))
    if phases:
        excl = dict(phases.excl)
        excl["other"] = (t_end - t_main) - sum(excl.values())
        out.update(phases={k: round(v, 3) for k, v in excl.items()}, calls=phases.calls,
                   not_wrapped=[t for _, t, _ in phases.pending])
    if prof:
        out.update(_profile_summary(prof, a.top))
    Path(a.out).write_text(json.dumps(out))


def _profile_summary(prof, top: int) -> dict:
    import pstats

    st = pstats.Stats(prof)
    rows = []
    skip_files = ("<frozen importlib._bootstrap", str(HERE))
    for (file, line, fn), (cc, nc, tt, ct, callers) in st.stats.items():
        rows.append((ct, tt, nc, file, line, fn))
    rows.sort(reverse=True)
    short = lambda f: f.split("site-packages/")[-1].replace(str(ROOT) + "/", "")  # noqa: E731
    top_rows = []
    for ct, tt, nc, file, line, fn in rows:
        if any(file.startswith(s) for s in skip_files) or fn in ("<built-in method builtins.exec>", "<module>"):
            continue
        top_rows.append({"function": f"{short(file)}:{line}({fn})", "cumulative": round(ct, 3),
                         "own": round(tt, 3), "calls": nc})
        if len(top_rows) >= top:
            break
    chosen = {}
    for ct, tt, nc, file, line, fn in rows:
        for suffix, name in CHOSEN:
            if fn == name and file.endswith(suffix):
                key = f"{suffix}:{name}"
                prev = chosen.get(key)
                # the same name defined twice in a file (e.g. nested __init__): keep the larger
                if prev is None or ct > prev["cumulative"]:
                    chosen[key] = {"cumulative": round(ct, 3), "own": round(tt, 3), "calls": nc}
    return {"profile_top": top_rows, "profile_chosen": dict(sorted(chosen.items(), key=lambda kv: -kv[1]["cumulative"]))}


# ==== parent =========================================================================================================
def _spawn(rev: Path, method: str, a: argparse.Namespace, profile: bool) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(rev) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["OMP_NUM_THREADS"] = str(a.threads)
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [sys.executable, str(HERE), "--child", method, "--out", out, "--budget", str(_budget(method, a)),
           "--threads", str(a.threads), "--target", a.target, "--anticipation", str(a.anticipation),
           "--seed", str(a.seed), "--top", str(a.top)] + (["--profile-child"] if profile else []) \
        + (["--warm"] if a.warm else [])
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=str(rev), env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    try:
        res = json.loads(Path(out).read_text())
    except (OSError, ValueError):
        res = {"method": method, "status": "crashed", "error": (p.stderr or "")[-3000:]}
    finally:
        Path(out).unlink(missing_ok=True)
    res["wall_seconds"] = round(wall, 3)
    res["returncode"] = p.returncode
    if a.warm and "cell_seconds" in res:  # the timed cell alone: no start-up, no imports, no warm-up cell
        res["process_seconds"], res["wall_seconds"] = res["wall_seconds"], res["cell_seconds"]
    elif "phases" in res:
        res["phases"]["startup"] = round(wall - res["child_seconds"], 3)
    return res


def _budget(method: str, a: argparse.Namespace) -> int:
    return a.prompting_budget if method == "prompting" else a.budget


def _git(rev: Path) -> dict:
    def q(*args: str) -> str | None:
        try:
            return subprocess.run(["git", "-C", str(rev), *args], capture_output=True, text=True,
                                  timeout=20).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            return None

    return {"path": str(rev), "head": q("rev-parse", "HEAD"), "subject": q("log", "-1", "--format=%s"),
            "dirty_files": len((q("status", "--porcelain", "--untracked-files=no") or "").splitlines())}


def _median(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 3) if xs else None


def _table(title: str, methods: list[str], per_method: dict[str, dict[str, float]], total: dict[str, float]) -> str:
    used = [p for p in PHASE_ORDER if any(per_method.get(m, {}).get(p, 0) >= 0.005 for m in methods)]
    head = f"{'method':<10} {'wall':>7} " + " ".join(f"{p[:12]:>12}" for p in used)
    lines = [title, head]
    for m in methods:
        ph, w = per_method.get(m, {}), total.get(m)
        if not w:
            continue
        cells = " ".join(f"{ph.get(p, 0):6.2f}({100 * ph.get(p, 0) / w:3.0f}%)" for p in used)
        lines.append(f"{m:<10} {w:7.2f} {cells}")
    return "\n".join(lines)


def finish(record: dict, revs: list[Path], a: argparse.Namespace) -> None:
    """Medians per method and rev, their ratio, the printed tables (also for a partial record: `--summarize`)."""
    runs = record.get("timed", [])
    summary: dict = {}
    for rev in revs:
        s = summary[str(rev)] = {}
        for m in a.methods:
            rs = [r for r in runs if r["rev"] == str(rev) and r["method"] == m and r.get("status") == "ok"]
            phases = sorted({p for r in rs for p in r.get("phases", {})})
            s[m] = {"n": len(rs), "wall_median": _median([r["wall_seconds"] for r in rs]),
                    "wall_all": [r["wall_seconds"] for r in rs],
                    # less the profiler's own wrapping of functions (its `patching` phase)
                    "wall_net_median": _median([r["wall_seconds"] - r.get("phases", {}).get("patching", 0.0)
                                                for r in rs]),
                    "cell_median": _median([r["cell_seconds"] for r in rs]),
                    "phases_median": {p: _median([r["phases"].get(p, 0.0) for r in rs]) for p in phases}}
    base = str(revs[0])
    for rev in revs[1:]:
        for m in a.methods:
            b, c = summary[base][m]["wall_median"], summary[str(rev)][m]["wall_median"]
            summary[str(rev)][m]["ratio_to_first_rev"] = round(c / b, 3) if b and c else None
    record["summary"] = summary
    record["loadavg_end"] = os.getloadavg()

    text = []
    for rev in revs:
        s = summary[str(rev)]
        text.append(_table(f"\n== phases (median seconds, % of wall) — {rev}", a.methods,
                           {m: s[m]["phases_median"] for m in a.methods}, {m: s[m]["wall_median"] for m in a.methods}))
    text.append("\n== median wall per method (s; in brackets: less the profiler's patching, and the number of runs)")
    text.append(f"{'method':<10} " + " ".join(f"{str(r)[-24:]:>30}" for r in revs) + "   ratio(last/first)")
    for m in a.methods:
        cells = []
        for r in revs:
            x = summary[str(r)][m]
            cells.append(f"{(x['wall_median'] or float('nan')):10.2f} ({(x['wall_net_median'] or float('nan')):.2f}, n={x['n']})")
        ratio = summary[str(revs[-1])][m].get("ratio_to_first_rev") if len(revs) > 1 else None
        text.append(f"{m:<10} " + " ".join(f"{c:>30}" for c in cells) + f"   {ratio}")
    if record.get("profile"):
        for m in [m for m in a.methods if m in record["profile"]["cells"]]:
            r = record["profile"]["cells"][m]
            text.append(f"\n== top {a.top} cumulative (cProfile) — {m}, profiled wall {r['wall_seconds']:.2f} s")
            for row in r.get("profile_top", []):
                text.append(f"{row['cumulative']:8.2f} {row['own']:7.2f} {row['calls']:>8}  {row['function']}")
    print("\n".join(text))
    record["printed"] = "\n".join(text)


def parent(a: argparse.Namespace) -> None:
    revs = [Path(r).resolve() for r in (a.rev or [str(ROOT)])]
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    record: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "argv": sys.argv, "date": started,
                    "cwd": os.getcwd(), "host": os.uname().nodename, "cpus": os.cpu_count(),
                    "python": sys.version.split()[0], "loadavg_start": os.getloadavg(), "threads": a.threads,
                    "revs": [_git(r) for r in revs], "bench_git": _git(ROOT), "warm": a.warm,
                    "cell": {"target": a.target, "anticipation": a.anticipation, "seed": a.seed, "budget": a.budget,
                             "prompting_budget": a.prompting_budget,
                             "cache": os.environ.get("RLHF_VS_STEERING_CACHE")}}
    print(f"revs: {[str(r) for r in revs]}  load {os.getloadavg()}", flush=True)
    out = Path(a.output)
    RESULTS.mkdir(exist_ok=True)
    save = lambda: out.write_text(json.dumps(record, indent=1) + "\n")  # noqa: E731  (after every child: partial)

    if a.profile:
        prof = {}
        for m in a.methods:
            r = _spawn(revs[-1], m, a, profile=True)
            prof[m] = r
            record["profile"] = {"rev": str(revs[-1]), "cells": prof}
            save()
            print(f"[profile {revs[-1].name}] {m}: {r.get('status')} wall {r['wall_seconds']:.2f} s "
                  f"(cell {r.get('cell_seconds')} s under cProfile) {r.get('error') or ''}", flush=True)
        record["profile"] = {"rev": str(revs[-1]), "cells": prof, "loadavg_end": os.getloadavg()}

    runs: list[dict] = []
    for rep in range(a.repeat):
        for rev in revs:
            for m in a.methods:
                r = _spawn(rev, m, a, profile=False)
                r.update(rev=str(rev), repeat=rep, loadavg=os.getloadavg())
                runs.append(r)
                record["timed"] = runs
                save()
                print(f"[timed {rep} {rev}] {m}: {r.get('status')} wall {r['wall_seconds']:.2f} s "
                      f"(cell {r.get('cell_seconds')} s) load {r['loadavg'][0]:.2f} {r.get('error') or ''}", flush=True)
    record["timed"] = runs
    finish(record, revs, a)
    save()
    print(f"\nwrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--budget", type=int, default=64)
    ap.add_argument("--prompting-budget", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--rev", action="append", help="a checkout's root (repeatable); default: this tree")
    ap.add_argument("--no-profile", dest="profile", action="store_false", help="skip the cProfile pass")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warm", action="store_true", help="time a second cell in the same process (see above)")
    ap.add_argument("--target", default="sentiment")
    ap.add_argument("--anticipation", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--output", default=str(RESULTS / "cell_profile.json"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--profile-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--summarize", action="store_true", help="rebuild the summary and tables of --output (partial too)")
    a = ap.parse_args()
    if a.summarize:
        record = json.loads(Path(a.output).read_text())
        revs = [Path(r["path"]) for r in record["revs"]]
        a.methods = [m for m in a.methods if any(r["method"] == m for r in record.get("timed", []))]
        finish(record, revs, a)
        Path(a.output).write_text(json.dumps(record, indent=1) + "\n")
    elif a.child:
        a.method, a.profile = a.child, a.profile_child
        child(a)
    else:
        parent(a)


if __name__ == "__main__":
    main()
