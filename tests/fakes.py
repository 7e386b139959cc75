"""Scripted stand-ins for the policy and the PRM, and a driver that interleaves many searches.

The fakes answer each request from its content only (state, seed), never from call order, as a seeded
engine would; so a search must give the same tree however its requests are batched.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping, Sequence

from pipeline.search.protocol import Critique, Proposal, Propose, Score, SearchGen, Verdict, answer_all

State = tuple[str, ...]


def _unit(*parts: object) -> float:
    """A stable pseudo-random number in [0, 1) from the parts."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class FakeProposer:
    """`propose_fn(request) -> step texts` (up to request.n are used); `critique_fn(request) -> Verdict`.

    Every request is logged, in order, in `proposals` / `critiques`. Tokens: one per non-empty step.
    """

    def __init__(
        self,
        propose_fn: Callable[[Propose], Sequence[str]],
        critique_fn: Callable[[Critique], Verdict] | None = None,
    ) -> None:
        self.propose_fn = propose_fn
        self.critique_fn = critique_fn or (lambda request: Verdict(False, "", 0))
        self.proposals: list[Propose] = []
        self.critiques: list[Critique] = []
        self.tokens = 0  # all tokens reported, proposals and verdicts

    def propose(self, requests: Sequence[Propose]) -> list[Proposal]:
        out = []
        for request in requests:
            self.proposals.append(request)
            texts = tuple(self.propose_fn(request))[: request.n]
            out.append(Proposal(texts, sum(1 for t in texts if t)))
            self.tokens += out[-1].tokens
        return out

    def critique(self, requests: Sequence[Critique]) -> list[Verdict]:
        self.critiques.extend(requests)
        verdicts = [self.critique_fn(request) for request in requests]
        self.tokens += sum(v.tokens for v in verdicts)
        return verdicts


class FakeScorer:
    """`score_fn(steps) -> value`; logs every scored state in `requests`."""

    def __init__(self, score_fn: Callable[[State], float]) -> None:
        self.score_fn = score_fn
        self.requests: list[Score] = []

    def score(self, requests: Sequence[Score]) -> list[float]:
        self.requests.extend(requests)
        return [self.score_fn(request.steps) for request in requests]


def table_proposer(script: Mapping[State, Sequence[str]], default: Sequence[str] = ()) -> Callable:
    """Proposals looked up by state: the same texts every time that state is expanded."""
    return lambda request: script.get(request.steps, default)


def table_scorer(values: Mapping[State, float], default: float = 0.0) -> Callable:
    return lambda steps: values.get(steps, default)


def hashed_proposer(width: int = 4, answer_depth: int = 3) -> Callable[[Propose], list[str]]:
    """Seed-dependent proposals from a small vocabulary; from `answer_depth` steps on, answer lines.

    Some samples are empty (about one in eight) and some repeat, to exercise retries and collapsing.
    """

    def propose(request: Propose) -> list[str]:
        out = []
        for i in range(request.n):
            u = _unit(request.question, request.steps, request.seed, i)
            k = int(u * width)
            if u < 0.125:
                out.append("")
            elif len(request.steps) + 1 >= answer_depth:
                out.append(f"The answer is {k}")
            else:
                out.append(f"step {len(request.steps) + 1}.{k}")
        return out

    return propose


def hashed_scorer(question_salt: str = "") -> Callable[[State], float]:
    return lambda steps: round(_unit(question_salt, steps), 3)


def run_interleaved(
    gens: Sequence[SearchGen], proposer: FakeProposer, scorer: FakeScorer, order_seed: int, max_trees: int
) -> list[object]:
    """Advance many searches together: each turn, a random subset (at most `max_trees`) of the pending
    searches, in random order, has its requests answered in one mixed batch. Returns the results."""
    order = random.Random(order_seed)
    results: list[object] = [None] * len(gens)
    pending = {}
    for i, gen in enumerate(gens):
        pending[i] = next(gen)
    while pending:
        chosen = order.sample(sorted(pending), min(len(pending), order.randint(1, max_trees)))
        batch = [request for i in chosen for request in pending[i]]
        answers = answer_all(batch, proposer, scorer)
        start = 0
        for i in chosen:
            n = len(pending[i])
            try:
                pending[i] = gens[i].send(answers[start : start + n])
            except StopIteration as stop:
                results[i] = stop.value
                del pending[i]
            start += n
    return results
