"""Round 0's PRM for `backbone.prm_reads=state`: a small value model of its own, trained from scratch on
D_V0 read as the task's state (models/value.py), built once per seed and recipe and cached.

D_V0 (countdown, pipeline/tasks/countdown_dv0.py), every target valued by the exact solver the way a
finished search tree would value it (pipeline.values, the paper's quality value):
- `backbone.value_walks` random legal walks from each warm-start and D_V0 question (`walk_dv0`): many
  distinct legal states, live ones and dead ends, plus a few illegal lines;
- the gold prefixes with dead-end, illegal and detour branches of the D_V0 questions (`build_dv0`);
- with `task.dv0_samples > 0`, every prefix of that many of the warm-started policy's own samples per
  D_V0 question (`label_samples`): the states the policy really reaches (then the policy is an input).
The value model (`backbone.value_*`, a `linear` head) is regressed on it by the same job as every round's
PRM (`trainers.prm_train`, `backbone.initial_prm`); the directory records `reads: state` and the task, so
the PRM actor and the per-round regression read the same representation.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from models.backbones import _cached, _key, is_built
from models.device import train_dtype_name
from models.value import PRMReader, build_value_base, value_spec
from pipeline.progress import Progress
from pipeline.prompting import PromptFormat
from trainers.job import train_cfg_dict
from trainers.round0_data import _digest, _task, dv0_questions, sample_solutions

log = logging.getLogger(__name__)

STATE_PRM_VERSION = 1  # bump when the recipe changes in a way that must not reuse old cache entries
WALK_CHUNK = 2000  # questions per progress update while walking


def state_prm_spec(backbone_cfg: Any, task_cfg: Any, seed: int, data: dict, policy: str | None) -> dict:
    """Every input of the state PRM's build: its cache key changes with any part of the recipe."""
    train_cfg = backbone_cfg.initial_prm
    return {
        "kind": "state_prm",
        "version": STATE_PRM_VERSION,
        "reads": "state",
        "task": task_cfg.name,
        "value": value_spec(backbone_cfg, seed),
        "answer_prefix": backbone_cfg.answer_prefix,
        "data": data,
        "train": train_cfg_dict(train_cfg),
        "dtype": train_dtype_name(train_cfg.bf16),
        "policy": policy,
        "seed": seed,
    }


def ensure_state_prm(
    backbone_cfg: Any, task_cfg: Any, cache_dir: str, seed: int, policy: str | None = None
) -> str:
    """Directory of the round-0 state-reading PRM, trained on first call, cached after. `policy`: the
    warm-started policy whose own samples join D_V0 (needed when `task.dv0_samples > 0`)."""
    entry, build, spec = _plan(backbone_cfg, task_cfg, cache_dir, seed, policy)
    return str(_cached(entry, build, spec) / "prm")


def cached_state_prm(backbone_cfg: Any, task_cfg: Any, cache_dir: str, seed: int) -> str | None:
    """The directory of the cached state PRM of a build that does not read the policy
    (`task.dv0_samples` 0), or None when it is not built yet."""
    entry, _, _ = _plan(backbone_cfg, task_cfg, cache_dir, seed, None)
    return str(entry / "prm") if is_built(entry) else None


def _plan(backbone_cfg: Any, task_cfg: Any, cache_dir: str, seed: int, policy: str | None):
    """(cache entry, build(tmp), spec) of the state PRM."""
    task = _task(task_cfg)
    dv0 = _state_dv0_module(task_cfg.name)
    dv0_set, warm_set = dv0_questions(task_cfg, seed), task.warm_start_set(task_cfg, seed)
    n_samples = int(task_cfg.dv0_samples)
    if n_samples and policy is None:
        raise ValueError("task.dv0_samples > 0: the state PRM's D_V0 needs the warm-started policy")
    policy = policy if n_samples else None
    data = {
        "dv0_set": _digest(dv0_set),
        "warm_set": _digest(warm_set),
        "walks": int(backbone_cfg.value_walks),
        "corruptions": int(task_cfg.dv0_corruptions),
        "samples": n_samples,
    }
    spec = state_prm_spec(backbone_cfg, task_cfg, seed, data, policy)
    fmt = PromptFormat.from_backbone(backbone_cfg)
    reader = PRMReader("state", task_cfg.name, fmt)

    def build(tmp: Path) -> None:
        params = build_value_base(spec["value"], reader, tmp / "base")
        log.info("round 0 PRM: a %.2fM-parameter value model reading the state, from scratch", params / 1e6)
        parts = [dv0.build_dv0(dv0_set, seed, int(task_cfg.dv0_corruptions), fmt.answer_prefix)]
        parts.append(_walks(dv0, [*warm_set, *dv0_set], seed, int(backbone_cfg.value_walks), fmt))
        if n_samples:
            sampled = sample_solutions(policy, dv0_set, n_samples, seed, fmt, backbone_cfg)
            parts.append(dv0.label_samples(dv0_set, sampled, fmt.answer_prefix))
        metrics = _train(tmp, _distinct(parts), backbone_cfg, fmt)
        (tmp / "prm_metrics.json").write_text(json.dumps(metrics, indent=1))

    return Path(cache_dir) / "round0" / f"state-prm-{_key(spec)}", build, spec


def _state_dv0_module(task_name: str) -> Any:
    """The task's D_V0 module with solver-valued walks (countdown), else a ValueError naming the fix."""
    if task_name == "countdown":
        from pipeline.tasks import countdown_dv0

        return countdown_dv0
    raise ValueError(
        f"backbone.prm_reads=state needs a task with a state and solver-valued walks (countdown), "
        f"not task={task_name}; use backbone.prm_reads=text"
    )


def _walks(dv0: Any, questions: list, seed: int, walks: int, fmt: PromptFormat) -> list:
    """`dv0.walk_dv0` over `questions`, a progress line (with ETA) per chunk."""
    out: list = []
    with Progress("round 0 PRM: D_V0 walks", total=len(questions), unit="questions") as bar:
        for lo in range(0, len(questions), WALK_CHUNK):
            chunk = questions[lo : lo + WALK_CHUNK]
            out += dv0.walk_dv0(chunk, seed, walks, fmt.answer_prefix)
            bar.update(len(chunk), examples=len(out))
    return out


def _distinct(parts: list[list]) -> list:
    """The examples of `parts` in order, the first label of each (question, prefix) kept."""
    seen, out = set(), []
    for part in parts:
        for e in part:
            if (e.question_id, e.steps) not in seen:
                seen.add((e.question_id, e.steps))
                out.append(e)
    return out


def _train(tmp: Path, examples: list, backbone_cfg: Any, fmt: PromptFormat) -> dict:
    from trainers.prm_train import train_prm

    train_cfg = backbone_cfg.initial_prm
    log.info(
        "round 0 PRM: %d D_V0 examples, value model trained in %s",
        len(examples),
        train_dtype_name(train_cfg.bf16),
    )
    return train_prm(
        str(tmp / "base"), examples, str(tmp / "prm"), train_cfg, fmt, str(tmp / "jobs"), name="value-model"
    )
