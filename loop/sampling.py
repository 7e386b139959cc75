"""Sample whole solutions through the pool and score each with the PRM: the one sample-then-score step
that best-of-n / self-consistency evaluation and the compare's verifier analysis share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.records import Question
from pipeline.search.protocol import Score


@dataclass(frozen=True)
class Scored:
    """A sampled whole solution with the PRM's value of it."""

    steps: tuple[str, ...]
    tokens: int  # generated tokens, counted by the actor
    value: float  # PRM value of the whole solution, in [0, 1]


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
