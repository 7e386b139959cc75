"""ReST-MCTS* (docs/ALGORITHM.md sections 2-4), the paper's method, as round phases:

search:        MCTS* (data-collection preset) over the training questions, one shard file per shard
infer_values:  per-step values from every tree (PRM targets) and the best correct traces (SFT data)
train_policy:  SFT from the round-0 policy on the traces of rounds 1..k (loop.methods.common)
train_prm:     PRM regression from the round-0 PRM on the inferred values of rounds 1..k
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from loop.methods.common import accumulated, prompt_tokenizer, trace_checker, train_on_rounds, train_policy
from loop.methods.phases import MethodPhases
from loop.session import check_job_fits
from pipeline.progress import Progress
from pipeline.prompting import PromptFormat
from pipeline.records import PRMExample, Question, SFTExample, to_dict
from pipeline.rundir import RunDir, atomic_write_jsonl
from pipeline.verify import solution_check

log = logging.getLogger(__name__)


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
        questions = sum(len(s.questions) for s in todo)
        with Progress(f"search round {k}", questions, "questions", logger=log) as bar:
            get_pool().run_shards(todo, cfg.search, on_shard=lambda shard: bar.update(len(shard.questions)))
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
    check = trace_checker(cfg)
    sft: list[SFTExample] = []
    steps_ok: list[bool] = []
    prm: list[PRMExample] = []
    for path in sorted((run.round_dir(k) / "search").glob("shard-*.jsonl")):
        for tree in load_shard(path):
            q = by_id[tree.question_id]
            if q.answer is None:
                continue
            trace_ok = (lambda steps, q=q: check(q, steps)) if check else None
            gold = solution_check(
                q, fmt.answer_prefix, fallbacks=cfg.backbone.answer_fallbacks
            )  # the gold answer, or the task verifier
            prm += prm_examples(tree.nodes, q.content, gold, fmt.answer_prefix)
            chosen = select_sft(
                tree.nodes,
                q.content,
                cfg.selection,
                fmt,
                gold=gold,
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


def train_prm(cfg: DictConfig, run: RunDir, models: dict[str, Any], k: int):
    """PRM regression from the round-0 PRM on the inferred values of rounds 1..k."""
    from trainers.prm_train import train_prm as regress

    examples = accumulated(run, k, "prm.jsonl", PRMExample)
    held: dict[str, Any] = {}  # the PRM job's held-out metrics, flattened into the phase info

    def job(out: str) -> dict[str, Any]:
        check_job_fits(cfg.backbone.prm_train, "PRM workers", "backbone.prm_train")
        metrics = regress(
            models["prm_dir0"],
            examples,
            out,
            cfg.backbone.prm_train,
            PromptFormat.from_backbone(cfg.backbone),
            storage_dir=str(run.root / "ray_train"),
            name=f"prm-round-{k}",
            trust_remote_code=cfg.backbone.trust_remote_code,
            head=cfg.backbone.prm_head,
        )
        for key in ("heldout_before", "heldout_after"):
            if isinstance(metrics.get(key), dict):
                held.update({f"{key}_{m}": v for m, v in metrics[key].items() if isinstance(v, int | float)})
        return metrics

    keep = ("prm_dir", models["prm_dir"])
    files, info = train_on_rounds(
        run, k, examples, "prm", keep, job, "value examples (no tree reached a correct answer)"
    )
    return files, {**info, **held}


PHASES = MethodPhases(search, infer_values, train_policy, train_prm)
