"""MCTS* throughput on the tiny backbone: batched pool vs one tree at a time vs raw `generate`.

    python bench/search_throughput.py [--questions 128] [--iterations 8] [--workers 2] [--trees 64]

(a) pool: the questions in shards on the search workers, many trees in flight, batched model calls;
(b) the original code's way: one tree at a time, every proposal and every PRM score its own batch-1
    call, in one process holding both models (run on the first `--b-questions` questions: it is slow;
    rates are per question, so the comparison holds for the same budget per question);
(c) upper bound: the policy's raw batched `generate` (sampling, no early stop) at (a)'s mean batch size,
    on prefixes drawn from (a)'s trees (same prompt lengths as the search's real requests).
(b) and (c) run as Ray tasks with the policy replica's CPU share, so all three get the same threads.
Prints questions/s and tokens/s of each, the ratios a/b and a/c, and a/c per CPU-second of the policy
process (on a shared machine the wall-clock ratio also measures other processes' load).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def one_at_a_time(policy_dir, prm_dir, backbone, policy_cfg, prm_cfg, search_cfg, questions, round_):
    """(b): serve each tree alone, splitting every request into batch-1 model calls."""
    from actors.policy import PolicyActor
    from actors.prm import PRMActor
    from pipeline.search.mcts import search
    from pipeline.search.protocol import Propose, serve_sync
    from pipeline.search.seeding import derive_seed

    class BatchOne:
        def __init__(self, policy, prm):
            self.policy, self.prm = policy, prm

        def propose(self, requests):
            out = []
            for r in requests:
                parts = [
                    self.policy.propose(
                        [Propose(r.question, r.steps, 1, r.temperature, r.seed + i, r.reflection)]
                    )[0]
                    for i in range(r.n)
                ]
                out.append(type(parts[0])(tuple(p.steps[0] for p in parts), sum(p.tokens for p in parts)))
            return out

        def critique(self, requests):
            return [self.policy.critique([r])[0] for r in requests]

        def score(self, requests):
            return [self.prm.score([r])[0] for r in requests]

    served = BatchOne(PolicyActor(policy_dir, backbone, policy_cfg), PRMActor(prm_dir, backbone, prm_cfg))
    t0, tokens = time.monotonic(), 0
    for q in questions:
        gen = search(
            q.content,
            search_cfg,
            derive_seed(round_, q.id),
            question_id=q.id,
            gold=q.answer,
            answer_prefix=backbone.answer_prefix,
        )
        tokens += serve_sync(gen, served, served).result.generated_tokens
    return time.monotonic() - t0, tokens


def raw_generate(policy_dir, backbone, policy_cfg, batch, prompts, repeats):
    """(c): tokens/s of plain batched sampling with the policy's model, `max_step_tokens` per row."""
    import torch

    from actors.policy import PolicyActor

    actor = PolicyActor(policy_dir, backbone, policy_cfg)
    enc = actor.engine.tokenizer(
        [prompts[i % len(prompts)] for i in range(batch)], padding=True, return_tensors="pt"
    )
    n_new = int(backbone.max_step_tokens)
    with torch.inference_mode():
        actor.engine.model.generate(**enc, max_new_tokens=2, min_new_tokens=2, do_sample=True)  # warm-up
        t0, cpu0 = time.monotonic(), time.process_time()
        for _ in range(repeats):
            actor.engine.model.generate(
                **enc,
                max_new_tokens=n_new,
                min_new_tokens=n_new,
                do_sample=True,
                temperature=0.7,
                top_k=0,
                top_p=1.0,
                pad_token_id=actor.engine.tokenizer.pad_token_id,
            )
    return time.monotonic() - t0, batch * n_new * repeats, time.process_time() - cpu0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=128)
    ap.add_argument("--b-questions", type=int, default=4)
    ap.add_argument("--iterations", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--trees", type=int, default=64, help="trees in flight per search worker")
    ap.add_argument("--cache-dir", default=".cache/restmcts")
    args = ap.parse_args(argv)

    import ray

    from actors.cluster import init_ray
    from actors.pool import Pool
    from conf.load import compose
    from models.backbones import resolve_backbone
    from pipeline.prompting import PromptFormat
    from pipeline.shards import Shard, load_shard
    from pipeline.tasks.arith import generate

    cfg = compose(
        [
            f"search.iteration_limit={args.iterations}",
            f"pool.search_workers={args.workers}",
            f"pool.trees_in_flight={args.trees}",
            f"cache_dir={args.cache_dir}",
        ]
    )
    paths = resolve_backbone(cfg.backbone, cfg.task, cfg.cache_dir, cfg.seed)
    questions = generate(args.questions, [2, 3], seed=7, max_operand=cfg.task.max_operand)
    init_ray(cfg.ray, log_to_driver=False)
    res = cfg.backbone.policy_resources

    pool = Pool.from_config(cfg, paths.policy_dir, paths.prm_dir)
    with tempfile.TemporaryDirectory() as tmp:
        per = -(-len(questions) // args.workers)
        shards = [
            Shard(i, 0, tuple(questions[s : s + per]), f"{tmp}/shard-{i}.jsonl")
            for i, s in enumerate(range(0, len(questions), per))
        ]
        t0 = time.monotonic()
        files = pool.run_shards(shards, cfg.search)
        a_s = time.monotonic() - t0
        trees = [t for f in files for t in load_shard(f)]
        a_tok = sum(t.result.generated_tokens for t in trees)
    prog = pool.progress()
    info = pool.replica_info()
    pool.shutdown()
    batch = max(1, round(prog["proposals"] / max(1, prog["batches_propose"])))

    remote_b = ray.remote(num_cpus=res.num_cpus + cfg.backbone.prm_resources.num_cpus)(one_at_a_time)
    sub = questions[: args.b_questions]
    b_s, b_tok = ray.get(
        remote_b.remote(
            paths.policy_dir, paths.prm_dir, cfg.backbone, cfg.policy, cfg.prm, cfg.search, sub, 0
        )
    )
    remote_c = ray.remote(num_cpus=res.num_cpus)(raw_generate)
    fmt = PromptFormat.from_backbone(cfg.backbone)
    content = {q.id: q.content for q in questions}
    prefixes = [fmt.prefix(content[t.question_id], n.steps) for t in trees for n in t.nodes if not n.is_end]
    prompts = random.Random(0).sample(prefixes, min(len(prefixes), batch))
    c_s, c_tok, c_cpu = ray.get(
        remote_c.remote(paths.policy_dir, cfg.backbone, cfg.policy, batch, prompts, 3)
    )

    rows = [
        ("a: pool, many trees in flight", len(questions) / a_s, a_tok / a_s),
        ("b: one tree at a time, batch 1", len(sub) / b_s, b_tok / b_s),
        (f"c: raw generate, batch {batch}", float("nan"), c_tok / c_s),
    ]
    print(
        f"tiny backbone, MCTS* iteration_limit={args.iterations} branch={cfg.search.branch} "
        f"roll_forward_steps={cfg.search.roll_forward_steps}; a: {len(questions)} questions on {args.workers} "
        f"workers x {args.trees} trees; b: {len(sub)} questions; mean propose batch {batch} sequences"
    )
    print(f"{'mode':34s} {'questions/s':>12s} {'tokens/s':>10s}")
    for name, qps, tps in rows:
        print(f"{name:34s} {qps:12.3f} {tps:10.0f}")
    print(
        f"a/b questions/s: {rows[0][1] / rows[1][1]:.1f}x   a/b tokens/s: {rows[0][2] / rows[1][2]:.1f}x   "
        f"a/c tokens/s: {rows[0][2] / rows[2][2]:.2f}"
    )
    pol = info["policy-0"]
    print(
        f"per policy CPU-second (removes other processes' load): a {pol['tokens'] / pol['cpu_seconds']:.0f} "
        f"tokens/cpu-s, c {c_tok / c_cpu:.0f} tokens/cpu-s, a/c {pol['tokens'] * c_cpu / (pol['cpu_seconds'] * c_tok):.2f}"
    )
    print(
        f"a: useful share of the policy's computed token slots (rows stop at different steps): "
        f"{pol['tokens'] / max(1, pol['slots']):.2f}"
    )
    busy = {name: i["busy_seconds"] / a_s for name, i in info.items()}
    print(
        "a: replica busy share of the wall time: " + ", ".join(f"{n} {100 * b:.0f}%" for n, b in busy.items())
    )
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
