"""Is transfer across contexts neither free nor absent, and does the representation-sharing dial control it?

Three measurements, recorded in benchmarks/results/transfer.json:
1. pole-word overlap: for each behavior, the largest Jaccard overlap of two domains' pole vocabularies;
2. a linear probe (logistic regression) on the base model's hidden states, trained on the contexts of half of the
   domains, scored on held-out samples of those contexts and on the other domains' contexts;
3. the probe's held-out-context accuracy at several settings of the dial (each setting pretrains its own organism,
   cached after the first run).

    python benchmarks/bench_transfer.py                      # dial settings 0, 0.4, 1.0
    python benchmarks/bench_transfer.py --sharing 0 0.2 0.4 0.7 1.0
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import random
import time
from pathlib import Path

import torch

from study.hooks import record_activations
from study.organism.pretrain import OrganismConfig, load_organism, organism_info
from study.organism.world import BEHAVIORS, NEG, POS, World, WorldConfig

RESULTS = Path(__file__).parent / "results"


def pole_overlap(world: World) -> dict[str, float]:
    out = {}
    for b in BEHAVIORS:
        vocab = {d.name: set(world.pole_words(b, d.name, POS)) | set(world.pole_words(b, d.name, NEG))
                 for d in world.domains}
        out[b] = max(len(vocab[a] & vocab[c]) / len(vocab[a] | vocab[c]) for a, c in itertools.combinations(vocab, 2))
    return out


def features(model, tokenizer, world: World, behavior: str, per_context: int, layers: list[int], seed: int,
             after: int = 0):
    """Hidden states at the first pole-bearing word (after=0) or `after` tokens later, for both poles of a prompt."""
    rng = random.Random(seed)
    texts, labels, contexts, where = [], [], [], []
    for c in world.contexts:
        for _ in range(per_context):
            pair = world.sample_pair(rng, behavior, c)
            for comp, y in ((pair.positive, 1), (pair.negative, 0)):
                texts.append(" ".join(pair.prompt + comp))
                labels.append(y)
                contexts.append(c)
                where.append(len(pair.prompt) + 1)  # index of the pole word (+1 for <bos>)
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    width = enc["input_ids"].shape[1]
    feats = {layer: [] for layer in layers}
    blocks = model.model.layers
    with torch.no_grad(), record_activations(blocks, layers) as acts:
        for s in range(0, len(texts), 256):
            model(input_ids=enc["input_ids"][s:s + 256], attention_mask=enc["attention_mask"][s:s + 256])
    for layer in layers:
        h = torch.cat(acts[layer])
        lengths = enc["attention_mask"].sum(1)
        pos = torch.tensor([width - int(n) + w + after for n, w in zip(lengths, where)])  # left padding offset
        feats[layer] = h[torch.arange(len(texts)), pos].float()
    return feats, torch.tensor(labels, dtype=torch.float32), contexts


def probe_accuracy(x_tr, y_tr, tests: dict[str, tuple], l2: float = 1e-2) -> dict[str, float]:
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    xs = (x_tr - mu) / sd
    w = torch.zeros(xs.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xs @ w + b, y_tr) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    out = {}
    with torch.no_grad():
        for name, (x, y) in tests.items():
            pred = (((x - mu) / sd) @ w + b) > 0
            out[name] = round(float((pred.float() == y).float().mean()), 4)
    return out


def run(sharing: float, per_context: int, cache_dir: str | None) -> dict:
    cfg = OrganismConfig()
    cfg = dataclasses.replace(cfg, world=dataclasses.replace(cfg.world, sharing=sharing))
    t0 = time.perf_counter()
    model, tokenizer = load_organism(cfg, cache_dir)
    info = organism_info(cfg, cache_dir)
    world = World(cfg.world)
    layers = list(range(cfg.model.num_layers))
    train_ctx = set(world.coverage_order[: len(world.coverage_order) // 2])
    result = {"sharing": sharing, "organism": info["key"], "heldout_loss": info["heldout_loss"],
              "entropy_floor": info["entropy_floor"], "pretrain_seconds": info["pretrain_seconds"], "probe": {}}
    for behavior in BEHAVIORS:
        result["probe"][behavior] = {}
        for site, after in (("pole_word", 0), ("next_token", 1)):
            feats, y, ctx = features(model, tokenizer, world, behavior, per_context, layers, seed=1, after=after)
            in_train = torch.tensor([c in train_ctx for c in ctx])
            # every other prompt of the trained contexts is held out (both poles of a prompt stay together)
            idx = torch.arange(len(y))
            fit_mask = in_train & ((idx // 2) % 2 == 0)
            heldout_same = in_train & ((idx // 2) % 2 == 1)
            per_layer = {}
            for layer in layers:
                x = feats[layer]
                per_layer[layer] = probe_accuracy(x[fit_mask], y[fit_mask], {
                    "trained_contexts": (x[heldout_same], y[heldout_same]),
                    "heldout_contexts": (x[~in_train], y[~in_train]),
                })
            result["probe"][behavior][site] = per_layer
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sharing", type=float, nargs="+", default=[0.0, 0.4, 1.0])
    ap.add_argument("--per-context", type=int, default=48)
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args()
    world = World(WorldConfig())
    out = {"pole_word_overlap_max": pole_overlap(world), "settings": []}
    for s in args.sharing:
        r = run(s, args.per_context, args.cache_dir)
        out["settings"].append(r)
        for site in ("pole_word", "next_token"):
            print(f"sharing {s}: loss {r['heldout_loss']} (floor {r['entropy_floor']}); probe at the {site}, "
                  "trained/held-out contexts per layer: " + "; ".join(
                      f"{b} " + " ".join(f"{v['trained_contexts']:.2f}/{v['heldout_contexts']:.2f}"
                                         for v in r["probe"][b][site].values()) for b in r["probe"]), flush=True)
    print("pole-word overlap (max Jaccard between two domains):", out["pole_word_overlap_max"])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "transfer.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
