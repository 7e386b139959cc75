"""Sample whole solutions through the pool and score each with the PRM: the one sample-then-score step
that best-of-n / self-consistency evaluation and the compare's verifier analysis share; and verified
sampling, which draws a few samples at a time until the task's verifier accepts one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.grading import extract_answer
from pipeline.records import Question
from pipeline.search.protocol import Score
from pipeline.search.seeding import derive_seed
from pipeline.tasks.rules import rules_for
from pipeline.verify import solution_check


@dataclass(frozen=True)
class Scored:
    """A sampled whole solution with the PRM's value of it (NaN when it was never scored: a verified
    draw needs no PRM) and, for verified sampling, the verifier's verdict (None: not checked)."""

    steps: tuple[str, ...]
    tokens: int  # generated tokens, counted by the actor
    value: float  # PRM value of the whole solution, in [0, 1]
    verified: bool | None = None


def score_requests(questions: Sequence[Question], groups: Sequence[Sequence[Any]]) -> list[Score]:
    """One Score request per sample, question-major (the order `regroup` undoes)."""
    return [Score(q.content, s.steps) for q, group in zip(questions, groups, strict=True) for s in group]


def regroup(groups: Sequence[Sequence[Any]], values: Sequence[float]) -> list[list[Scored]]:
    out, k = [], 0
    for group in groups:
        out.append([Scored(tuple(s.steps), int(s.tokens), values[k + i]) for i, s in enumerate(group)])
        k += len(group)
    return out


def sample_scored(
    pool: Any, questions: Sequence[Question], cfg: Any, n: int, seed: int
) -> list[list[Scored]]:
    """`n` samples per question at the evaluation temperature and depth (`cfg.eval.search`), each valued
    by the PRM; batches sized by `policy.max_batch_size` and `prm.max_batch_size`."""
    groups = pool.sample(
        [q.content for q in questions],
        n=n,
        temperature=cfg.eval.search.temperature,
        seed=seed,
        max_steps=cfg.eval.search.max_depth,
        chunk=max(1, int(cfg.policy.max_batch_size) // n),
    )
    values = pool.score(score_requests(questions, groups), chunk=int(cfg.prm.max_batch_size))
    return regroup(groups, values)


def verifiable(question: Question, answer_prefix: str) -> bool:
    """Can `question` be checked at test time (its task's verifier needs no gold answer)?"""
    return rules_for(question, answer_prefix).verifiable


def sample_verified(
    pool: Any,
    questions: Sequence[Question],
    cfg: Any,
    n: int,
    seed: int,
    on_round: Callable[[int], None] | None = None,
) -> list[list[Scored]]:
    """Verified best-of-n draws: `cfg.eval.verify_batch` samples per question at a time (one pool call
    for every question still open), each checked by its task's verifier, until one verifies or `n` are
    drawn. Every drawn sample is returned (its tokens were spent); a group without a verified sample is
    valued by the PRM (for the PRM's or the vote's pick), a group with one is not. `on_round(k)`: called
    after each round with the number of questions settled so far."""
    prefix = cfg.backbone.answer_prefix
    checks = [solution_check(q, prefix, fallbacks=cfg.backbone.answer_fallbacks) for q in questions]
    drawn: list[list[Any]] = [[] for _ in questions]
    verdicts: list[list[bool]] = [[] for _ in questions]
    batch, k = max(1, int(cfg.eval.verify_batch)), 0
    while True:
        open_ = [i for i in range(len(questions)) if len(drawn[i]) < n and not any(verdicts[i])]
        if not open_:
            break
        size = min(batch, n - min(len(drawn[i]) for i in open_))
        groups = pool.sample(
            [questions[i].content for i in open_],
            n=size,
            temperature=cfg.eval.search.temperature,
            seed=derive_seed(seed, "verified", k),
            max_steps=cfg.eval.search.max_depth,
            chunk=max(1, int(cfg.policy.max_batch_size) // size),
        )
        for i, group in zip(open_, groups, strict=True):
            for sample in group[: n - len(drawn[i])]:
                drawn[i].append(sample)
                answer = extract_answer(list(sample.steps), prefix, tuple(cfg.backbone.answer_fallbacks))
                verdicts[i].append(bool(checks[i](sample.steps, answer)))
        k += 1
        if on_round is not None:
            on_round(sum(1 for i in range(len(questions)) if len(drawn[i]) >= n or any(verdicts[i])))
    unverified = [i for i in range(len(questions)) if not any(verdicts[i])]
    values = pool.score(
        score_requests([questions[i] for i in unverified], [drawn[i] for i in unverified]),
        chunk=int(cfg.prm.max_batch_size),
    )
    scored = dict(zip(unverified, regroup([drawn[i] for i in unverified], values), strict=True))
    return [
        [Scored(s.steps, s.tokens, s.value, v) for s, v in zip(scored[i], verdicts[i], strict=True)]
        if i in scored
        else [
            Scored(tuple(s.steps), int(s.tokens), float("nan"), v)
            for s, v in zip(drawn[i], verdicts[i], strict=True)
        ]
        for i in range(len(questions))
    ]
