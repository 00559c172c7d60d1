"""Presets for the TRL trainers, kept in one place: fast on a CPU with a small model, the same code on a GPU.

On a CPU: 32-bit floats (no bf16/fp16), no gradient checkpointing (it only trades time for memory that a small model
does not need), no reporting, no checkpoint saving, no dataloader workers or pinned memory, no progress bars. On a GPU
the same arguments apply except that bf16 is used where the card supports it (`precision="auto"`). Every trainer of
`methods.lora_sft`, `methods.dpo`, `methods.reward_model` and `methods.rlhf` takes its arguments from `trainer_args`.

    from trl import DPOConfig
    args = trainer_args(DPOConfig, work_dir, seed=0, device="cpu", learning_rate=5e-3, max_steps=40, beta=0.1)
    lora = lora_config(model, rank=8, alpha=16, task_type="CAUSAL_LM")
"""

from __future__ import annotations

import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from study.lm.architectures import lora_target_modules, modules_outside_blocks

# Projections of the attention and MLP blocks in Llama/Qwen2/Mistral/Gemma (q..down), GPT-2 (c_attn, c_proj, c_fc)
# and GPT-NeoX (query_key_value, dense, dense_h_to_4h, dense_4h_to_h). PEFT keeps only the names a model has.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                "c_attn", "c_proj", "c_fc", "query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")


def quiet() -> None:
    """Silence per-step chatter of datasets/transformers/accelerate (progress bars, info logs) in cell workers."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")  # DPOTrainer's reference pass draws a tqdm bar otherwise


def use_bf16(device: str, precision: str = "auto") -> bool:
    import torch

    if precision == "fp32":
        return False
    on_cuda = str(device).startswith("cuda") and torch.cuda.is_available()
    if precision == "bf16":
        return True
    return on_cuda and torch.cuda.is_bf16_supported()


def trainer_args(config_cls: type, work_dir: str | Path, *, seed: int, device: str = "cpu",
                 precision: str = "auto", **fields: Any) -> Any:
    """A TRL `XConfig` with the presets above and `fields` (learning_rate, max_steps, beta, ...) on top."""
    bf16 = use_bf16(device, precision)
    preset = dict(
        output_dir=str(work_dir), seed=seed, data_seed=seed, bf16=bf16, fp16=False, gradient_checkpointing=False,
        report_to=[], save_strategy="no", eval_strategy="no", logging_strategy="steps", logging_steps=1,
        disable_tqdm=True, dataloader_num_workers=0, dataloader_pin_memory=False, use_cpu=not str(device).startswith(
            "cuda"), lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
    )
    preset.update(fields)
    return config_cls(**preset)


def lora_config(model: Any, rank: int, alpha: float, task_type: str = "CAUSAL_LM", dropout: float = 0.0,
                targets: tuple[str, ...] = LORA_TARGETS) -> Any:
    """A LoraConfig on the attention and MLP projections of `model`'s decoder blocks, as found by
    `lora_target_modules` (fused ones such as Phi-3's qkv_proj too; never the LM head: TRL computes log-probabilities
    from its weight directly, so an adapter there would not train, nor a vision tower's namesakes). Passing
    `targets` names the modules instead. GPT-2's projections are transposed (`Conv1D`), which LoRA must know."""
    from peft import LoraConfig

    # The default means "what the model has"; on Llama-style models that is q..down_proj, as with the old list.
    names = lora_target_modules(model) if targets is LORA_TARGETS else list(targets)
    exclude = modules_outside_blocks(model, names)
    conv1d = any(type(m).__name__ == "Conv1D" for m in model.modules())
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=names,
                      exclude_modules=exclude or None, task_type=task_type, bias="none", fan_in_fan_out=conv1d)


@contextmanager
def work_dir(ctx_dir: str | Path | None, name: str) -> Iterator[Path]:
    """A scratch folder for one trainer: under the cell's work_dir if given, else a temporary one removed after."""
    if ctx_dir is not None:
        path = Path(ctx_dir) / name
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=f"rvs-{name}-") as tmp:
        yield Path(tmp)


def silence_trainer(trainer: Any) -> Any:
    """Remove the callbacks that print to stdout (logs go to `trainer.state.log_history`)."""
    from transformers import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    return trainer


def trainer_name(trainer: Any) -> str:
    """'trl.DPOTrainer': the package and class that trained, as stored in the cell record."""
    return f"{type(trainer).__module__.split('.')[0]}.{type(trainer).__name__}"
