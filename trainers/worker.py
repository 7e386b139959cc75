"""The worker side of a training job: where this loop runs, its TrainConfig, progress and results.

Every job's loop function (`trainers.sft`, `trainers.prm_train`, `trainers.dpo`) calls `worker_context`
first and reads its settings with `train_config`: the `TrainConfig` dataclass itself (conf.schema), as the
launcher (`trainers.job`) sent it, in-process or to each Ray Train worker.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass

from conf.schema import TrainConfig

log = logging.getLogger("trainers.job")  # progress lines keep the name users already filter on


def train_config(loop_config: dict) -> TrainConfig:
    """The job's TrainConfig (a typed dataclass, never a dict)."""
    cfg = loop_config["train_cfg"]
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"train_cfg must be a conf.schema.TrainConfig, not {type(cfg).__name__}")
    return cfg


@dataclass(frozen=True)
class WorkerContext:
    rank: int
    world_size: int
    distributed: bool  # True inside Ray Train (torch.distributed up, DeepSpeed engine)
    in_ray: bool


def worker_context(loop_config: dict) -> WorkerContext:
    """Where this loop runs; also silences the harmless torch.distributed FutureWarnings."""
    quiet_worker_logs()
    threads = int(train_config(loop_config).torch_threads)
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    if not loop_config["_ray_train"]:
        return WorkerContext(rank=0, world_size=1, distributed=False, in_ray=False)
    import ray.train

    ctx = ray.train.get_context()
    return WorkerContext(ctx.get_world_rank(), ctx.get_world_size(), distributed=True, in_ray=True)


def quiet_worker_logs() -> None:
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed.*")
    warnings.filterwarnings("ignore", category=FutureWarning, message=r".*all_gather_into_tensor.*")
    warnings.filterwarnings("ignore", category=FutureWarning, message=r".*reduce_scatter_tensor.*")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.distributed.*")
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)


def report(ctx: WorkerContext, metrics: dict) -> None:
    """Progress for the Ray dashboard/logs; every rank must call it equally often (V2 syncs ranks)."""
    if ctx.in_ray:
        import ray.train

        ray.train.report(metrics)
    else:
        log.info("train progress %s", metrics)


def write_metrics(path: str, metrics: dict) -> None:
    """Atomic JSON write (rank 0 only)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(metrics, f, indent=2)
    os.replace(tmp, path)
