"""What a start costs before the first question is searched: each step of `python run.py` up to "pool up".

    python bench/start_cost.py task=countdown [--no-set-cache] [--untrained]

Runs the steps of `run.py` -> `loop.driver.train_main` in one process, in their order, each under a
timer: imports, config, question sets (`load_questions`), Ray start, the pool-fit check, round 0's
models (`loop.round0.round0_models`: with round 0 cached, the lookups only), the search pool up, and Ray
stop. Arguments after the flags are `key=value` overrides as on run.py's command line.

--no-set-cache   draw the question sets as before they were kept (pipeline/tasks/set_cache.py): the
                 "before" column of the start-cost note
--untrained      round 0 not cached on this machine: time its question-set lookups (the warm-start set
                 twice, D_V0 once, and their digests: what ensure_warm_start/ensure_initial_prm do before
                 finding their cache entry) and bring the pool up on the untrained tiny build instead;
                 nothing is trained
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

T0 = time.monotonic()
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and every live descendant: Ray's own processes
    (GCS, raylet, dashboard) and its workers, the pool's actors among them, are started below it."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:  # exited meanwhile
            continue
    return total


class Steps:
    """Named steps with wall-clock and CPU seconds, printed as a table at the end. CPU seconds hardly
    depend on what else runs on the machine: on an idle 2-core machine a step takes at least cpu/2."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float]] = []
        self.last, self.last_cpu = time.monotonic(), cpu_seconds()

    def done(self, name: str) -> None:
        now, cpu = time.monotonic(), cpu_seconds()
        self.rows.append((name, now - self.last, cpu - self.last_cpu))
        print(f"  {name}: {now - self.last:.1f} s wall, {cpu - self.last_cpu:.1f} CPU-s", flush=True)
        self.last, self.last_cpu = now, cpu

    def table(self) -> str:
        lines = [f"{'step':<60}{'wall s':>8}{'CPU s':>8}"]
        lines += [f"{name:<60}{wall:>8.1f}{max(cpu, 0.0):>8.1f}" for name, wall, cpu in self.rows]
        total = f"{'total (process start -> Ray down)':<60}{time.monotonic() - T0:>8.1f}"
        with open("/proc/loadavg") as f:
            load = f.read().split()[0]
        return "\n".join([*lines, total, f"load average (1 min) at the end: {load}"])


def round0_lookups(cfg) -> tuple[str, str]:
    """--untrained: what the round-0 cache lookups compute (the sets and digests), then the untrained
    tiny build's directories."""
    from models.backbones import resolve_backbone
    from pipeline.tasks import builtin
    from trainers.warm_start import _digest

    task = builtin(cfg.task.name)
    for _ in range(2):  # ensure_warm_start, and again inside ensure_initial_prm
        _digest(task.warm_start_set(cfg.task, cfg.seed))
    _digest(task.dv0_set(cfg.task, cfg.seed))
    paths = resolve_backbone(cfg.backbone, cfg.task, cfg.cache_dir, cfg.seed)
    return str(paths.policy_dir), str(paths.prm_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--no-set-cache", action="store_true")
    parser.add_argument("--untrained", action="store_true")
    args, overrides = parser.parse_known_args()
    steps = Steps()
    import ray  # noqa: F401  (what run.py's process imports before the pool: counted apart)
    import torch  # noqa: F401

    steps.done("imports (ray, torch)")
    from conf.load import compose
    from pipeline.data import load_questions
    from pipeline.progress import quiet_logs
    from pipeline.tasks import set_cache

    cfg = compose(overrides)
    quiet_logs(cfg.log_level)  # as run.py: the actors inherit the quiet environment
    steps.done("config")
    set_cache.keep_sets_in(None if args.no_set_cache else Path(cfg.cache_dir) / "sets")
    train, heldout = load_questions(cfg.task, cfg.data, seed=cfg.seed)
    steps.done(f"question sets ({len(train)} train, {len(heldout)} held-out; {set_cache.STATS})")
    from actors.cluster import init_ray, shutdown_ray
    from actors.pool import Pool
    from loop.session import check_pool_fits

    init_ray(cfg.ray)
    steps.done("Ray start")
    check_pool_fits(cfg)
    steps.done("pool-fit check")
    if args.untrained:
        policy_dir, prm_dir = round0_lookups(cfg)
        steps.done("round 0 lookups (sets + digests; untrained dirs)")
    else:
        from loop.round0 import round0_models

        policy_dir, prm_dir = round0_models(cfg)
        steps.done("round 0 models (cached)")
    pool = Pool.from_config(cfg, policy_dir, prm_dir)
    steps.done("pool up")
    pool.shutdown()
    shutdown_ray()
    steps.done("pool down, Ray stop (CPU: processes gone, not counted)")
    print(steps.table())


if __name__ == "__main__":
    main()
