"""What TRL's machinery costs: a `dpo` fit's training against a minimal plain-torch DPO loop, same model, data, steps.

Both train the same LoRA adapter (PEFT, same config and seed) on the same preference pairs (bought once from the
labeler as the `dpo` method buys them: two base-model samples per pool prompt), with the same batch size, number of
steps, learning rate and optimizer (AdamW, constant rate), the sigmoid DPO loss with the reference computed by
disabling the adapter. Reported: seconds in `trainer.train()` and seconds for TRL's whole path (trainer construction,
dataset tokenization and training) against the plain loop (its own tokenization included); median of `--repeats`.
Target (issue 6): TRL at most 3 times the plain loop. Records benchmarks/results/dpo_overhead.json.

    python benchmarks/bench_dpo_overhead.py                  # default organism, 128 comparisons
    python benchmarks/bench_dpo_overhead.py --config micro --repeats 1 --with-ties
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def setup(config: str, budget: int, seed: int = 0, with_ties: bool = False):
    from methods.base import FitContext
    from methods.dpo import DPOMethodConfig, preference_dataset
    from methods.trained import buy_comparisons
    from study.feedback.labeler import Budget, Labeler
    from study.organism.pretrain import organism_model
    from study.organism.world import World
    from study.run.study_config import load_study
    from study.feedback.targets import organism_target

    org = load_study(config).organism
    lm = organism_model(org, device="cpu")
    target = organism_target("sentiment", World(org.world))
    splits = target.splits(1.0, seed)
    ctx = FitContext(model=lm, target=target, labeler=Labeler(target, Budget(budget), seed=seed),
                     pool=list(splits.pool), select=list(splits.select), budget=budget, seed=seed,
                     config=DPOMethodConfig())
    data = preference_dataset(ctx, buy_comparisons(ctx, budget), with_ties=with_ties)
    return lm, data


def run_trl(lm, data, steps: int, batch: int, lr: float, beta: float, seed: int) -> tuple[float, float, float]:
    from trl import DPOConfig, DPOTrainer

    from methods.trained import train_adapter
    from methods.trl_presets import lora_config, quiet, trainer_args, work_dir

    quiet()
    timing = {}
    t0 = time.perf_counter()
    with work_dir(None, "bench") as out, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        args = trainer_args(DPOConfig, out, seed=seed, learning_rate=lr, beta=beta, max_steps=steps,
                            per_device_train_batch_size=batch, max_length=None)

        def make(cbs):
            trainer = DPOTrainer(model=lm.model, args=args, train_dataset=data, processing_class=lm.tokenizer,
                                 callbacks=cbs, peft_config=lora_config(lm.model, 8, 16.0))
            train = trainer.train

            def timed_train(*a, **k):
                t = time.perf_counter()
                out = train(*a, **k)
                timing["train"] = time.perf_counter() - t
                return out

            trainer.train = timed_train
            return trainer

        trainer = train_adapter(lm.model, make, [steps]).trainer
    total = time.perf_counter() - t0
    loss = [h["loss"] for h in trainer.state.log_history if "loss" in h][-1]
    return timing["train"], total, loss


def run_plain(lm, data, steps: int, batch: int, lr: float, beta: float, seed: int) -> tuple[float, float, float]:
    """The smallest honest DPO loop: tokenize, then per step one policy forward/backward on chosen+rejected and one
    no-grad reference forward with the adapter disabled."""
    import torch.nn.functional as F
    from peft import get_peft_model

    from methods.trained import isolated_training
    from methods.trl_presets import lora_config

    tok, model = lm.tokenizer, lm.model
    t0 = time.perf_counter()
    rows = []
    for ex in data:
        p = tok(ex["prompt"])["input_ids"]
        rows.append((p, tok(ex["chosen"] + tok.eos_token, add_special_tokens=False)["input_ids"],
                     tok(ex["rejected"] + tok.eos_token, add_special_tokens=False)["input_ids"]))

    def collate(batch_rows):
        seqs = [p + c for p, c, _ in batch_rows] + [p + r for p, _, r in batch_rows]
        comp = [[0] * len(p) + [1] * len(c) for p, c, _ in batch_rows] + [[0] * len(p) + [1] * len(r)
                                                                         for p, _, r in batch_rows]
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), tok.pad_token_id)
        mask = torch.zeros_like(ids)
        cmask = torch.zeros_like(ids)
        for i, (s, c) in enumerate(zip(seqs, comp)):
            ids[i, : len(s)], mask[i, : len(s)], cmask[i, : len(c)] = torch.tensor(s), 1, torch.tensor(c)
        return ids, mask, cmask

    def logps(m, ids, mask, cmask):
        logits = m(input_ids=ids, attention_mask=mask).logits[:, :-1]
        lp = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        return (lp * cmask[:, 1:]).sum(-1)

    with isolated_training(model):
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, lora_config(model, 8, 16.0))
        opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
        gen = torch.Generator().manual_seed(seed)
        order: list[int] = []
        peft_model.train()
        t1 = time.perf_counter()
        for _ in range(steps):
            if len(order) < batch:
                order += torch.randperm(len(rows), generator=gen).tolist()
            idx, order = order[:batch], order[batch:]
            ids, mask, cmask = collate([rows[i] for i in idx])
            with torch.no_grad(), peft_model.disable_adapter():
                ref = logps(peft_model, ids, mask, cmask)
            pol = logps(peft_model, ids, mask, cmask)
            n = len(idx)
            margin = beta * ((pol[:n] - ref[:n]) - (pol[n:] - ref[n:]))
            loss = -F.logsigmoid(margin).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(peft_model.parameters(), 1.0)
            opt.step()
        train = time.perf_counter() - t1
        peft_model.unload()
    return train, time.perf_counter() - t0, loss.item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="default")
    ap.add_argument("--budget", type=int, default=128)
    ap.add_argument("--steps", type=int, default=0, help="0: the dpo method's own rule for this many pairs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--with-ties", action="store_true", help="train on tied pairs too (micro organism)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from methods.dpo import DPOMethodConfig
    from methods.trained import steps_for

    cfg = DPOMethodConfig()
    lm, data = setup(args.config, args.budget, with_ties=args.with_ties)
    steps = args.steps or steps_for(len(data), cfg.epochs, cfg.batch_size, cfg.min_steps, cfg.max_steps)
    batch = min(cfg.batch_size, len(data))
    trl_runs, plain_runs = [], []
    for _ in range(args.repeats):  # interleaved, so that machine noise hits both alike
        trl_runs.append(run_trl(lm, data, steps, batch, cfg.learning_rate, cfg.beta, 0))
        plain_runs.append(run_plain(lm, data, steps, batch, cfg.learning_rate, cfg.beta, 0))
    med = lambda runs, i: statistics.median(r[i] for r in runs)  # noqa: E731
    out = {
        "config": args.config, "pairs": len(data), "steps": steps, "batch_size": batch, "threads": args.threads,
        "machine": platform.machine(), "repeats": args.repeats,
        "trl_train_seconds": round(med(trl_runs, 0), 3), "trl_total_seconds": round(med(trl_runs, 1), 3),
        "plain_train_seconds": round(med(plain_runs, 0), 3), "plain_total_seconds": round(med(plain_runs, 1), 3),
        "trl_final_loss": round(trl_runs[-1][2], 4), "plain_final_loss": round(plain_runs[-1][2], 4),
    }
    out["overhead_train"] = round(out["trl_train_seconds"] / out["plain_train_seconds"], 2)
    out["overhead_total"] = round(out["trl_total_seconds"] / out["plain_total_seconds"], 2)
    out["target_overhead"] = 3.0
    print(json.dumps(out, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dpo_overhead.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
