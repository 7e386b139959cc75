"""MCTS* (docs/ALGORITHM.md section 2) as a generator of model requests.

    gen = search(question, cfg, seed=derive_seed(round, question_id), question_id=..., gold=...)
    outcome = serve_sync(gen, proposer, scorer)      # or batch many trees' requests together
    outcome.result   # SearchResult: chosen solution, answer, counters
    outcome.tree     # list[NodeRecord], node id order (0 = root)

Every random choice (UCT ties, random roll-outs, per-request seeds) comes from one `random.Random(seed)`
created here, and the search only sees answers, never timing or batch order: the same seed and the same
(deterministic) model answers give the same tree however requests are batched across trees.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.search.expansion import Expander, SearchOutcome, Sub, make_outcome
from pipeline.search.protocol import SearchGen
from pipeline.search.reflection import Reflector
from pipeline.search.tree import (
    CONTINUE,
    END,
    Node,
    backpropagate,
    best_child,
    choose_answer,
    clip,
    select,
    walk,
)

__all__ = ["SearchOutcome", "search"]


def search(
    question: str,
    cfg: Any,
    seed: int,
    question_id: str = "",
    gold: str | None = None,
    answer_prefix: str = "The answer is",
    clock: Callable[[], float] = time.monotonic,
) -> SearchGen:
    """MCTS* over one question. `cfg` is a SearchConfig (or anything with its fields); `clock` gives
    seconds (for `cfg.time_limit`). Returns a SearchOutcome via StopIteration."""
    return (yield from _Mcts(question, cfg, seed, answer_prefix).run(question_id, gold, clock))


class _Mcts:
    def __init__(self, question: str, cfg: Any, seed: int, answer_prefix: str) -> None:
        self.cfg = cfg
        self.answer_prefix = answer_prefix
        self.rng = random.Random(seed)
        self.ex = Expander(question, self.rng, cfg.temperature, cfg.low, cfg.high, cfg.proposal_retries)
        self.critic = Reflector(
            question, cfg.use_reflection, cfg.critic, cfg.max_depth, answer_prefix, self.rng
        )
        self.root = Node(0, None, (), value=cfg.low, prm_value=cfg.low)  # the root is never scored
        self.expansions = 0

    def run(self, question_id: str, gold: str | None, clock: Callable[[], float]) -> SearchGen:
        cfg, start = self.cfg, clock()
        iterations, stopped = 0, False
        while iterations < cfg.iteration_limit and not stopped:
            if cfg.time_limit is not None and clock() - start >= cfg.time_limit:
                break
            iterations += 1
            stopped = yield from self.round()
        return self.outcome(question_id, gold, iterations, stopped, clock() - start)

    def round(self) -> Sub:
        """Selection -> (early stop) -> reflection -> expansion -> simulation -> backup. True = stop."""
        cfg = self.cfg
        node = select(self.root, cfg.exploration_constant, cfg.inf, self.rng)
        if node.value >= cfg.end_gate:
            if cfg.sample_value != "full":
                return True
            node.reflection = END
        if node.reflection is None:
            yield from self.reflect([node])
        if node.reflection == CONTINUE:
            yield from self.expand(node)
        if node.expanded:
            yield from self.simulate(node)
        backpropagate(node)
        return False

    def reflect(self, nodes: Sequence[Node]) -> Sub:
        judged = yield from self.critic.judge(
            [n.steps for n in nodes], want_text=self.cfg.use_reflection == "common"
        )
        for node, (state, text) in zip(nodes, judged, strict=True):
            node.reflection, node.critique = state, text

    def expand(self, node: Node) -> Sub:
        """`branch` proposals in one request; identical ones collapse; all failing makes `node` an end."""
        self.expansions += 1
        children = yield from self.ex.expand([node], self.cfg.branch)
        # Judging new children now is free for the rule critic (and cached, so equal to judging later);
        # a policy critic is asked eagerly only in full mode, as the original does.
        for child in children:
            decided = self.critic.rule(child.steps)
            if decided is not None:
                child.reflection = decided
        undecided = [c for c in children if c.reflection is None]
        if undecided and self.cfg.sample_value == "full":
            yield from self.reflect(undecided)

    def simulate(self, node: Node) -> Sub:
        """Roll out from the best new child; V <- (1 - alpha) V + alpha * best; count its visit."""
        cfg = self.cfg
        child = best_child(node, cfg.exploration_constant, cfg.inf, self.rng)
        if child.reflection is None:
            yield from self.reflect([child])
        if child.reflection != END and cfg.roll_policy != "none":
            best = yield from self.rollout(child.steps)
            child.value = clip((1 - cfg.alpha) * child.value + cfg.alpha * best, cfg.low, cfg.high)
        child.visits += 1

    def rollout(self, steps: tuple[str, ...]) -> Sub:
        """Highest PRM value among the roll-out's states, starting from `low` (the start state excluded)."""
        cfg, best = self.cfg, self.cfg.low
        for _ in range(cfg.roll_forward_steps):
            texts = yield from self.ex.propose(steps, cfg.roll_branch)
            if not texts:
                break
            if cfg.roll_policy == "greedy":
                values = yield from self.ex.score([steps + (t,) for t in texts])
                pick = values.index(max(values))
                value = values[pick]
            else:
                pick = self.rng.randrange(len(texts))
                (value,) = yield from self.ex.score([steps + (texts[pick],)])
            steps, best = steps + (texts[pick],), max(best, value)
            ((state, _),) = yield from self.critic.judge([steps], want_text=False)
            if state == END:
                break
        return best

    def outcome(
        self, question_id: str, gold: str | None, iterations: int, stopped: bool, seconds: float
    ) -> SearchOutcome:
        cfg, nodes = self.cfg, walk(self.root)
        choice = choose_answer(nodes, cfg.end_gate, self.answer_prefix, cfg.weighted_verify)
        return make_outcome(
            nodes,
            choice.node,
            question_id=question_id,
            gold=gold,
            end_gate=cfg.end_gate,
            answer_prefix=self.answer_prefix,
            iterations=iterations,
            expansions=self.expansions,
            generated_tokens=self.ex.tokens + self.critic.tokens,
            scored=self.ex.scored,
            fallback=choice.fallback,
            early_stop=stopped,
            empty_proposals=self.ex.empty,
            seconds=seconds,
        )
