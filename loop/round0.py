"""Round 0: the models self-training starts from, by one rule that the driver, `mode=evaluate` and
`loop.api.solve` all use.

1. `backbone.policy_path` and `backbone.prm_path` both set: those directories, for any backbone (your own
   checkpoints, e.g. a finished run's `round_k/policy` and `round_k/prm`).
2. `backbone=tiny`: the warm-started policy and its D_V0 PRM, trained once per seed and recipe and cached
   (`trainers.warm_start`; the task must be one with a warm-start set, else a clear error). With
   `backbone.prm_reads=state` the PRM is a value model of its own reading the task's state
   (`trainers.state_prm`, countdown). With
   `trained=False`, the untrained build (what `solve(..., round0=False)` asks for).
3. Any other backbone: its resolved directories (smollm2 converted once from its wheel).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pipeline.progress import format_duration
from pipeline.rundir import RunDir, atomic_write_json

log = logging.getLogger(__name__)


def round0_models(cfg: Any, trained: bool = True) -> tuple[str, str]:
    """(policy_dir, prm_dir) of round 0 for `cfg` (see the module docstring)."""
    from models.backbones import resolve_backbone

    if cfg.backbone.policy_path and cfg.backbone.prm_path:
        return str(cfg.backbone.policy_path), str(cfg.backbone.prm_path)
    if trained and cfg.backbone.name == "tiny":
        from trainers.warm_start import ensure_round0

        start = time.monotonic()
        models = tuple(map(str, ensure_round0(cfg.backbone, cfg.task, cfg.cache_dir, cfg.seed)))
        took = format_duration(time.monotonic() - start)
        log.info("round 0 ready in %s (PRM reads the %s): %s, %s", took, cfg.backbone.prm_reads, *models)
        return models
    paths = resolve_backbone(cfg.backbone, cfg.task, cfg.cache_dir, cfg.seed)
    return str(paths.policy_dir), str(paths.prm_dir)


def start_models(cfg: Any, run: RunDir) -> dict[str, str]:
    """Round 0 of a training run, recorded in `round_0/models.json`: the current and the round-0
    directories (each round trains from round 0)."""
    policy_dir, prm_dir = round0_models(cfg)
    models = {"policy_dir": policy_dir, "prm_dir": prm_dir, "policy_dir0": policy_dir, "prm_dir0": prm_dir}
    atomic_write_json(run.round_dir(0) / "models.json", models)
    return models
