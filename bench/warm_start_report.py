"""Round 0 of the tiny backbone: warm-start time and greedy accuracy per difficulty on held-out questions.

    python bench/warm_start_report.py [key=value ...] [--per-difficulty 100] [--samples 8] [--legal 50]
    python bench/warm_start_report.py task=countdown --per-difficulty 100 --legal 50

Builds (or reuses from cache_dir) the warm-started policy, then decodes the held-out questions of the
configured built-in task (arith, countdown) greedily with HF `generate`, one step at a time (each call
stops at the step delimiter), and checks every trace with the task's step checker. `--samples N` also
samples N solutions per question at the search temperature: pass@N and the number of distinct first
steps show whether sampling still explores. `--legal Q` samples one solution at temperature 1 for Q
held-out questions per difficulty and prints the share of sampled lines the checker accepts, by depth
(after a wrong line the trace's own state goes on, as `check_trace` does).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from conf.load import compose  # noqa: E402
from pipeline.prompting import PromptFormat  # noqa: E402
from pipeline.tasks import builtin  # noqa: E402
from trainers.warm_start import ensure_initial_prm, ensure_warm_start  # noqa: E402


@torch.inference_mode()
def solve(
    model, tok, fmt: PromptFormat, contents: list[str], max_steps: int, step_tokens: int, temperature: float
):
    """Solutions (lists of steps) generated step by step; greedy when temperature == 0."""
    delim_id = tok.convert_tokens_to_ids(fmt.delimiter)
    stop = [i for i in (delim_id, tok.eos_token_id) if i is not None]
    texts = [fmt.prompt(c) for c in contents]
    steps: list[list[str]] = [[] for _ in contents]
    active = list(range(len(contents)))
    for _ in range(max_steps):
        if not active:
            break
        enc = tok([texts[i] for i in active], return_tensors="pt", padding=True)
        out = model.generate(
            **enc,
            max_new_tokens=step_tokens,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_k=None,
            top_p=None,
            eos_token_id=stop,
            pad_token_id=tok.pad_token_id,
        )
        still = []
        for row, i in enumerate(active):
            text = tok.decode(out[row, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            step = text.split(fmt.delimiter)[0].strip()
            if not step:
                continue
            steps[i].append(step)
            texts[i] += step + fmt.delimiter
            if not step.startswith(fmt.answer_prefix):
                still.append(i)
        active = still
    return steps


def report_prm(cfg) -> None:
    start = time.perf_counter()
    prm_dir = ensure_initial_prm(cfg.backbone, cfg.task, cfg.cache_dir, cfg.seed)
    seconds = time.perf_counter() - start
    m = json.loads((Path(prm_dir).parent / "prm_metrics.json").read_text())
    before, after = m["heldout_before"], m["heldout_after"]
    print(f"initial PRM: {prm_dir}")
    print(
        f"  D_V0: {m['examples']} training examples, {m['steps']} steps, loss {m['first_loss']:.4f} -> "
        f"{m['final_loss']:.4f}, trained in {m['job_seconds']:.0f} s (this call: {seconds:.0f} s)"
    )
    print(
        f"  held-out ({after['examples']} examples, {after['pairs']} sibling pairs): MSE {before['mse']:.4f} -> "
        f"{after['mse']:.4f}, pairwise ranking accuracy {before['pairwise_accuracy']:.1%} -> "
        f"{after['pairwise_accuracy']:.1%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="config key=value overrides")
    parser.add_argument("--per-difficulty", type=int, default=100)
    parser.add_argument("--samples", type=int, default=0)
    parser.add_argument("--sample-questions", type=int, default=25, help="per difficulty, for --samples")
    parser.add_argument(
        "--legal", type=int, default=0, help="questions per difficulty for sampled-line legality"
    )
    parser.add_argument(
        "--prm", action="store_true", help="also build the D_V0 PRM and print its held-out metrics"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = compose(args.overrides)
    fmt = PromptFormat.from_backbone(cfg.backbone)

    start = time.perf_counter()
    policy_dir = ensure_warm_start(cfg.backbone, cfg.task, cfg.cache_dir, cfg.seed)
    build_seconds = time.perf_counter() - start
    job = json.loads((Path(policy_dir).parent / "jobs" / "warm-start" / "metrics.json").read_text())
    print(f"policy: {policy_dir}")
    print(
        f"warm start: {job['steps']} steps, loss {job['first_loss']:.3f} -> {job['final_loss']:.3f}, "
        f"trained in {job['job_seconds']:.0f} s (this call: {build_seconds:.0f} s)"
    )

    if args.prm:
        report_prm(cfg)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(policy_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(policy_dir).eval()
    task = builtin(cfg.task.name)
    check_trace = task.check_trace
    _, heldout = task.make_task_split(cfg.task, cfg.seed)
    max_steps = cfg.search.max_depth
    print(f"{'d':>2} {'n':>4} {'greedy ans':>10} {'greedy steps-ok':>15}", end="")
    print(f" {'pass@' + str(args.samples):>8} {'distinct 1st':>12}" if args.samples else "")
    for d in sorted({q.difficulty for q in heldout}):
        qs = [q for q in heldout if q.difficulty == d][: args.per_difficulty]
        sols = solve(model, tok, fmt, [q.content for q in qs], max_steps, cfg.backbone.max_step_tokens, 0.0)
        checks = [check_trace(q, s) for q, s in zip(qs, sols, strict=True)]
        ans = sum(c.answer_correct for c in checks) / len(qs)
        full = sum(c.correct for c in checks) / len(qs)
        line = f"{d:>2} {len(qs):>4} {ans:>10.1%} {full:>15.1%}"
        if args.samples:
            sub = qs[: args.sample_questions]
            contents = [q.content for q in sub for _ in range(args.samples)]
            temp = cfg.search.temperature
            samples = solve(model, tok, fmt, contents, max_steps, cfg.backbone.max_step_tokens, temp)
            solved = distinct = 0
            for j, q in enumerate(sub):
                mine = samples[j * args.samples : (j + 1) * args.samples]
                solved += any(check_trace(q, s).correct for s in mine)
                distinct += len({s[0] if s else "" for s in mine})
            line += f" {solved / len(sub):>8.1%} {distinct / len(sub):>12.2f}"
        print(line, flush=True)
    if args.legal:
        step_tokens = cfg.backbone.max_step_tokens
        levels = sorted({q.difficulty for q in heldout})
        qs = [q for d in levels for q in [x for x in heldout if x.difficulty == d][: args.legal]]
        torch.manual_seed(cfg.seed)
        sols = solve(model, tok, fmt, [q.content for q in qs], max_steps, step_tokens, 1.0)
        print_legal([check_trace(q, s) for q, s in zip(qs, sols, strict=True)])


def print_legal(checks: list) -> None:
    """Share of sampled lines the task's checker accepts, by depth and overall."""
    by_depth: dict[int, list[bool]] = {}
    for check in checks:
        for depth, step in enumerate(check.steps, 1):
            by_depth.setdefault(depth, []).append(not step.error)
    every = [ok for oks in by_depth.values() for ok in oks]
    cells = "  ".join(f"d{k}: {sum(v) / len(v):.0%} of {len(v)}" for k, v in sorted(by_depth.items()))
    print(
        f"sampled lines legal (temperature 1, {len(checks)} solutions): {sum(every) / len(every):.1%}  {cells}"
    )


if __name__ == "__main__":
    main()
