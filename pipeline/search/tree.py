"""The search tree of MCTS*: nodes, UCT selection, backup, answer choice, and export to NodeRecords.

Pure: standard library only. Values are PRM-style scores in [low, high] (default [0, 1]); visit counts
are integers >= 0. See docs/ALGORITHM.md for the rules implemented here.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline.grading import extract_answer, normalize_answer
from pipeline.records import NodeRecord
from pipeline.verify import Check, as_check

CONTINUE, END = "continue", "end"


@dataclass(eq=False)
class Node:
    """One partial solution. `reflection` is None until judged, then CONTINUE or END."""

    node_id: int
    parent: Node | None
    steps: tuple[str, ...]
    value: float  # V in [low, high]: PRM score, later roll-out-updated or backed-up mean
    prm_value: float  # the PRM's own score at creation (low for the unscored root)
    visits: int = 0
    children: list[Node] = field(default_factory=list)
    expanded: bool = False  # "fully expanded": children were created
    reflection: str | None = None
    critique: str = ""  # "common" reflection text, fed into this node's expansion prompt
    illegal: bool = False  # the task's rules reject its last step: recorded, never selected or expanded
    solved: bool = False  # the task's rules verify it as a whole correct solution
    exhausted: bool = False  # expanded, but nothing below it can be selected any more (all illegal)
    expansions: int = 0  # times the policy was asked for its children

    @property
    def depth(self) -> int:
        return len(self.steps)


def clip(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def uct(child: Node, parent_visits: int, c: float, inf: float) -> float:
    """V + c * sqrt(2 ln N(parent) / N(child)); an unvisited child scores V + inf."""
    if child.visits == 0:
        return child.value + inf
    return child.value + c * math.sqrt(2 * math.log(max(parent_visits, 1)) / child.visits)


def selectable(node: Node) -> list[Node]:
    """The children selection may enter: not illegal, and not exhausted."""
    return [child for child in node.children if not (child.illegal or child.exhausted)]


def best_child(node: Node, c: float, inf: float, rng: random.Random) -> Node:
    """The selectable child with the highest UCT; exact ties broken by the seeded `rng`. Without rules
    every child is selectable, as in the original."""
    children = selectable(node)
    scores = [uct(child, node.visits, c, inf) for child in children]
    top = max(scores)
    tied = [child for child, score in zip(children, scores, strict=True) if score == top]
    return tied[0] if len(tied) == 1 else rng.choice(tied)


def close(node: Node, max_expansions: int = 1) -> None:
    """Nothing more is to be found at `node`: it is exhausted. An ancestor left without a selectable
    child is reopened for another expansion (`expanded` False: selection stops there and the policy is
    asked for more children) while it has been expanded fewer than `max_expansions` times; otherwise it
    is exhausted too, and so on up."""
    node.exhausted = True
    parent = node.parent
    while parent is not None and not selectable(parent):
        if parent.expansions < max_expansions:
            parent.expanded = False
            return
        parent.exhausted = True
        parent = parent.parent


def widens(node: Node, widen: float, max_expansions: int) -> bool:
    """Progressive widening: an expanded, open node is due more children once its visits reach
    `widen` * expansions^2, while it has been expanded fewer than `max_expansions` times (widen 0: never)."""
    return (
        widen > 0
        and node.expanded
        and node.reflection != END
        and not node.exhausted
        and node.expansions < max_expansions
        and node.visits >= widen * node.expansions**2
    )


def select(
    root: Node, c: float, inf: float, rng: random.Random, widen: float = 0.0, max_expansions: int = 1
) -> Node | None:
    """Descend from the root through fully expanded nodes to the first one that is not (or, with
    `widen` > 0, to the first one due more children, see `widens`); None when the whole tree is exhausted
    (every line the rules allow has been closed off)."""
    if root.exhausted:
        return None
    node = root
    while node.expanded and not widens(node, widen, max_expansions):
        node = best_child(node, c, inf, rng)
    return node


def backpropagate(node: Node) -> None:
    """From `node` to the root: N += 1; a fully expanded node's V becomes the visit-weighted mean of its
    children's V (its own PRM value is discarded; unvisited children weigh 0)."""
    while node is not None:
        node.visits += 1
        if node.expanded:
            total = sum(child.visits for child in node.children)
            if total > 0:
                node.value = sum(child.value * child.visits for child in node.children) / total
        node = node.parent


def walk(root: Node) -> list[Node]:
    """All nodes, ordered by node id (creation order)."""
    nodes, stack = [], [root]
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(node.children)
    return sorted(nodes, key=lambda n: n.node_id)


def is_end_leaf(node: Node, end_gate: float) -> bool:
    """Unexpanded and either reflected finished or accepted by the value gate (V >= end_gate)."""
    return not node.expanded and node.depth > 0 and (node.reflection == END or node.value >= end_gate)


@dataclass(frozen=True)
class Choice:
    node: Node
    fallback: bool  # no end leaf existed: the highest-V node of the whole tree was taken


def choose_answer(
    nodes: Iterable[Node], end_gate: float, answer_prefix: str, weighted_verify: bool = False
) -> Choice:
    """Project choice (docs/ALGORITHM.md): the best end leaf, finished ones (with an extractable answer)
    first, by V; with `weighted_verify` the answer whose end leaves have the largest summed V. Without end
    leaves, the highest-V node anywhere (fallback). Remaining ties go to the earliest node."""
    nodes = [n for n in nodes if not n.illegal]
    leaves = [n for n in nodes if is_end_leaf(n, end_gate)]
    if not leaves:
        pool = [n for n in nodes if n.depth > 0] or nodes
        return Choice(max(pool, key=lambda n: (n.value, -n.node_id)), fallback=True)
    answers = {n.node_id: extract_answer(n.steps, answer_prefix) for n in leaves}
    answered = [n for n in leaves if answers[n.node_id] is not None]
    if weighted_verify and answered:
        totals: dict[str, float] = {}
        for n in answered:
            key = normalize_answer(answers[n.node_id])
            totals[key] = totals.get(key, 0.0) + n.value
        best = max(totals.values())
        answered = [n for n in answered if totals[normalize_answer(answers[n.node_id])] == best]
    pool = answered or leaves
    return Choice(max(pool, key=lambda n: (n.value, -n.node_id)), fallback=False)


def to_records(
    nodes: Iterable[Node], question_id: str, end_gate: float, answer_prefix: str, gold: str | Check | None
) -> list[NodeRecord]:
    """Export the tree; end leaves carry their extracted answer and, with a gold answer or Check
    (pipeline.verify), their verdict (an end leaf without an answer is incorrect; an ungradable one
    stays None)."""
    check = as_check(gold)
    records = []
    for n in nodes:
        end = is_end_leaf(n, end_gate)
        answer = extract_answer(n.steps, answer_prefix) if end else None
        correct = None
        if end and check is not None:
            correct = check(n.steps, answer)
        records.append(
            NodeRecord(
                question_id=question_id,
                node_id=n.node_id,
                parent_id=n.parent.node_id if n.parent is not None else -1,
                steps=n.steps,
                depth=n.depth,
                value=n.value,
                prm_value=n.prm_value,
                visits=n.visits,
                is_end=end,
                answer=answer,
                correct=correct,
                reflection=n.critique,
                illegal=n.illegal,
            )
        )
    return records
