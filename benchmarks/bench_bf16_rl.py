"""Are rlhf and bon numerically safe in bf16 at SmolLM2's size? One cell each on a random-init Llama with
SmolLM2-135M's exact config (30 layers, hidden 576, 9:3 grouped-query attention, tied embeddings) and its tokenizer,
loaded in bfloat16, on the real_sentiment target, through the study runner as any cell runs.

A random-init model's logits are the stress case for bf16 sampling (flat and wide); TRL samples from them inside the RL
loop, where a non-finite probability was a CUDA device-side assert before the float32 logits guard
(`study.lm.generation.finite_float32_logits`). The cell runs where the study would run it (a GPU when one is
visible, else the CPU): on a CPU the same guard runs, and the GPU run is the check to repeat when one is lent. Needs
the converted SmolLM2 folder in the cache (`study run real_cpu` makes it) for its config and tokenizer; its weights
are not used.

    python benchmarks/bench_bf16_rl.py                       # bf16; writes benchmarks/results/bf16_rl.json
    python benchmarks/bench_bf16_rl.py --output /tmp/bf16_gpu.json   # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results"


def random_smollm2(folder: Path, cache: str | None) -> dict:
    """A random-init model with SmolLM2's config and tokenizer, saved to `folder`; returns its config facts."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    from study.lm.smollm2 import ensure_smollm2

    source = ensure_smollm2(cache)
    config = AutoConfig.from_pretrained(source)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return {"layers": config.num_hidden_layers, "hidden": config.hidden_size, "heads": config.num_attention_heads,
            "kv_heads": config.num_key_value_heads, "vocab": config.vocab_size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", default=None, help="cache holding smollm2-135m (default: the project's)")
    ap.add_argument("--output", default=str(RESULTS / "bf16_rl.json"))
    a = ap.parse_args()

    from study.run.cell import run_cell
    from study.run.grid import expand
    from study.run.study_config import load_study

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "smollm2-random"
        shape = random_smollm2(folder, a.cache)
        study = load_study(None, [
            f"models=[{{name: smollm2-random-bf16, path: '{folder}', dtype: bfloat16}}]",
            "targets=[real_sentiment]", "methods=[rlhf, bon]", "budgets=[8]", "anticipations=[0.5]", "seeds=[0]",
            "method_config={rlhf: {steps: 2, batch_size: 8, num_generations: 2, rm_epochs: 1.0, train_on_ties: true},"
            " bon: {n: 4, rm_epochs: 1.0, train_on_ties: true}}",
            "eval={sizes: {pool: 16, select: 4, test: 4, neutral: 2}, n_completions: 1, drift: false, "
            "diversity_prompts: 0}"])
        rows = []
        for cell in expand(study, "bench_bf16_rl", str(Path(tmp) / "cache")):
            t0 = time.perf_counter()
            res = run_cell(cell)
            seconds = round(time.perf_counter() - t0, 1)
            beh = {(r["split"], r["metric"]): r["value"] for r in res.rows}
            rows.append({"method": cell.method, "status": res.status, "error": res.error, "seconds": seconds,
                         "behavior_all": beh.get(("all", "behavior")), "kl": beh.get(("neutral", "kl"))})
            print(f"{cell.method:6s} {res.status:6s} {seconds:7.1f} s  behavior {rows[-1]['behavior_all']}  "
                  f"kl {rows[-1]['kl']}" + (f"  error: {res.error}" if res.error else ""), flush=True)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = {"command": "python " + " ".join(sys.argv), "device": device, "dtype": "bfloat16", "shape": shape,
           "machine": platform.machine(), "date": time.strftime("%Y-%m-%d"), "cells": rows}
    Path(a.output).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
