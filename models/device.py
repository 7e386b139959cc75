"""Where a model runs and in which float type: one rule for the policy, the PRM and the engines."""

from __future__ import annotations

import torch


def pick_device(num_gpus: float) -> str:
    """ "cuda" when the replica asks for a GPU share and one is visible, else "cpu"."""
    return "cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str, device: str) -> torch.dtype:
    """ "auto": bf16 on GPU, fp32 on CPU; otherwise the named torch dtype."""
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)
