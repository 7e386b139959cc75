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
    close,
    select,
    walk,
)
from pipeline.tasks.rules import NO_RULES, SOLVED, Rules

NO_GATE = float("inf")  # with a verifier the value gate is off: ends are answer lines and the depth cap

__all__ = ["SearchOutcome", "search"]


def search(
    question: str,
    cfg: Any,
    seed: int,
    question_id: str = "",
    gold: str | None = None,
    answer_prefix: str = "The answer is",
    clock: Callable[[], float] = time.monotonic,
    rules: Rules = NO_RULES,
) -> SearchGen:
    """MCTS* over one question. `cfg` is a SearchConfig (or anything with its fields); `clock` gives
    seconds (for `cfg.time_limit`); `rules`: the question's task rules (pipeline.tasks.rules). Returns a
    SearchOutcome via StopIteration.

    With rules, illegal children are recorded but never selected, expanded or rolled out from, and
    siblings reaching one state merge. When the rules can verify a solution (`rules.verifiable`) the
    value gate is off (an end is an answer line or the depth cap; a verifier beats a threshold), ends
    are never selected again, and with `cfg.verified_stop` the search stops at the first verified
    solution (found by an expansion or a roll-out) and returns it."""
    return (yield from _Mcts(question, cfg, seed, answer_prefix, rules).run(question_id, gold, clock))


class _Mcts:
    def __init__(self, question: str, cfg: Any, seed: int, answer_prefix: str, rules: Rules) -> None:
        self.cfg = cfg
        self.answer_prefix = answer_prefix
        self.rng = random.Random(seed)
        # with rules, a node whose every child is closed is expanded again (more samples), up to this
        self.max_expansions = max(1, int(getattr(cfg, "max_expansions", 1))) if rules.step else 1
        self.ex = Expander(
            question,
            self.rng,
            cfg.temperature,
            cfg.low,
            cfg.high,
            cfg.proposal_retries,
            rules=rules,
            value=getattr(cfg, "value", "prm"),
            max_expansions=self.max_expansions,
        )
        self.critic = Reflector(
            question, cfg.use_reflection, cfg.critic, cfg.max_depth, answer_prefix, self.rng
        )
        self.root = Node(0, None, (), value=cfg.low, prm_value=cfg.low)  # the root is never scored
        self.expansions = 0
        self.closing = rules.verifiable  # ends are settled by the verifier: never select them again
        self.gate = NO_GATE if rules.verifiable else cfg.end_gate
        self.stop_verified = rules.verifiable and getattr(cfg, "verified_stop", True)
        self.found: Node | None = None  # the first verified solution, when the search stops on it
        self.widen = float(getattr(cfg, "widen", 0.0)) if rules.step else 0.0
        self.keep_rollouts = bool(getattr(cfg, "keep_rollouts", False))

    def run(self, question_id: str, gold: str | None, clock: Callable[[], float]) -> SearchGen:
        cfg, start = self.cfg, clock()
        iterations, stopped = 0, False
        while iterations < cfg.iteration_limit and not stopped and not self.root.exhausted:
            if cfg.time_limit is not None and clock() - start >= cfg.time_limit:
                break
            iterations += 1
            stopped = yield from self.round()
        return self.outcome(question_id, gold, iterations, stopped, clock() - start)

    def round(self) -> Sub:
        """Selection -> (early stop) -> reflection -> expansion -> simulation -> backup. True = stop."""
        cfg = self.cfg
        node = select(self.root, cfg.exploration_constant, cfg.inf, self.rng, self.widen, self.max_expansions)
        if node is None:  # every line the rules allow is closed
            return True
        if node.value >= self.gate:
            if cfg.sample_value != "full":
                return True
            node.reflection = END
        if node.reflection is None:
            yield from self.reflect([node])
        if node.reflection == CONTINUE:
            yield from self.expand(node)
            if self.found is not None:
                return True
        elif self.closing and node is not self.root:
            close(node, self.max_expansions)
        if node.expanded and not node.exhausted:
            yield from self.simulate(node)
        backpropagate(node)
        return self.found is not None

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
            if decided is not None and child.reflection is None:
                child.reflection = decided
        if self.stop_verified:
            self.found = next((c for c in children if c.solved), None)
            if self.found is not None:
                return
        undecided = [c for c in children if c.reflection is None]
        if undecided and self.cfg.sample_value == "full":
            yield from self.reflect(undecided)
        if self.closing:
            for child in children:
                if child.reflection == END:
                    close(child, self.max_expansions)

    def simulate(self, node: Node) -> Sub:
        """Roll out from the best new child; V <- (1 - alpha) V + alpha * best; count its visit."""
        cfg = self.cfg
        child = best_child(node, cfg.exploration_constant, cfg.inf, self.rng)
        if child.reflection is None:
            yield from self.reflect([child])
        if child.reflection == END and self.closing:
            close(child, self.max_expansions)
        elif child.reflection != END and cfg.roll_policy != "none":
            best = yield from self.rollout(child)
            child.value = clip((1 - cfg.alpha) * child.value + cfg.alpha * best, cfg.low, cfg.high)
        child.visits += 1

    def rollout(self, start: Node) -> Sub:
        """Highest PRM value among the roll-out's states, starting from `low` (the start state excluded).
        Illegal proposals are dropped (none legal: the roll-out ends); a verified state reached while
        `stop_verified` is grafted into the tree under `start` and becomes `found`."""
        cfg, best, steps, path = self.cfg, self.cfg.low, start.steps, []
        for _ in range(cfg.roll_forward_steps):
            texts = yield from self.ex.propose(steps, cfg.roll_branch)
            legal = self.ex.legal(steps, texts)
            if not legal:
                break
            if cfg.roll_policy == "greedy":
                values = yield from self.ex.score([steps + (t,) for t, _ in legal])
                pick = values.index(max(values))
                value = values[pick]
            else:
                pick = self.rng.randrange(len(legal))
                (value,) = yield from self.ex.score([steps + (legal[pick][0],)])
            steps, best = steps + (legal[pick][0],), max(best, value)
            path.append((steps, value))
            if legal[pick][1] == SOLVED and self.stop_verified:
                self.found = self.graft(start, path)
                return best
            if self.ex.rules.stuck(steps):  # a dead end: no line can legally follow
                break
            ((state, _),) = yield from self.critic.judge([steps], want_text=False)
            if state == END:
                break
        if self.keep_rollouts and path:
            self.keep(start, path, solved=legal[pick][1] == SOLVED if legal else False)
        return best

    def keep(self, start: Node, path: list[tuple[tuple[str, ...], float]], solved: bool) -> None:
        """`keep_rollouts`: a finished roll-out's states become a chain of unexpanded nodes below
        `start` (each visited once, values as scored; selection may expand any of them, beside the
        chain's own child); its last state, when it is an end (an answer line, a dead end), is closed."""
        node = start
        for steps, value in path:
            child = Node(self.ex.next_id, node, steps, value, value, visits=1, reflection=CONTINUE)
            self.ex.next_id += 1
            child.solved = solved and steps == path[-1][0]
            node.children.append(child)
            node = child
        if node.solved or self.ex.rules.stuck(node.steps) or self.critic.rule(node.steps) == END:
            node.reflection = END
            if self.closing:
                close(node, self.max_expansions)

    def graft(self, start: Node, path: list[tuple[tuple[str, ...], float]]) -> Node:
        """Add a roll-out's states below `start` as a chain of nodes (values as scored); the last one is
        the verified solution."""
        node = start
        for steps, value in path:
            child = Node(self.ex.next_id, node, steps, value, value, reflection=CONTINUE)
            self.ex.next_id += 1
            node.children.append(child)
            node.expanded = True
            node = child
        node.reflection, node.solved = END, True
        return node

    def outcome(
        self, question_id: str, gold: str | None, iterations: int, stopped: bool, seconds: float
    ) -> SearchOutcome:
        cfg, nodes = self.cfg, walk(self.root)
        choice = choose_answer(nodes, self.gate, self.answer_prefix, cfg.weighted_verify)
        chosen = self.found or choice.node
        return make_outcome(
            nodes,
            chosen,
            question_id=question_id,
            gold=gold,
            end_gate=self.gate,
            answer_prefix=self.answer_prefix,
            iterations=iterations,
            expansions=self.expansions,
            generated_tokens=self.ex.tokens + self.critic.tokens,
            scored=self.ex.scored,
            fallback=self.found is None and choice.fallback,
            early_stop=stopped,
            empty_proposals=self.ex.empty,
            seconds=seconds,
            proposals=self.ex.proposals,
            illegal=self.ex.illegal,
            merged=self.ex.merged,
            verified=chosen.solved,
        )
