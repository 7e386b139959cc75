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
from pipeline.search.tree import END, Node, clip, close, selectable, to_records
from pipeline.tasks.rules import ILLEGAL, NO_RULES, SOLVED, Rules
from pipeline.verify import Check, as_check

Sub = Generator[list[Request], list[Answer], Any]


def close_children(node: Node, max_expansions: int) -> None:
    """`node` has children but none selectable: reopen it for another expansion while it may have one,
    else close it (and walk up, see `close`)."""
    if node.expansions < max_expansions:
        node.expanded = False
    else:
        close(node, max_expansions)


@dataclass(frozen=True)
class SearchOutcome:
    """What a search returns: the result record and the whole tree (NodeRecords in node id order)."""

    result: SearchResult
    tree: list[NodeRecord]


class Expander:
    """Proposal and scoring requests of one search; request seeds come from the search's rng.

    Counts what it spends: `tokens` (policy tokens of proposals, dropped ones included), `scored` (PRM
    evaluations), `empty` (empty step texts received), `proposals` (step texts received), `illegal`
    (texts the task's `rules` rejected), `merged` (texts whose state equalled a sibling's). Values are
    clipped to [low, high]; node ids are handed out in order. `value="constant"`: no PRM is asked,
    every state is worth the middle of [low, high] (the search without a value model).
    """

    def __init__(
        self,
        question: str,
        rng: random.Random,
        temperature: float,
        low: float = 0.0,
        high: float = 1.0,
        proposal_retries: int = 0,
        rules: Rules = NO_RULES,
        value: str = "prm",
        max_expansions: int = 1,
    ) -> None:
        if value not in ("prm", "constant"):
            raise ValueError(f"value must be prm or constant, got {value!r}")
        self.question, self.rng, self.temperature = question, rng, temperature
        self.low, self.high, self.retries = low, high, max(proposal_retries, 0)
        self.rules, self.constant = rules, value == "constant"
        self.max_expansions = max(1, int(max_expansions))
        self.tokens = self.scored = self.empty = 0
        self.proposals = self.illegal = self.merged = 0
        self.next_id = 1  # 0 is the root

    def _request(self, steps: tuple[str, ...], n: int, reflection: str) -> Propose:
        return Propose(self.question, steps, n, self.temperature, self.rng.randrange(SEED_RANGE), reflection)

    def _texts(self, proposal: Any) -> list[str]:
        """Distinct non-empty steps (stripped), in the order the policy gave them."""
        self.tokens += proposal.tokens
        self.proposals += len(proposal.steps)
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

    def legal(self, steps: tuple[str, ...], texts: Sequence[str]) -> list[tuple[str, str]]:
        """(text, LEGAL | SOLVED) of the `texts` the rules allow after `steps`; the others are counted."""
        out = []
        for text in texts:
            verdict = self.rules.judge(steps + (text,))
            if verdict == ILLEGAL:
                self.illegal += 1
            else:
                out.append((text, verdict))
        return out

    def score(self, states: Sequence[tuple[str, ...]]) -> Sub:
        """PRM values of `states` in one batch; a non-finite reply counts as `low`."""
        if self.constant:
            return [(self.low + self.high) / 2] * len(states)
        values = yield [Score(self.question, steps) for steps in states]
        self.scored += len(states)
        return [clip(float(v), self.low, self.high) if math.isfinite(float(v)) else self.low for v in values]

    def expand(self, nodes: Sequence[Node], n: int) -> Sub:
        """Children for every node: one Propose(n) per node, all in one batch, and one Score batch for
        the new legal children. Identical texts collapse; with rules, a text whose state equals an
        earlier sibling's merges into it, and an illegal text becomes an unscored child (value `low`,
        marked illegal, an end); a legal child after which the rules allow no line is an end. Nodes
        left without a legal child are asked again, together, up to `proposal_retries` times; then a
        node with no child at all becomes an end, and one with only illegal children is closed. A node expanded again (reopened by `close`) keeps its children: new
        texts and states are new children only when no child has them. Returns the new legal children,
        node by node."""
        found: dict[int, list[tuple[str, str]]] = {node.node_id: [] for node in nodes}  # (text, verdict)
        for node in nodes:
            node.expansions += 1
        waiting = list(nodes)
        for _ in range(1 + self.retries):
            if not waiting:
                break
            proposals = yield [self._request(node.steps, n, node.critique) for node in waiting]
            for node, proposal in zip(waiting, proposals, strict=True):
                self._sort(node, self._texts(proposal), found[node.node_id])
            waiting = [node for node in waiting if not any(v != ILLEGAL for _, v in found[node.node_id])]
        growing = [node for node in nodes if found[node.node_id]]
        for node in nodes:
            if not found[node.node_id] and not node.children:
                node.reflection = END
        states = [node.steps + (t,) for node in growing for t, v in found[node.node_id] if v != ILLEGAL]
        values = iter((yield from self.score(states)) if states else [])
        new: list[Node] = []
        for node in growing:
            for text, verdict in found[node.node_id]:
                value = self.low if verdict == ILLEGAL else next(values)
                child = Node(self.next_id, node, node.steps + (text,), value, value)
                child.illegal, child.solved = verdict == ILLEGAL, verdict == SOLVED
                if child.illegal or child.solved or self.rules.stuck(child.steps):
                    child.reflection = END  # a dead end (no legal line can follow) is a leaf too
                node.children.append(child)
                self.next_id += 1
            node.expanded = True
            new.extend(c for c in node.children[-len(found[node.node_id]) :] if not c.illegal)
        for node in nodes:
            if node.children and not selectable(node):
                node.expanded = True
                close_children(node, self.max_expansions)
        return new

    def _sort(self, node: Node, texts: Sequence[str], found: list[tuple[str, str]]) -> None:
        """Add `texts` (proposals for `node`) to `found`: repeats of a text already there dropped,
        illegal ones kept as such, legal ones whose state a sibling already reached merged (counted)."""
        old = [c for c in node.children]
        keys = {self.rules.state(node.steps + (t,)) for t, v in found if v != ILLEGAL}
        keys |= {self.rules.state(c.steps) for c in old if not c.illegal}
        seen = {t for t, _ in found} | {c.steps[-1] for c in old}
        for text in texts:
            if text in seen:
                continue
            seen.add(text)
            steps = node.steps + (text,)
            verdict = self.rules.judge(steps)
            if verdict == ILLEGAL:
                self.illegal += 1
                found.append((text, verdict))
                continue
            key = self.rules.state(steps)
            if key in keys:
                self.merged += 1
                continue
            keys.add(key)
            found.append((text, verdict))


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
