"""PRM regression: MSE between the value head's sigmoid output and `PRMExample.target`.

Input = what the PRM reads (`models.value.PRMReader`: `PromptFormat.prm_text(question, steps)`, or the
task's state for a state-reading value model, as its directory records), the same rendering the PRM
actor scores. Loss (`train_cfg.prm_loss`): MSE, or cross-entropy against the soft target. A
deterministic share of questions (`train_cfg.eval_fraction`, by a hash of the question id and seed) is
held out; before and after training the job reports on it the MSE and the pairwise ranking accuracy:
over pairs of sibling prefixes (same question, same parent steps) with r = 0 and r = 1, how often the
PRM scores the r = 0 one strictly higher.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from dataclasses import asdict
from typing import Any

import torch

from models.prm import encode, load_prm, save_prm
from models.value import reader_of
from pipeline.prompting import PRMText, PromptFormat
from pipeline.records import PRMExample, from_dict, to_dict
from trainers.engine import (
    apply_lora,
    build_engine,
    enable_gradient_checkpointing,
    fit,
    full_parameters,
    make_plan,
    replace_dir,
    summary,
)
from trainers.job import run_training_job
from trainers.worker import WorkerContext, train_config, worker_context, write_metrics


def split_heldout(
    examples: list[PRMExample], fraction: float, seed: int
) -> tuple[list[PRMExample], list[PRMExample]]:
    """(train, heldout) by question: a question's examples all go to one side. Deterministic."""
    if fraction <= 0:
        return list(examples), []
    qids = sorted({e.question_id for e in examples})
    if len(qids) < 2:
        return list(examples), []

    def key(qid: str) -> str:
        return hashlib.sha1(f"{seed}:{qid}".encode()).hexdigest()

    n_held = min(len(qids) - 1, max(1, round(fraction * len(qids))))
    held = set(sorted(qids, key=key)[:n_held])
    return [e for e in examples if e.question_id not in held], [e for e in examples if e.question_id in held]


def pairwise_accuracy(examples: list[PRMExample], scores: list[float]) -> tuple[float | None, int]:
    """(share of sibling pairs where the r=0 prefix outscores the r=1 one, number of pairs)."""
    groups: dict[tuple, list[tuple[int, float]]] = defaultdict(list)
    for e, s in zip(examples, scores, strict=True):
        groups[(e.question_id, tuple(e.steps[:-1]))].append((e.r, s))
    wins = pairs = 0
    for members in groups.values():
        good = [s for r, s in members if r == 0]
        bad = [s for r, s in members if r == 1]
        for g in good:
            for b in bad:
                pairs += 1
                wins += g > b
    return (wins / pairs if pairs else None), pairs


def encode_batch(tokenizer: Any, texts: list[PRMText], targets: list[float], max_length: int) -> dict:
    return dict(encode(tokenizer, texts, max_length), targets=torch.tensor(targets, dtype=torch.float32))


def _values(engine, batch: dict) -> torch.Tensor:
    return engine(batch["input_ids"], batch["attention_mask"], batch["solution_mask"], batch["last_mask"])


def _mse_loss(engine, batch: dict) -> torch.Tensor:
    return torch.nn.functional.mse_loss(_values(engine, batch).float(), batch["targets"])


def _bce_loss(engine, batch: dict) -> torch.Tensor:
    """Cross-entropy of the value (a sigmoid output) against the soft target in [0, 1]: no vanishing
    gradient where MSE's sigmoid saturates; minimised at the target, as MSE is."""
    values = _values(engine, batch).float().clamp(1e-6, 1 - 1e-6)
    return torch.nn.functional.binary_cross_entropy(values, batch["targets"])


LOSSES = {"mse": _mse_loss, "bce": _bce_loss}


@torch.no_grad()
def evaluate(engine, rows: list[tuple[PRMText, float]], tokenizer, cfg, ctx: WorkerContext) -> list[float]:
    """Scores of `rows` (text, target), computed shard-wise on every rank (ZeRO-3 needs all ranks)."""
    if not rows:
        return []
    engine.eval()
    padded = list(range(len(rows))) + list(range(len(rows)))[: (-len(rows)) % ctx.world_size]
    mine = padded[ctx.rank :: ctx.world_size]
    local: list[tuple[int, float]] = []
    for start in range(0, len(mine), cfg.micro_batch_size):
        idx = mine[start : start + cfg.micro_batch_size]
        batch = encode_batch(tokenizer, [rows[i][0] for i in idx], [0.0] * len(idx), cfg.max_length)
        values = _values(engine, batch).float().tolist()
        local.extend(zip(idx, values, strict=True))
    gathered = [local]
    if ctx.distributed and ctx.world_size > 1:
        gathered = [None] * ctx.world_size
        torch.distributed.all_gather_object(gathered, local)
    scores = [0.0] * len(rows)
    for part in gathered:
        for i, v in part:
            scores[i] = v
    engine.train()
    return scores


def heldout_metrics(examples: list[PRMExample], scores: list[float]) -> dict:
    if not examples:
        return {"examples": 0, "mse": None, "pairwise_accuracy": None, "pairs": 0}
    mse = sum((s - e.target) ** 2 for e, s in zip(examples, scores, strict=True)) / len(examples)
    acc, pairs = pairwise_accuracy(examples, scores)
    return {"examples": len(examples), "mse": mse, "pairwise_accuracy": acc, "pairs": pairs}


def prm_worker(config: dict) -> None:
    """Ray Train worker loop (also called in-process): train, rank 0 saves the PRM and metrics."""
    ctx = worker_context(config)
    cfg = train_config(config)
    torch.manual_seed(cfg.seed)
    fmt = PromptFormat(**config["prompt_format"])
    model, tokenizer = load_prm(
        config["base_dir"], trust_remote_code=config["trust_remote_code"], head=config["head"]
    )
    if cfg.freeze_backbone:  # no gradient goes through it: nothing to recompute (checkpointing skipped)
        model.backbone.requires_grad_(False)
    else:
        if cfg.gradient_checkpointing:
            enable_gradient_checkpointing(model.backbone)
        if cfg.lora.enabled:
            model.backbone = apply_lora(model.backbone, cfg.lora, task_type="FEATURE_EXTRACTION")
    if cfg.prm_loss not in LOSSES:
        raise ValueError(f"prm_loss must be one of {', '.join(LOSSES)}, got {cfg.prm_loss!r}")
    reader = reader_of(config["base_dir"], fmt)
    examples = [from_dict(PRMExample, d) for d in config["examples"]]
    train, held = split_heldout(examples, cfg.eval_fraction, cfg.seed)

    def rows(items: list[PRMExample]) -> list[tuple[PRMText, float]]:
        return [(reader.text(e.question, e.steps, tokenizer), e.target) for e in items]

    train_rows, held_rows = rows(train), rows(held)
    plan = make_plan(len(train_rows), cfg, ctx.world_size)
    engine = build_engine(model, cfg, ctx, plan.optimizer_steps)
    before = heldout_metrics(held, evaluate(engine, held_rows, tokenizer, cfg, ctx))

    def collate(chunk: list[tuple[PRMText, float]]) -> dict:
        return encode_batch(tokenizer, [t for t, _ in chunk], [v for _, v in chunk], cfg.max_length)

    result = fit(engine, train_rows, collate, LOSSES[cfg.prm_loss], cfg, ctx, plan, config["name"])
    after = heldout_metrics(held, evaluate(engine, held_rows, tokenizer, cfg, ctx))

    out_dir = config["out_dir"]
    tmp = f"{out_dir}.tmp-{os.getpid()}"
    with full_parameters(engine, cfg, ctx) as module:
        if ctx.rank == 0:
            if cfg.lora.enabled:
                module.backbone = module.backbone.merge_and_unload()
            save_prm(
                module, tokenizer, tmp, extra={"prompt_format": config["prompt_format"], **reader.meta()}
            )
    if ctx.rank == 0:
        replace_dir(tmp, out_dir)
        metrics = summary(result, plan, len(train_rows), ctx)
        write_metrics(
            config["metrics_path"], dict(metrics, heldout_before=before, heldout_after=after, out_dir=out_dir)
        )


def train_prm(
    base_dir: str,
    examples: list[PRMExample],
    out_dir: str,
    train_cfg: Any,
    fmt: PromptFormat,
    storage_dir: str,
    name: str = "prm",
    trust_remote_code: bool = False,
    head: str = "linear",
) -> dict:
    """Regress the PRM in `base_dir` (a PRM dir, or a base LM = fresh `head`) on `examples`; write `out_dir`.

    Returns the job's metrics: those of `train_sft` plus heldout_before / heldout_after
    ({examples, mse, pairwise_accuracy, pairs}).
    """
    loop_config = {
        "base_dir": os.path.abspath(base_dir),
        "out_dir": os.path.abspath(out_dir),
        "examples": [to_dict(e) for e in examples],
        "prompt_format": asdict(fmt),
        "trust_remote_code": trust_remote_code,
        "name": name,
        "head": head,
    }
    return run_training_job(prm_worker, loop_config, train_cfg, name, storage_dir)
