"""MCTS* throughput per policy engine: the same search over the same questions with the HF PolicyActor
and with the in-process vLLM engine, side by side in one run.

    /work/venv-vllm/bin/python bench/engine_throughput.py [--backbone smollm2] [--questions 8]
        [--iterations 4] [--branch 3] [--step-tokens 32] [--engines hf,vllm]

Every tree advances together (one batched model call per request kind and search step, like a search
worker with all trees in flight), the PRM is the same in-process PRMActor for both, and the seeds are
the same, so the engines get the same work shape (their samples, hence their trees, differ). Prints per
engine: load time, wall time, questions/s, tokens/s over the whole search and over the time spent in the
policy alone. Needs vLLM (docs/ENGINES.md); `--engines hf` runs without it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class TimedPolicy:
    """Counts seconds, calls and tokens inside the policy (propose and critique)."""

    def __init__(self, engine):
        self.engine, self.seconds, self.calls, self.tokens, self.requests = engine, 0.0, 0, 0, 0

    def _timed(self, call, requests):
        t0 = time.perf_counter()
        out = call(requests)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        self.requests += len(requests)
        self.tokens += sum(a.tokens for a in out)
        return out

    def propose(self, requests):
        return self._timed(self.engine.propose, requests)

    def critique(self, requests):
        return self._timed(self.engine.critique, requests)


def run_trees(policy, prm, questions, search_cfg, answer_prefix):
    """Advance every question's MCTS* together; returns the SearchResults in question order."""
    from pipeline.search.mcts import search
    from pipeline.search.protocol import answer_all
    from pipeline.search.seeding import derive_seed

    gens, pending, results = {}, {}, {}
    for q in questions:
        seed = derive_seed(0, q.id)
        gens[q.id] = search(
            q.content, search_cfg, seed, question_id=q.id, gold=q.answer, answer_prefix=answer_prefix
        )
        pending[q.id] = next(gens[q.id])
    while pending:
        ids = list(pending)
        answers = answer_all([r for i in ids for r in pending[i]], policy, prm)
        k, nxt = 0, {}
        for i in ids:
            n = len(pending[i])
            try:
                nxt[i] = gens[i].send(answers[k : k + n])
            except StopIteration as stop:
                results[i] = stop.value.result
            k += n
        pending = nxt
    return [results[q.id] for q in questions]


def bench_engine(name, policy_dir, backbone, policy_cfg, prm, questions, search_cfg):
    t0 = time.perf_counter()
    if name == "hf":
        from actors.policy import PolicyActor

        engine = PolicyActor(policy_dir, backbone, policy_cfg, device="cpu")
    else:
        from actors.engines.vllm_engine import VllmEngine

        engine = VllmEngine(policy_dir, backbone, device="cpu")
    load = time.perf_counter() - t0
    policy = TimedPolicy(engine)
    t0 = time.perf_counter()
    results = run_trees(policy, prm, questions, search_cfg, backbone.answer_prefix)
    wall = time.perf_counter() - t0
    engine.release()
    tokens = sum(r.generated_tokens for r in results)
    assert tokens == policy.tokens, (tokens, policy.tokens)
    return {
        "engine": name,
        "load_s": load,
        "wall_s": wall,
        "questions/s": len(results) / wall,
        "tokens": tokens,
        "tokens/s": tokens / wall,
        "policy_s": policy.seconds,
        "policy tokens/s": tokens / max(policy.seconds, 1e-9),
        "requests/call": policy.requests / max(policy.calls, 1),
        "expansions": sum(r.expansions for r in results),
        "answered": sum(r.answer is not None for r in results),
        "correct": sum(bool(r.correct) for r in results),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="smollm2", choices=["smollm2", "tiny"])
    p.add_argument("--questions", type=int, default=8)
    p.add_argument("--iterations", type=int, default=4, help="MCTS* iteration_limit")
    p.add_argument("--branch", type=int, default=3)
    p.add_argument("--step-tokens", type=int, default=32, help="backbone.max_step_tokens")
    p.add_argument("--engines", default="hf,vllm")
    p.add_argument("--cache-dir", default=".cache/restmcts")
    args = p.parse_args()

    from omegaconf import OmegaConf

    from actors.prm import PRMActor
    from conf.load import compose
    from models.backbones import resolve_backbone
    from pipeline.tasks.arith import generate

    cfg = compose(
        [f"backbone={args.backbone}", "iteration=0", f"backbone.max_step_tokens={args.step_tokens}"]
    )
    paths = resolve_backbone(cfg.backbone, cfg.task, args.cache_dir, seed=0)
    search_cfg = dataclasses.replace(
        OmegaConf.to_object(cfg.eval.search), iteration_limit=args.iterations, branch=args.branch
    )
    questions = generate(args.questions, [2, 3], seed=0, max_operand=20)
    prm = PRMActor(paths.prm_dir, cfg.backbone, cfg.prm, device="cpu")
    print(
        f"backbone={args.backbone} questions={len(questions)} iteration_limit={args.iterations} "
        f"branch={args.branch} max_step_tokens={args.step_tokens} cpus={os.cpu_count()}",
        flush=True,
    )
    rows = []
    for name in args.engines.split(","):
        rows.append(
            bench_engine(name, paths.policy_dir, cfg.backbone, cfg.policy, prm, questions, search_cfg)
        )
        print(f"done {name}: {rows[-1]}", flush=True)
    keys = list(rows[0])
    print(f"{'':>16}" + "".join(f"{r['engine']:>12}" for r in rows))
    for key in keys[1:]:
        cells = "".join(f"{r[key]:>12.2f}" if isinstance(r[key], float) else f"{r[key]:>12}" for r in rows)
        print(f"{key:>16}{cells}")
    if len(rows) == 2:
        a, b = rows
        print(
            f"{b['engine']}/{a['engine']}: tokens/s x{b['tokens/s'] / a['tokens/s']:.2f}, "
            f"policy tokens/s x{b['policy tokens/s'] / a['policy tokens/s']:.2f}, "
            f"questions/s x{b['questions/s'] / a['questions/s']:.2f}"
        )


if __name__ == "__main__":  # vLLM spawns its engine process; the guard keeps that safe
    main()
