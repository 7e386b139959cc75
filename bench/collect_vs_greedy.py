"""Round-1 data collection against greedy decoding, on the same training questions and round-0 models.

For each data-collection setting (`search.verified_stop` true and false by default) the training
questions are searched exactly as round 1 of `python run.py` would (`cfg.search`, the pool, the seed),
and the trees are turned into round 1's data (`pipeline.values`: SFT traces and PRM examples). Greedy
solves the same questions once. Prints, side by side, per difficulty:

    setting | questions solved (by difficulty) | x greedy | SFT traces | PRM examples | tokens/question | s

    python bench/collect_vs_greedy.py task=countdown            # any run.py overrides
    python bench/collect_vs_greedy.py task=countdown --settings search.verified_stop=true

Round 0 comes from the cache (built on first use, as `python run.py` does). Writes nothing under runs/.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _by_difficulty(questions, solved_ids) -> str:
    total = Counter(q.difficulty for q in questions)
    hit = Counter(q.difficulty for q in questions if q.id in solved_ids)
    return " ".join(f"N={d}: {hit[d]}/{total[d]}" for d in sorted(total))


def collect(pools, questions, cfg, setting: str) -> dict:
    """Search `questions` with cfg.search plus `setting` (key=value); the round's data from the trees."""
    from omegaconf import OmegaConf

    from loop.methods.rest_mcts import shard_questions
    from pipeline.prompting import PromptFormat
    from pipeline.shards import Shard, load_shard
    from pipeline.values import prm_examples, select_sft
    from pipeline.verify import solution_check

    key, value = setting.split("=", 1)
    search_cfg = OmegaConf.merge(
        cfg.search, OmegaConf.from_dotlist([f"{key.removeprefix('search.')}={value}"])
    )
    fmt = PromptFormat.from_backbone(cfg.backbone)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="collect-") as tmp:
        shards = [
            Shard(i, 1, part, f"{tmp}/shard-{i:05d}.jsonl", seed=cfg.seed)
            for i, part in enumerate(shard_questions(questions, int(cfg.pool.shard_size)))
        ]
        trees = [t for p in pools.run_shards(shards, search_cfg) for t in load_shard(p)]
    seconds = time.monotonic() - t0
    by_id = {q.id: q for q in questions}
    sft = prm = 0
    for tree in trees:
        q = by_id[tree.question_id]
        gold = solution_check(q, fmt.answer_prefix, fallbacks=cfg.backbone.answer_fallbacks)
        prm += len(prm_examples(tree.nodes, q.content, gold, fmt.answer_prefix))
        sft += len(select_sft(tree.nodes, q.content, cfg.selection, fmt, gold=gold))
    solved = {t.question_id for t in trees if any(n.correct for n in t.nodes)}
    return {
        "solved": solved,
        "sft": sft,
        "prm": prm,
        "tokens": sum(t.result.generated_tokens for t in trees) / max(1, len(trees)),
        "illegal": sum(t.result.illegal for t in trees),
        "proposals": sum(t.result.proposals for t in trees),
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("overrides", nargs="*", help="run.py key=value overrides (e.g. task=countdown)")
    ap.add_argument(
        "--settings", nargs="+", default=["search.verified_stop=true", "search.verified_stop=false"]
    )
    args = ap.parse_args(argv)

    from conf.load import compose
    from loop.round0 import round0_models
    from loop.session import Pools, ray_session
    from pipeline.data import load_questions
    from pipeline.grading import extract_answer
    from pipeline.verify import solution_check

    cfg = compose(args.overrides)
    train, _ = load_questions(cfg.task, cfg.data, cfg.seed)
    policy_dir, prm_dir = round0_models(cfg)
    prefix = cfg.backbone.answer_prefix
    with ray_session(cfg), Pools(cfg) as pools:
        pool = pools.get(policy_dir, prm_dir)
        t0 = time.monotonic()
        sols = pool.greedy([q.content for q in train], max_steps=cfg.search.max_depth)
        greedy = {
            q.id
            for q, s in zip(train, sols, strict=True)
            if (check := solution_check(q, prefix, fallbacks=cfg.backbone.answer_fallbacks))
            and check(s.steps, extract_answer(list(s.steps), prefix))
        }
        rows = [
            ("greedy", greedy, None, None, sum(s.tokens for s in sols) / len(train), time.monotonic() - t0)
        ]
        for setting in args.settings:
            r = collect(pool, train, cfg, setting)
            print(
                f"{setting}: {len(r['solved'])} solved, illegal {r['illegal']}/{r['proposals']} proposals",
                flush=True,
            )
            rows.append((setting, r["solved"], r["sft"], r["prm"], r["tokens"], r["seconds"]))
    print(f"\n{len(train)} training questions, seed {cfg.seed}, round-0 models {policy_dir}")
    print("| setting | solved | by difficulty | x greedy | SFT traces | PRM examples | tokens/question | s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, solved, sft, prm, tokens, seconds in rows:
        ratio = len(solved) / max(1, len(greedy))
        print(
            f"| {name} | {len(solved)} | {_by_difficulty(train, solved)} | {ratio:.2f} | "
            f"{'-' if sft is None else sft} | {'-' if prm is None else prm} | {tokens:.0f} | {seconds:.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
