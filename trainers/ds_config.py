"""DeepSpeed configuration from a `TrainConfig`: a plain dict, built without importing deepspeed."""

from __future__ import annotations

import math
from typing import Any


def use_bf16(bf16: str, use_gpu: bool) -> bool:
    """`bf16: auto` means bf16 on GPU and fp32 on CPU; `true`/`false` force it."""
    value = str(bf16).lower()
    if value == "auto":
        return use_gpu
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise ValueError(f"train bf16 must be auto, true or false, got {bf16!r}")


def warmup_steps(train_cfg: Any, total_steps: int) -> int:
    return int(math.ceil(train_cfg.warmup_ratio * total_steps)) if total_steps > 0 else 0


def build_ds_config(train_cfg: Any, world_size: int, total_steps: int | None) -> dict[str, Any]:
    """DeepSpeed config for one job.

    `world_size` is the number of data-parallel workers; `total_steps` the number of optimizer steps
    (None when unknown: then the LR warms up and stays flat, WarmupLR, instead of WarmupDecayLR).
    On CPU the optimizer is torch's AdamW (`torch_adam`): DeepSpeed's fused Adam would need a C++ build.
    """
    stage = int(train_cfg.zero_stage)
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"train zero_stage must be 0-3, got {stage}")
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    micro = int(train_cfg.micro_batch_size)
    gas = int(train_cfg.gradient_accumulation_steps)
    zero: dict[str, Any] = {"stage": stage}
    if stage >= 2:
        zero.update(overlap_comm=False, contiguous_gradients=True)
    if stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if train_cfg.offload:
        if stage == 0:
            raise ValueError("train offload needs zero_stage >= 1 (ZeRO-Offload partitions the optimizer)")
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": bool(train_cfg.use_gpu)}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": bool(train_cfg.use_gpu)}

    optimizer_params: dict[str, Any] = {
        "lr": float(train_cfg.lr),
        "weight_decay": float(train_cfg.weight_decay),
        "betas": [0.9, 0.999],
        "eps": 1e-8,
    }
    if not train_cfg.use_gpu and not train_cfg.offload:
        optimizer_params["torch_adam"] = True

    warmup = warmup_steps(train_cfg, total_steps or 0)
    # DeepSpeed's linear warmup gives step 0 exactly warmup_min_lr: with 0 there, the first update of every
    # job was lost (a 1-step job learned nothing). lr / (warmup + 1) is what the in-process engine's first
    # step gets (trainers/engine.py), so both engines start alike.
    first_lr = float(train_cfg.lr) / (warmup + 1)
    if total_steps:
        scheduler = {
            "type": "WarmupDecayLR",
            "params": {
                "warmup_min_lr": first_lr,
                "warmup_max_lr": float(train_cfg.lr),
                "warmup_num_steps": warmup,
                "total_num_steps": int(total_steps),
                "warmup_type": "linear",
            },
        }
    else:
        scheduler = {
            "type": "WarmupLR",
            "params": {
                "warmup_min_lr": first_lr,
                "warmup_max_lr": float(train_cfg.lr),
                "warmup_num_steps": warmup,
                "warmup_type": "linear",
            },
        }

    return {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": gas,
        "train_batch_size": micro * gas * world_size,
        "gradient_clipping": float(train_cfg.max_grad_norm),
        "optimizer": {"type": "AdamW", "params": optimizer_params},
        "scheduler": scheduler,
        "zero_optimization": zero,
        "bf16": {"enabled": use_bf16(train_cfg.bf16, bool(train_cfg.use_gpu))},
        "fp16": {"enabled": False},
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
