"""What every method's phases share: the prompt tokenizer, datasets accumulated over rounds, replay, and
the one "train from round 0 on the data of rounds 1..k" step."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from loop.session import check_job_fits
from pipeline.prompting import PromptFormat
from pipeline.records import SFTExample, from_dict
from pipeline.rundir import RunDir, read_jsonl
from pipeline.tasks import builtin

log = logging.getLogger(__name__)


def prompt_tokenizer(cfg: DictConfig) -> Any:
    """The policy's tokenizer where prompts are rendered by its chat template (prompt_format=chat); None
    for the plain format. Datasets written by the loop hold the same prompt text the actors generate from."""
    if cfg.backbone.prompt_format != "chat":
        return None
    from models.backbones import prompt_tokenizer as load
    from models.backbones import resolve_backbone

    paths = resolve_backbone(cfg.backbone, cfg.task, cfg.cache_dir, cfg.seed)
    return load(cfg.backbone, paths.tokenizer_dir)


def accumulated(run: RunDir, k: int, name: str, cls, first: int = 1):
    """The rows of `round_<j>/<name>` for j = first..k."""
    rows = []
    for j in range(first, k + 1):
        path = run.round_dir(j) / name
        if path.exists():
            rows += [from_dict(cls, r) for r in read_jsonl(path)]
    return rows


def train_on_rounds(
    run: RunDir,
    k: int,
    rows: list[Any],
    out_name: str,
    keep: tuple[str, str],
    train: Callable[[str], dict[str, Any]],
    what: str,
    extra: dict[str, Any] | None = None,
) -> tuple[list[Any], dict[str, Any]]:
    """Train from round 0 on `rows` (the data of rounds 1..k) into `round_<k>/<out_name>`.

    `train(out_dir) -> metrics` runs the job. With no rows nothing is trained: `keep` = (info key,
    current directory) passes the current model on, with a warning that no `what` exist. Info: the key
    with the new directory, "examples", `extra`, then the job's scalar metrics."""
    key, current = keep
    if not rows:
        log.warning("round %d: no %s; %s is unchanged", k, what, key.removesuffix("_dir"))
        return [], {key: current, "examples": 0}
    out = run.round_dir(k) / out_name
    metrics = train(str(out))
    return [out], {key: str(out), "examples": len(rows), **(extra or {}), **scalars(metrics)}


def policy_start(cfg: DictConfig, run: RunDir, models: dict[str, Any], k: int, name: str, cls):
    """(start directory, training rows) of round k's policy job, by `selection.sft_from`: `round0` = the
    round-0 policy on the data of rounds 1..k (the paper's recipe); `previous` = round k-1's policy on
    round k's data only."""
    if cfg.selection.sft_from == "previous":
        return models["policy_dir"], accumulated(run, k, name, cls, first=k)
    return models["policy_dir0"], accumulated(run, k, name, cls)


def train_policy(cfg: DictConfig, run: RunDir, models: dict[str, Any], k: int):
    """Policy SFT (from where `selection.sft_from` says: `policy_start`) on the selected traces, plus
    `selection.sft_replay` replayed round-0 examples."""
    from trainers.sft import train_sft

    start, examples = policy_start(cfg, run, models, k, "sft.jsonl", SFTExample)
    replay = replay_examples(cfg, cfg.selection.sft_replay) if examples else []
    if replay:
        log.info("round %d: SFT on %d traces + %d replayed round-0 examples", k, len(examples), len(replay))

    def job(out: str) -> dict[str, Any]:
        check_job_fits(cfg.backbone.sft, "SFT workers", "backbone.sft")
        return train_sft(
            start,
            examples + replay,
            out,
            cfg.backbone.sft,
            storage_dir=str(run.root / "ray_train"),
            name=f"sft-round-{k}",
            trust_remote_code=cfg.backbone.trust_remote_code,
            add_special_tokens=cfg.backbone.prompt_format == "plain",
        )

    keep = ("policy_dir", models["policy_dir"])
    return train_on_rounds(run, k, examples, "policy", keep, job, "SFT traces", {"replay": len(replay)})


def keep_prm(cfg: DictConfig, run: RunDir, models: dict[str, Any], k: int):
    """The baselines do not train a PRM: the round-0 one stays."""
    return [], {"prm_dir": models["prm_dir"], "examples": 0}


def replay_examples(cfg: DictConfig, n: int) -> list[SFTExample]:
    """`n` of the round-0 policy's own SFT examples (the task's warm-start set), the same ones every
    round (seeded): replay against forgetting, not new information. Empty for n = 0 and for a task
    without a warm-start set (a real backbone's round 0 is its pretrained self: nothing to replay)."""
    if n <= 0:
        return []
    task = builtin(cfg.task.name)
    if task is None or cfg.backbone.name != "tiny":  # only these are warm-started (loop.round0)
        log.info(
            "selection.sft_replay=%d: no warm-start set here (%s on %s); no replay",
            n,
            cfg.backbone.name,
            cfg.task.name,
        )
        return []

    fmt = PromptFormat.from_backbone(cfg.backbone)
    questions = task.warm_start_set(cfg.task, cfg.seed)
    picked = random.Random(f"replay/{cfg.seed}").sample(questions, min(n, len(questions)))
    tokenizer = prompt_tokenizer(cfg)
    return [fmt.gold_example(q, "replay", tokenizer) for q in picked]


def scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    """The plain numbers and strings of a job's metrics (what goes into a phase's info)."""
    return {k: v for k, v in metrics.items() if isinstance(v, int | float | str) and k != "out_dir"}


def trace_checker(cfg: DictConfig):
    """Step-level correctness (built-in tasks: arith, countdown): an evaluation instrument and the
    `oracle` filter's test, never a training signal of ReST-MCTS* itself. Returns check(question,
    steps) -> bool, or None for tasks without a step checker."""
    task = builtin(cfg.task.name)
    if task is None:
        return None
    prefix = cfg.backbone.answer_prefix
    return lambda question, steps: bool(task.check_trace(question, steps, prefix).correct)
