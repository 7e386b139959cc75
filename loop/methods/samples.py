"""Whole-solution sampling for the baselines (ReST-EM, Self-Rewarding), at a matched token budget.

Equal budget: with `baselines.match_budget` and a reference run (`baselines.budget_run`, a rest_mcts run
directory), round k samples one solution per question at a time until the tokens the policy actually
generated (counted by the actor) reach the reference's counted search tokens of round k
(`state.json` round k, phase "search", info "tokens"). Without a reference, `baselines.rest_em_samples`
per question.

`round_<k>/samples.jsonl`, one line per kept sample, round-major (sample 0 of every question, then 1, ...):
    {"question_id": str, "sample": int (the question's sample index), "steps": [str], "tokens": int
     (generated tokens, >= 0), "answer": str | null, "correct": bool | null (null: ungradable),
     "judge": float in [0, 1] | null (self_rewarding only: the judge's score; null = no verdict)}
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from pipeline.baselines import samples_for_budget, take_until_budget
from pipeline.grading import extract_answer
from pipeline.prompting import PromptFormat
from pipeline.records import Question, SampleRecord, from_dict, to_dict
from pipeline.rundir import RunDir, atomic_write_jsonl, read_jsonl
from pipeline.search.seeding import derive_seed
from pipeline.verify import solution_check

log = logging.getLogger(__name__)

SAMPLES_FILE = "samples.jsonl"


def reference_budget(baselines_cfg: Any, k: int) -> int | None:
    """Round k's counted search tokens of the reference run, or None when budgets are not matched.

    Raises ValueError when a reference is configured but has no finished round-k search: comparing at a
    budget that was never measured would silently fall back to a different protocol."""
    if not baselines_cfg.match_budget or not baselines_cfg.budget_run:
        return None
    ref = RunDir(baselines_cfg.budget_run)
    info = ref.phase_info(k, "search") if ref.state_file.exists() else {}
    if "tokens" not in info:
        raise ValueError(
            f"baselines.budget_run={baselines_cfg.budget_run} has no finished round-{k} search "
            f"(state.json round {k} 'search' info 'tokens'); train that rest_mcts run to iteration >= {k} "
            "first, or set baselines.match_budget=false"
        )
    return int(info["tokens"])


def sample_round_major(
    sample_fn: Callable[[int, int], list[list[Any]]],
    n_questions: int,
    budget: int | None,
    cap: int,
) -> tuple[list[list[Any]], dict[str, int]]:
    """Sample whole solutions per question, in rounds of one per question, and keep them fairly.

    `sample_fn(n, call)` returns `n` samples (objects with `.steps`, `.tokens`) for each question; `call`
    numbers the calls (0, 1, ...) for seeding. With a `budget`, calls are sized by the counted tokens so
    far (`samples_for_budget`) and the samples are cut round-major by `take_until_budget`, so every
    question ends within one sample of the others; without one, `cap` samples per question in one call.
    Returns (kept samples per question, {"tokens": kept tokens, "tokens_generated": all tokens, "calls"}).
    """
    per_question: list[list[Any]] = [[] for _ in range(n_questions)]
    generated, calls = 0, 0
    if n_questions == 0 or (budget is None and cap <= 0):
        return per_question, {"tokens": 0, "tokens_generated": 0, "calls": 0}
    if budget is None:
        groups = sample_fn(cap, 0)
        tokens = sum(s.tokens for g in groups for s in g)
        return [list(g) for g in groups], {"tokens": tokens, "tokens_generated": tokens, "calls": 1}
    while generated < budget:
        drawn = sum(len(g) for g in per_question)
        # the first call is one round, so the planning estimate is itself counted, never guessed
        n = samples_for_budget(budget - generated, generated / drawn, n_questions) if drawn else 1
        groups = sample_fn(n, calls)
        calls += 1
        new = sum(s.tokens for g in groups for s in g)
        for mine, group in zip(per_question, groups, strict=True):
            mine.extend(group)
        generated += new
        if new == 0:  # a policy that generates nothing would never reach the budget
            log.warning(
                "sampling produced no tokens; stopping %d tokens short of the budget", budget - generated
            )
            break
    rounds = max(len(g) for g in per_question)
    order = [(q, j) for j in range(rounds) for q in range(n_questions) if j < len(per_question[q])]
    tagged = [((q, j), per_question[q][j].tokens) for q, j in order]
    kept, used = take_until_budget(tagged, budget)
    out: list[list[Any]] = [[] for _ in range(n_questions)]
    for (q, j), _tokens in kept:
        out[q].append(per_question[q][j])
    return out, {"tokens": used, "tokens_generated": generated, "calls": calls}


def collect(
    cfg: DictConfig, get_pool: Any, train: list[Question], k: int
) -> tuple[list[SampleRecord], dict[str, Any], Any]:
    """Round k's CoT samples on the training questions, round-major: (records, info, the pool or None).
    Info: tokens (counted, kept), budget, samples, correct, solved, calls."""
    b = cfg.baselines
    budget = reference_budget(b, k)
    questions = sorted(train, key=lambda q: q.id)
    fmt = PromptFormat.from_backbone(cfg.backbone)
    pool = get_pool() if questions and (budget is None or budget > 0) else None

    def sample_fn(n: int, call: int) -> list[list[Any]]:
        return pool.sample(
            [q.content for q in questions],
            n=n,
            temperature=cfg.search.temperature,
            seed=derive_seed(cfg.seed, k, cfg.method, "samples", call),
            max_steps=cfg.search.max_depth,
            chunk=max(1, int(cfg.policy.max_batch_size) // n),
        )

    cap = int(b.rest_em_samples)
    groups, counts = (
        sample_round_major(sample_fn, len(questions), budget, cap)
        if pool is not None
        else ([[] for _ in questions], {"tokens": 0, "tokens_generated": 0, "calls": 0})
    )
    rounds = max(map(len, groups), default=0)
    rows = [
        _sample_row(q, j, g[j], fmt, cfg.backbone.answer_fallbacks)
        for j in range(rounds)
        for q, g in zip(questions, groups, strict=True)
        if j < len(g)
    ]
    info: dict[str, Any] = {
        **counts,
        "budget": budget if budget is not None else -1,  # -1: unmatched (rest_em_samples per question)
        "questions": len(questions),
        "samples": len(rows),
        "correct": sum(1 for r in rows if r.correct),
        "solved": len({r.question_id for r in rows if r.correct}),
    }
    return rows, info, pool


def write(
    run: RunDir, k: int, method: str, rows: Sequence[SampleRecord], info: dict[str, Any], judged: bool = False
) -> tuple[list[Path], dict[str, Any]]:
    """`round_<k>/samples.jsonl` (the "judge" field only when `judged`); the generate phase's result."""
    path = run.round_dir(k) / SAMPLES_FILE
    lines = [to_dict(r) for r in rows]
    if not judged:
        for line in lines:
            del line["judge"]
    atomic_write_jsonl(path, lines)
    log.info("round %d %s: %s", k, method, info)
    return [path], info


def _sample_row(q: Question, j: int, s: Any, fmt: PromptFormat, fallbacks: Sequence[str]) -> SampleRecord:
    answer = extract_answer(list(s.steps), fmt.answer_prefix, fallbacks) if s.steps else None
    check = solution_check(q, fmt.answer_prefix, fallbacks=fallbacks)
    correct = check(s.steps, answer) if check is not None else None
    return SampleRecord(q.id, j, tuple(s.steps), int(s.tokens), answer, correct)


def load_samples(path: Path) -> dict[str, list[SampleRecord]]:
    """samples.jsonl rows grouped by question id, in sample order."""
    out: dict[str, list[SampleRecord]] = {}
    for row in read_jsonl(path):
        out.setdefault(row["question_id"], []).append(from_dict(SampleRecord, row))
    for rows in out.values():
        rows.sort(key=lambda r: r.sample)
    return out
