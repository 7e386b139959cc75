"""Tree-of-Thought baselines guided by the PRM: BFS (beam search) and DFS (pruning, backtracking).

Same interface and result type as MCTS* (`pipeline/search/mcts.py`): a generator of requests returning
a SearchOutcome. `cfg` is a TotConfig (conf/schema.py). A child is *finished* when the answer-line rule
ends it (a step starting with the answer prefix, or a `\\boxed`) or it is `max_depth` steps deep.

- BFS: expand every kept partial solution with `branch` proposals (all in one batch), score the children
  (one batch), keep the `beam` best children (seeded ties); kept finished children stop, the others are
  the next level. Ends when no unfinished child is kept.
- DFS: expand a node, visit its children best first, prune children scored below `threshold` (and,
  being in PRM order, all after them), descend into unfinished ones and backtrack when a subtree is
  exhausted. Stops at the first finished solution scored >= `gate` or after `budget` expansions.

Answer: DFS's gated solution when found; otherwise the finished solution with the highest PRM value
(any the search generated, pruned ones included), else the highest-valued node (`fallback`).

With a task's rules (pipeline/tasks/rules.py) illegal children stay in the tree but are never ranked,
kept or expanded, and siblings reaching one state merge; when the rules verify (`rules.verifiable`) and
`cfg.verified_stop`, both searches stop at the first verified child and return it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.grading import extract_answer
from pipeline.search.expansion import Expander, SearchOutcome, Sub, make_outcome
from pipeline.search.protocol import SearchGen
from pipeline.search.reflection import Reflector
from pipeline.search.tree import END, Node, choose_answer, walk
from pipeline.tasks.rules import NO_RULES, Rules

NO_GATE = float("inf")  # ToT has no value gate: end leaves are the finished nodes only

__all__ = ["SearchOutcome", "search_bfs", "search_dfs"]


def search_bfs(
    question: str,
    cfg: Any,
    seed: int,
    question_id: str = "",
    gold: str | None = None,
    answer_prefix: str = "The answer is",
    clock: Callable[[], float] = time.monotonic,
    rules: Rules = NO_RULES,
) -> SearchGen:
    """ToT breadth-first beam search over one question; returns a SearchOutcome."""
    return (yield from _Tot(question, cfg, seed, answer_prefix, rules).run("bfs", question_id, gold, clock))


def search_dfs(
    question: str,
    cfg: Any,
    seed: int,
    question_id: str = "",
    gold: str | None = None,
    answer_prefix: str = "The answer is",
    clock: Callable[[], float] = time.monotonic,
    rules: Rules = NO_RULES,
) -> SearchGen:
    """ToT depth-first search with pruning over one question; returns a SearchOutcome."""
    return (yield from _Tot(question, cfg, seed, answer_prefix, rules).run("dfs", question_id, gold, clock))


class _Tot:
    def __init__(self, question: str, cfg: Any, seed: int, answer_prefix: str, rules: Rules) -> None:
        self.cfg = cfg
        self.answer_prefix = answer_prefix
        self.rng = random.Random(seed)
        self.ex = Expander(
            question,
            self.rng,
            cfg.temperature,
            proposal_retries=cfg.proposal_retries,
            rules=rules,
            value=getattr(cfg, "value", "prm"),
        )
        self.stop_verified = rules.verifiable and getattr(cfg, "verified_stop", True)
        self.rule = Reflector(question, "simple", "rule", cfg.max_depth, answer_prefix, self.rng).rule
        self.root = Node(0, None, (), 0.0, 0.0, visits=1)  # never scored
        self.expansions = 0
        self.rounds = 0  # BFS levels / DFS expansions

    def run(self, method: str, question_id: str, gold: str | None, clock: Callable[[], float]) -> SearchGen:
        start = clock()
        found = (yield from self.bfs()) if method == "bfs" else (yield from self.dfs(self.root))
        nodes = walk(self.root)
        choice = choose_answer(nodes, NO_GATE, self.answer_prefix)
        chosen = found if found is not None else choice.node
        return make_outcome(
            nodes,
            chosen,
            question_id=question_id,
            gold=gold,
            end_gate=NO_GATE,
            answer_prefix=self.answer_prefix,
            iterations=self.rounds,
            expansions=self.expansions,
            generated_tokens=self.ex.tokens,
            scored=self.ex.scored,
            fallback=found is None and choice.fallback,
            early_stop=found is not None,
            empty_proposals=self.ex.empty,
            seconds=clock() - start,
            proposals=self.ex.proposals,
            illegal=self.ex.illegal,
            merged=self.ex.merged,
            verified=chosen.solved,
        )

    def grow(self, nodes: Sequence[Node]) -> Sub:
        """Expand `nodes` together; new legal children are judged finished or not by the rule (illegal
        ones stay in the tree unranked). Returns (children, the first verified one when the search
        stops on it, else None)."""
        self.expansions += len(nodes)
        children = yield from self.ex.expand(nodes, self.cfg.branch)
        for child in children:
            if child.reflection != END:  # the expander has ended solved children and dead ends
                child.reflection = self.rule(child.steps)
        solved = next((c for c in children if c.solved), None) if self.stop_verified else None
        if solved is not None:
            solved.visits += 1
        return children, solved

    def ranked(self, nodes: Sequence[Node]) -> list[Node]:
        """Highest PRM value first; exact ties in a seeded random order."""
        shuffled = list(nodes)
        self.rng.shuffle(shuffled)
        return sorted(shuffled, key=lambda n: -n.value)

    def bfs(self) -> Sub:
        frontier = [self.root]
        while frontier:
            self.rounds += 1
            children, solved = yield from self.grow(frontier)
            if solved is not None:
                return solved
            kept = self.ranked(children)[: self.cfg.beam]
            for node in kept:
                node.visits += 1
            frontier = [node for node in kept if node.reflection != END]
        return None

    def dfs(self, node: Node) -> Sub:
        """Returns the first finished solution scored >= gate below `node`, or None."""
        if self.expansions >= self.cfg.budget:
            return None
        self.rounds += 1
        children, solved = yield from self.grow([node])
        if solved is not None:
            return solved
        for child in self.ranked(children):
            if child.value < self.cfg.threshold:
                break  # pruned, and so is every child after it
            if child.reflection == END:
                child.visits += 1
                if (
                    child.value >= self.cfg.gate
                    and extract_answer(child.steps, self.answer_prefix) is not None
                ):
                    return child
                continue
            if self.expansions >= self.cfg.budget:
                continue  # cannot descend any more; finished siblings may still pass the gate
            child.visits += 1
            found = yield from self.dfs(child)
            if found is not None:
                return found
        return None
