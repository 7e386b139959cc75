"""SearchWorker: runs many search trees over question shards, batching all their model calls.

Each tree is a generator (pipeline/search/protocol.py). The worker keeps up to `trees_in_flight` trees
alive, taken from several shards at once when one shard holds fewer questions (so a shard's size never
caps the batch, and a shard's slowest trees never leave the model idle before the next shard starts), collects the pending requests of every tree into one batch per kind (Propose, Score, Critique),
sends the batches to the model replicas through a backend, and consumes answers in completion order:
trees whose answers are all in advance at once and their new requests join the next batch. So while the
policy works on one batch, the trees answered by the PRM are already preparing the next one.

Backends (`submit(kind, batch) -> ticket`, `wait() -> (ticket, answers)`, `capacity(kind)`):
`LocalBackend` answers in-process (tests, `loop.api`); `actors.router.RayBackend` sends remote calls
to the least-loaded replica and waits with `ray.wait`.

`search_shards` is a generator that yields each shard's rows (`pipeline.shards.tree_row`, in question
order) as soon as the shard's last tree is done (on Ray a streaming call), and writes no file: on Ray the rows travel through the object store to the pool, which writes the shard file in the
driver's run directory (no shared filesystem needed). `run_shard` is the in-process convenience
(LocalBackend callers: tests, benchmarks) that searches and writes the file itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
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
    __slots__ = ("shard", "question", "gen", "requests", "answers", "missing", "t0")

    def __init__(self, shard: int, question: Question, gen: SearchGen):
        self.shard, self.question, self.gen = shard, question, gen
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

    def search_shards(
        self, shards: Sequence[Shard], search_cfg: Any, trees_in_flight: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Search every question of `shards` together, up to `trees_in_flight` trees at once (default:
        the worker's), started in shard then question order. Yields {"rows", "shard_id", "trees",
        "seconds"} per shard as soon as its last tree is done (rows in question order; seconds since
        this call started). Writes nothing (the caller writes the files)."""
        t0 = time.monotonic()
        limit = max(1, int(trees_in_flight or self.trees_in_flight))
        work = _Batcher(self, shards, search_cfg)
        done = [False] * len(work.shards)
        while True:
            work.start(limit)
            for s, shard in enumerate(work.shards):
                if not done[s] and work.left[s] == 0:
                    done[s] = True
                    yield self._finish(shard, work.rows[s], time.monotonic() - t0)
            if all(done):
                with self._lock:
                    self._progress.busy_seconds += time.monotonic() - t0
                return
            work.submit(self.backend)
            work.receive(self.backend)

    def search_shard(self, shard: Shard, search_cfg: Any) -> dict[str, Any]:
        """One shard alone: `search_shards([shard], ...)`'s single result."""
        [result] = list(self.search_shards([shard], search_cfg))
        return result

    def run_shard(self, shard: Shard, search_cfg: Any) -> dict[str, Any]:
        """In-process: search the shard and write its file; returns {"path", "shard_id", "trees",
        "seconds"}. Never called on Ray (the pool calls `search_shards` and writes the file itself)."""
        result = self.search_shard(shard, search_cfg)
        path = write_shard(shard, result.pop("rows"))
        return {"path": path, **result}

    def _finish(self, shard: Shard, rows: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
        order = {q.id: i for i, q in enumerate(shard.questions)}
        rows.sort(key=lambda r: order[r["question_id"]])
        with self._lock:
            self._progress.shards_done += 1
        log.info(
            "worker %d: shard %d (%d trees) in %.1f s", self.worker_id, shard.shard_id, len(rows), seconds
        )
        return {"rows": rows, "shard_id": shard.shard_id, "trees": len(rows), "seconds": seconds}

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


class _Batcher:
    """The trees in flight of one `search_shards` call and their requests, batched per kind.

    Trees are generators; a tree whose answers are all in is advanced at once, and its new requests join
    the next batch of their kind. `rows[s]` collects shard s's finished tree rows."""

    def __init__(self, worker: SearchWorker, shards: Sequence[Shard], search_cfg: Any):
        self.worker, self.shards, self.cfg = worker, list(shards), search_cfg
        self.make = [search_factory(s.kind) for s in self.shards]
        self.queue = deque((s, q) for s, shard in enumerate(self.shards) for q in shard.questions)
        self.left = [len(shard.questions) for shard in self.shards]  # trees not yet finished, per shard
        self.rows: list[list[dict[str, Any]]] = [[] for _ in self.shards]
        self.live: dict[int, _Tree] = {}
        self.ready: dict[str, list[tuple[int, int, Request]]] = {k: [] for k in KIND_OF.values()}
        self.in_flight: dict[Any, tuple[str, list[tuple[int, int]]]] = {}
        self.next_slot = 0

    def start(self, limit: int) -> None:
        """Start queued trees (in shard, then question order) until `limit` are alive."""
        w = self.worker
        while self.queue and len(self.live) < limit:
            s, q = self.queue.popleft()
            gen = self.make[s](
                q.content,
                self.cfg,
                self.shards[s].tree_seed(q.id),
                question_id=q.id,
                # the gold answer (read by the backbone's answer rules) or the task's verifier
                gold=solution_check(q, w.answer_prefix, fallbacks=w.answer_fallbacks),
                answer_prefix=w.answer_prefix,
                rules=rules_for(q, w.answer_prefix) if self.cfg.rules else NO_RULES,
            )
            self.live[self.next_slot] = _Tree(s, q, gen)
            with w._lock:
                w._progress.trees_started += 1
            self.next_slot += 1
            self.advance(self.next_slot - 1, None)

    def advance(self, slot: int, answers: list[Any] | None) -> None:
        tree = self.live[slot]
        try:
            requests = next(tree.gen) if answers is None else tree.gen.send(answers)
            while not requests:  # a search may yield an empty list; answer it at once
                requests = tree.gen.send([])
        except StopIteration as stop:
            del self.live[slot]
            outcome, seconds = stop.value, time.monotonic() - tree.t0
            shard = self.shards[tree.shard]
            self.rows[tree.shard].append(
                tree_row(shard, tree.question, outcome.result, outcome.tree, seconds)
            )
            self.left[tree.shard] -= 1
            with self.worker._lock:
                self.worker._progress.trees_done += 1
            return
        tree.requests, tree.answers, tree.missing = requests, [None] * len(requests), len(requests)
        for i, request in enumerate(requests):
            self.ready[KIND_OF[type(request)]].append((slot, i, request))

    def submit(self, backend: Any) -> None:
        """Send each kind's ready requests as one batch while that kind has room in the backend."""
        for kind, items in self.ready.items():
            busy = sum(1 for k, _ in self.in_flight.values() if k == kind)
            if items and busy < backend.capacity(kind):
                ticket = backend.submit(kind, [r for _, _, r in items])
                self.in_flight[ticket] = (kind, [(s, i) for s, i, _ in items])
                self.ready[kind] = []
                with self.worker._lock:
                    name = f"batches_{kind}"
                    setattr(self.worker._progress, name, getattr(self.worker._progress, name) + 1)

    def receive(self, backend: Any) -> None:
        """Wait for the next finished batch; advance every tree it completes."""
        if not self.in_flight:
            raise RuntimeError("search trees wait for answers but no request is in flight")
        ticket, answers = backend.wait()
        kind, targets = self.in_flight.pop(ticket)
        self.worker._count(kind, answers)
        finished = []
        for (slot, i), answer in zip(targets, answers, strict=True):
            tree = self.live[slot]
            tree.answers[i] = answer
            tree.missing -= 1
            if tree.missing == 0:
                finished.append(slot)
        for slot in finished:
            self.advance(slot, self.live[slot].answers)
