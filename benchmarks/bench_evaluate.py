"""The shared judge and labeler on the default organism: evaluation speed, and the labeler's noise and proxy figures.

Three measurements, recorded in benchmarks/results/evaluate.json:
1. `evaluate`: wall time of evaluating the base organism on all three targets, 200 test prompts per split (covered
   and uncovered at anticipation 0.5) and 4 completions each, KL and perplexity included (target: <= 60 s on
   2 cores); the model load and split building are timed apart. Also the time of one evaluation with a real
   intervention (a random steering vector), where KL and the drift of the two other targets must be computed.
2. `flip`: the measured flip rate of a noisy labeler over 2,000 decisive comparisons, per configured noise.
3. `misspec`: how often a labeler with misspecification 0.5 (and 1.0) agrees with the oracle on comparisons of two
   base-model samples of the same prompt with different true labels, in contexts where the proxy tracks the behavior
   and where it does not; also on completions drawn from the world's own distribution.

    python benchmarks/bench_evaluate.py                 # all three
    python benchmarks/bench_evaluate.py --only evaluate --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from contextlib import contextmanager
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
TARGETS = ("sentiment", "sycophancy", "refusal")


def _organism():
    from study.organism.pretrain import organism_model
    from study.organism.pretrain import OrganismConfig
    from study.organism.world import World

    cfg = OrganismConfig()
    t0 = time.perf_counter()
    lm = organism_model(cfg, device="cpu")
    return lm, World(cfg.world), time.perf_counter() - t0


def bench_evaluate(n_test: int = 200, n_completions: int = 4) -> dict:
    from methods.base import Intervention
    from study.run.evaluate import evaluate
    from study.lm.hooks import steer
    from study.feedback.splits import SplitSizes
    from study.feedback.targets import organism_target

    lm, world, load_s = _organism()
    targets = [organism_target(n, world) for n in TARGETS]
    sizes = SplitSizes(test=n_test)
    t0 = time.perf_counter()
    splits = {t.name: t.splits(0.5, 0, sizes) for t in targets}
    splits_s = time.perf_counter() - t0
    out: dict = {"load_seconds": round(load_s, 2), "splits_seconds": round(splits_s, 2), "targets": {}}
    t0 = time.perf_counter()
    for t in targets:
        t1 = time.perf_counter()
        res = evaluate(lm, t, None, splits=splits[t.name], others=targets, n_completions=n_completions, seed=0)
        s = splits[t.name]
        out["targets"][t.name] = {"seconds": round(time.perf_counter() - t1, 2),
                                  "test_prompts": {"covered": len(s.test_covered), "uncovered": len(s.test_uncovered)},
                                  "samples": len([x for x in res.samples if "score" in x]),
                                  "metrics": res.table()}
    out["evaluate_seconds"] = round(time.perf_counter() - t0, 2)
    out["target_seconds"] = 60.0

    class RandomSteer(Intervention):
        def __init__(self, vector: torch.Tensor):
            super().__init__()
            self.vector = vector

        @contextmanager
        def _activate(self, prompt_width):
            starts = None if prompt_width is None else torch.tensor([prompt_width - 1])
            with steer(lm.blocks, {1: self.vector}, start_positions=starts):
                yield

    torch.manual_seed(0)
    iv = RandomSteer(torch.randn(lm.hidden_size))
    t0 = time.perf_counter()
    res = evaluate(lm, targets[0], iv, splits=splits["sentiment"], others=targets, n_completions=n_completions,
                   seed=0)
    out["with_intervention"] = {"target": "sentiment", "seconds": round(time.perf_counter() - t0, 2),
                                "metrics": res.table()}
    return out


def bench_flip(n: int = 2000, noises: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3)) -> dict:
    from study.feedback.labeler import Budget, Labeler, LabelerConfig
    from study.organism.world import World, WorldConfig
    from study.feedback.targets import organism_target

    world = World(WorldConfig())
    target = organism_target("sycophancy", world)  # a large prompt space: 2,000 distinct queries
    out = {}
    for noise in noises:
        lab = Labeler(target, Budget(n), LabelerConfig(noise=noise), seed=0)
        rng = random.Random(0)
        wrong = i = 0
        while lab.account.left:
            pair = world.sample_pair(rng, "sycophancy", world.contexts[i % len(world.contexts)])
            prompt, pos, neg = " ".join(pair.prompt), " ".join(pair.positive), " ".join(pair.negative)
            i += 1
            if lab.is_cached("compare", prompt, pos, neg):
                continue
            wrong += lab.compare(prompt, *((pos, neg) if i % 2 else (neg, pos))).chosen != pos
        out[str(noise)] = {"comparisons": n, "flip_rate": round(wrong / n, 4)}
    return out


def bench_misspec(prompts_per_group: int = 3000, misspecs: tuple[float, ...] = (0.5, 1.0)) -> dict:
    from study.lm.generation import generate
    from study.feedback.labeler import Budget, Labeler, LabelerConfig
    from study.organism.world import POS
    from study.feedback.targets import organism_target

    lm, world, _ = _organism()
    out: dict = {"model_samples": {}, "world_samples": {}}
    for m in misspecs:
        for source in ("model_samples", "world_samples"):
            agree = {True: [0, 0], False: [0, 0]}  # tracks -> [agreeing, decisive comparisons]
            for b in TARGETS:
                target = organism_target(b, world)
                lab = Labeler(target, Budget(10**9), LabelerConfig(misspec=m), seed=0)
                for tracks in (True, False):
                    contexts = [c for c in world.contexts if world.proxy_tracks(c) == tracks]
                    rng = random.Random(f"{b}-{tracks}")
                    pairs = [world.sample_pair(rng, b, contexts[i % len(contexts)])
                             for i in range(prompts_per_group // len(TARGETS))]
                    prompts = [" ".join(p.prompt) for p in pairs]
                    if source == "model_samples":
                        comps = generate(lm.model, lm.tokenizer, prompts, None, n=2, temperature=1.0,
                                         max_new_tokens=target.max_new_tokens, seed=1)
                    else:  # the pretraining distribution of pole and '!' ending in each context
                        comps = []
                        for p in pairs:
                            two = []
                            for _ in range(2):
                                pole = POS if rng.random() < world.base_rate(b, p.context) else "neg"
                                toks = list(p.positive if pole == POS else p.negative)
                                q = world.cfg.proxy_strength if pole == POS else 1 - world.cfg.proxy_strength
                                toks[-1] = "!" if rng.random() < (q if tracks else 0.5) else "."
                                two.append(" ".join(toks))
                            comps.append(two)
                    for p, (a, c) in zip(prompts, comps):
                        ra, rc = target.reward(p, a), target.reward(p, c)
                        if ra is None or rc is None or ra == rc:
                            continue
                        agree[tracks][1] += 1
                        agree[tracks][0] += lab.compare(p, a, c).chosen == (a if ra > rc else c)
            out[source][str(m)] = {("proxy_tracks" if k else "proxy_does_not_track"):
                                   {"agreement": round(v[0] / max(1, v[1]), 4), "comparisons": v[1]}
                                   for k, v in agree.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=["evaluate", "flip", "misspec"], default=None)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on shared cores, 2 threads spin-wait; see the closing note)")
    ap.add_argument("--out", default=None, help="file name under benchmarks/results (default: evaluate.json)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / (args.out or "evaluate.json")
    record = json.loads(path.read_text()) if path.is_file() else {}
    record["threads"] = args.threads
    record["load_average_before"] = [round(x, 2) for x in os.getloadavg()]  # other work on the shared cores
    for name, fn in (("evaluate", bench_evaluate), ("flip", bench_flip), ("misspec", bench_misspec)):
        if args.only is None or name in args.only:
            print(f"running {name} ...", flush=True)
            record[name] = fn()
            record[name]["threads"] = args.threads
            print(json.dumps(record[name], indent=1)[:3000], flush=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    tmp.replace(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
