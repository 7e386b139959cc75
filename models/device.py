"""Where a model runs and in which float type: one rule for the policy, the PRM, the engines and training.

Training's `bf16: auto` follows the hardware: bf16 autocast on a GPU that supports it, and on a CPU only
when its cores have bf16 units (`avx512_bf16` or AMX, `amx_bf16`). Without them bf16 is emulated and
slower than fp32: a 2-core Xeon with AVX-512F but neither flag ran a countdown warm-start step in bf16
autocast at under 0.5 steps/s where fp32 ran 0.72 (shared/MEASURED.md); an AMD EPYC with `avx512_bf16`
ran the same model 1.87 vs 1.21 steps/s (docs/CALIBRATION.md, issue 26).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # either one: native bf16 dot products on the CPU


def pick_device(num_gpus: float) -> str:
    """ "cuda" when the replica asks for a GPU share and one is visible, else "cpu"."""
    return "cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str, device: str) -> torch.dtype:
    """ "auto": bf16 on GPU, fp32 on CPU; otherwise the named torch dtype."""
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


@functools.cache
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The feature flags of this machine's first CPU (Linux `/proc/cpuinfo`; empty where unreadable)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when the CPU computes in bf16 natively (`BF16_CPU_FLAGS`)."""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def train_bf16(setting: str, device_type: str, flags: frozenset[str] | None = None) -> bool:
    """Whether a training job runs its forward pass under bf16 autocast.

    `setting` is `TrainConfig.bf16`: `true`/`false` force it; `auto` asks the hardware: a GPU that
    supports bf16, or a CPU with bf16 units (`cpu_has_bf16`)."""
    value = str(setting).lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    if value != "auto":
        raise ValueError(f"train bf16 must be auto, true or false, got {setting!r}")
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return cpu_has_bf16(flags)


def train_dtype_name(setting: str, device_type: str = "cpu") -> str:
    """ "bfloat16" or "float32": what `train_bf16` chooses, as printed and put in cache keys."""
    return "bfloat16" if train_bf16(setting, device_type) else "float32"
