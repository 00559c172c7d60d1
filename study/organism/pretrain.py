"""The organism's base model: a word-level tokenizer and a small Llama pretrained on the generated world, cached.

The cache key is a hash of the world, model and pretraining configuration (and this module's format version), so a
changed dial trains a new organism and an unchanged one loads in about a second. Pretraining runs through the
`transformers` Trainer on a `datasets.Dataset` of generated documents, packed into rows (corpus.py), with the
behavior decision tokens weighted by `train.decision_weight`. It is deterministic: fixed seeds for data,
initialization and trainer, deterministic kernels and a fixed intra-op thread count, so one configuration gives
bit-identical weights on one machine; `weights_hash` fingerprints them. `train.seed` is the organism *draw*: studies
run several draws of one configuration.

After pretraining, two checks: the held-out loss beside the world's exact entropy floor (an organism that stalled
more than `train.max_gap` above it is refused), and the behavior check (behavior_check.py: per condition, the
model's P(POS) at each behavior's decision against the world's), recorded as `behavior_check` and judged against
`train.behavior_tol`; an organism whose largest bucket error exceeds `train.behavior_max_error` is refused.

    model, tokenizer = load_organism(OrganismConfig())          # trains once (minutes), then loads from the cache
    info = organism_info(OrganismConfig())                      # params, heldout_loss, entropy_floor, weights_sha256,
    info["behavior_check"]["max_error"], info["behavior_ok"]    # behavior_check, pretrain_seconds...
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from contextlib import contextmanager
from typing import Callable, Iterator

from study.core.cache import default_cache_dir  # noqa: F401 - also imported from here by callers
from study.core.config import check, to_dict
from study.core.errors import UserError
from study.lm.models import LoadedModel, prepare, torch_dtype
from study.organism.behavior_check import behavior_check
from study.organism.corpus import SPECIALS, build_tokenizer, encode_documents, heldout_loss, pack, weighted_loss
from study.organism.world import World, WorldConfig

FORMAT_VERSION = 4  # bump when the world's grammar changes: cached organisms are then retrained
PACK_WIDTH = 192  # pretraining packs a batch's documents into rows of this many tokens (corpus.pack)
__all__ = ["FORMAT_VERSION", "MICRO", "SPECIALS", "ModelConfig", "OrganismConfig", "PretrainConfig", "build_model",
           "build_tokenizer", "default_cache_dir", "encode_documents", "ensure_organism", "heldout_loss",
           "load_organism", "organism_dir", "organism_info", "organism_model", "pretrain", "weights_hash"]


@dataclass(frozen=True)
class ModelConfig:
    hidden_size: int = 128
    num_layers: int = 2  # the v2 world's links are learned sooner by 2 layers and more steps than by 4 and fewer
    num_heads: int = 4
    intermediate_size: int = 384
    max_length: int = 96

    def validate(self) -> None:
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_length"):
            v = getattr(self, name)
            check(v >= 1, name, v, "must be a positive integer")
        check(self.hidden_size % self.num_heads == 0, "num_heads", self.num_heads,
              f"must divide hidden_size ({self.hidden_size})")
        check(self.max_length >= 64, "max_length", self.max_length, "must be at least 64 to hold a document")


@dataclass(frozen=True)
class PretrainConfig:
    steps: int = 3000
    batch_size: int = 32
    learning_rate: float = 5e-3
    schedule: str = "wsd"  # warmup, constant, cosine decay over the last fifth of the steps; or "cosine" throughout
    warmup_steps: int = 50
    weight_decay: float = 0.01
    eval_docs: int = 1000
    decision_weight: float = 3.0  # loss weight of behavior decision tokens (corpus.py); the optimum stays the world's
    max_gap: float = 0.12  # refuse an organism whose held-out loss exceeds the entropy floor by more (nats/token)
    check_docs: int = 3000  # held-out documents for the behavior check
    behavior_tol: float = 0.05  # the behavior check passes (behavior_ok) when every bucket's error is within this
    behavior_max_error: float = 0.3  # refuse an organism whose largest bucket error exceeds this (grossly off)
    threads: int = 1  # intra-op threads while pretraining on a CPU (float sums, hence the weights, depend on it)
    seed: int = 0  # the organism draw

    def validate(self) -> None:
        for name in ("steps", "batch_size", "eval_docs", "check_docs", "threads"):
            v = getattr(self, name)
            check(v >= 1, name, v, "must be a positive integer")
        for name in ("behavior_tol", "behavior_max_error"):
            v = getattr(self, name)
            check(0 < v <= 1, name, v, "must lie in (0, 1] (a difference of probabilities)")
        check(self.behavior_tol <= self.behavior_max_error, "behavior_tol", self.behavior_tol,
              f"must not exceed behavior_max_error ({self.behavior_max_error})")
        check(self.learning_rate > 0, "learning_rate", self.learning_rate, "must be positive")
        check(self.schedule in ("cosine", "wsd"), "schedule", self.schedule, "must be 'cosine' or 'wsd'")
        check(0 <= self.warmup_steps, "warmup_steps", self.warmup_steps, "must be >= 0")
        check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be >= 0")
        check(self.decision_weight >= 1, "decision_weight", self.decision_weight, "must be >= 1 (1: unweighted)")
        check(self.max_gap > 0, "max_gap", self.max_gap, "must be positive")


@dataclass(frozen=True)
class OrganismConfig:
    world: WorldConfig = field(default_factory=WorldConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: PretrainConfig = field(default_factory=PretrainConfig)

    def key(self) -> str:
        """Hash of what makes the organism: its verdict limits (VERDICT_FIELDS) are left out, so changing a limit
        re-judges a cached organism rather than pretraining a new one."""
        d = to_dict(self)
        d["train"] = {k: v for k, v in d["train"].items() if k not in VERDICT_FIELDS}
        d["world"] = {k: v for k, v in d["world"].items() if not (k in LATER_DIALS and v is None)}
        blob = json.dumps({"v": FORMAT_VERSION, **d}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


VERDICT_FIELDS = ("max_gap", "behavior_tol", "behavior_max_error")  # PretrainConfig fields that judge, not make
# World dials added after format v4, default off (None): left out of the key while off, so adding one keeps every
# cached organism (the generator draws the same documents). A later default-off dial belongs here too.
LATER_DIALS = ("bridge_scale",)


def judged(info: dict, cfg: OrganismConfig) -> dict:
    """The organism's record with its verdicts under `cfg`'s limits: converged, behavior_tol, behavior_ok."""
    max_error = (info.get("behavior_check") or {}).get("max_error")
    return {**info, "converged": bool(info.get("gap", math.inf) <= cfg.train.max_gap),
            "behavior_tol": cfg.train.behavior_tol,
            "behavior_ok": max_error is not None and max_error <= cfg.train.behavior_tol}


# Fluent (~88% of samples parse), and it pretrains in about 40 s on one thread. It learns the claim and request links
# but misses some links between episodes (behavior check ~0.28), so it is held to a loose behavior limit: it serves
# tests of the harness's mechanics, not findings. study/configs/micro.yaml holds the same numbers.
MICRO = OrganismConfig(
    world=WorldConfig(n_domains=4, base_rate_spread=0.15),
    model=ModelConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128),
    train=PretrainConfig(steps=600, batch_size=48, learning_rate=1e-2, warmup_steps=20, eval_docs=200, max_gap=0.1,
                         check_docs=1500, behavior_max_error=0.5),
)


def organism_dir(cfg: OrganismConfig, cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / f"organism-{cfg.key()}"


# ---- model --------------------------------------------------------------------------------------------------------
def build_model(cfg: ModelConfig, vocab_size: int, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    mc = LlamaConfig(vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                     num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                     num_key_value_heads=cfg.num_heads, max_position_embeddings=cfg.max_length,
                     rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                     eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(mc)


def weights_hash(model) -> str:
    """sha256 of the weights: over the state dict's keys in sorted order, each key's name, shape and its tensor as
    contiguous float32 bytes. The same for a model and its saved-and-loaded copy (tied weights appear under both
    names in either)."""
    import torch

    h = hashlib.sha256()
    state = model.state_dict()
    for key in sorted(state):
        t = state[key].detach().to("cpu", torch.float32).contiguous()
        h.update(f"{key}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


@contextmanager
def _deterministic(threads: int) -> Iterator[None]:
    """Inside the block: `threads` intra-op threads and deterministic kernels (cuBLAS too); restored afterwards."""
    import torch

    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(), os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    if torch.cuda.is_available() and before[3] is None:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1], warn_only=before[2])
        if before[3] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def pretrain(cfg: OrganismConfig, out_dir: Path, progress: Callable[[int, int, float | None], None] | None = None
             ) -> dict:
    """Pretrain the organism into `out_dir` (written to a temporary folder, then renamed) and return its info."""
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    world = World(cfg.world)
    tokenizer = build_tokenizer(world)
    seed = cfg.train.seed
    n_train = cfg.train.steps * cfg.train.batch_size
    t0 = time.perf_counter()
    docs, weights = encode_documents(world, tokenizer, n_train, seed=seed * 1000 + 1,
                                     decision_weight=cfg.train.decision_weight)
    too_long = max(map(len, docs))
    if too_long > cfg.model.max_length:
        raise UserError(f"organism config: field 'model.max_length' = {cfg.model.max_length}: a generated document "
                        f"has {too_long} tokens; use at least {too_long}")
    data = Dataset.from_dict({"input_ids": docs, "weights": weights})

    class _WeightedTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = model(input_ids=inputs["input_ids"], position_ids=inputs["position_ids"], use_cache=False)
            loss = weighted_loss(out.logits, inputs["labels"], inputs["weights"])
            return (loss, out) if return_outputs else loss

    class _Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if progress and logs and "loss" in logs:
                progress(state.global_step, state.max_steps, float(logs["loss"]))

        def on_step_end(self, args, state, control, **kw):
            if progress and state.global_step % 10 == 0:
                progress(state.global_step, state.max_steps, None)

    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    args = TrainingArguments(
        output_dir=str(tmp / "trainer"), per_device_train_batch_size=cfg.train.batch_size,
        max_steps=cfg.train.steps, learning_rate=cfg.train.learning_rate, warmup_steps=cfg.train.warmup_steps,
        lr_scheduler_type="cosine" if cfg.train.schedule == "cosine" else "warmup_stable_decay",
        lr_scheduler_kwargs={} if cfg.train.schedule == "cosine" else {"num_decay_steps": max(1, cfg.train.steps // 5)},
        weight_decay=cfg.train.weight_decay, adam_beta2=0.98, max_grad_norm=1.0,
        logging_steps=25, save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0, seed=seed, data_seed=seed, bf16=False, fp16=False, remove_unused_columns=False,
    )
    # A tiny model's ops are too small to split across threads: on shared cores a second thread mostly waits for the
    # first. One fixed count also keeps the float sums, hence the weights, the same from run to run.
    with _deterministic(cfg.train.threads):
        torch.manual_seed(seed)
        random.seed(seed)
        model = build_model(cfg.model, len(tokenizer), tokenizer)
        trainer = _WeightedTrainer(model=model, args=args, train_dataset=data, callbacks=[_Progress()],
                                   data_collator=lambda batch: pack(batch, tokenizer.pad_token_id, PACK_WIDTH))
        trainer.remove_callback(PrinterCallback)  # logs go to the progress callback, not to stdout
        trainer.train()
    seconds = time.perf_counter() - t0

    model = trainer.model.to("cpu").eval()
    eval_docs, _ = encode_documents(world, tokenizer, cfg.train.eval_docs, seed=seed * 1000 + 2)
    loss = heldout_loss(model, eval_docs, tokenizer.pad_token_id)
    floor = world.entropy_rate(n_docs=max(2000, cfg.train.eval_docs), seed=seed * 1000 + 3)
    rng = random.Random(seed * 1000 + 4)
    check_docs = [world.sample_document(rng) for _ in range(cfg.train.check_docs)]
    behavior = behavior_check(model, tokenizer, world, check_docs)
    info = {
        "key": cfg.key(), "config": to_dict(cfg), "params": sum(p.numel() for p in model.parameters()),
        "pretrain_seconds": round(seconds, 2), "train_docs": n_train, "heldout_loss": round(loss, 4),
        "entropy_floor": round(floor, 4), "gap": round(loss - floor, 4),
        "perplexity_ratio": round(math.exp(loss - floor), 4), "behavior_check": behavior,
        "weights_sha256": weights_hash(model), "device": str(args.device), "threads": cfg.train.threads,
        "torch": torch.__version__,
    }
    shutil.rmtree(tmp / "trainer", ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    info = judged(info, cfg)
    (tmp / "organism.json").write_text(json.dumps(info, indent=2, sort_keys=True))
    if out_dir.exists():  # another process finished first: keep its copy
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)
    return info


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock; the rename in pretrain() still keeps the cache whole
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: the process exists but belongs to someone else
        return True
    return True


def clean_abandoned(cache_dir: Path) -> list[Path]:
    """Remove the temporary folders (`organism-<key>.tmp<pid>`) of pretraining runs whose process has died; return
    them. A killed run leaves its folder behind, and nothing else would ever remove it."""
    removed = []
    for tmp in cache_dir.glob("organism-*.tmp*"):
        pid = tmp.name.rpartition(".tmp")[2]
        if tmp.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def organism_info(cfg: OrganismConfig, cache_dir: str | Path | None = None) -> dict | None:
    """The cached organism's record (None if not pretrained): params, pretrain_seconds, heldout_loss, entropy_floor,
    gap, converged, weights_sha256, behavior_check (buckets, max_error, ...), behavior_tol, behavior_ok, device,
    threads, torch."""
    path = organism_dir(cfg, cache_dir) / "organism.json"
    return judged(json.loads(path.read_text()), cfg) if path.is_file() else None


def ensure_organism(cfg: OrganismConfig | None = None, cache_dir: str | Path | None = None,
                    progress: Callable[[int, int, float | None], None] | None = None) -> Path:
    """Path of the cached organism, pretraining it first if needed. Refuses one that did not converge."""
    cfg = cfg or OrganismConfig()
    out = organism_dir(cfg, cache_dir)
    if out.parent.is_dir():
        clean_abandoned(out.parent)
    if not (out / "organism.json").is_file():
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cache directory {out.parent}: cannot create it ({exc.strerror})") from None
        with _exclusive(out.parent / f"{out.name}.lock"):  # concurrent workers: one pretrains, the rest wait
            if not (out / "organism.json").is_file():
                pretrain(cfg, out, progress)
    info = judged(json.loads((out / "organism.json").read_text()), cfg)
    if not info["converged"]:
        raise UserError(f"organism {info['key']}: held-out loss {info['heldout_loss']} stalled {info['gap']} nats "
                        f"above the world's entropy floor {info['entropy_floor']} (limit train.max_gap = "
                        f"{cfg.train.max_gap}); raise train.steps or change train.learning_rate")
    check_ = info.get("behavior_check") or {}
    if check_.get("max_error") is not None and check_["max_error"] > cfg.train.behavior_max_error:
        raise UserError(f"organism {info['key']}: its P(POS) at behavior decisions is off the world's by "
                        f"{check_['max_error']} in bucket {check_['max_error_bucket']} (limit "
                        f"train.behavior_max_error = {cfg.train.behavior_max_error}); raise train.steps or the "
                        f"model size")
    return out


def load_organism(cfg: OrganismConfig | None = None, cache_dir: str | Path | None = None,
                  progress: Callable[[int, int, float | None], None] | None = None):
    """(model, tokenizer) of the organism, pretrained on first use and loaded from the cache afterwards."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    path = ensure_organism(cfg, cache_dir, progress)
    model = LlamaForCausalLM.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    return model, tokenizer


def organism_model(cfg: OrganismConfig | None = None, cache_dir: str | Path | None = None, *, dtype: str = "auto",
                   device: str | None = None) -> LoadedModel:
    """The organism as a LoadedModel (study.lm.models), ready for generation and hooks like any Hugging Face model."""
    model, tokenizer = load_organism(cfg, cache_dir)
    if dtype != "auto":
        model = model.to(torch_dtype(dtype))
    return prepare(model, tokenizer, "organism", device=device)
