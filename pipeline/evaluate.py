"""Evaluation modes, each reporting accuracy, ungradable answers and generated tokens per question.

- `cot`: one greedy solution per question.
- `sc`: self-consistency, the majority answer over `eval.n` sampled solutions.
- `bon`: best-of-n, the sampled solution the PRM values highest (same samples as `sc` when both run).
- `mcts`: MCTS* with `eval.search`; `tot_bfs` / `tot_dfs`: Tree-of-Thought with `eval.tot`. All three run
  on the search workers, exactly like a training round's search.

`evaluate_methods(pool, questions, cfg, round)` is what the driver calls per round; `evaluate_main` is
`python run.py mode=evaluate ...`. Results (`eval.json`):

    {"round": k, "questions": N, "methods": {method: {"accuracy": float in [0, 1], "correct": int,
     "total": int, "ungradable": int (no answer extracted, or the grader could not decide),
     "tokens_per_question": float, "seconds": float, "by_difficulty": {"2": accuracy, ...}}}}
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.grading import extract_answer, grade
from pipeline.records import Question
from pipeline.search.seeding import derive_seed

log = logging.getLogger(__name__)

SEARCH_METHODS = ("mcts", "tot_bfs", "tot_dfs")


def evaluate_methods(
    pool: Any, questions: Sequence[Question], cfg: Any, round: int, out_dir: str | Path | None = None
) -> dict[str, Any]:
    """Run every method of `cfg.eval.methods` on `questions` through the pool. Search trees are written
    under `out_dir/<method>/` when given (else to a temporary directory)."""
    results: dict[str, Any] = {"round": round, "questions": len(questions), "methods": {}}
    samples: list[list[Any]] | None = None
    for method in cfg.eval.methods:
        t0 = time.monotonic()
        if method == "cot":
            sols = pool.map_policy(
                "greedy_solve",
                [q.content for q in questions],
                cfg.policy.max_batch_size,
                max_steps=cfg.eval.search.max_depth,
            )
            rows = [(s.steps, s.tokens) for s in sols]
        elif method in ("sc", "bon"):
            samples = samples or _sample(pool, questions, cfg, round)
            rows = [_majority(group, cfg) if method == "sc" else _best(group) for group in samples]
        elif method in SEARCH_METHODS:
            rows = _search(pool, questions, cfg, round, method, out_dir)
        else:
            raise ValueError(f"unknown eval method {method!r}")
        results["methods"][method] = _score(
            questions, rows, cfg.backbone.answer_prefix, time.monotonic() - t0
        )
        log.info("round %d eval %s: %s", round, method, _line(results["methods"][method]))
    return results


def _sample(pool: Any, questions: Sequence[Question], cfg: Any, round: int) -> list[list[Any]]:
    """`eval.n` samples per question, each with its PRM value: [[(steps, tokens, value), ...], ...]."""
    from pipeline.search.protocol import Score

    n = int(cfg.eval.n)
    chunk = max(1, int(cfg.policy.max_batch_size) // n)
    groups = pool.map_policy(
        "sample_solutions",
        [q.content for q in questions],
        chunk,
        n=n,
        temperature=cfg.eval.search.temperature,
        seed=derive_seed(cfg.seed, round, "eval-samples"),
        max_steps=cfg.eval.search.max_depth,
    )
    requests = [Score(q.content, s.steps) for q, group in zip(questions, groups, strict=True) for s in group]
    values = pool.map_prm("score", requests, int(cfg.prm.max_batch_size))
    out, k = [], 0
    for group in groups:
        out.append([(s.steps, s.tokens, values[k + i]) for i, s in enumerate(group)])
        k += len(group)
    return out


def _majority(group: list[Any], cfg: Any) -> tuple[tuple[str, ...], int, str | None]:
    """Most frequent extracted answer (ties: the first sample's order); tokens of all samples."""
    answers = [extract_answer(steps, cfg.backbone.answer_prefix) for steps, _, _ in group]
    counts = Counter(a for a in answers if a is not None)
    winner = counts.most_common(1)[0][0] if counts else None
    return (), sum(t for _, t, _ in group), winner


def _best(group: list[Any]) -> tuple[tuple[str, ...], int]:
    steps = max(group, key=lambda s: s[2])[0]
    return steps, sum(t for _, t, _ in group)


def _search(pool, questions, cfg, round, method, out_dir) -> list[tuple[tuple[str, ...], int]]:
    from actors.search_worker import Shard, load_shard

    search_cfg = cfg.eval.search if method == "mcts" else cfg.eval.tot
    size = max(1, -(-len(questions) // max(1, len(pool.workers))))  # one shard per worker
    with tempfile.TemporaryDirectory(prefix="eval-") as tmp:
        base = Path(out_dir) / method if out_dir else Path(tmp)
        shards = [
            Shard(
                i,
                round,
                tuple(questions[s : s + size]),
                str(base / f"shard-{i:05d}.jsonl"),
                kind=method,
                seed=cfg.seed,
            )
            for i, s in enumerate(range(0, len(questions), size))
        ]
        trees = {t.question_id: t.result for p in pool.run_shards(shards, search_cfg) for t in load_shard(p)}
    return [(trees[q.id].solution, trees[q.id].generated_tokens) for q in questions]


def _score(
    questions: Sequence[Question], rows: list[tuple], answer_prefix: str, seconds: float
) -> dict[str, Any]:
    correct, ungradable, tokens = 0, 0, 0
    by_diff: dict[str, list[int]] = {}
    for q, row in zip(questions, rows, strict=True):
        answer = row[2] if len(row) > 2 else extract_answer(row[0], answer_prefix)
        verdict = grade(answer, q.answer).correct
        ungradable += answer is None or verdict is None
        correct += bool(verdict)
        tokens += row[1]
        if q.difficulty:
            by_diff.setdefault(str(q.difficulty), []).append(int(bool(verdict)))
    n = max(1, len(questions))
    return {
        "accuracy": correct / n,
        "correct": correct,
        "total": len(questions),
        "ungradable": ungradable,
        "tokens_per_question": tokens / n,
        "seconds": round(seconds, 2),
        "by_difficulty": {d: sum(v) / len(v) for d, v in sorted(by_diff.items(), key=lambda kv: int(kv[0]))},
    }


def _line(r: dict[str, Any]) -> str:
    return f"accuracy {100 * r['accuracy']:.1f}% ({r['correct']}/{r['total']}), ungradable {r['ungradable']}, {r['tokens_per_question']:.0f} tokens/question"


def table(results: dict[str, Any]) -> str:
    lines = [
        "| method | accuracy (%) | correct | ungradable | tokens/question | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for m, r in results["methods"].items():
        lines.append(
            f"| {m} | {100 * r['accuracy']:.1f} | {r['correct']}/{r['total']} | {r['ungradable']} | "
            f"{r['tokens_per_question']:.0f} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def evaluate_main(cfg: Any, train: list[Question], heldout: list[Question]) -> int:
    """`python run.py mode=evaluate ...`: evaluate the configured checkpoints; a question file is evaluated
    whole, a generated task on its held-out split. Writes runs/<run.name>/eval.json, prints a table."""
    from actors.cluster import init_ray, shutdown_ray
    from actors.pool import Pool
    from pipeline.api import default_models
    from pipeline.rundir import atomic_write_text

    questions = train + heldout if cfg.task.name in ("file", "gsm8k") else (heldout or train)
    policy_dir, prm_dir = default_models(cfg)
    out = Path(cfg.run.root) / cfg.run.name
    url = init_ray(cfg.ray)
    print(
        f"restmcts: evaluating {len(questions)} questions with {', '.join(cfg.eval.methods)}  |  Ray dashboard {url}"
    )
    pool = None
    try:
        pool = Pool.from_config(cfg, policy_dir, prm_dir)
        results = evaluate_methods(pool, questions, cfg, 0, out_dir=out / "eval")
    finally:
        if pool is not None:
            pool.shutdown()
        shutdown_ray()
    results["models"] = {"policy_dir": policy_dir, "prm_dir": prm_dir}
    atomic_write_text(out / "eval.json", json.dumps(results, indent=1, sort_keys=True))
    print(table(results))
    print(f"restmcts: results in {out / 'eval.json'}")
    return 0
