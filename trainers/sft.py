"""Policy SFT: an HF causal-LM directory + `SFTExample`s -> a new HF directory (safetensors).

Loss on solution tokens only: prompt and padding positions carry label -100. The solution is followed
by the tokenizer's EOS token when it has one. With `train_cfg.lora.enabled` the adapters are merged
into the weights on save, so the output loads with a plain `from_pretrained`.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from pipeline.records import SFTExample
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
from trainers.worker import train_config, worker_context, write_metrics

IGNORE = -100


def encode_sft(
    tokenizer: Any, prompt: str, solution: str, max_length: int, add_special_tokens: bool = True
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for one example; labels are -100 on the prompt; truncated to max_length.

    `add_special_tokens` as the policy actor encodes its prompts: True for the plain format, False for a
    chat template (the rendered template already holds the special tokens it wants)."""
    prompt_ids = tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"]
    solution_ids = tokenizer(solution, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        solution_ids = solution_ids + [tokenizer.eos_token_id]
    ids = (prompt_ids + solution_ids)[:max_length]
    labels = ([IGNORE] * len(prompt_ids) + solution_ids)[:max_length]
    return ids, labels


def pad_batch(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the batch's longest row."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}


def _lm_loss(engine, batch: dict) -> torch.Tensor:
    return engine(**batch, use_cache=False).loss


def sft_worker(config: dict) -> None:
    """Ray Train worker loop (also called in-process): train, rank 0 saves `out_dir` and metrics."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ctx = worker_context(config)
    cfg = train_config(config)
    torch.manual_seed(cfg.seed)
    remote = config["trust_remote_code"]
    tokenizer = AutoTokenizer.from_pretrained(config["base_dir"], trust_remote_code=remote)
    model = AutoModelForCausalLM.from_pretrained(
        config["base_dir"], dtype=torch.float32, trust_remote_code=remote, use_safetensors=True
    )
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if cfg.lora.enabled:
        model = apply_lora(model, cfg.lora, task_type="CAUSAL_LM")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    special = config["add_special_tokens"]
    rows = [
        encode_sft(tokenizer, e["prompt"], e["solution"], cfg.max_length, special) for e in config["examples"]
    ]
    plan = make_plan(len(rows), cfg, ctx.world_size)
    engine = build_engine(model, cfg, ctx, plan.optimizer_steps)
    result = fit(
        engine, rows, lambda chunk: pad_batch(chunk, pad_id), _lm_loss, cfg, ctx, plan, config["name"]
    )

    out_dir = config["out_dir"]
    tmp = f"{out_dir}.tmp-{os.getpid()}"
    with full_parameters(engine, cfg, ctx) as module:
        if ctx.rank == 0:
            module = module.merge_and_unload() if cfg.lora.enabled else module
            module.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    if ctx.rank == 0:
        replace_dir(tmp, out_dir)
        write_metrics(config["metrics_path"], dict(summary(result, plan, len(rows), ctx), out_dir=out_dir))


def train_sft(
    base_dir: str,
    examples: list[SFTExample],
    out_dir: str,
    train_cfg: Any,
    storage_dir: str,
    name: str = "sft",
    trust_remote_code: bool = False,
    add_special_tokens: bool = True,
) -> dict:
    """Fine-tune the causal LM in `base_dir` on `examples`; write `out_dir`; return the job's metrics.

    Metrics: loss_curve (per optimizer step), first_loss, final_loss, steps, tokens_per_s,
    train_seconds (the loop), steady_tokens_per_s (after the first steps; `engine.summary`),
    loop_started_at (wall clock at the first step), job_seconds (everything), out_dir.
    """
    loop_config = {
        "base_dir": os.path.abspath(base_dir),
        "out_dir": os.path.abspath(out_dir),
        "examples": [{"prompt": e.prompt, "solution": e.solution} for e in examples],
        "trust_remote_code": trust_remote_code,
        "add_special_tokens": add_special_tokens,
        "name": name,
    }
    return run_training_job(sft_worker, loop_config, train_cfg, name, storage_dir)
