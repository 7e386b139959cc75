"""The round-0 warm start's training rate against a minimal plain torch loop, side by side.

    python bench/warm_start_bench.py [key=value ...] [--steps 60] [--rows 8000]
    python bench/warm_start_bench.py task=countdown

Same model (the untrained tiny policy of the configured task), same data (the task's warm-start
solutions, formatted as trainers/warm_start.py does), same batches (`trainers.engine.micro_batches`
with the warm start's `backbone.warm_start`: batch size, length grouping, seed), same dtype, same torch
threads, AdamW with gradient clipping in both:
(a) `trainers.sft.train_sft` with `backbone.warm_start` capped at `--steps`: the path round 0 takes
    (in-process TorchEngine when `num_workers` is 0);
(b) a plain loop: forward (under bf16 autocast when chosen), backward, clip, AdamW step.
The dtype is chosen from the hardware (`models.device.train_bf16`: bf16 only on a GPU with bf16 or a
CPU with avx512_bf16 / AMX) and printed first. Rates are steady state: from optimizer step
STEADY_AFTER_STEPS to the last. The ratio a/b is what issue 26 asks to keep >= 0.9. Load average before
and after is printed (other processes move wall-clock rates on a shared machine).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def plain_loop(policy_dir: str, rows: list, train_cfg, steps: int, bf16: bool) -> dict:
    """(b): the same batches through a minimal torch loop; steady-state steps/s and tokens/s."""
    import torch
    from transformers import AutoModelForCausalLM

    from trainers.engine import STEADY_AFTER_STEPS, make_plan, micro_batches
    from trainers.sft import pad_batch
    from trainers.worker import WorkerContext

    if train_cfg.torch_threads > 0:
        torch.set_num_threads(train_cfg.torch_threads)
    torch.manual_seed(train_cfg.seed)
    model = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32, use_safetensors=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    plan = make_plan(len(rows), train_cfg, 1)
    ctx = WorkerContext(rank=0, world_size=1, distributed=False, in_ray=False)
    model.train()
    tokens, t0, tokens0 = 0, 0.0, 0
    for step, chunk in enumerate(micro_batches(rows, train_cfg, ctx, plan), 1):
        batch = pad_batch(chunk, 0)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        float(loss.detach())  # the engine reads the loss every step too
        tokens += int(batch["attention_mask"].sum())
        if step == STEADY_AFTER_STEPS:
            t0, tokens0 = time.perf_counter(), tokens
    seconds = time.perf_counter() - t0
    done = plan.optimizer_steps - STEADY_AFTER_STEPS
    return {"steps_per_s": done / seconds, "tokens_per_s": (tokens - tokens0) / seconds, "steps": done}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("overrides", nargs="*", help="config key=value overrides (task=countdown, ...)")
    ap.add_argument("--steps", type=int, default=60, help="optimizer steps of each loop")
    ap.add_argument("--rows", type=int, default=8000, help="warm-start solutions used (the first N)")
    args = ap.parse_args()

    from conf.load import compose
    from models.backbones import prompt_tokenizer, resolve_backbone
    from models.device import cpu_flags, train_bf16, train_dtype_name
    from pipeline.prompting import PromptFormat
    from pipeline.tasks import builtin
    from trainers.job import as_train_config
    from trainers.sft import encode_sft, train_sft

    cfg = compose(args.overrides)
    train_cfg = replace(as_train_config(cfg.backbone.warm_start), max_steps=args.steps)
    bf16 = train_bf16(train_cfg.bf16, "cpu")
    units = sorted(f for f in cpu_flags() if "bf16" in f)
    print(
        f"dtype chosen: {train_dtype_name(train_cfg.bf16)} (bf16: {train_cfg.bf16}; CPU bf16 flags: {units or 'none'})"
    )
    base = resolve_backbone(cfg.backbone, cfg.task, cfg.cache_dir, cfg.seed).policy_dir
    fmt = PromptFormat.from_backbone(cfg.backbone)
    questions = builtin(cfg.task.name).warm_start_set(cfg.task, cfg.seed)[: args.rows]
    examples = [fmt.gold_example(q, "warm_start", prompt_tokenizer(cfg.backbone, base)) for q in questions]
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        a = train_sft(base, examples, f"{tmp}/out", train_cfg, f"{tmp}/jobs", name="warm-start-bench")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    rows = [encode_sft(tok, e.prompt, e.solution, train_cfg.max_length) for e in examples]
    b = plain_loop(base, rows, train_cfg, args.steps, bf16)
    a_steps = a["steady_steps"] / a["steady_seconds"]
    print(
        f"model {base}, {len(rows)} rows, batch {train_cfg.micro_batch_size}, {train_cfg.torch_threads} threads"
    )
    print(f"{'':<28}{'steps/s':>10}{'tokens/s':>12}")
    print(f"{'(a) warm start (train_sft)':<28}{a_steps:>10.2f}{a['steady_tokens_per_s']:>12.0f}")
    print(f"{'(b) plain torch loop':<28}{b['steps_per_s']:>10.2f}{b['tokens_per_s']:>12.0f}")
    ratio = a_steps / b["steps_per_s"]
    print(f"{'a/b':<28}{ratio:>10.2f}{a['steady_tokens_per_s'] / b['tokens_per_s']:>12.2f}")
    print(f"load average {load0:.2f} before, {os.getloadavg()[0]:.2f} after")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
