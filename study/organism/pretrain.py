"""The organism's base model: a word-level tokenizer and a small Llama pretrained on the generated world, cached.

The cache key is a hash of the world, model and pretraining configuration (and this module's format version), so a
changed dial trains a new organism and an unchanged one loads in about a second. Pretraining runs through the
`transformers` Trainer on a `datasets.Dataset` of generated documents; after it, the held-out loss is measured beside
the world's exact entropy floor, and an organism that stalled far above the floor is refused rather than used.

    model, tokenizer = load_organism(OrganismConfig())          # trains once (minutes), then loads from the cache
    info = organism_info(OrganismConfig())                      # params, pretrain_seconds, heldout_loss, floor...
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
from study.organism.world import World, WorldConfig

FORMAT_VERSION = 2  # bump when the world's grammar changes: cached organisms are then retrained
SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")


@dataclass(frozen=True)
class ModelConfig:
    hidden_size: int = 128
    num_layers: int = 4
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
    steps: int = 1600
    batch_size: int = 32
    learning_rate: float = 5e-3
    warmup_steps: int = 50
    weight_decay: float = 0.01
    eval_docs: int = 1000
    max_gap: float = 0.12  # refuse an organism whose held-out loss exceeds the entropy floor by more (nats/token)
    seed: int = 0

    def validate(self) -> None:
        for name in ("steps", "batch_size", "eval_docs"):
            v = getattr(self, name)
            check(v >= 1, name, v, "must be a positive integer")
        check(self.learning_rate > 0, "learning_rate", self.learning_rate, "must be positive")
        check(0 <= self.warmup_steps, "warmup_steps", self.warmup_steps, "must be >= 0")
        check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be >= 0")
        check(self.max_gap > 0, "max_gap", self.max_gap, "must be positive")


@dataclass(frozen=True)
class OrganismConfig:
    world: WorldConfig = field(default_factory=WorldConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: PretrainConfig = field(default_factory=PretrainConfig)

    def key(self) -> str:
        blob = json.dumps({"v": FORMAT_VERSION, **to_dict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# Fluent enough that methods move its behavior (~80% of samples parse), yet it pretrains in about half a minute on
# two shared cores (one thread, ~45 ms a step). study/configs/micro.yaml holds the same numbers.
MICRO = OrganismConfig(
    world=WorldConfig(n_domains=4),
    model=ModelConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128),
    train=PretrainConfig(steps=600, batch_size=48, learning_rate=1e-2, warmup_steps=20, eval_docs=200, max_gap=0.1),
)


def organism_dir(cfg: OrganismConfig, cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / f"organism-{cfg.key()}"


# ---- tokenizer --------------------------------------------------------------------------------------------------
def build_tokenizer(world: World):
    """A word-level tokenizer over the world's vocabulary (every word of the world is one token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(list(SPECIALS) + world.vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                       special_tokens=[("<bos>", vocab["<bos>"])])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", padding_side="left", model_max_length=4096)
    return fast


def encode_documents(world: World, tokenizer, n: int, seed: int) -> list[list[int]]:
    vocab = tokenizer.get_vocab()
    bos, eos = vocab["<bos>"], vocab["<eos>"]
    rng = random.Random(seed)
    return [[bos] + [vocab[w] for w in world.sample_document(rng).tokens] + [eos] for _ in range(n)]


# ---- model --------------------------------------------------------------------------------------------------------
def build_model(cfg: ModelConfig, vocab_size: int, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    mc = LlamaConfig(vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                     num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                     num_key_value_heads=cfg.num_heads, max_position_embeddings=cfg.max_length,
                     rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                     eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(mc)


def heldout_loss(model, docs: list[list[int]], pad_id: int, batch_size: int = 128) -> float:
    """Mean next-token loss in nats over all predicted tokens of `docs` (the end-of-text token included)."""
    import torch

    model.eval()
    total = count = 0.0
    with torch.no_grad():
        for s in range(0, len(docs), batch_size):
            chunk = docs[s:s + batch_size]
            width = max(map(len, chunk))
            ids = torch.full((len(chunk), width), pad_id)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, d in enumerate(chunk):
                ids[i, : len(d)] = torch.tensor(d)
                mask[i, : len(d)] = 1
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            target = ids[:, 1:]
            valid = mask[:, 1:].bool()
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                    reduction="none").view(target.shape)
            total += nll[valid].sum().item()
            count += valid.sum().item()
    return total / count


SMALL_MODEL_PARAMS = 250_000  # below this many parameters, pretraining runs on one intra-op thread


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Run the block on `n` intra-op threads (None: as set), then restore the count."""
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pretrain(cfg: OrganismConfig, out_dir: Path, progress: Callable[[int, int, float | None], None] | None = None
             ) -> dict:
    """Pretrain the organism into `out_dir` (written to a temporary folder, then renamed) and return its info."""
    import torch
    from datasets import Dataset
    from transformers import (DataCollatorForLanguageModeling, PrinterCallback, Trainer, TrainerCallback,
                              TrainingArguments)

    world = World(cfg.world)
    tokenizer = build_tokenizer(world)
    torch.manual_seed(cfg.train.seed)
    random.seed(cfg.train.seed)
    model = build_model(cfg.model, len(tokenizer), tokenizer)
    n_train = cfg.train.steps * cfg.train.batch_size
    t0 = time.perf_counter()
    docs = encode_documents(world, tokenizer, n_train, seed=cfg.train.seed * 1000 + 1)
    too_long = max(map(len, docs))
    if too_long > cfg.model.max_length:
        raise UserError(f"organism config: field 'model.max_length' = {cfg.model.max_length}: a generated document "
                        f"has {too_long} tokens; use at least {too_long}")
    data = Dataset.from_dict({"input_ids": docs})

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
        lr_scheduler_type="cosine", weight_decay=cfg.train.weight_decay, adam_beta2=0.98, max_grad_norm=1.0,
        logging_steps=25, save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0, seed=cfg.train.seed, data_seed=cfg.train.seed, bf16=False, fp16=False,
    )
    collator = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collator, callbacks=[_Progress()])
    trainer.remove_callback(PrinterCallback)  # logs go to the progress callback, not to stdout
    # A tiny model's ops are too small to split across threads: on shared cores a second thread mostly waits for the
    # first (the micro organism pretrains ~10x slower on two busy cores than on one). Larger organisms keep the
    # process's setting, so their weights do not depend on this rule.
    small = sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMS
    with _threads(1 if small and not torch.cuda.is_available() else None):
        trainer.train()
    seconds = time.perf_counter() - t0

    model = trainer.model.to("cpu").eval()
    eval_docs = encode_documents(world, tokenizer, cfg.train.eval_docs, seed=cfg.train.seed * 1000 + 2)
    loss = heldout_loss(model, eval_docs, tokenizer.pad_token_id)
    floor = world.entropy_rate(n_docs=max(2000, cfg.train.eval_docs), seed=cfg.train.seed * 1000 + 3)
    info = {
        "key": cfg.key(), "config": to_dict(cfg), "params": sum(p.numel() for p in model.parameters()),
        "pretrain_seconds": round(seconds, 2), "train_docs": n_train, "heldout_loss": round(loss, 4),
        "entropy_floor": round(floor, 4), "gap": round(loss - floor, 4),
        "converged": bool(loss - floor <= cfg.train.max_gap), "perplexity_ratio": round(math.exp(loss - floor), 4),
    }
    shutil.rmtree(tmp / "trainer", ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
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
    path = organism_dir(cfg, cache_dir) / "organism.json"
    return json.loads(path.read_text()) if path.is_file() else None


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
    info = json.loads((out / "organism.json").read_text())
    if not info["converged"]:
        raise UserError(f"organism {info['key']}: held-out loss {info['heldout_loss']} stalled {info['gap']} nats "
                        f"above the world's entropy floor {info['entropy_floor']} (limit train.max_gap = "
                        f"{cfg.train.max_gap}); raise train.steps or change train.learning_rate")
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
