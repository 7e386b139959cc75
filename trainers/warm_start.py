"""Round 0 of the tiny backbone, built once per machine and cached: a warm-started policy and a D_V0 PRM.

- `ensure_warm_start`: SFT of the untrained tiny policy on the worked solutions of
  `warm_start_set(task_cfg, seed)` (easy difficulties only, so round 0 solves those and fails the
  longer ones: the frontier self-training needs).
- `ensure_initial_prm`: a value head on the warm-started policy's backbone, regressed on D_V0
  (`trainers.dv0`) built from `dv0_size` generated questions (disjoint from the train and held-out
  sets; difficulties `dv0_difficulties`, default all train difficulties) with gold solutions.

Both train in-process (`backbone.warm_start` / `backbone.initial_prm`, num_workers=0 by default):
one process with torch threads on every core is faster here than two Ray Train workers on two cores
(~30 s fixed cost per fit plus gloo all-reduce per step). Each entry lives under
`<cache_dir>/round0/<kind>-<hash of every input>/` and is built in a temp dir renamed into place.
The task enters the hash only through the digest of the question set trained on: round 0's sets are
drawn before (and avoided by) the train/held-out sets, so runs of any train/held-out size share one
round 0 per seed and calibration.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from models.backbones import _cached, _key, prompt_tokenizer, resolve_backbone
from models.device import train_dtype_name
from pipeline.progress import LOG_DATEFMT, LOG_FORMAT
from pipeline.prompting import PromptFormat
from trainers.job import as_train_config, train_cfg_dict
from trainers.round0_data import _digest, _task, dv0_questions, sample_solutions

log = logging.getLogger(__name__)

ROUND0_VERSION = 2  # bump when the recipe changes in a way that must not reuse old cache entries


def _plain(cfg: Any) -> dict:
    if is_dataclass(cfg):
        return asdict(cfg)
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


# TrainConfig keys added after round-0 entries were first cached: left out of the key at these values,
# so an entry built before a key existed is still found (its job ran as if the key had that value).
_ADDED_LATER = {
    "freeze_backbone": False,
    "gradient_checkpointing": False,
    "group_by_length": False,
    "compile": False,
    "prm_loss": "mse",
}


def _spec(kind: str, base_dir: str, backbone_cfg: Any, data: dict, train_cfg: Any, seed: int) -> dict:
    """Every input of a round-0 build. The task enters only through `data` (its question set's digest
    and size), so runs with other train/held-out sizes share the entry. The dtype the job will train in
    (`models.device.train_bf16`: it follows the hardware) enters when it is not float32; an fp32 job keys
    as `bf16: auto` did when that meant fp32 on a CPU, so entries built then are found."""
    spec = {
        "kind": kind,
        "version": ROUND0_VERSION,
        "base_dir": str(Path(base_dir).resolve()),
        "prompt": asdict(PromptFormat.from_backbone(backbone_cfg)),
        "data": data,
        "train": {k: v for k, v in train_cfg_dict(train_cfg).items() if _ADDED_LATER.get(k, ...) != v},
        "seed": seed,
    }
    dtype = train_dtype_name(train_cfg.bf16)
    if dtype == "float32":  # before the dtype followed the CPU, `auto` meant fp32 here: one key for both
        spec["train"]["bf16"] = "auto"
        return spec
    return dict(spec, dtype=dtype)


def ensure_warm_start(
    backbone_cfg: Any, task_cfg: Any, cache_dir: str, seed: int, threads: int | None = None
) -> str:
    """Directory of the warm-started tiny policy (HF format), trained on first call, cached after.

    `threads`: torch threads for this build instead of `warm_start.torch_threads` (a runtime choice: the
    cache key keeps the configured value, so the entry is the same whoever builds it)."""
    warm_start_set = _task(task_cfg).warm_start_set
    from trainers.sft import train_sft

    base = resolve_backbone(backbone_cfg, task_cfg, cache_dir, seed).policy_dir
    train_cfg = backbone_cfg.warm_start
    questions = warm_start_set(task_cfg, seed)
    data = {"warm_set": _digest(questions), "size": len(questions)}
    spec = _spec("warm_start", base, backbone_cfg, data, train_cfg, seed)
    fmt = PromptFormat.from_backbone(backbone_cfg)

    def build(tmp: Path) -> None:
        tokenizer = prompt_tokenizer(backbone_cfg, base)
        examples = [fmt.gold_example(q, "warm_start", tokenizer) for q in questions]
        job_cfg = train_cfg
        if threads is not None:
            job_cfg = dataclasses.replace(as_train_config(train_cfg), torch_threads=threads)
        log.info(
            "round 0 warm start: SFT on %d worked solutions in %s on %s torch thread(s) (cached once in %s)",
            len(examples),
            train_dtype_name(train_cfg.bf16),
            job_cfg.torch_threads or "all",
            cache_dir,
        )
        metrics = train_sft(
            base,
            examples,
            str(tmp / "policy"),
            job_cfg,
            str(tmp / "jobs"),
            name="warm-start",
            add_special_tokens=fmt.style == "plain",
        )
        _log_done("warm start", metrics)

    entry = _cached(Path(cache_dir) / "round0" / f"warm-start-{_key(spec)}", build, spec)
    return str(entry / "policy")


def ensure_round0(backbone_cfg: Any, task_cfg: Any, cache_dir: str, seed: int) -> tuple[str, str]:
    """(policy_dir, prm_dir) of round 0: `ensure_warm_start` and `ensure_initial_prm`.

    A state PRM that does not read the policy's samples (`prm_reads=state`, `task.dv0_samples` 0) and is
    not cached yet is built in a child process while the warm start trains, where the machine has
    cores for both (`backbone.initial_prm.torch_threads` for the child, at least two left for the warm
    start); else the two are built in turn."""
    if backbone_cfg.prm_reads != "state" or int(task_cfg.dv0_samples):
        return ensure_warm_start(backbone_cfg, task_cfg, cache_dir, seed), ensure_initial_prm(
            backbone_cfg, task_cfg, cache_dir, seed
        )
    from trainers.state_prm import cached_state_prm, ensure_state_prm

    prm_dir = cached_state_prm(backbone_cfg, task_cfg, cache_dir, seed)
    if prm_dir is not None:
        return ensure_warm_start(backbone_cfg, task_cfg, cache_dir, seed), prm_dir
    # The two jobs side by side only where the PRM's threads leave the warm start two cores: on a 2-core
    # machine a 1-thread warm start beside a 1-thread value model ran 0.6 and 1.2 steps/s against 2.1
    # and 3.1 alone on 2 threads (2 + 1 threads: 0.4-0.5): in turn is faster there (docs/CALIBRATION.md).
    child_threads = int(backbone_cfg.initial_prm.torch_threads) or 1
    free = (os.cpu_count() or 1) - child_threads
    if free < 2:
        return ensure_warm_start(backbone_cfg, task_cfg, cache_dir, seed), ensure_state_prm(
            backbone_cfg, task_cfg, cache_dir, seed
        )
    import concurrent.futures
    import multiprocessing

    from omegaconf import OmegaConf

    child_cfg = OmegaConf.create(_plain(backbone_cfg))
    configured = int(backbone_cfg.warm_start.torch_threads)
    threads = free if configured <= 0 else min(configured, free)  # the cores the child leaves
    log.info(
        "round 0: the PRM is built in a child process (%d torch thread) beside the warm start (%d)",
        child_threads,
        threads,
    )
    level = logging.getLogger().getEffectiveLevel()
    context = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    with concurrent.futures.ProcessPoolExecutor(
        1, mp_context=context, initializer=_child_logs, initargs=(level,)
    ) as pool:
        prm = pool.submit(ensure_state_prm, child_cfg, OmegaConf.create(_plain(task_cfg)), cache_dir, seed)
        policy = ensure_warm_start(backbone_cfg, task_cfg, cache_dir, seed, threads=threads)
        return policy, prm.result()


def _child_logs(level: int) -> None:
    """The child's log lines in the parent's format, on its stderr (which the parent's terminal shares)."""
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt=LOG_DATEFMT)


def ensure_initial_prm(backbone_cfg: Any, task_cfg: Any, cache_dir: str, seed: int) -> str:
    """Directory of the round-0 PRM trained on D_V0, trained on first call, cached after.

    `backbone.prm_reads=state`: a value model of its own reading the task's state (trainers.state_prm)."""
    _task(task_cfg)
    if backbone_cfg.prm_reads == "state":
        from trainers.state_prm import ensure_state_prm

        samples = int(task_cfg.dv0_samples)  # the policy's own samples join D_V0: then it is an input
        policy = ensure_warm_start(backbone_cfg, task_cfg, cache_dir, seed) if samples else None
        return ensure_state_prm(backbone_cfg, task_cfg, cache_dir, seed, policy)
    if backbone_cfg.prm_reads != "text":
        raise ValueError(f"backbone.prm_reads must be text or state, got {backbone_cfg.prm_reads!r}")
    # The PRM starts from the warm-started policy, the tiny stand-in for the paper's pretrained value
    # backbones: from the untrained base, D_V0 regression stayed near the constant predictor (MSE ~0.11).
    base = ensure_warm_start(backbone_cfg, task_cfg, cache_dir, seed)
    train_cfg = backbone_cfg.initial_prm
    questions = dv0_questions(task_cfg, seed)
    data = {"dv0_set": _digest(questions), "size": len(questions), "corruptions": task_cfg.dv0_corruptions}
    dv0 = _dv0_module(questions)
    # where the task's D_V0 can value them (countdown's exact solver), the policy's own samples join D_V0
    n_samples = int(task_cfg.dv0_samples) if hasattr(dv0, "label_samples") else 0
    if n_samples:  # only then in the key: entries built before this option keep theirs
        data["samples"] = n_samples
    spec = dict(_spec("initial_prm", base, backbone_cfg, data, train_cfg, seed), head=backbone_cfg.prm_head)
    fmt = PromptFormat.from_backbone(backbone_cfg)

    def build(tmp: Path) -> None:
        extra = []
        if n_samples:
            sampled = sample_solutions(base, questions, n_samples, seed, fmt, backbone_cfg)
            extra = dv0.label_samples(questions, sampled, fmt.answer_prefix)
            log.info("initial PRM: %d examples from %d own samples per question", len(extra), n_samples)
        metrics = build_initial_prm(
            base,
            questions,
            str(tmp / "prm"),
            train_cfg,
            seed,
            corruptions=task_cfg.dv0_corruptions,
            fmt=fmt,
            head=backbone_cfg.prm_head,
            extra=extra,
        )
        _log_done("initial PRM", metrics)

    entry = _cached(Path(cache_dir) / "round0" / f"initial-prm-{_key(spec)}", build, spec)
    return str(entry / "prm")


def build_initial_prm(
    base_prm_dir: str,
    questions: list,
    out_dir: str,
    train_cfg: Any,
    seed: int,
    corruptions: int = 2,
    fmt: PromptFormat | None = None,
    head: str = "linear",
    extra: list | None = None,
) -> dict:
    """Regress the PRM base in `base_prm_dir` on D_V0 of `questions`; write `out_dir`; return metrics.

    The job's metrics are also written next to `out_dir` as `prm_metrics.json`.
    """
    from trainers.prm_train import train_prm

    fmt = fmt or PromptFormat()
    examples = _dv0_module(questions).build_dv0(
        questions, seed=seed, corruptions=corruptions, answer_prefix=fmt.answer_prefix
    )
    seen = {(e.question_id, e.steps) for e in examples}
    examples += [e for e in extra or [] if (e.question_id, e.steps) not in seen]
    log.info("initial PRM: %d D_V0 examples from %d questions", len(examples), len(questions))
    out = Path(out_dir)
    metrics = train_prm(
        base_prm_dir,
        examples,
        str(out),
        train_cfg,
        fmt,
        str(out.parent / "jobs"),
        name="initial-prm",
        head=head,
    )
    (out.parent / "prm_metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def _dv0_module(questions: list) -> Any:
    """The module that builds D_V0 for these questions (`build_dv0`, and `label_samples` where the policy's
    own samples can be valued too): countdown's exact solver (pipeline.tasks.countdown_dv0), else gold
    prefixes and corrupted branches (trainers.dv0)."""
    if questions and questions[0].source == "countdown":
        from pipeline.tasks import countdown_dv0

        return countdown_dv0
    from trainers import dv0

    return dv0


def _log_done(what: str, metrics: dict) -> None:
    log.info(
        "%s trained: %d steps, loss %.4f -> %.4f, %.0f s",
        what,
        metrics["steps"],
        metrics["first_loss"],
        metrics["final_loss"],
        metrics["job_seconds"],
    )
