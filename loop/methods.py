"""The paper's self-training baselines as driver phases (docs/ALGORITHM.md section 5).

    rest_em:         sample CoT solutions -> keep correct ones (top_k per question) -> SFT from round 0
    self_rewarding:  sample CoT solutions, judge each -> best/worst preference pair -> DPO from round 0

Both keep the round-0 PRM (they do not train one). Same contract as `loop.phases`: each phase reads
its inputs from the run directory, writes files atomically and returns `(files, info)`.

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

from loop import phases
from loop.phases import MethodPhases
from pipeline.baselines import (
    LLM_JUDGE_PROMPT,
    PreferencePair,
    judge_unit,
    parse_judge_reply,
    preference_pairs,
    samples_for_budget,
    select_rest_em,
    take_until_budget,
)
from pipeline.grading import extract_answer, grade
from pipeline.prompting import PromptFormat
from pipeline.records import Question, SFTExample, from_dict, to_dict
from pipeline.rundir import RunDir, atomic_write_jsonl, read_jsonl
from pipeline.search.seeding import derive_seed

log = logging.getLogger(__name__)

SAMPLES_FILE = "samples.jsonl"
PAIRS_FILE = "pairs.jsonl"


def baseline_phases(method: str) -> MethodPhases:
    """The four round phases of `method` (rest_em | self_rewarding)."""
    if method == "rest_em":
        return MethodPhases(generate, select_rest_em_traces, phases.train_policy, keep_prm)
    if method == "self_rewarding":
        return MethodPhases(generate, select_pairs, train_policy_dpo, keep_prm)
    raise ValueError(f"unknown baseline method {method!r}; allowed: rest_em, self_rewarding")


# ------------------------------------------------------------------------------------------ generate


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


def generate(cfg: DictConfig, run: RunDir, get_pool: Any, train: list[Question], k: int):
    """Round k's CoT samples on the training questions (and their judge scores for self_rewarding),
    written to `round_<k>/samples.jsonl`. Info: tokens (counted, kept), budget, samples, correct, ..."""
    b = cfg.baselines
    budget = reference_budget(b, k)
    questions = sorted(train, key=lambda q: q.id)
    fmt = PromptFormat.from_backbone(cfg.backbone)
    pool = get_pool() if questions and (budget is None or budget > 0) else None

    def sample_fn(n: int, call: int) -> list[list[Any]]:
        return pool.map_policy(
            "sample_solutions",
            [q.content for q in questions],
            max(1, int(cfg.policy.max_batch_size) // n),
            n=n,
            temperature=cfg.search.temperature,
            seed=derive_seed(cfg.seed, k, cfg.method, "samples", call),
            max_steps=cfg.search.max_depth,
        )

    cap = int(b.rest_em_samples)
    groups, counts = (
        sample_round_major(sample_fn, len(questions), budget, cap)
        if pool is not None
        else ([[] for _ in questions], {"tokens": 0, "tokens_generated": 0, "calls": 0})
    )
    rounds = max(map(len, groups), default=0)
    rows = [
        _sample_row(q, j, g[j], fmt)
        for j in range(rounds)
        for q, g in zip(questions, groups, strict=True)
        if j < len(g)
    ]
    info: dict[str, Any] = {
        **counts,
        "budget": budget if budget is not None else -1,  # -1: unmatched (rest_em_samples per question)
        "questions": len(questions),
        "samples": len(rows),
        "correct": sum(1 for r in rows if r["correct"]),
        "solved": len({r["question_id"] for r in rows if r["correct"]}),
    }
    if cfg.method == "self_rewarding" and rows:
        scores, judge_tokens = judge(pool, rows, {q.id: q for q in questions}, cfg, fmt, k)
        rows = [{**r, "judge": s} for r, s in zip(rows, scores, strict=True)]
        info.update(judge=str(b.judge), judge_tokens=judge_tokens, judged=sum(s is not None for s in scores))
    path = run.round_dir(k) / SAMPLES_FILE
    atomic_write_jsonl(path, rows)
    log.info("round %d %s: %s", k, cfg.method, info)
    return [path], info


def _sample_row(q: Question, j: int, s: Any, fmt: PromptFormat) -> dict[str, Any]:
    answer = extract_answer(list(s.steps), fmt.answer_prefix) if s.steps else None
    correct = grade(answer, q.answer).correct if q.answer is not None else None
    return {
        "question_id": q.id,
        "sample": j,
        "steps": list(s.steps),
        "tokens": int(s.tokens),
        "answer": answer,
        "correct": correct,
    }


def judge(
    pool: Any, rows: Sequence[dict[str, Any]], by_id: dict[str, Question], cfg: Any, fmt: PromptFormat, k: int
) -> tuple[list[float | None], int]:
    """Self-Rewarding's judge over the samples: (score in [0, 1] or None per row, judge tokens).

    judge=prm: the PRM's value of the whole solution (the tiny policy cannot judge). judge=llm: the policy
    answers LLM_JUDGE_PROMPT greedily; its 1-10 score is mapped by `judge_unit`, None when unparsable.
    Empty solutions are not judged (None)."""
    from pipeline.search.protocol import Score

    todo = [i for i, r in enumerate(rows) if r["steps"]]
    scores: list[float | None] = [None] * len(rows)
    if not todo:
        return scores, 0
    if cfg.baselines.judge == "prm":
        requests = [Score(by_id[rows[i]["question_id"]].content, tuple(rows[i]["steps"])) for i in todo]
        values = pool.map_prm("score", requests, int(cfg.prm.max_batch_size))
        for i, v in zip(todo, values, strict=True):
            scores[i] = float(v)
        return scores, 0
    prompts = [
        LLM_JUDGE_PROMPT.format(
            question=by_id[rows[i]["question_id"]].content, solution=fmt.solution(rows[i]["steps"])
        )
        for i in todo
    ]
    replies = pool.map_policy(
        "greedy_solve",
        prompts,
        int(cfg.policy.max_batch_size),
        max_steps=0,
        seed=derive_seed(cfg.seed, k, "judge"),
    )
    for i, reply in zip(todo, replies, strict=True):
        points = parse_judge_reply("\n".join(reply.steps))
        scores[i] = None if points is None else judge_unit(points)
    return scores, sum(int(r.tokens) for r in replies)


def load_samples(path: Path) -> dict[str, list[dict[str, Any]]]:
    """samples.jsonl rows grouped by question id, in sample order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for row in read_jsonl(path):
        out.setdefault(row["question_id"], []).append(row)
    for rows in out.values():
        rows.sort(key=lambda r: r["sample"])
    return out


# ------------------------------------------------------------------------------------------- select


def select_rest_em_traces(cfg: DictConfig, run: RunDir, train: list[Question], k: int):
    """ReST-EM's E-step: correct samples, distinct, at most `baselines.rest_em_top_k` per question ->
    `round_<k>/sft.jsonl` (the SFT phase accumulates rounds 1..k). For arith, `trace_precision` is the
    share of selected traces whose every step is right (an instrument, not a filter)."""
    fmt = PromptFormat.from_backbone(cfg.backbone)
    tokenizer = phases.prompt_tokenizer(cfg)
    by_question = load_samples(run.round_dir(k) / SAMPLES_FILE)
    sft: list[SFTExample] = []
    for q in sorted(train, key=lambda q: q.id):
        samples = [(tuple(r["steps"]), int(r["tokens"])) for r in by_question.get(q.id, [])]
        sft += select_rest_em(q, samples, q.answer, fmt, int(cfg.baselines.rest_em_top_k), tokenizer)
    sft = [
        SFTExample(e.question_id, e.prompt, e.solution, e.steps, e.value, f"rest_em_round_{k}") for e in sft
    ]
    path = run.round_dir(k) / "sft.jsonl"
    atomic_write_jsonl(path, [to_dict(e) for e in sft])
    info: dict[str, Any] = {"sft_examples": len(sft), "sft_questions": len({e.question_id for e in sft})}
    if cfg.task.name == "arith" and sft:
        from pipeline.tasks.arith import check_trace

        by_id = {q.id: q for q in train}
        ok = [bool(check_trace(by_id[e.question_id], e.steps, fmt.answer_prefix).correct) for e in sft]
        info["trace_precision"] = sum(ok) / len(ok)
    return [path], info


def select_pairs(cfg: DictConfig, run: RunDir, train: list[Question], k: int):
    """Self-Rewarding: per question the best- against the worst-judged solution (margin >=
    `baselines.min_margin`) -> `round_<k>/pairs.jsonl`. Info `chosen_correct`: share of pairs whose chosen
    solution is graded correct (how often the judge agrees with the gold answer)."""
    fmt = PromptFormat.from_backbone(cfg.backbone)
    tokenizer = phases.prompt_tokenizer(cfg)
    by_question = load_samples(run.round_dir(k) / SAMPLES_FILE)
    pairs: list[PreferencePair] = []
    chosen_ok: list[bool] = []
    for q in sorted(train, key=lambda q: q.id):
        rows = by_question.get(q.id, [])
        samples = [(tuple(r["steps"]), int(r["tokens"])) for r in rows]
        found = preference_pairs(
            q, samples, [r.get("judge") for r in rows], fmt, float(cfg.baselines.min_margin), tokenizer
        )
        pairs += found
        correct_texts = {fmt.solution(r["steps"]) for r in rows if r["correct"]}
        chosen_ok += [p.chosen in correct_texts for p in found]
    path = run.round_dir(k) / PAIRS_FILE
    atomic_write_jsonl(path, [to_dict(p) for p in pairs])
    info: dict[str, Any] = {"pairs": len(pairs)}
    if chosen_ok:
        info["chosen_correct"] = sum(chosen_ok) / len(chosen_ok)
    return [path], info


# -------------------------------------------------------------------------------------------- train


def train_policy_dpo(cfg: DictConfig, run: RunDir, models: dict[str, Any], k: int):
    """DPO from the round-0 policy on the pairs of rounds 1..k (reference: the round-0 policy)."""
    from trainers.dpo import train_dpo

    pairs = [
        from_dict(PreferencePair, r)
        for j in range(1, k + 1)
        if (run.round_dir(j) / PAIRS_FILE).exists()
        for r in read_jsonl(run.round_dir(j) / PAIRS_FILE)
    ]
    if not pairs:
        log.warning("round %d: no preference pairs; the policy is not retrained", k)
        return [], {"policy_dir": models["policy_dir"], "examples": 0}
    out = run.round_dir(k) / "policy"
    metrics = train_dpo(
        models["policy_dir0"],
        pairs,
        str(out),
        cfg.baselines.dpo,
        storage_dir=str(run.root / "ray_train"),
        name=f"dpo-round-{k}",
        beta=float(cfg.baselines.dpo_beta),
        trust_remote_code=cfg.backbone.trust_remote_code,
    )
    scalars = {key: v for key, v in metrics.items() if isinstance(v, int | float | str) and key != "out_dir"}
    return [out], {"policy_dir": str(out), "examples": len(pairs), **scalars}


def keep_prm(cfg: DictConfig, run: RunDir, models: dict[str, Any], k: int):
    """The baselines do not train a PRM: the round-0 one stays."""
    return [], {"prm_dir": models["prm_dir"], "examples": 0}
