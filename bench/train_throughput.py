"""SFT tokens/s on the tiny policy: Ray Train + DeepSpeed (the project's path) vs a plain torch loop.

    python bench/train_throughput.py [--steps 150] [--workers 2] [--micro-batch 32] [--no-single]

Same model (the tiny policy), same data (the arith warm-start set, formatted as trainers/warm_start.py
does), same micro batch per process, same number of optimizer steps, same max_length (backbone.sft),
AdamW with gradient clipping in both:
(a) `trainers.sft.train_sft` -> `trainers.job.run_training_job`: a Ray Train TorchTrainer with
    `--workers` DeepSpeed workers (gloo, ZeRO stage of backbone.sft), the cores split evenly between
    them (cpus_per_worker and torch_threads);
(b) a plain torch loop in this process (no Ray Train, no DeepSpeed), once on one torch thread and once
    on every core; the baseline is the faster of the two (on a busy machine one thread can win);
(c) (a) with one worker holding every core (skipped with --no-single or when --workers is 1).
Rates are steady state, timed inside the training loop from optimizer step STEADY_AFTER_STEPS to the
last step (`steady_tokens_per_s` of `trainers.engine.summary`: the per-100-step progress reports are
inside the window, the final one is not); (b) is timed the same way. The fixed cost of a job is printed
apart: startup (submit to the first step: Ray Train workers, process group, model load, DeepSpeed
engine) and the whole job's wall time (startup + loop + save + teardown). Tokens are non-padding
tokens of all workers. a/b is the ratio the issue asks for (>= 0.9 once the job is running). On a
shared machine other processes' load moves the wall-clock rates: tokens per CPU-second of the training
processes (all ranks) is printed too, and the load average before and after.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def plain_loop(policy_dir, examples, train_cfg, steps, threads):
    """(b): one process, plain torch AdamW; returns metrics named as the Ray jobs' (plus model facts)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainers.engine import STEADY_AFTER_STEPS
    from trainers.sft import encode_sft, pad_batch

    t_submit = time.perf_counter()
    torch.set_num_threads(threads)
    torch.manual_seed(train_cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    model = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32, use_safetensors=True)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    rows = [encode_sft(tokenizer, e.prompt, e.solution, train_cfg.max_length) for e in examples]
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    order: list[int] = []
    epoch, tokens, steady_start, steady_cpu0, steady_tokens0 = 0, 0, 0.0, 0.0, 0
    model.train()
    t_first = time.perf_counter()
    for step in range(1, steps + 1):
        if len(order) < train_cfg.micro_batch_size:
            more = list(range(len(rows)))
            random.Random(train_cfg.seed * 1_000_003 + epoch).shuffle(more)
            order, epoch = order + more, epoch + 1
        chunk, order = order[: train_cfg.micro_batch_size], order[train_cfg.micro_batch_size :]
        batch = pad_batch([rows[i] for i in chunk], pad_id)
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        float(loss.detach())
        tokens += int(batch["attention_mask"].sum())
        if step == STEADY_AFTER_STEPS:
            steady_start, steady_cpu0, steady_tokens0 = time.perf_counter(), time.process_time(), tokens
    end, cpu = time.perf_counter(), time.process_time()
    return {
        "steady_tokens_per_s": (tokens - steady_tokens0) / (end - steady_start),
        "steady_tokens_per_cpu_s": (tokens - steady_tokens0) / (cpu - steady_cpu0),
        "startup_seconds": t_first - t_submit,
        "job_seconds": end - t_submit,
        "tokens": tokens,
        "params": sum(p.numel() for p in model.parameters()),
        "mean_tokens": sum(len(ids) for ids, _ in rows) / len(rows),
    }


def ray_job(policy_dir, examples, train_cfg, tmp, name):
    """(a)/(c): the project's SFT job; returns its metrics plus `startup_seconds`."""
    from trainers.sft import train_sft

    submit = time.time()
    m = train_sft(policy_dir, examples, f"{tmp}/{name}", train_cfg, f"{tmp}/jobs", name=name)
    per_cpu = m["steady_tokens_per_s"] * m["steady_seconds"] / max(m["steady_cpu_seconds"], 1e-9)
    return dict(m, startup_seconds=m["loop_started_at"] - submit, steady_tokens_per_cpu_s=per_cpu)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150, help="optimizer steps of every run")
    ap.add_argument("--workers", type=int, default=2, help="Ray Train workers of (a)")
    ap.add_argument("--micro-batch", type=int, default=32, help="examples per process per step")
    ap.add_argument("--no-single", action="store_true", help="skip (c), one Ray Train worker")
    ap.add_argument("--cache-dir", default=".cache/restmcts")
    args = ap.parse_args(argv)

    from omegaconf import OmegaConf

    from actors.cluster import init_ray, shutdown_ray
    from conf.load import compose
    from models.backbones import resolve_backbone
    from pipeline.prompting import PromptFormat
    from pipeline.tasks.arith import warm_start_set
    from trainers.engine import STEADY_AFTER_STEPS

    if args.steps <= STEADY_AFTER_STEPS:
        ap.error(f"--steps must be > {STEADY_AFTER_STEPS} (the steps left out of the steady-state rate)")
    cfg = compose([f"cache_dir={args.cache_dir}"])
    paths = resolve_backbone(cfg.backbone, cfg.task, cfg.cache_dir, cfg.seed)
    fmt = PromptFormat.from_backbone(cfg.backbone)
    examples = [fmt.gold_example(q, "warm_start") for q in warm_start_set(cfg.task, cfg.seed)]
    cores = len(os.sched_getaffinity(0))
    base = OmegaConf.to_object(cfg.backbone.sft)

    def job_cfg(workers: int):
        per_rank = math.ceil(len(examples) / workers)
        return replace(
            base,
            micro_batch_size=args.micro_batch,
            max_steps=args.steps,
            epochs=float(math.ceil(args.steps * args.micro_batch / per_rank) + 1),  # max_steps decides
            gradient_accumulation_steps=1,
            num_workers=workers,
            cpus_per_worker=cores / workers,
            torch_threads=max(1, cores // workers),
        )

    load_before = os.getloadavg()[0]
    init_ray(cfg.ray, log_to_driver=False)
    runs = [("b: plain torch loop, 1 thread", 1)]
    runs.append((f"a: Ray Train+DeepSpeed, {args.workers} x {cores / args.workers:g} cpu", -args.workers))
    if cores > 1:
        runs.append((f"b: plain torch loop, {cores} threads", cores))
    if not args.no_single and args.workers != 1:
        runs.append((f"c: Ray Train+DeepSpeed, 1 x {cores} cpu", -1))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, n in runs:  # n > 0: plain loop on n threads; n < 0: Ray Train job on -n workers
            if n > 0:
                m = plain_loop(paths.policy_dir, examples, job_cfg(1), args.steps, n)
            else:
                m = ray_job(paths.policy_dir, examples, job_cfg(-n), tmp, f"ray-{-n}")
            print(f"{label}: {m['steady_tokens_per_s']:.0f} tokens/s", flush=True)
            rows.append((label, m))
    shutdown_ray()
    a = rows[1][1]
    plain = [m for label, m in rows if label.startswith("b:")]
    ray_rows = [m for label, m in rows if not label.startswith("b:")]
    b = {k: max(m[k] for m in plain) for k in ("steady_tokens_per_s", "steady_tokens_per_cpu_s")}
    print(
        f"\ntiny policy ({rows[0][1]['params'] / 1e6:.2f}M params), arith warm-start set ({len(examples)} "
        f"examples, mean {rows[0][1]['mean_tokens']:.0f} tokens); micro batch {args.micro_batch} per process, "
        f"{args.steps} optimizer steps, max_length {base.max_length}, AdamW, ZeRO-{base.zero_stage}, fp32, "
        f"{cores} cores; steady state = steps "
        f"{STEADY_AFTER_STEPS + 1}..{args.steps}"
    )
    print(
        f"{'mode':34s} {'tokens/s':>9s} {'tokens/cpu-s':>13s} {'startup s':>10s} {'job s':>7s} "
        f"{'job tokens/s':>13s}"
    )
    for name, m in rows:
        print(
            f"{name:34s} {m['steady_tokens_per_s']:9.0f} {m['steady_tokens_per_cpu_s']:13.0f} "
            f"{m['startup_seconds']:10.1f} {m['job_seconds']:7.1f} {m['tokens'] / m['job_seconds']:13.0f}"
        )
    ratios = {k: a[k] / b[k] for k in b}
    line = (
        f"a/b steady tokens/s: {ratios['steady_tokens_per_s']:.2f} (b: the faster plain loop; target "
        f">= 0.9: {'met' if ratios['steady_tokens_per_s'] >= 0.9 else 'NOT met'})"
    )
    if len(ray_rows) == 2:
        line += f"   c/b: {ray_rows[1]['steady_tokens_per_s'] / b['steady_tokens_per_s']:.2f}"
    print(line)
    line = f"a/b per CPU-second (removes other processes' load): {ratios['steady_tokens_per_cpu_s']:.2f}"
    if len(ray_rows) == 2:
        line += f"   c/b: {ray_rows[1]['steady_tokens_per_cpu_s'] / b['steady_tokens_per_cpu_s']:.2f}"
    print(line)
    print(f"load average (1 min) before {load_before:.2f}, after {os.getloadavg()[0]:.2f} on {cores} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
