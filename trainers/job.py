"""Launch one training job: Ray Train `TorchTrainer` workers with DeepSpeed inside, or in-process.

`run_training_job(loop_fn, loop_config, train_cfg, name, storage_dir)` is the one entry point. With
`train_cfg.num_workers >= 1` it starts a TorchTrainer (gloo on CPU, NCCL on GPU) whose workers call
`loop_fn(loop_config)`; they build a DeepSpeed engine (`trainers.engine`). With `num_workers == 0` it
calls `loop_fn` in this process with plain torch AdamW: no Ray, no DeepSpeed, same output format.

Results come back through a file, not `Result.metrics` (which can be None on Ray Train V2): rank 0
writes `metrics.json` to the path the launcher put in `loop_config["metrics_path"]`, and every worker
writes the node it runs on to `<job dir>/nodes/rank-<r>.json`; the launcher logs them and returns them as
`metrics["worker_nodes"]`. The worker side (context, typed TrainConfig, progress, metrics file) is
`trainers.worker`.

Cluster settings shared by every job (the root config's `train` section) are set for a Ray session by
`ray_train_settings(cfg.train, cfg.run.root)` (loop.session does it): `train.storage_path`, Ray Train's
`RunConfig(storage_path=...)`, where the job's `storage_dir` under run.root is mirrored (None: the
`storage_dir` itself), and `train.worker_resources`, custom Ray resources every worker asks for.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from conf.schema import TrainConfig
from pipeline.progress import log_level
from trainers.worker import write_metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayTrainSettings:
    """The root config's `train` section as the launcher uses it, plus run.root made absolute."""

    storage_path: str | None = None  # None: each job's storage_dir (under run.root)
    worker_resources: dict[str, float] = field(default_factory=dict)
    run_root: str = ""  # absolute run.root: a storage_dir under it keeps its relative path under storage_path


_settings = RayTrainSettings()


def current_settings() -> RayTrainSettings:
    return _settings


@contextlib.contextmanager
def ray_train_settings(train_section: Any, run_root: str) -> Iterator[RayTrainSettings]:
    """Jobs launched in the block use `train.storage_path` and `train.worker_resources`."""
    global _settings
    previous = _settings
    path = train_section.storage_path
    _settings = RayTrainSettings(
        storage_path=path if not path or "://" in path else os.path.abspath(path),
        worker_resources={str(k): float(v) for k, v in dict(train_section.worker_resources).items()},
        run_root=os.path.abspath(run_root),
    )
    try:
        yield _settings
    finally:
        _settings = previous


def ray_train_storage(storage_dir: str, settings: RayTrainSettings | None = None) -> str:
    """Ray Train's storage_path for a job whose local directory is `storage_dir`: that directory itself,
    or with `train.storage_path` set, `<storage_path>/<storage_dir relative to run.root>` (a URI stays a
    URI; a storage_dir outside run.root keeps only its last name)."""
    s = settings or _settings
    if not s.storage_path:
        return storage_dir
    local = Path(os.path.abspath(storage_dir))
    root = Path(s.run_root) if s.run_root else None
    rel = local.relative_to(root).as_posix() if root and local.is_relative_to(root) else local.name
    return f"{s.storage_path.rstrip('/')}/{rel}"


def train_cfg_dict(train_cfg: Any) -> dict:
    """A TrainConfig (dataclass or OmegaConf node) as a plain dict (cache keys hash it)."""
    if is_dataclass(train_cfg):
        return asdict(train_cfg)
    from omegaconf import OmegaConf

    return OmegaConf.to_container(train_cfg, resolve=True)


def as_train_config(train_cfg: Any) -> TrainConfig:
    """The TrainConfig dataclass of a dataclass or an OmegaConf node (what the workers receive)."""
    if isinstance(train_cfg, TrainConfig):
        return train_cfg
    from omegaconf import OmegaConf

    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainConfig), train_cfg))


def run_training_job(
    loop_fn: Callable[[dict], None], loop_config: dict, train_cfg: Any, name: str, storage_dir: str
) -> dict:
    """Run `loop_fn` as a training job named `name`; return the metrics rank 0 wrote.

    Ray must already be initialised by the driver when `train_cfg.num_workers >= 1`.
    The returned dict always has `job_seconds` (wall time of the whole job, fixed costs included).
    """
    storage_dir = os.path.abspath(storage_dir)
    job_dir = os.path.join(storage_dir, name)
    os.makedirs(job_dir, exist_ok=True)
    metrics_path = os.path.join(job_dir, "metrics.json")
    if os.path.exists(metrics_path):
        os.remove(metrics_path)
    nodes_dir = Path(job_dir) / "nodes"
    for old in nodes_dir.glob("rank-*.json"):
        old.unlink()
    config = dict(
        loop_config,
        metrics_path=metrics_path,
        train_cfg=as_train_config(train_cfg),
        _log_level=logging.getLevelName(logging.getLogger().getEffectiveLevel()),  # the workers follow it
    )
    start = time.perf_counter()
    if train_cfg.num_workers == 0:
        import torch

        threads = torch.get_num_threads()
        try:
            loop_fn(dict(config, _ray_train=False))
        finally:
            torch.set_num_threads(threads)  # the job may have changed it (torch_threads)
    else:
        _fit_with_ray_train(_recording_node(loop_fn, str(nodes_dir)), config, train_cfg, name, storage_dir)
    if not os.path.exists(metrics_path):
        raise RuntimeError(f"training job {name!r} finished without writing {metrics_path}")
    with open(metrics_path) as f:
        metrics = json.load(f)
    metrics["job_seconds"] = time.perf_counter() - start
    if train_cfg.num_workers > 0:
        metrics["worker_nodes"] = _worker_nodes(nodes_dir)
        log.info("training job %s workers: %s", name, metrics["worker_nodes"])
    write_metrics(metrics_path, metrics)
    log.info("training job %s done in %.1f s", name, metrics["job_seconds"])
    return metrics


def _fit_with_ray_train(loop_fn: Callable, config: dict, train_cfg: Any, name: str, storage_dir: str) -> None:
    import ray

    if not ray.is_initialized():
        raise RuntimeError(
            f"training job {name!r} needs Ray: the driver starts it (ray.init() or run.py) before training; "
            "for a single-process job without Ray Train set train num_workers=0"
        )
    from ray.train import LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    quiet = log_level(config["_log_level"]) > logging.DEBUG
    trainer = TorchTrainer(
        train_loop_per_worker=loop_fn,
        train_loop_config=dict(config, _ray_train=True),
        scaling_config=ScalingConfig(
            num_workers=int(train_cfg.num_workers),
            use_gpu=bool(train_cfg.use_gpu),
            resources_per_worker={"CPU": float(train_cfg.cpus_per_worker), **_settings.worker_resources},
        ),
        # Ray Train's own `ray.train.*` INFO lines (resources requested, worker group started, process
        # group set up: ~6 per job) only at DEBUG.
        run_config=RunConfig(
            name=name,
            storage_path=ray_train_storage(storage_dir),
            logging_config=LoggingConfig(log_level="WARNING" if quiet else "INFO"),
        ),
    )
    with _no_preemption_watcher(quiet and _single_node(ray)):
        trainer.fit()


def _recording_node(loop_fn: Callable[[dict], None], nodes_dir: str) -> Callable[[dict], None]:
    """`loop_fn` that first writes where this worker runs to `<nodes_dir>/rank-<r>.json`."""

    def loop(config: dict) -> None:
        import socket

        import ray
        import ray.train

        ctx = ray.get_runtime_context()
        rank = ray.train.get_context().get_world_rank()
        record = {
            "rank": rank,
            "node_id": ctx.get_node_id(),
            "host": socket.gethostname(),
            "ip": ray.util.get_node_ip_address(),
            "resources": ctx.get_assigned_resources(),
        }
        os.makedirs(nodes_dir, exist_ok=True)
        write_metrics(os.path.join(nodes_dir, f"rank-{rank}.json"), record)  # atomic JSON write
        loop_fn(config)

    return loop


def _worker_nodes(nodes_dir: Path) -> str:
    """'rank 0 on 10.0.0.5 3f8a48c4 (CPU 1, gpu_pool 1); rank 1 on ...' from the workers' records."""
    parts = []
    for path in sorted(nodes_dir.glob("rank-*.json"), key=lambda p: int(p.stem.split("-")[1])):
        r = json.loads(path.read_text())
        res = ", ".join(f"{k} {v:g}" for k, v in sorted(r["resources"].items()))
        parts.append(f"rank {r['rank']} on {r['ip']} {r['node_id'][:8]} ({res})")
    return "; ".join(parts) or "no worker wrote its node"


@contextlib.contextmanager
def _no_preemption_watcher(enabled: bool):
    """Ray Train's preemption watcher actor makes Ray core log an ERROR line per job ("Actor with class
    name: 'PreemptionWatcher' ... has constructor arguments in the object store and max_restarts > 0").
    On a one-node cluster there is no other node to be preempted: off there (while quiet), unless the
    user set RAY_TRAIN_ENABLE_PREEMPTION_WATCHER. Ray Train copies the variable to its controller when
    `fit()` starts it."""
    key = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
    if not enabled or key in os.environ:
        yield
        return
    os.environ[key] = "0"
    try:
        yield
    finally:
        os.environ.pop(key, None)


def _single_node(ray: Any) -> bool:
    try:
        return sum(1 for node in ray.nodes() if node.get("Alive")) == 1
    except Exception:  # the state API is optional here: keep Ray's default
        return False
