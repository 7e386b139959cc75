"""Search throughput of round-1 data collection: the pool vs the old pool vs one tree at a time vs the
policy's raw batched generate, side by side in one run.

    python bench/search_throughput.py [--task countdown] [--questions 400] [--b-questions 8]
        [--trees auto] [--old-trees 64] [--untrained] [--curve 1,4,16,64,128,256,512,1024]

The questions are round 1's: the task's training set for the seed (`pipeline.data.load_questions`), in
`pool.shard_size` shards, searched with `search.*` (the default run's data-collection preset) on round 0's
models (`loop.round0.round0_models`: cached; `--policy-dir/--prm-dir`: other directories; `--untrained`:
the untrained tiny build, same shapes, for a quick check of batching only). One pool, after a warm-up on the first shard:
(new) the pool as configured: each worker runs trees of several shards at once, `--trees` in flight;
(kv0) the new pool with the HF engine's KV reuse across calls off (`--no-kv0` skips it);
(old) as before issue 28: one shard per worker at a time, `--old-trees` trees (at most a shard's);
(b) the original code's way: one tree at a time, every proposal and PRM score its own batch-1 call, in
    one Ray task holding both models with the policy + PRM replicas' CPUs (first `--b-questions`);
(c) the policy's raw throughput curve: HF `generate` with sampling, `max_step_tokens` per row, no early
    stop, measured inside the policy replica itself (same process and CPU share as the pool's calls), on
    prefixes drawn from the trees, at `--curve` batch sizes plus each pool's own mean batch.
Prints the curve, questions/s and tokens/s of each mode, the mean policy batch rows, the share of prefix
tokens read from kept caches, and the ratios the issue asks for: new/old and new/kv0 questions/s, new/b,
new/c at new's own batch (also per policy CPU-second, which removes other processes' load on a shared
machine). Every timed run starts with the policy's kept caches emptied.
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


def one_at_a_time(policy_dir, prm_dir, backbone, policy_cfg, prm_cfg, search_cfg, shards):
    """(b): serve each tree alone, splitting every request into batch-1 model calls; (seconds, tokens)."""
    from actors.policy import PolicyActor
    from actors.prm import PRMActor
    from actors.search_worker import search_factory
    from pipeline.search.protocol import Propose, serve_sync
    from pipeline.tasks.rules import NO_RULES, rules_for
    from pipeline.verify import solution_check

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
    prefix, fallbacks = backbone.answer_prefix, list(backbone.answer_fallbacks)
    t0, tokens = time.monotonic(), 0
    for shard in shards:
        for q in shard.questions:
            gen = search_factory(shard.kind)(
                q.content,
                search_cfg,
                shard.tree_seed(q.id),
                question_id=q.id,
                gold=solution_check(q, prefix, fallbacks=fallbacks),
                answer_prefix=prefix,
                rules=rules_for(q, prefix) if search_cfg.rules else NO_RULES,
            )
            tokens += serve_sync(gen, served, served).result.generated_tokens
    return time.monotonic() - t0, tokens


def timed_run(pool, shards, search_cfg, **kwargs):
    """Run the shards once; what it took: seconds, questions, tokens, and the policy's and workers'
    counters over this run alone (differences of the cumulative counters)."""
    from pipeline.shards import load_shard

    kv_store(pool, clear=True)
    info0, prog0 = pool.replica_info(), pool.progress()
    t0 = time.monotonic()
    paths = pool.run_shards(shards, search_cfg, **kwargs)
    seconds = time.monotonic() - t0
    info1, prog1 = pool.replica_info(), pool.progress()
    prm = {k: info1["prm-0"][k] - info0["prm-0"][k] for k in ("calls", "rows", "busy_seconds")}
    info0, info1 = info0["policy-0"], info1["policy-0"]
    trees = [t for p in paths for t in load_shard(p)]
    keys = ("calls", "rows", "tokens", "busy_seconds", "cpu_seconds", "reused_tokens", "prefill_tokens")
    pol = {k: info1.get(k, 0) - info0.get(k, 0) for k in keys}
    prog = {k: prog1[k] - prog0.get(k, 0) for k in ("batches_propose", "expansions", "proposals", "scored")}
    return {"seconds": seconds, "trees": trees, "tokens": sum(t.result.generated_tokens for t in trees)} | {
        "policy": pol,
        "prm": prm,
        "progress": prog,
        "solved": sum(1 for t in trees if t.result.correct),
    }


def _store(actor, clear, budget):
    """Inside a policy replica: empty its engine's kept KV caches and/or set their budget (HF engine)."""
    store = getattr(actor.engine, "store", None)
    if store is not None:
        if clear:
            store.clear()
        if budget is not None:
            store.budget = budget


def kv_store(pool, clear=False, budget=None):
    """`_store` on every policy replica."""
    import ray

    ray.get([p.__ray_call__.remote(_store, clear, budget) for p in pool.policy])


def make_shards(questions, size, seed, tmp, tag):
    from loop.methods.rest_mcts import shard_questions
    from pipeline.shards import Shard

    parts = shard_questions(questions, size)
    return [Shard(i, 1, part, f"{tmp}/{tag}-{i:05d}.jsonl", seed=seed) for i, part in enumerate(parts)]


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="countdown", choices=["countdown", "arith"])
    ap.add_argument("--questions", type=int, default=0, help="round 1's first N questions (0: all)")
    ap.add_argument("--b-questions", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--trees", default="auto", help="pool.trees_in_flight of the new pool")
    ap.add_argument("--old-trees", type=int, default=64, help="trees in flight of the old pool (0: skip)")
    ap.add_argument("--no-kv0", action="store_true", help="skip the run without KV reuse across calls")
    ap.add_argument("--curve", default="1,4,16,64,128,256,512,1024")
    ap.add_argument("--untrained", action="store_true", help="the untrained tiny build (batching check)")
    ap.add_argument("--policy-dir", help="this policy instead of round 0's (with --prm-dir)")
    ap.add_argument("--prm-dir", help="this PRM instead of round 0's (with --policy-dir)")
    ap.add_argument("--cache-dir", default=".cache/restmcts")
    ap.add_argument("overrides", nargs="*", help="config key=value pairs, after the bench's own")
    return ap.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    import ray

    from actors.cluster import init_ray
    from actors.pool import Pool
    from conf.load import compose
    from pipeline.data import load_questions

    cfg = compose(
        [
            f"task={args.task}",
            f"pool.search_workers={args.workers}",
            f"pool.trees_in_flight={args.trees}",
            f"cache_dir={args.cache_dir}",
            *args.overrides,
        ]
    )
    if args.policy_dir and args.prm_dir:
        policy_dir, prm_dir = args.policy_dir, args.prm_dir
    elif args.untrained:
        from models.backbones import resolve_backbone

        paths = resolve_backbone(cfg.backbone, cfg.task, cfg.cache_dir, cfg.seed)
        policy_dir, prm_dir = str(paths.policy_dir), str(paths.prm_dir)
    else:
        from loop.round0 import round0_models

        policy_dir, prm_dir = round0_models(cfg)
    train, _ = load_questions(cfg.task, cfg.data, cfg.seed)
    questions = sorted(train, key=lambda q: q.id)[: args.questions or None]
    init_ray(cfg.ray, log_to_driver=False)
    pool = Pool.from_config(cfg, policy_dir, prm_dir)
    size = int(cfg.pool.shard_size)
    with tempfile.TemporaryDirectory() as tmp:
        pool.run_shards(make_shards(questions[:size], size, cfg.seed, tmp, "warm"), cfg.search)
        new = timed_run(pool, make_shards(questions, size, cfg.seed, tmp, "new"), cfg.search)
        kv0 = None
        if not args.no_kv0:
            from actors.engines.hf import KV_STORE_BYTES

            kv_store(pool, budget=0)
            kv0 = timed_run(pool, make_shards(questions, size, cfg.seed, tmp, "kv0"), cfg.search)
            kv_store(pool, budget=KV_STORE_BYTES)
            assert same_trees(new, kv0), "KV reuse changed the trees"
        old = None
        if args.old_trees:
            work = make_shards(questions, size, cfg.seed, tmp, "old")
            old = timed_run(pool, work, cfg.search, shards_per_call=1, trees_in_flight=args.old_trees)
        curve = measure_curve(pool, cfg, questions, [r for r in (new, kv0, old) if r], args.curve)
        trees_new = pool.trees_in_flight([])
    pool.shutdown()
    res = cfg.backbone.policy_resources.num_cpus + cfg.backbone.prm_resources.num_cpus
    b_shards = make_shards(questions[: args.b_questions], size, cfg.seed, "/nonexistent", "b")
    b = ray.get(
        ray.remote(num_cpus=res)(one_at_a_time).remote(
            policy_dir, prm_dir, cfg.backbone, cfg.policy, cfg.prm, cfg.search, b_shards
        )
    )
    report(args, cfg, len(questions), trees_new, new, old, b, curve, kv0)
    ray.shutdown()
    return 0


def same_trees(a, b) -> bool:
    """The runs found the same trees (nodes and results, wall-clock seconds aside)."""

    def key(run):
        return [(t.question_id, t.nodes, t.result.solution, t.result.correct) for t in run["trees"]]

    return key(a) == key(b)


def mean_rows(run) -> int:
    """Mean rows per policy generate call (a call is at most `policy.max_batch_size` rows)."""
    return max(1, round(run["policy"]["rows"] / max(1, run["policy"]["calls"])))


def measure_curve(pool, cfg, questions, runs, sizes):
    """(c) inside policy-0: the raw curve at `sizes` plus each run's own mean batch, on tree prefixes."""
    import ray

    content = {q.id: q.content for q in questions}
    prefixes = [(content[t.question_id], n.steps) for t in runs[0]["trees"] for n in t.nodes if not n.is_end]
    prompts = random.Random(0).sample(prefixes, min(256, len(prefixes)))
    rows = sorted({int(x) for x in sizes.split(",")} | {mean_rows(r) for r in runs})
    n_new = int(cfg.backbone.max_step_tokens)
    return ray.get(pool.policy[0].throughput_curve.remote(prompts, rows, n_new, 2))


def report(args, cfg, n_questions, trees_new, new, old, b, curve, kv0=None):
    at = {int(p["rows"]): p for p in curve}
    one = at[min(at)]["tokens_per_s"]
    print(
        f"{args.task}, models {'UNTRAINED' if args.untrained else (args.policy_dir, args.prm_dir) if args.policy_dir else 'round 0'}; search "
        f"iteration_limit={cfg.search.iteration_limit} branch={cfg.search.branch} "
        f"verified_stop={cfg.search.verified_stop}; {n_questions} questions in shards of {cfg.pool.shard_size}, "
        f"{args.workers} workers; load average {os.getloadavg()[0]:.1f} at the end"
    )
    print(
        f"policy raw throughput (HF generate, sampling, {cfg.backbone.max_step_tokens} tokens/row, in policy-0):"
    )
    print(f"{'rows':>6s} {'tokens/s':>10s} {'x rows=' + str(min(at)):>10s} {'tokens/cpu-s':>13s}")
    for r, p in sorted(at.items()):
        print(
            f"{r:6d} {p['tokens_per_s']:10.0f} {p['tokens_per_s'] / one:10.1f} {p['tokens_per_cpu_s']:13.0f}"
        )
    b_s, b_tok = b
    rows = [("b: one tree at a time, batch 1", args.b_questions / b_s, b_tok / b_s, "", "", "")]
    for name, run, trees in (
        ("new: trees of several shards", new, trees_new),
        ("kv0: new, no KV reuse", kv0, trees_new),
        ("old: one shard per worker", old, args.old_trees),
    ):
        if run:
            busy = run["policy"]["busy_seconds"] / run["seconds"]
            rows.append(
                (
                    name,
                    n_questions / run["seconds"],
                    run["tokens"] / run["seconds"],
                    trees,
                    mean_rows(run),
                    f"{100 * busy:.0f}%",
                )
            )
    print(
        f"{'mode':32s} {'questions/s':>11s} {'tokens/s':>9s} {'trees/worker':>12s} {'policy rows':>11s} {'busy':>5s}"
    )
    for name, qps, tps, trees, mrows, busy in rows:
        print(f"{name:32s} {qps:11.3f} {tps:9.0f} {trees!s:>12s} {mrows!s:>11s} {busy:>5s}")
    ratios(rows, new, old, at, n_questions, cfg, kv0)


def ratios(rows, new, old, at, n_questions, cfg, kv0=None):
    b_q, b_t = rows[0][1], rows[0][2]
    for name, run in (("new", new), ("kv0", kv0), ("old", old)):
        if not run:
            continue
        q, t = n_questions / run["seconds"], run["tokens"] / run["seconds"]
        c = at[mean_rows(run)]
        pol = run["policy"]
        per_cpu = (pol["tokens"] / pol["cpu_seconds"]) / c["tokens_per_cpu_s"]
        print(
            f"{name}: vs one tree at a time {q / b_q:.1f}x questions/s, {t / b_t:.1f}x tokens/s (goal >= 20x); "
            f"vs raw generate at its own batch ({c['rows']} rows) {t / c['tokens_per_s']:.2f} tokens/s, "
            f"{per_cpu:.2f} per policy CPU-second (goal >= 0.8); solved {run['solved']}/{n_questions}; "
            f"propose requests per worker batch {run['progress']['expansions'] / max(1, run['progress']['batches_propose']):.1f}; "
            f"PRM {run['prm']['rows'] / max(1, run['prm']['calls']):.0f} rows per call, busy "
            f"{100 * run['prm']['busy_seconds'] / run['seconds']:.0f}%; prefix tokens read from kept caches "
            f"{100 * pol['reused_tokens'] / max(1, pol['reused_tokens'] + pol['prefill_tokens']):.0f}%"
        )
    if kv0:
        print(f"new/kv0 questions/s (KV reuse across calls): {kv0['seconds'] / new['seconds']:.2f}x")
    if old:
        print(f"new/old questions/s: {old['seconds'] / new['seconds']:.2f}x (goal >= 3x)")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
