"""The phases of a self-training round, each a function the driver calls and times.

A phase returns `(files, info)`: the files it wrote (checksummed into the manifest) and a small JSON
dict of what it found. Phases read their inputs from the run directory, never from memory, so a
resumed run computes exactly what an uninterrupted one does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from pipeline.prompting import PromptFormat
from pipeline.records import PRMExample, Question, SFTExample, from_dict, to_dict
from pipeline.rundir import RunDir, atomic_write_jsonl, atomic_write_text, read_jsonl

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MethodPhases:
    """The four per-round phases of a self-training method; the driver calls them in this order.

    generate(cfg, run, get_pool, train, k) -> (files, info)   search / sampling on the training questions
    select(cfg, run, train, k) -> (files, info)               training data from what was generated
    train_policy(cfg, run, models, k) -> (files, info)        info must hold "policy_dir"
    train_prm(cfg, run, models, k) -> (files, info)           info must hold "prm_dir"
    """

    generate: Callable[..., Any]
    select: Callable[..., Any]
    train_policy: Callable[..., Any]
    train_prm: Callable[..., Any]


def method_phases(method: str) -> MethodPhases:
    """`method=rest_mcts` is defined here; the baselines (rest_em, self_rewarding) in loop.methods."""
    if method == "rest_mcts":
        return MethodPhases(search, infer_values, train_policy, train_prm)
    from loop.methods import baseline_phases

    return baseline_phases(method)


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True, default=str))


def start_models(cfg: DictConfig, run: RunDir) -> dict[str, Any]:
    """Round-0 checkpoints: the tiny backbone is built, warm-started and given a D_V0 PRM (all cached
    per machine); other backbones use the configured directories."""
    from models.backbones import resolve_backbone

    paths = resolve_backbone(cfg.backbone, cfg.task, cfg.cache_dir, cfg.seed)
    policy_dir, prm_dir = str(paths.policy_dir), str(paths.prm_dir)
    if cfg.backbone.name == "tiny":
        from trainers.warm_start import ensure_initial_prm, ensure_warm_start

        policy_dir = str(ensure_warm_start(cfg.backbone, cfg.task, cfg.cache_dir, cfg.seed))
        prm_dir = str(ensure_initial_prm(cfg.backbone, cfg.task, cfg.cache_dir, cfg.seed))
    models = {"policy_dir": policy_dir, "prm_dir": prm_dir, "policy_dir0": policy_dir, "prm_dir0": prm_dir}
    write_json(run.round_dir(0) / "models.json", models)
    return models


def prompt_tokenizer(cfg: DictConfig) -> Any:
    """The policy's tokenizer where prompts are rendered by its chat template (prompt_format=chat); None
    for the plain format. Datasets written by the loop hold the same prompt text the actors generate from."""
    if cfg.backbone.prompt_format != "chat":
        return None
    from models.backbones import prompt_tokenizer as load
    from models.backbones import resolve_backbone

    paths = resolve_backbone(cfg.backbone, cfg.task, cfg.cache_dir, cfg.seed)
    return load(cfg.backbone, paths.tokenizer_dir)


def shard_questions(questions: list[Question], size: int) -> list[tuple[Question, ...]]:
    ordered = sorted(questions, key=lambda q: q.id)
    return [tuple(ordered[i : i + size]) for i in range(0, len(ordered), max(1, size))]


def search(cfg: DictConfig, run: RunDir, get_pool: Any, train: list[Question], k: int):
    """MCTS* (data-collection preset) over the training questions, one file per shard.

    A shard file exists only when complete (temp name + rename), so shards found on disk and readable
    are kept and only the rest are searched again after a kill."""
    from pipeline.shards import Shard, load_shard

    out = run.round_dir(k) / "search"
    shards, todo = [], []
    for i, questions in enumerate(shard_questions(train, cfg.pool.shard_size)):
        path = str(out / f"shard-{i:05d}.jsonl")
        shard = Shard(shard_id=i, round=k, questions=questions, out_path=path, seed=cfg.seed)
        shards.append(shard)
        if not _shard_complete(shard, load_shard):
            todo.append(shard)
    log.info("round %d: searching %d of %d shards", k, len(todo), len(shards))
    for shard in todo:
        Path(shard.out_path).unlink(missing_ok=True)
    if todo:
        get_pool().run_shards(todo, cfg.search, progress=lambda p: log.info("round %d search: %s", k, p))
    rows = [tree for s in shards for tree in load_shard(s.out_path)]
    info = {
        "shards": len(shards),
        "shards_searched": len(todo),
        "questions": len(rows),
        "solved": sum(1 for t in rows if t.result.correct),
        "tokens": sum(t.result.generated_tokens for t in rows),
        "nodes": sum(len(t.nodes) for t in rows),
    }
    return [Path(s.out_path) for s in shards], info


def _shard_complete(shard, load_shard) -> bool:
    path = Path(shard.out_path)
    if not path.exists():
        return False
    try:
        ids = [t.question_id for t in load_shard(path)]
    except (ValueError, KeyError, TypeError):
        return False
    return ids == [q.id for q in shard.questions]


def infer_values(cfg: DictConfig, run: RunDir, train: list[Question], k: int):
    """Per-step values from every tree (PRM targets) and the best correct traces (SFT data)."""
    from pipeline.shards import load_shard
    from pipeline.values import prm_examples, select_sft

    fmt = PromptFormat.from_backbone(cfg.backbone)
    tokenizer = prompt_tokenizer(cfg)
    by_id = {q.id: q for q in train}
    check = _trace_checker(cfg)
    sft: list[SFTExample] = []
    steps_ok: list[bool] = []
    prm: list[PRMExample] = []
    for path in sorted((run.round_dir(k) / "search").glob("shard-*.jsonl")):
        for tree in load_shard(path):
            q = by_id[tree.question_id]
            if q.answer is None:
                continue
            trace_ok = (lambda steps, q=q: check(q, steps)) if check else None
            prm += prm_examples(tree.nodes, q.content, q.answer, fmt.answer_prefix)
            chosen = select_sft(
                tree.nodes,
                q.content,
                cfg.selection,
                fmt,
                gold=q.answer,
                trace_ok=trace_ok,
                tokenizer=tokenizer,
            )
            sft += chosen
            steps_ok += [trace_ok(e.steps) for e in chosen] if trace_ok else []
    sft = [_with_source(e, k) for e in sft]
    sft_path, prm_path = run.round_dir(k) / "sft.jsonl", run.round_dir(k) / "prm.jsonl"
    atomic_write_jsonl(sft_path, [to_dict(e) for e in sft])
    atomic_write_jsonl(prm_path, [to_dict(e) for e in prm])
    info = {
        "sft_examples": len(sft),
        "sft_questions": len({e.question_id for e in sft}),
        "prm_examples": len(prm),
        "prm_questions": len({e.question_id for e in prm}),
    }
    if steps_ok:  # share of selected traces whose every step is right (issue 9's trace precision)
        info["trace_precision"] = sum(steps_ok) / len(steps_ok)
    return [sft_path, prm_path], info


def _with_source(e: SFTExample, k: int) -> SFTExample:
    return SFTExample(e.question_id, e.prompt, e.solution, e.steps, e.value, source=f"mcts_round_{k}")


def _trace_checker(cfg: DictConfig):
    """Step-level correctness (arith only): an evaluation instrument and the `oracle` filter's test,
    never a training signal of ReST-MCTS* itself. Returns check(question, steps) -> bool, or None."""
    if cfg.task.name != "arith":
        return None
    from pipeline.tasks.arith import check_trace

    return lambda question, steps: bool(check_trace(question, steps).correct)


def accumulated(run: RunDir, k: int, name: str, cls):
    rows = []
    for j in range(1, k + 1):
        path = run.round_dir(j) / name
        if path.exists():
            rows += [from_dict(cls, r) for r in read_jsonl(path)]
    return rows


def train_policy(cfg: DictConfig, run: RunDir, models: dict[str, Any], k: int):
    """Policy SFT from the round-0 policy on the traces of rounds 1..k (the paper's recipe)."""
    from trainers.sft import train_sft

    examples = accumulated(run, k, "sft.jsonl", SFTExample)
    out = run.round_dir(k) / "policy"
    if not examples:
        log.warning("round %d: no SFT traces were selected; the policy is not retrained", k)
        return [], {"policy_dir": models["policy_dir"], "examples": 0}
    replay = replay_examples(cfg, cfg.selection.sft_replay)
    if replay:
        log.info("round %d: SFT on %d traces + %d replayed round-0 examples", k, len(examples), len(replay))
    metrics = train_sft(
        models["policy_dir0"],
        examples + replay,
        str(out),
        cfg.backbone.sft,
        storage_dir=str(run.root / "ray_train"),
        name=f"sft-round-{k}",
        trust_remote_code=cfg.backbone.trust_remote_code,
        add_special_tokens=cfg.backbone.prompt_format == "plain",
    )
    info = {"policy_dir": str(out), "examples": len(examples), "replay": len(replay), **_scalars(metrics)}
    return [out], info


def replay_examples(cfg: DictConfig, n: int) -> list[SFTExample]:
    """`n` of the round-0 policy's own SFT examples (the arith warm-start set), the same ones every
    round (seeded): replay against forgetting, not new information. Empty for n = 0 and for a task
    without a warm-start set (a real backbone's round 0 is its pretrained self: nothing to replay)."""
    if n <= 0:
        return []
    if cfg.task.name != "arith" or cfg.backbone.name != "tiny":  # only these are warm-started (start_models)
        log.info(
            "selection.sft_replay=%d: no warm-start set here (%s on %s); no replay",
            n,
            cfg.backbone.name,
            cfg.task.name,
        )
        return []
    import random

    from pipeline.tasks.arith import warm_start_set

    fmt = PromptFormat.from_backbone(cfg.backbone)
    questions = warm_start_set(cfg.task, cfg.seed)
    picked = random.Random(f"replay/{cfg.seed}").sample(questions, min(n, len(questions)))
    tokenizer = prompt_tokenizer(cfg)
    return [fmt.gold_example(q, "replay", tokenizer) for q in picked]


def train_prm(cfg: DictConfig, run: RunDir, models: dict[str, Any], k: int):
    """PRM regression from the round-0 PRM on the inferred values of rounds 1..k."""
    from trainers.prm_train import train_prm as regress

    examples = accumulated(run, k, "prm.jsonl", PRMExample)
    out = run.round_dir(k) / "prm"
    if not examples:
        log.warning("round %d: no value examples (no tree reached a correct answer); PRM unchanged", k)
        return [], {"prm_dir": models["prm_dir"], "examples": 0}
    metrics = regress(
        models["prm_dir0"],
        examples,
        str(out),
        cfg.backbone.prm_train,
        PromptFormat.from_backbone(cfg.backbone),
        storage_dir=str(run.root / "ray_train"),
        name=f"prm-round-{k}",
        trust_remote_code=cfg.backbone.trust_remote_code,
        head=cfg.backbone.prm_head,
    )
    info = {"prm_dir": str(out), "examples": len(examples), **_scalars(metrics)}
    for key in ("heldout_before", "heldout_after"):
        if isinstance(metrics.get(key), dict):
            info.update({f"{key}_{m}": v for m, v in metrics[key].items() if isinstance(v, int | float)})
    return [out], info


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float | str) and k != "out_dir"}
