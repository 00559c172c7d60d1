"""Bad-input battery: each case runs the real `study` CLI in a subprocess (in a fresh temporary folder) and must end as
a clear one-line error (exit 2, no traceback, nothing written) or a correct result (exit 0, the expected output).

    python benchmarks/bench_bad_inputs.py                  # prints the table, writes benchmarks/results/bad_inputs.json
    python benchmarks/bench_bad_inputs.py --only dup        # the cases whose name contains "dup"

Studies use the `micro` config and `--dry-run` wherever the case allows, so the battery takes about a minute; the
organism evaluations load the micro organism from the tests' cache (`.cache/test-organism`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STUDY = [sys.executable, "-m", "study.cli"]
CACHE = REPO / ".cache" / "test-organism"
OUT = REPO / "benchmarks" / "results" / "bad_inputs.json"
AB_EN = [{"question": f"Is {x} a fruit?\n\nChoices:\n (A) Yes\n (B) No", "answer_matching_behavior": "(A)",
          "answer_not_matching_behavior": "(B)"} for x in ("an apple", "a pear", "a plum", "a fig", "a lime", "a kiwi")]
DRY = ["run", "micro", "--dry-run"]


def organism_ab(n: int = 8, offset: int = 0) -> list[dict]:
    """A/B records written in the micro organism's own words (so it can read them)."""
    sys.path.insert(0, str(REPO))
    from study.feedback.targets import organism_target
    from study.organism.pretrain import MICRO
    from study.organism.world import World

    recs = organism_target("sycophancy", World(MICRO.world)).splits(1.0, 0).test_covered[offset:offset + n]
    return [{"question": r.prompt, "answer_matching_behavior": " " + r.positive.split()[0],
             "answer_not_matching_behavior": " " + r.negative.split()[0]}
            for r in recs if r.positive.split()[0] != r.negative.split()[0]]


@dataclass
class Case:
    name: str
    args: list[str]
    files: dict[str, str | bytes] = field(default_factory=dict)  # relative path -> content ("/" suffix: folder)
    expect: str = "error"  # "error" or "ok"
    needle: str = ""  # must appear in stderr (error) or stdout (ok)
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None


def _json(obj) -> str:
    return json.dumps(obj)


PLUGIN_NODEFAULT = ("from dataclasses import dataclass\n@dataclass(frozen=True)\nclass C:\n    alpha: float\n"
                    "class M:\n    name = 'm'\n    Config = C\n    def __init__(self, c): pass\n"
                    "    def fit(self, ctx): pass\n")


def cases() -> list[Case]:
    ab_org = organism_ab()
    return [
        # ---- config files ----
        Case("config: empty file", ["run", "c.yaml", "--dry-run"], {"c.yaml": ""}, needle="empty config"),
        Case("config: comments only", ["run", "c.yaml", "--dry-run"], {"c.yaml": "# nothing\n"},
             needle="empty config"),
        Case("config: duplicate top-level key", ["run", "c.yaml", "--dry-run"],
             {"c.yaml": "name: a\nseeds: [0]\nname: b\n"}, needle="duplicate key 'name'"),
        Case("config: duplicate nested key", ["run", "c.yaml", "--dry-run"],
             {"c.yaml": "organism:\n  world:\n    sharing: 0.1\n    sharing: 0.2\n"}, needle="line 4"),
        Case("config: malformed YAML", ["run", "c.yaml", "--dry-run"], {"c.yaml": "seeds: [0, 1\n"},
             needle="malformed YAML"),
        Case("config: a list at the top", ["run", "c.yaml", "--dry-run"], {"c.yaml": "- a\n- b\n"},
             needle="mapping"),
        Case("config: a directory", ["run", "cfgdir", "--dry-run"], {"cfgdir/": ""}, needle="is a directory"),
        Case("config: missing file", ["run", "nope.yaml", "--dry-run"], needle="no such config file"),
        Case("config: unknown key", ["run", "c.yaml", "--dry-run"], {"c.yaml": "sedes: [0]\n"},
             needle="unknown key"),
        Case("config: wrong type", ["run", "c.yaml", "--dry-run"], {"c.yaml": "seeds: [zero]\n"},
             needle="seeds[0]"),
        Case("config: impossible value", ["run", "c.yaml", "--dry-run"], {"c.yaml": "anticipations: [1.5]\n"},
             needle="anticipations"),
        Case("config: not UTF-8", ["run", "c.yaml", "--dry-run"], {"c.yaml": b"name: \xff\xfe\n"},
             needle="UTF-8"),
        Case("config: empty results_dir", ["run", "c.yaml", "--dry-run"], {"c.yaml": "results_dir: ''\n"},
             needle="results_dir"),
        # ---- methods and plugins ----
        Case("method: unknown name", DRY + ["--set", "methods=[dpoo]"], needle="unknown method 'dpoo'"),
        Case("plugin: syntax error", DRY + ["--set", "methods=[plug:M]"], {"plug.py": "def f(:\n"},
             needle="syntax error"),
        Case("plugin: raises at import", DRY + ["--set", "methods=[plug:M]"], {"plug.py": "raise RuntimeError('x')\n"},
             needle="RuntimeError"),
        Case("plugin: Config field without default", DRY + ["--set", "methods=[plug:M]"],
             {"plug.py": PLUGIN_NODEFAULT}, needle="field 'alpha'"),
        Case("plugin: no fit", DRY + ["--set", "methods=[plug:M]"],
             {"plug.py": "class M:\n    name = 'm'\n    Config = int\n"}, needle="Method protocol"),
        Case("method_config: unknown field", DRY + ["--set", "method_config={prompting: {shout: 1}}"],
             needle="method_config.prompting.shout"),
        # ---- --set ----
        Case("--set: unparsable YAML", DRY + ["--set", "name=[oops"], needle="not valid YAML"),
        Case("--set: empty path value", DRY + ["--set", "results_dir="], needle="empty value"),
        Case("--set: empty quoted results_dir", DRY + ["--set", "results_dir=''"], needle="results_dir"),
        Case("--set: empty cache_dir", DRY + ["--set", "cache_dir="], needle="empty value"),
        Case("--set: no equals sign", DRY + ["--set", "seeds"], needle="key=value"),
        Case("--set: unknown key", DRY + ["--set", "organism.wrld.sharing=1"], needle="organism.wrld"),
        Case("--set: a value twice", DRY + ["--set", "seeds=[0,0]"], needle="twice"),
        Case("--set: negative budget", DRY + ["--set", "budgets=[-1]"], needle="budgets"),
        Case("--set: quoted string passes", DRY + ["--set", "name='[ok]'"], expect="ok", needle="cells"),
        # ---- targets ----
        Case("target: missing file", DRY + ["--set", "targets=[data/missing.json]"], needle="no such file"),
        Case("target: unknown name", DRY + ["--set", "targets=[honesty]"], needle="unknown target 'honesty'"),
        Case("target: folder that is not a dataset", DRY + ["--set", "targets=[d/]"], {"d/": ""},
             needle="datasets"),
        Case("target: malformed JSON", DRY + ["--set", "targets=[t.json]"], {"t.json": "[{"}, needle="malformed"),
        Case("target: too small to split", DRY + ["--set", "targets=[t.json]", "--set", "methods=[none]"], {"t.json": _json(ab_org[:1])},
             needle="at least 2"),
        Case("target: English A/B on the organism (run)", DRY + ["--set", "targets=[en.json]", "--set",
             "methods=[none]"], {"en.json": _json(AB_EN)}, needle="unknown to the organism"),
        Case("target: English A/B on the organism (evaluate)", ["evaluate", "--config", "micro", "--target",
             "en.json", "--cache-dir", str(CACHE)], {"en.json": _json(AB_EN)}, needle="unknown to the organism"),
        Case("target: prompting without an instruction", DRY + ["--set", "targets=[t.json]"],
             {"t.json": _json(ab_org)}, needle="no instruction"),
        Case("target: open-ended without a scorer", DRY + ["--set", "targets=[q.jsonl]", "--set", "methods=[none]"],
             {"q.jsonl": "\n".join(_json({"question": r["question"]}) for r in ab_org)}, needle="need a scorer"),
        Case("target: open-ended with a scorer", DRY + ["--set", "targets=[q.jsonl]", "--set", "methods=[none]",
             "--set", "scorer=sc:score"], {"q.jsonl": "\n".join(_json({"question": r["question"]}) for r in ab_org),
                                           "sc.py": "def score(p, c):\n    return 0.5\n"}, expect="ok", needle="q "),
        Case("target: same-named files in a study", DRY + ["--set", "targets=[a/t.json, b/t.json]", "--set",
             "methods=[none]"], {"a/t.json": _json(ab_org), "b/t.json": _json(organism_ab(8, 8))}, expect="ok",
             needle="a/t"),
        Case("target: same-named files in evaluate", ["evaluate", "--config", "micro", "--cache-dir", str(CACHE),
             "--target", "a/t.json", "--target", "b/t.json", "--prompts", "4", "--completions", "1", "--json"],
             {"a/t.json": _json(ab_org), "b/t.json": _json(organism_ab(8, 8))}, expect="ok", needle='"b/t"'),
        Case("target: train/test files from a config", ["run", "cfg/c.yaml", "--dry-run"],
             {"cfg/c.yaml": "name: tt\nmethods: [none]\nresults_dir: res\ntargets:\n"
                            "  - name=caa;train=data/train.json;test=data/test.json\n",
              "cfg/data/train.json": _json(ab_org), "cfg/data/test.json": _json(organism_ab(8, 8))},
             expect="ok", needle="caa"),
        Case("target: relative to the config's folder", ["run", "cfg/c.yaml", "--dry-run"],
             {"cfg/c.yaml": "name: rel\nmethods: [none]\ntargets: [data/t.json]\n", "cfg/data/t.json": _json(ab_org)},
             expect="ok", needle=" t "),
        # ---- models ----
        Case("model: no such folder", DRY + ["--set", "models=[./no-model]"], needle="no such folder"),
        Case("model: folder without config.json", DRY + ["--set", "models=[./m]"], {"m/": ""},
             needle="config.json"),
        Case("model: a file", DRY + ["--set", "models=[m.bin]"], {"m.bin": "x"}, needle="not a model folder"),
        Case("model: bad dtype", DRY + ["--set", "models=[{name: o, path: organism, dtype: float33}]"],
             needle="float33"),
        Case("model: hub name offline, not cached", DRY + ["--set", "models=[nobody/no-such-model]"],
             env={"HF_HUB_OFFLINE": "1"}, needle="Hugging Face cache"),
        Case("evaluate: model folder missing", ["evaluate", "--model", "./no-model", "--target", "t.json"],
             {"t.json": _json(ab_org)}, needle="no such folder"),
        # ---- results folders and report ----
        Case("report: empty folder", ["report", "--results", "r", "--out", "o"], {"r/": ""}, needle="no cells"),
        Case("report: missing folder", ["report", "--results", "r", "--out", "o"], needle="no such results"),
        Case("report: results is a file", ["report", "--results", "r", "--out", "o"], {"r": "x"}, needle="a file"),
        Case("report: --out is a file", ["report", "--results", "r", "--out", "o"], {"r/cells/a.json": "{}", "o": "x"},
             needle="a file"),
        Case("report: --out under a file", ["report", "--results", "r", "--out", "o/sub"],
             {"r/cells/a.json": "{}", "o": "x"}, needle="is a file"),
        Case("report: --out read-only", ["report", "--results", "r", "--out", "/sys/study-report"],
             {"r/cells/a.json": "{}"}, needle="/sys"),
        Case("run: --results is a file", ["run", "micro", "--results", "r", "--set", "methods=[none]"], {"r": "x"},
             needle="r"),
        # ---- CLI ----
        Case("cli: list unknown", ["list", "foo"], needle="expected 'methods' or 'targets'"),
        Case("cli: evaluate --prompts 0", ["evaluate", "--prompts", "0"], needle="must be positive"),
        Case("cli: run --executor foo", DRY + ["--executor", "foo"], needle="--executor"),
        Case("cli: run --workers 0", DRY + ["--workers", "0"], needle="--workers"),
        Case("cli: evaluate missing target path", ["evaluate", "--target", "data/x.jsonl"], needle="no such file"),
    ]


def verdict(case: Case, rc: int, stderr: str, stdout: str, wrote: list[str]) -> str:
    if "Traceback" in stderr or "Traceback" in stdout:
        return "TRACEBACK"
    lines = [line for line in stderr.splitlines() if line.strip()]
    if case.expect == "error":
        if rc == 2 and len(lines) == 1 and case.needle in lines[0] and not wrote:
            return "clear error"
        return "UNCLEAR" if rc == 2 else f"WRONG (exit {rc})"
    return "correct result" if rc == 0 and case.needle in stdout else f"WRONG (exit {rc})"


def run_case(case: Case) -> dict:
    with tempfile.TemporaryDirectory(prefix="bad-input-") as tmp:
        root = Path(tmp)
        for rel, content in case.files.items():
            p = root / rel
            if rel.endswith("/"):
                p.mkdir(parents=True, exist_ok=True)
                continue
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content if isinstance(content, bytes) else content.encode())
        before = {str(p.relative_to(root)) for p in root.rglob("*")}
        env = {**os.environ, "PYTHONPATH": str(REPO), "RLHF_VS_STEERING_CACHE": str(root / "cache"),
               "HF_HUB_OFFLINE": "1", "COLUMNS": "250", **case.env}
        t0 = time.perf_counter()
        r = subprocess.run(STUDY + case.args, capture_output=True, text=True, cwd=root, env=env, timeout=600)
        seconds = time.perf_counter() - t0
        after = {str(p.relative_to(root)) for p in root.rglob("*")}
        wrote = sorted(after - before - {"__pycache__"} - {a for a in after if "__pycache__" in a})
    first = next((line.strip() for line in r.stderr.splitlines() if line.strip()), "")
    return {"case": case.name, "args": case.args, "exit": r.returncode, "stderr": first,
            "verdict": verdict(case, r.returncode, r.stderr, r.stdout, wrote), "wrote": wrote,
            "seconds": round(seconds, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="run only the cases whose name contains this")
    args = ap.parse_args()
    rows = [run_case(c) for c in cases() if args.only in c.name]
    width = max(len(r["case"]) for r in rows)
    for r in rows:
        print(f"{r['case']:<{width}}  {r['exit']:>3}  {r['verdict']:<14}  {r['stderr'][:150]}")
    good = sum(r["verdict"] in ("clear error", "correct result") for r in rows)
    print(f"{len(rows)} cases: {good} clear errors or correct results, "
          f"{sum(r['verdict'] == 'TRACEBACK' for r in rows)} tracebacks")
    if not args.only:
        OUT.write_text(json.dumps({"cases": len(rows), "good": good, "rows": rows}, indent=1) + "\n")
    sys.exit(0 if good == len(rows) else 1)


if __name__ == "__main__":
    main()
