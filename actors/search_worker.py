"""SearchWorker: runs many search trees over one question shard, batching all their model calls.

Each tree is a generator (pipeline/search/protocol.py). The worker keeps up to `trees_in_flight` trees
alive, collects the pending requests of every tree into one batch per kind (Propose, Score, Critique),
sends the batches to the model replicas through a backend, and consumes answers in completion order:
trees whose answers are all in advance at once and their new requests join the next batch. So while the
policy works on one batch, the trees answered by the PRM are already preparing the next one.

Backends (`submit(kind, batch) -> ticket`, `wait() -> (ticket, answers)`, `capacity(kind)`):
`LocalBackend` answers in-process (tests, `loop.api`); `actors.router.RayBackend` sends remote calls
to the least-loaded replica and waits with `ray.wait`.

`search_shard` returns a shard's rows (`pipeline.shards.tree_row`, in question order) and writes no
file: on Ray the rows travel through the object store to the pool, which writes the shard file in the
driver's run directory (no shared filesystem needed). `run_shard` is the in-process convenience
(LocalBackend callers: tests, benchmarks) that searches and writes the file itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.records import Question
from pipeline.search.protocol import Critique, Propose, Request, Score, SearchGen, StepProposer, StepScorer
from pipeline.shards import SEARCH_KINDS, Shard, tree_row, write_shard
from pipeline.tasks.rules import NO_RULES, rules_for
from pipeline.verify import solution_check

log = logging.getLogger(__name__)

KIND_OF = {Propose: "propose", Score: "score", Critique: "critique"}


@dataclass
class Progress:
    """Counters a caller can poll while a shard runs (cumulative over the worker's life)."""

    shards_done: int = 0
    trees_started: int = 0
    trees_done: int = 0
    expansions: int = 0  # Propose requests answered
    proposals: int = 0  # samples proposed (sum of n)
    scored: int = 0  # PRM values returned
    critiques: int = 0
    tokens: int = 0  # policy tokens generated (proposals and critiques)
    batches_propose: int = 0  # model calls sent, per kind
    batches_score: int = 0
    batches_critique: int = 0
    busy_seconds: float = 0.0


def search_factory(kind: str) -> Callable[..., SearchGen]:
    """The search generator function for `kind`, all called as f(question, cfg, seed, question_id=,
    gold=, answer_prefix=, rules=)."""
    if kind == "mcts":
        from pipeline.search.mcts import search

        return search
    if kind in ("tot_bfs", "tot_dfs"):
        from pipeline.search import tot

        return tot.search_bfs if kind == "tot_bfs" else tot.search_dfs
    raise ValueError(f"unknown search kind {kind!r}; allowed: {', '.join(SEARCH_KINDS)}")


class LocalBackend:
    """Answers each batch in-process at submit time; `wait` hands results back oldest first."""

    def __init__(self, proposer: StepProposer, scorer: StepScorer):
        self.calls = {"propose": proposer.propose, "score": scorer.score, "critique": proposer.critique}
        self.done: deque[tuple[int, list[Any]]] = deque()
        self.next_ticket = 0

    def capacity(self, kind: str) -> int:
        return 1

    def submit(self, kind: str, batch: list[Request]) -> int:
        self.next_ticket += 1
        self.done.append((self.next_ticket, self.calls[kind](batch)))
        return self.next_ticket

    def wait(self) -> tuple[int, list[Any]]:
        return self.done.popleft()


class _Tree:
    __slots__ = ("question", "gen", "requests", "answers", "missing", "t0")

    def __init__(self, question: Question, gen: SearchGen):
        self.question, self.gen = question, gen
        self.requests: list[Request] = []
        self.answers: list[Any] = []
        self.missing = 0
        self.t0 = time.monotonic()


class SearchWorker:
    """Runs shards. `backend` is a LocalBackend or a RayBackend; `answer_prefix` from the backbone."""

    def __init__(
        self,
        backend: Any,
        trees_in_flight: int,
        answer_prefix: str,
        worker_id: int = 0,
        answer_fallbacks: Sequence[str] = (),
    ):
        self.backend = backend
        self.trees_in_flight = max(1, int(trees_in_flight))
        self.answer_prefix = answer_prefix
        self.answer_fallbacks = tuple(answer_fallbacks)  # backbone.answer_fallbacks: grading end leaves
        self.worker_id = worker_id
        self._progress = Progress()
        self._lock = threading.Lock()

    def progress(self) -> dict[str, Any]:
        """A snapshot of the counters (safe to call from another thread while a shard runs)."""
        with self._lock:
            p = self._progress
            return {**p.__dict__, "worker_id": self.worker_id}

    def ping(self) -> int:
        return self.worker_id

    def search_shard(self, shard: Shard, search_cfg: Any) -> dict[str, Any]:
        """Search every question of the shard; returns {"rows", "shard_id", "trees", "seconds"} with the
        shard file's rows in question order. Writes nothing (the caller writes the file)."""
        t0 = time.monotonic()
        make = search_factory(shard.kind)
        rows = self._run(shard, search_cfg, make)
        order = {q.id: i for i, q in enumerate(shard.questions)}
        rows.sort(key=lambda r: order[r["question_id"]])
        seconds = time.monotonic() - t0
        with self._lock:
            self._progress.shards_done += 1
            self._progress.busy_seconds += seconds
        log.info(
            "worker %d: shard %d (%d trees) in %.1f s", self.worker_id, shard.shard_id, len(rows), seconds
        )
        return {"rows": rows, "shard_id": shard.shard_id, "trees": len(rows), "seconds": seconds}

    def run_shard(self, shard: Shard, search_cfg: Any) -> dict[str, Any]:
        """In-process: search the shard and write its file; returns {"path", "shard_id", "trees",
        "seconds"}. Never called on Ray (the pool calls `search_shard` and writes the file itself)."""
        result = self.search_shard(shard, search_cfg)
        path = write_shard(shard, result.pop("rows"))
        return {"path": path, **result}

    def _run(self, shard: Shard, search_cfg: Any, make: Callable[..., SearchGen]) -> list[dict[str, Any]]:
        queue = deque(shard.questions)
        live: dict[int, _Tree] = {}
        ready: dict[str, list[tuple[int, int, Request]]] = {"propose": [], "score": [], "critique": []}
        in_flight: dict[Any, tuple[str, list[tuple[int, int]]]] = {}
        rows: list[dict[str, Any]] = []
        next_slot = 0

        def advance(slot: int, answers: list[Any] | None) -> None:
            tree = live[slot]
            try:
                requests = next(tree.gen) if answers is None else tree.gen.send(answers)
                while not requests:  # a search may yield an empty list; answer it at once
                    requests = tree.gen.send([])
            except StopIteration as stop:
                del live[slot]
                outcome, seconds = stop.value, time.monotonic() - tree.t0
                rows.append(tree_row(shard, tree.question, outcome.result, outcome.tree, seconds))
                with self._lock:
                    self._progress.trees_done += 1
                return
            tree.requests, tree.answers, tree.missing = requests, [None] * len(requests), len(requests)
            for i, request in enumerate(requests):
                ready[KIND_OF[type(request)]].append((slot, i, request))

        while queue or live:
            while queue and len(live) < self.trees_in_flight:
                q = queue.popleft()
                seed = shard.tree_seed(q.id)
                gen = make(
                    q.content,
                    search_cfg,
                    seed,
                    question_id=q.id,
                    # the gold answer (read by the backbone's answer rules) or the task's verifier
                    gold=solution_check(q, self.answer_prefix, fallbacks=self.answer_fallbacks),
                    answer_prefix=self.answer_prefix,
                    rules=rules_for(q, self.answer_prefix) if search_cfg.rules else NO_RULES,
                )
                live[next_slot] = _Tree(q, gen)
                with self._lock:
                    self._progress.trees_started += 1
                next_slot += 1
                advance(next_slot - 1, None)
            for kind, items in ready.items():
                busy = sum(1 for k, _ in in_flight.values() if k == kind)
                if items and busy < self.backend.capacity(kind):
                    ticket = self.backend.submit(kind, [r for _, _, r in items])
                    in_flight[ticket] = (kind, [(s, i) for s, i, _ in items])
                    ready[kind] = []
                    with self._lock:
                        setattr(
                            self._progress, f"batches_{kind}", getattr(self._progress, f"batches_{kind}") + 1
                        )
            if not in_flight:
                if live:
                    raise RuntimeError("search trees wait for answers but no request is in flight")
                continue
            ticket, answers = self.backend.wait()
            kind, targets = in_flight.pop(ticket)
            self._count(kind, answers)
            finished = []
            for (slot, i), answer in zip(targets, answers, strict=True):
                tree = live[slot]
                tree.answers[i] = answer
                tree.missing -= 1
                if tree.missing == 0:
                    finished.append(slot)
            for slot in finished:
                advance(slot, live[slot].answers)
        return rows

    def _count(self, kind: str, answers: Sequence[Any]) -> None:
        with self._lock:
            p = self._progress
            if kind == "propose":
                p.expansions += len(answers)
                p.proposals += sum(len(a.steps) for a in answers)
                p.tokens += sum(a.tokens for a in answers)
            elif kind == "score":
                p.scored += len(answers)
            else:
                p.critiques += len(answers)
                p.tokens += sum(a.tokens for a in answers)
