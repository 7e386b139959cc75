"""Self-Rewarding (docs/ALGORITHM.md section 5), a baseline: sample CoT solutions, let the model judge
each (`baselines.judge`: the PRM, or the policy as an LLM judge), pair the best- against the worst-judged
solution per question, DPO from round 0 on the pairs of rounds 1..k. The round-0 PRM is kept.

`round_<k>/pairs.jsonl`: one PreferencePair per line (pipeline.baselines)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig

from loop.methods import samples
from loop.methods.common import keep_prm, policy_start, prompt_tokenizer, train_on_rounds
from loop.methods.phases import MethodPhases
from loop.session import check_job_fits
from pipeline.baselines import (
    LLM_JUDGE_PROMPT,
    PreferencePair,
    judge_unit,
    parse_judge_reply,
    preference_pairs,
)
from pipeline.prompting import PromptFormat
from pipeline.records import Question, SampleRecord, to_dict
from pipeline.rundir import RunDir, atomic_write_jsonl
from pipeline.search.seeding import derive_seed

PAIRS_FILE = "pairs.jsonl"


def generate(cfg: DictConfig, run: RunDir, get_pool: Any, train: list[Question], k: int):
    """Round k's CoT samples with the judge's score of each -> `round_<k>/samples.jsonl`."""
    rows, info, pool = samples.collect(cfg, get_pool, train, k)
    if rows:
        fmt = PromptFormat.from_backbone(cfg.backbone)
        scores, judge_tokens = judge(pool, rows, {q.id: q for q in train}, cfg, fmt, k)
        rows = [dataclasses.replace(r, judge=s) for r, s in zip(rows, scores, strict=True)]
        info.update(
            judge=str(cfg.baselines.judge),
            judge_tokens=judge_tokens,
            judged=sum(s is not None for s in scores),
        )
    return samples.write(run, k, cfg.method, rows, info, judged=bool(rows))


def judge(
    pool: Any, rows: Sequence[SampleRecord], by_id: dict[str, Question], cfg: Any, fmt: PromptFormat, k: int
) -> tuple[list[float | None], int]:
    """Self-Rewarding's judge over the samples: (score in [0, 1] or None per row, judge tokens).

    judge=prm: the PRM's value of the whole solution (the tiny policy cannot judge). judge=llm: the policy
    answers LLM_JUDGE_PROMPT greedily; its 1-10 score is mapped by `judge_unit`, None when unparsable.
    Empty solutions are not judged (None)."""
    from pipeline.search.protocol import Score

    todo = [i for i, r in enumerate(rows) if r.steps]
    scores: list[float | None] = [None] * len(rows)
    if not todo:
        return scores, 0
    if cfg.baselines.judge == "prm":
        requests = [Score(by_id[rows[i].question_id].content, rows[i].steps) for i in todo]
        values = pool.score(requests, chunk=int(cfg.prm.max_batch_size))
        for i, v in zip(todo, values, strict=True):
            scores[i] = float(v)
        return scores, 0
    prompts = [
        LLM_JUDGE_PROMPT.format(
            question=by_id[rows[i].question_id].content, solution=fmt.solution(rows[i].steps)
        )
        for i in todo
    ]
    replies = pool.greedy(
        prompts, max_steps=0, seed=derive_seed(cfg.seed, k, "judge"), chunk=int(cfg.policy.max_batch_size)
    )
    for i, reply in zip(todo, replies, strict=True):
        points = parse_judge_reply("\n".join(reply.steps))
        scores[i] = None if points is None else judge_unit(points)
    return scores, sum(int(r.tokens) for r in replies)


def select_pairs(cfg: DictConfig, run: RunDir, train: list[Question], k: int):
    """Self-Rewarding: per question the best- against the worst-judged solution (margin >=
    `baselines.min_margin`) -> `round_<k>/pairs.jsonl`. Info `chosen_correct`: share of pairs whose chosen
    solution is graded correct (how often the judge agrees with the gold answer)."""
    fmt = PromptFormat.from_backbone(cfg.backbone)
    tokenizer = prompt_tokenizer(cfg)
    by_question = samples.load_samples(run.round_dir(k) / samples.SAMPLES_FILE)
    pairs: list[PreferencePair] = []
    chosen_ok: list[bool] = []
    for q in sorted(train, key=lambda q: q.id):
        rows = by_question.get(q.id, [])
        drawn = [(r.steps, r.tokens) for r in rows]
        found = preference_pairs(
            q, drawn, [r.judge for r in rows], fmt, float(cfg.baselines.min_margin), tokenizer
        )
        pairs += found
        correct_texts = {fmt.solution(r.steps) for r in rows if r.correct}
        chosen_ok += [p.chosen in correct_texts for p in found]
    path = run.round_dir(k) / PAIRS_FILE
    atomic_write_jsonl(path, [to_dict(p) for p in pairs])
    info: dict[str, Any] = {"pairs": len(pairs)}
    if chosen_ok:
        info["chosen_correct"] = sum(chosen_ok) / len(chosen_ok)
    return [path], info


def train_policy_dpo(cfg: DictConfig, run: RunDir, models: dict[str, Any], k: int):
    """DPO from where `selection.sft_from` says (`policy_start`: the round-0 policy on the pairs of rounds
    1..k, or round k-1's policy on round k's pairs); the reference model is the start policy."""
    from trainers.dpo import train_dpo

    start, pairs = policy_start(cfg, run, models, k, PAIRS_FILE, PreferencePair)

    def job(out: str) -> dict[str, Any]:
        check_job_fits(cfg.baselines.dpo, "DPO workers", "baselines.dpo")
        return train_dpo(
            start,
            pairs,
            out,
            cfg.baselines.dpo,
            storage_dir=str(run.root / "ray_train"),
            name=f"dpo-round-{k}",
            beta=float(cfg.baselines.dpo_beta),
            trust_remote_code=cfg.backbone.trust_remote_code,
        )

    return train_on_rounds(
        run, k, pairs, "policy", ("policy_dir", models["policy_dir"]), job, "preference pairs"
    )


PHASES = MethodPhases(generate, select_pairs, train_policy_dpo, keep_prm)
