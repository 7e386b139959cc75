"""The contract between a search (pure, non-blocking) and the models that serve it.

A search is a generator: it yields a list of requests and is resumed (`gen.send(answers)`) with the
list of answers, same order and length; it returns its result via StopIteration. One process can
therefore advance hundreds of trees and send their requests to the models together:

    gen = mcts.search(question, cfg, seed)          # nothing happens yet
    requests = next(gen)
    while True:
        answers = serve(requests)                   # batch across many trees here
        try:
            requests = gen.send(answers)
        except StopIteration as stop:
            result = stop.value
            break

`serve_sync` does exactly this against a `StepProposer` and a `StepScorer`; tests use it with fakes.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Propose:
    """Ask the policy for `n` next steps after `steps` (each answer is one step, without delimiter)."""

    question: str
    steps: tuple[str, ...]
    n: int
    temperature: float  # 0 = greedy
    seed: int  # per-request seed; engines that honour seeds give the same samples for the same seed
    reflection: str = ""  # "common" reflection mode: critic text appended to the proposal prompt


@dataclass(frozen=True)
class Proposal:
    steps: tuple[str, ...]  # n step texts; "" for an empty/failed sample
    tokens: int  # generated tokens, all samples together


@dataclass(frozen=True)
class Score:
    """Ask the PRM for V(question, steps) in [0, 1]."""

    question: str
    steps: tuple[str, ...]


@dataclass(frozen=True)
class Critique:
    """Ask the policy's critic whether `steps` already solve the question ("policy" critic only)."""

    question: str
    steps: tuple[str, ...]
    want_reflection: bool  # "common" mode: also return a short reflection text
    seed: int


@dataclass(frozen=True)
class Verdict:
    solved: bool | None  # None: no usable reply
    reflection: str
    tokens: int


Request = Propose | Score | Critique
Answer = Proposal | float | Verdict
SearchGen = Generator[list[Request], list[Answer], object]


class StepProposer(Protocol):
    def propose(self, requests: Sequence[Propose]) -> list[Proposal]: ...

    def critique(self, requests: Sequence[Critique]) -> list[Verdict]: ...


class StepScorer(Protocol):
    def score(self, requests: Sequence[Score]) -> list[float]: ...


def answer_all(requests: Sequence[Request], proposer: StepProposer, scorer: StepScorer) -> list[Answer]:
    """Answer a mixed batch, one model call per request kind, results in request order."""
    answers: list[Answer | None] = [None] * len(requests)
    for kind, call in ((Propose, proposer.propose), (Score, scorer.score), (Critique, proposer.critique)):
        idx = [i for i, r in enumerate(requests) if isinstance(r, kind)]
        if idx:
            for i, a in zip(idx, call([requests[i] for i in idx]), strict=True):
                answers[i] = a
    return answers  # type: ignore[return-value]


def serve_sync(gen: SearchGen, proposer: StepProposer, scorer: StepScorer):
    """Run one search to completion in-process; returns the search's result."""
    try:
        requests = next(gen)
        while True:
            requests = gen.send(answer_all(requests, proposer, scorer))
    except StopIteration as stop:
        return stop.value
