"""One Ray session and its search pool, started and stopped in one place: training (`loop.driver`),
`mode=evaluate` and `mode=compare` all go through these two context managers."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

# Filesystem schemes pyarrow (and so Ray Train's storage_path) understands; a path without one is local.
STORAGE_SCHEMES = ("file", "local", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
RESOURCE_KEYS = (
    "backbone.policy_resources.resources",
    "backbone.prm_resources.resources",
    "pool.worker_resources",
    "train.worker_resources",
)
SHARED_FIX = (
    "every node that hosts an actor or a training worker must see run.root and cache_dir at the same "
    "absolute path: mount one shared filesystem (NFS, EFS, a Kubernetes volume) on every node and point "
    "run.root and cache_dir there (docs/CLUSTER.md)"
)


@contextmanager
def ray_session(cfg: Any) -> Iterator[str]:
    """Start or join Ray (`cfg.ray`) for the block; yields the dashboard URL ("" when there is none).
    Before Ray starts, the cluster keys are checked (`check_cluster_keys`); right after, on a cluster of
    several nodes, the shared storage (`check_shared_storage`). Training jobs in the block use the
    `train` section (trainers.job.ray_train_settings). A locally started Ray stops at the end, also on
    errors."""
    from actors.cluster import init_ray, shutdown_ray
    from trainers.job import ray_train_settings

    check_cluster_keys(cfg)
    url = init_ray(cfg.ray)
    try:
        check_shared_storage(cfg)
        with ray_train_settings(cfg.train, cfg.run.root):
            yield url
    finally:
        shutdown_ray()


def check_cluster_keys(cfg: Any) -> None:
    """Before Ray starts: raise ConfigError (one line naming the key) for a `train.storage_path` with a
    scheme pyarrow does not know, or a custom-resource map with CPU/GPU in it or a negative amount."""
    from omegaconf import OmegaConf

    from conf.load import ConfigError

    path = cfg.train.storage_path
    if path and "://" in path:
        scheme = path.split("://", 1)[0].lower()
        if scheme not in STORAGE_SCHEMES:
            raise ConfigError(
                f"train.storage_path={path}: unknown filesystem scheme '{scheme}'; use a path every training "
                f"node mounts or a URI with one of {', '.join(s + '://' for s in STORAGE_SCHEMES)}"
            )
    for key in RESOURCE_KEYS:
        for name, amount in dict(OmegaConf.select(cfg, key)).items():
            if name in ("CPU", "GPU"):
                raise ConfigError(
                    f"{key}.{name}: CPUs and GPUs are set by num_cpus/num_gpus; name custom resources here"
                )
            if float(amount) < 0:
                raise ConfigError(f"{key}.{name}={amount}: a resource amount must be >= 0")


def check_pool_fits(cfg: Any) -> None:
    """Right after Ray starts, before any model is built: raise ConfigError (one line naming the resource
    keys) when the search pool can never be placed on this Ray cluster (`actors.placement`)."""
    from actors.placement import PlacementError, check_feasible, pool_asks
    from conf.load import ConfigError

    try:
        check_feasible(pool_asks(cfg.backbone, cfg.policy, cfg.prm, cfg.pool))
    except PlacementError as e:
        raise ConfigError(str(e)) from None


def check_job_fits(train_cfg: Any, label: str, prefix: str) -> None:
    """Before a Ray Train job (num_workers >= 1): raise ConfigError (one line naming the keys under
    `prefix`, e.g. backbone.sft) when its workers can never be placed on this Ray cluster."""
    if int(train_cfg.num_workers) < 1:
        return
    import ray

    if not ray.is_initialized():
        return
    from actors.placement import cluster_resources, never_fits, train_asks
    from conf.load import ConfigError
    from trainers.job import current_settings

    asks = train_asks(
        label,
        train_cfg.num_workers,
        train_cfg.cpus_per_worker,
        train_cfg.use_gpu,
        prefix,
        current_settings().worker_resources,
    )
    msg = never_fits(asks, *cluster_resources())
    if msg:
        raise ConfigError(msg)


def work_asks(cfg: Any) -> list[Any]:
    """Everything a run may ask Ray to place: the search pool, and every training job with Ray Train
    workers (num_workers >= 1), with their custom resources (actors.placement.Ask)."""
    from actors.placement import pool_asks, train_asks

    jobs = [
        ("SFT workers", cfg.backbone.sft, "backbone.sft"),
        ("PRM workers", cfg.backbone.prm_train, "backbone.prm_train"),
        ("warm-start workers", cfg.backbone.warm_start, "backbone.warm_start"),
        ("initial PRM workers", cfg.backbone.initial_prm, "backbone.initial_prm"),
        ("DPO workers", cfg.baselines.dpo, "baselines.dpo"),
    ]
    asks = pool_asks(cfg.backbone, cfg.policy, cfg.prm, cfg.pool)
    for label, job, prefix in jobs:
        if int(job.num_workers) >= 1:
            asks += train_asks(
                label, job.num_workers, job.cpus_per_worker, job.use_gpu, prefix, cfg.train.worker_resources
            )
    return asks


def shared_dirs(cfg: Any) -> list[tuple[str, str]]:
    """(key, directory) every working node must see: run.root, cache_dir and a set train.storage_path
    (a local one absolute; a URI as it is). The driver's relative paths are made absolute here."""
    dirs = [("run.root", os.path.abspath(cfg.run.root)), ("cache_dir", os.path.abspath(cfg.cache_dir))]
    path = cfg.train.storage_path
    if path:
        dirs.append(("train.storage_path", path if "://" in path else os.path.abspath(path)))
    return dirs


def check_shared_storage(cfg: Any) -> None:
    """On a Ray cluster of more than one node, before any actor or model starts: the driver writes a
    token file into each of `shared_dirs`, and one zero-CPU task on each node that could host an actor
    or a training worker (`work_asks`) reads them back. The first node that cannot raises ConfigError
    with one line naming the node, the key and the fix (tests simulate a node without the mount by
    replacing `actors.cluster.read_tokens`, which runs on each node)."""
    from actors.cluster import alive_nodes, node_label, probe_nodes, read_tokens, remove_token, write_token
    from actors.placement import can_host
    from conf.load import ConfigError

    nodes = alive_nodes()
    if len(nodes) < 2:
        return
    asks = work_asks(cfg)
    hosts = [n for n in nodes if can_host(asks, n.get("Resources", {}))]
    if not hosts:  # nothing can be placed anywhere: check_pool_fits says which keys to change
        return
    token = uuid.uuid4().hex
    checks: list[tuple[str, str, str]] = []
    try:
        for key, directory in shared_dirs(cfg):
            try:
                checks.append((key, write_token(directory, f".restmcts-node-check-{token}", token), token))
            except Exception as e:  # the driver itself cannot write there: also a config mistake
                raise ConfigError(f"cannot write to {key}={directory} ({type(e).__name__}: {e})") from None
        answers = probe_nodes([n["NodeID"] for n in hosts], checks, read_tokens)
    finally:
        for _, path, _ in checks:
            remove_token(path)
    dirs = dict(shared_dirs(cfg))
    for node in hosts:
        for (key, _, _), error in zip(checks, answers[node["NodeID"]], strict=True):
            if error:
                raise ConfigError(
                    f"node {node_label(node)} cannot read {key}={dirs[key]} (token file: {error}); {SHARED_FIX}"
                )
    log.info("shared storage: %d of %d nodes read run.root and cache_dir", len(hosts), len(nodes))


class Pools:
    """The search pool (policy and PRM replicas, search workers) on given model directories: built on
    first use, rebuilt when the directories change, shut down by `close` or at the end of a `with`.
    A pool that cannot be placed on the Ray cluster (`actors.placement.PlacementError`) raises
    `conf.load.ConfigError` with its one line naming the resource keys."""

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.pool: Any = None

    def get(self, policy_dir: str, prm_dir: str) -> Any:
        if self.pool is None or self.pool.model_dirs != (policy_dir, prm_dir):
            self.close()
            from actors.placement import PlacementError
            from actors.pool import Pool
            from conf.load import ConfigError

            try:
                self.pool = Pool.from_config(self.cfg, policy_dir, prm_dir)
            except PlacementError as e:  # the entry prints it as one config-error line, exit 2
                raise ConfigError(str(e)) from None
        return self.pool

    def close(self) -> None:
        """Shut the pool down (generation actors give their CPUs/GPUs back, e.g. before training)."""
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None

    def __enter__(self) -> Pools:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
