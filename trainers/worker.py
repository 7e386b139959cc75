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
from pipeline.progress import log_level, quiet_logs


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
    """Where this loop runs; also quiets the libraries at the driver's log level (`quiet_worker_logs`)."""
    in_ray = bool(loop_config["_ray_train"])
    quiet_worker_logs(loop_config.get("_log_level", "INFO"), in_ray=in_ray)
    threads = int(train_config(loop_config).torch_threads)
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    if not in_ray:
        return WorkerContext(rank=0, world_size=1, distributed=False, in_ray=False)
    import ray.train

    ctx = ray.train.get_context()
    return WorkerContext(ctx.get_world_rank(), ctx.get_world_size(), distributed=True, in_ray=True)


def quiet_worker_logs(level: str | int | None = "INFO", in_ray: bool = False) -> bool:
    """Quiet a training worker at the driver's log `level` (the launcher sends it as `_log_level`).

    Always: the harmless torch.distributed FutureWarnings/UserWarnings. Above DEBUG (returns True):
    - transformers' progress bars ("Loading weights", "Writing model shards") and the hub's;
    - DeepSpeed's "Setting accelerator to CPU" and lr-scheduler warnings (`pipeline.progress.NOISE`);
    - in a Ray Train worker, Ray Train's "Reporting training result ..." line, logged at INFO for every
      `ray.train.report` on every rank by a logger named after its file (ray.train.LoggingConfig
      filters only loggers named `ray.train.*`), so its level is raised here.
    In a Ray Train worker the root logger (Ray Train sets INFO) follows `level`: this process's own lines
    (rank 0's progress) reach the driver through Ray's log_to_driver. At DEBUG everything shows.
    """
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed.*")
    warnings.filterwarnings("ignore", category=FutureWarning, message=r".*all_gather_into_tensor.*")
    warnings.filterwarnings("ignore", category=FutureWarning, message=r".*reduce_scatter_tensor.*")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.distributed.*")
    # transformers 5.2x renamed gradient -> activation checkpointing; peft/TRL still call the old names
    warnings.filterwarnings(
        "ignore", category=FutureWarning, message=r"`(is_)?gradient_checkpointing(_\w+)?` is deprecated"
    )
    quiet = quiet_logs(level)
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING if quiet else logging.INFO)
    from transformers.utils import logging as hf_logging

    if quiet:
        hf_logging.disable_progress_bar()
    else:
        hf_logging.enable_progress_bar()
    if in_ray:
        logging.getLogger().setLevel(log_level(level))
        _ray_train_report_logger().setLevel(logging.WARNING if quiet else logging.NOTSET)
    return quiet


def _ray_train_report_logger() -> logging.Logger:
    """The logger of Ray Train V2's "Reporting training result" line (named after its file)."""
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # another Ray Train version: nothing known to quiet
        return logging.getLogger("ray.train.v2.report")
    return logging.getLogger(train_context.__file__)


def report(ctx: WorkerContext, metrics: dict) -> None:
    """`ray.train.report` inside Ray Train (every rank must call it equally often: V2 syncs the ranks;
    `quiet_worker_logs` keeps it from printing); nothing in-process. Progress lines: `trainers.engine`."""
    if ctx.in_ray:
        import ray.train

        ray.train.report(metrics)


def write_metrics(path: str, metrics: dict) -> None:
    """Atomic JSON write (rank 0 only)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(metrics, f, indent=2)
    os.replace(tmp, path)
