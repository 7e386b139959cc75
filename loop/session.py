"""One Ray session and its search pool, started and stopped in one place: training (`loop.driver`),
`mode=evaluate` and `mode=compare` all go through these two context managers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def ray_session(cfg: Any) -> Iterator[str]:
    """Start or join Ray (`cfg.ray`) for the block; yields the dashboard URL ("" when there is none).
    A locally started Ray stops at the end, also on errors."""
    from actors.cluster import init_ray, shutdown_ray

    url = init_ray(cfg.ray)
    try:
        yield url
    finally:
        shutdown_ray()


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

    asks = train_asks(label, train_cfg.num_workers, train_cfg.cpus_per_worker, train_cfg.use_gpu, prefix)
    msg = never_fits(asks, *cluster_resources())
    if msg:
        raise ConfigError(msg)


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
