"""What every tree search shares: proposal and scoring requests, and the outcome records.

Used by MCTS* (`mcts.py`) and Tree-of-Thought (`tot.py`); pure, standard library only.
"""

from __future__ import annotations

import math
import random
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.grading import extract_answer
from pipeline.records import NodeRecord, SearchResult
from pipeline.search.protocol import Answer, Propose, Request, Score
from pipeline.search.reflection import SEED_RANGE
from pipeline.search.tree import END, Node, clip, to_records
from pipeline.verify import Check, as_check

Sub = Generator[list[Request], list[Answer], Any]


@dataclass(frozen=True)
class SearchOutcome:
    """What a search returns: the result record and the whole tree (NodeRecords in node id order)."""

    result: SearchResult
    tree: list[NodeRecord]


class Expander:
    """Proposal and scoring requests of one search; request seeds come from the search's rng.

    Counts what it spends: `tokens` (policy tokens of proposals), `scored` (PRM evaluations), `empty`
    (empty step texts received). Values are clipped to [low, high]; node ids are handed out in order.
    """

    def __init__(
        self,
        question: str,
        rng: random.Random,
        temperature: float,
        low: float = 0.0,
        high: float = 1.0,
        proposal_retries: int = 0,
    ) -> None:
        self.question, self.rng, self.temperature = question, rng, temperature
        self.low, self.high, self.retries = low, high, max(proposal_retries, 0)
        self.tokens = self.scored = self.empty = 0
        self.next_id = 1  # 0 is the root

    def _request(self, steps: tuple[str, ...], n: int, reflection: str) -> Propose:
        return Propose(self.question, steps, n, self.temperature, self.rng.randrange(SEED_RANGE), reflection)

    def _texts(self, proposal: Any) -> list[str]:
        """Distinct non-empty steps (stripped), in the order the policy gave them."""
        self.tokens += proposal.tokens
        texts: list[str] = []
        for text in (s.strip() for s in proposal.steps):
            if not text:
                self.empty += 1
            elif text not in texts:
                texts.append(text)
        return texts

    def propose(self, steps: tuple[str, ...], n: int, reflection: str = "") -> Sub:
        """One Propose request (no retry): up to `n` distinct next steps."""
        (proposal,) = yield [self._request(steps, n, reflection)]
        return self._texts(proposal)

    def score(self, states: Sequence[tuple[str, ...]]) -> Sub:
        """PRM values of `states` in one batch; a non-finite reply counts as `low`."""
        values = yield [Score(self.question, steps) for steps in states]
        self.scored += len(states)
        return [clip(float(v), self.low, self.high) if math.isfinite(float(v)) else self.low for v in values]

    def expand(self, nodes: Sequence[Node], n: int) -> Sub:
        """Children for every node: one Propose(n) per node, all in one batch (nodes whose proposals all
        came back empty are asked again, together, up to `proposal_retries` times; then they become
        ends), and one Score batch for all new children. Returns the new children, node by node."""
        texts: dict[int, list[str]] = {}
        waiting = list(nodes)
        for _ in range(1 + self.retries):
            if not waiting:
                break
            proposals = yield [self._request(node.steps, n, node.critique) for node in waiting]
            for node, proposal in zip(waiting, proposals, strict=True):
                texts[node.node_id] = self._texts(proposal)
            waiting = [node for node in waiting if not texts[node.node_id]]
        for node in waiting:
            node.reflection = END
        growing = [node for node in nodes if texts.get(node.node_id)]
        states = [node.steps + (text,) for node in growing for text in texts[node.node_id]]
        values = iter((yield from self.score(states)) if states else [])
        new: list[Node] = []
        for node in growing:
            for text in texts[node.node_id]:
                value = next(values)
                node.children.append(Node(self.next_id, node, node.steps + (text,), value, value))
                self.next_id += 1
            node.expanded = True
            new.extend(node.children)
        return new


def make_outcome(
    nodes: Sequence[Node],
    chosen: Node,
    *,
    question_id: str,
    gold: str | Check | None,
    end_gate: float,
    answer_prefix: str,
    **counters: Any,
) -> SearchOutcome:
    """Records of a finished search; `counters` are SearchResult's counting fields. `gold`: the gold
    answer or the question's Check (pipeline.verify); None: correctness unknown."""
    answer = extract_answer(chosen.steps, answer_prefix) if chosen.steps else None
    check = as_check(gold)
    correct = None if check is None else check(chosen.steps, answer)
    result = SearchResult(
        question_id=question_id,
        solution=chosen.steps,
        answer=answer,
        value=chosen.value,
        correct=correct,
        **counters,
    )
    return SearchOutcome(result, to_records(nodes, question_id, end_gate, answer_prefix, gold))
