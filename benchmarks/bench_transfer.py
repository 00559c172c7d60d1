"""Is transfer across contexts neither free nor absent, and does the representation-sharing dial control it?

Three measurements, recorded in benchmarks/results/transfer.json:
1. pole-word overlap: for each behavior, the largest Jaccard overlap of two domains' pole vocabularies;
2. a linear probe (logistic regression) on the base model's hidden states, trained on the contexts of half of the
   domains, scored on held-out samples of those contexts and on the other domains' contexts;
3. the probe's held-out-context accuracy at several settings of the dial (each setting pretrains its own organism,
   cached after the first run).

    python benchmarks/bench_transfer.py                      # dial settings 0, 0.4, 1.0; organism seeds 0, 1, 2
    python benchmarks/bench_transfer.py --sharing 0 0.2 0.4 0.7 1.0 --seeds 0
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

from study.lm.hooks import record_activations
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


SITES = ("pole_word", "next_token", "end")


def features(model, tokenizer, world: World, behavior: str, per_context: int, layers: list[int], seed: int):
    """Hidden states for both poles of each prompt at three read sites: the first pole-bearing word, the token after
    it, and the last token of the episode (where a model that expects the document to go on, possibly in another
    domain, has to carry the pole)."""
    rng = random.Random(seed)
    texts, labels, contexts, where = [], [], [], []
    for c in world.contexts:
        for _ in range(per_context):
            pair = world.sample_pair(rng, behavior, c)
            for comp, y in ((pair.positive, 1), (pair.negative, 0)):
                texts.append(" ".join(pair.prompt + comp))
                labels.append(y)
                contexts.append(c)
                first = len(pair.prompt) + 1  # index of the pole word (+1 for <bos>)
                where.append({"pole_word": first, "next_token": first + 1, "end": len(pair.prompt) + len(comp)})
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    width = enc["input_ids"].shape[1]
    blocks = model.model.layers
    with torch.no_grad(), record_activations(blocks, layers) as acts:
        for s in range(0, len(texts), 256):
            model(input_ids=enc["input_ids"][s:s + 256], attention_mask=enc["attention_mask"][s:s + 256])
    lengths = enc["attention_mask"].sum(1)
    feats = {}
    for site in SITES:
        pos = torch.tensor([width - int(n) + w[site] for n, w in zip(lengths, where)])  # left padding offset
        feats[site] = {layer: torch.cat(acts[layer])[torch.arange(len(texts)), pos].float() for layer in layers}
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


def organism_config(sharing: float, seed: int) -> OrganismConfig:
    """The default organism with the dial at `sharing` and pretraining seed `seed` (initialization and data order)."""
    cfg = OrganismConfig()
    return dataclasses.replace(cfg, world=dataclasses.replace(cfg.world, sharing=sharing),
                               train=dataclasses.replace(cfg.train, seed=seed))


def domain_splits(world: World, n: int) -> list[set[str]]:
    """`n` sets of trained contexts, each half of the domains with both formats. The first is the half that
    anticipation covers first (World.coverage_order); the others are drawn at random (fixed seeds)."""
    half = len(world.coverage_order) // 2
    splits = [set(world.coverage_order[:half])]
    names = [d.name for d in world.domains]
    rng = random.Random(0)
    while len(splits) < n:
        chosen = set(rng.sample(names, len(names) // 2))
        ctx = {c for c in world.contexts if c.split("/")[0] in chosen}
        if ctx not in splits:
            splits.append(ctx)
    return splits


def direction_alignment(x: torch.Tensor, y: torch.Tensor, contexts: list[str]) -> float:
    """Mean cosine, over pairs of domains, between the domains' own pole directions (mean of the positive minus mean
    of the negative hidden states, both formats pooled): 1 when every domain encodes the pole along one direction,
    about 0 when each has its own."""
    domains = sorted({c.split("/")[0] for c in contexts})
    dom = [c.split("/")[0] for c in contexts]
    dirs = []
    for d in domains:
        m = torch.tensor([c == d for c in dom])
        dirs.append(x[m & (y == 1)].mean(0) - x[m & (y == 0)].mean(0))
    v = torch.nn.functional.normalize(torch.stack(dirs), dim=1)
    cos = v @ v.T
    n = len(domains)
    return round(float((cos.sum() - cos.diagonal().sum()) / (n * (n - 1))), 4)


def run(sharing: float, seed: int, per_context: int, n_splits: int, cache_dir: str | None) -> dict:
    cfg = organism_config(sharing, seed)
    t0 = time.perf_counter()
    model, tokenizer = load_organism(cfg, cache_dir)
    info = organism_info(cfg, cache_dir)
    world = World(cfg.world)
    layers = list(range(cfg.model.num_layers))
    splits = domain_splits(world, n_splits)
    result = {"sharing": sharing, "seed": seed, "organism": info["key"], "heldout_loss": info["heldout_loss"],
              "entropy_floor": info["entropy_floor"], "pretrain_seconds": info["pretrain_seconds"],
              "splits": [sorted({c.split("/")[0] for c in sp}) for sp in splits], "probe": {}}
    for behavior in BEHAVIORS:
        feats, y, ctx = features(model, tokenizer, world, behavior, per_context, layers, seed=1)
        idx = torch.arange(len(y))
        result["probe"][behavior] = {site: {} for site in SITES}
        for site in SITES:
            for layer in layers:
                x = feats[site][layer]
                accs = []
                for train_ctx in splits:
                    in_train = torch.tensor([c in train_ctx for c in ctx])
                    # every other prompt of the trained contexts is held out (both poles of a prompt stay together)
                    fit_mask = in_train & ((idx // 2) % 2 == 0)
                    heldout_same = in_train & ((idx // 2) % 2 == 1)
                    accs.append(probe_accuracy(x[fit_mask], y[fit_mask], {
                        "trained_contexts": (x[heldout_same], y[heldout_same]),
                        "heldout_contexts": (x[~in_train], y[~in_train])}))
                result["probe"][behavior][site][layer] = {
                    **{k: round(sum(a[k] for a in accs) / len(accs), 4) for k in ("trained_contexts",
                                                                                  "heldout_contexts")},
                    "direction_cosine": direction_alignment(x, y, ctx)}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def summarize(settings: list[dict]) -> dict:
    """Per behavior and read site: for each dial setting, probe accuracy averaged over layers, splits and organism
    seeds (trained / held-out contexts), the seed-to-seed standard deviation of the held-out figure, and whether the
    held-out accuracy rises with the dial."""
    out: dict = {}
    dials = sorted({r["sharing"] for r in settings})
    for b in BEHAVIORS:
        for site in SITES:
            rows = []
            for s in dials:
                per_seed = {k: [sum(v[k] for v in r["probe"][b][site].values()) / len(r["probe"][b][site])
                                for r in settings if r["sharing"] == s]
                            for k in ("trained_contexts", "heldout_contexts", "direction_cosine")}
                ho = per_seed["heldout_contexts"]
                mean = sum(ho) / len(ho)
                sd = (sum((v - mean) ** 2 for v in ho) / (len(ho) - 1)) ** 0.5 if len(ho) > 1 else None
                rows.append({"sharing": s, "seeds": len(ho), "heldout": round(mean, 4),
                             "heldout_sd": None if sd is None else round(sd, 4),
                             "trained": round(sum(per_seed["trained_contexts"]) / len(ho), 4),
                             "direction_cosine": round(sum(per_seed["direction_cosine"]) / len(ho), 4)})
            out.setdefault(b, {})[site] = {"by_sharing": rows, "rises_with_dial": all(
                a["heldout"] < c["heldout"] for a, c in zip(rows, rows[1:]))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sharing", type=float, nargs="+", default=[0.0, 0.4, 1.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="organism pretraining seeds per setting")
    ap.add_argument("--splits", type=int, default=6, help="domain splits (trained / held-out) per organism")
    ap.add_argument("--per-context", type=int, default=48)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", type=Path, default=RESULTS / "transfer.json")
    args = ap.parse_args()
    world = World(WorldConfig())
    out = {"command": "python benchmarks/bench_transfer.py " + " ".join(
               [f"--sharing {' '.join(map(str, args.sharing))}", f"--seeds {' '.join(map(str, args.seeds))}",
                f"--splits {args.splits}", f"--per-context {args.per_context}"]),
           "pole_word_overlap_max": pole_overlap(world), "settings": []}
    for s in args.sharing:
        for seed in args.seeds:
            r = run(s, seed, args.per_context, args.splits, args.cache_dir)
            out["settings"].append(r)
            print(f"sharing {s} seed {seed}: loss {r['heldout_loss']} (floor {r['entropy_floor']})", flush=True)
            for site in SITES:
                print(f"  {site:10s} trained/held-out per layer: " + "; ".join(
                    f"{b} " + " ".join(f"{v['trained_contexts']:.2f}/{v['heldout_contexts']:.2f}"
                                       for v in r["probe"][b][site].values()) for b in r["probe"]), flush=True)
    out["summary"] = summarize(out["settings"])
    for b, sites in out["summary"].items():
        for site, v in sites.items():
            print(f"{b:10s} {site:10s} held-out (trained) by dial: " + ", ".join(
                f"{r['sharing']}: {r['heldout']:.3f}" + (f"+-{r['heldout_sd']:.3f}" if r["heldout_sd"] else "")
                + f" ({r['trained']:.3f}; cos {r['direction_cosine']:.2f})" for r in v["by_sharing"])
                + f"; rises: {v['rises_with_dial']}")
    print("pole-word overlap (max Jaccard between two domains):", out["pole_word_overlap_max"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
