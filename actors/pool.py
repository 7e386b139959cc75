"""Pool: N policy replicas, M PRM replicas and W search workers on Ray, built from config.

    pool = Pool(policy_dir, prm_dir, cfg.backbone, cfg.policy, cfg.prm, cfg.pool)
    paths = pool.run_shards(shards, cfg.search)        # one shard file per Shard, in order (written here)
    pool.release()                                     # before training: frees devices and Ray resources
    pool.reload(new_policy_dir, new_prm_dir)           # after training: replicas come back on new weights
    pool.shutdown()

Actors are named `policy-<i>`, `prm-<i>`, `search-<i>` (the dashboard shows them) and take `num_cpus` /
`num_gpus` from `backbone.policy_resources`, `backbone.prm_resources`, `pool.worker_num_cpus`, and custom
Ray resources (placement on a cluster's nodes) from their `resources` / `pool.worker_resources`; once up,
the pool logs the node each actor runs on (`placement()`). Before
they are created, `actors.placement` checks that the cluster can hold them (`PlacementError` at once when
it never can; a wait with progress lines, up to `pool.placement_timeout_s`, while it is busy).
Search workers write no files: they return each shard's rows and the pool writes the shard file.
Failures are handled here, once: a replica is restarted by Ray (`pool.max_restarts`) and its in-flight
calls re-sent; a search worker that dies is replaced and its unfinished shards re-queued (`shard_retries`
counts them; a shard that fails more than `pool.max_restarts` times raises). An exception raised by the search
itself is a bug and is raised at once, never retried.

`reload` rebuilds the replicas from the new directories rather than loading in place, so a replica that
Ray restarts later comes back with the new weights too (Ray re-runs the constructor with its original
arguments), and so GPU resources are really returned to Ray between `release` and `reload`.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from actors.placement import Ask, pool_asks, wait_until_placeable
from actors.policy import PolicyActor
from actors.prm import PRMActor
from actors.router import RayBackend
from actors.search_worker import SearchWorker
from pipeline.shards import Shard, write_shard

log = logging.getLogger(__name__)

# pool.trees_in_flight=auto: batch sizes of the policy's raw throughput curve, sampled tokens per row there,
# the share of the best tokens/s that counts as the curve's knee, and policy rows a tree in flight adds to
# its worker's batch (a tree waiting on the PRM adds none, an expansion adds `search.branch`)
CURVE_ROWS = (1, 16, 64, 128, 256, 512, 1024)
CURVE_TOKENS = 8
KNEE_SHARE = 0.95
ROWS_PER_TREE = 1.0


def knee_rows(curve: Sequence[dict[str, float]], share: float = KNEE_SHARE) -> int:
    """The smallest batch (rows) of a throughput curve reaching `share` of its best speed: tokens per
    CPU-second where the points have it (on a shared machine wall-clock tokens/s also measures the other
    processes' load), else tokens/s."""
    key = "tokens_per_cpu_s" if all("tokens_per_cpu_s" in p for p in curve) else "tokens_per_s"
    best = max(p[key] for p in curve)
    return min(int(p["rows"]) for p in curve if p[key] >= share * best)


def curve_line(curve: Sequence[dict[str, float]]) -> str:
    """`1: 358, 64: 7622, ...` (rows: tokens/s)."""
    return ", ".join(f"{int(p['rows'])}: {p['tokens_per_s']:.0f}" for p in curve) + " tokens/s"


class Pool:
    worker_cls: type = SearchWorker  # the search worker class (tests put a guarded subclass here)

    def __init__(self, policy_dir: str, prm_dir: str, backbone: Any, policy: Any, prm: Any, pool: Any):
        self.backbone, self.policy_cfg, self.prm_cfg, self.cfg = backbone, policy, prm, pool
        self.policy_dir, self.prm_dir = str(policy_dir), str(prm_dir)
        self.shard_retries = 0  # shards re-queued after their worker died
        self.worker_replacements = 0
        self.policy: list[Any] = []
        self.prm: list[Any] = []
        self.workers: list[Any] = []
        self.curve: list[dict[str, float]] | None = None  # the policy's raw throughput curve (auto)
        if str(pool.trees_in_flight) != "auto" and not (
            str(pool.trees_in_flight).isdigit() and int(pool.trees_in_flight) > 0
        ):
            raise ValueError(
                f"bad value for 'pool.trees_in_flight': {pool.trees_in_flight!r}; allowed: auto or an integer >= 1"
            )
        self._build()

    @classmethod
    def from_config(cls, cfg: Any, policy_dir: str, prm_dir: str) -> Pool:
        """Build from the root config's `backbone`, `policy`, `prm` and `pool` sections."""
        return cls(policy_dir, prm_dir, cfg.backbone, cfg.policy, cfg.prm, cfg.pool)

    def asks(self) -> list[Ask]:
        """What this pool asks of Ray (actors.placement)."""
        return pool_asks(self.backbone, self.policy_cfg, self.prm_cfg, self.cfg)

    @property
    def model_dirs(self) -> tuple[str, str]:
        """(policy_dir, prm_dir) the replicas serve."""
        return self.policy_dir, self.prm_dir

    # ------------------------------------------------------------------------------ lifecycle

    def _build(self) -> None:
        import ray

        # Before any actor exists: a pool that can never fit fails at once (one line naming the keys); one
        # that could fit later waits here with progress lines, up to pool.placement_timeout_s.
        wait_until_placeable(self.asks(), timeout_s=float(self.cfg.placement_timeout_s))
        restarts = int(self.cfg.max_restarts)
        opts = {"max_restarts": restarts, "max_task_retries": restarts}
        res = self.backbone.policy_resources
        policy_cls = ray.remote(PolicyActor)
        self.policy = [
            policy_cls.options(name=f"policy-{i}", **_resources(res), **opts).remote(
                self.policy_dir, self.backbone, self.policy_cfg
            )
            for i in range(int(self.policy_cfg.replicas))
        ]
        res = self.backbone.prm_resources
        prm_cls = ray.remote(PRMActor)
        self.prm = [
            prm_cls.options(name=f"prm-{i}", **_resources(res), **opts).remote(
                self.prm_dir, self.backbone, self.prm_cfg
            )
            for i in range(int(self.prm_cfg.replicas))
        ]
        self.workers = [self._new_worker(i) for i in range(int(self.cfg.search_workers))]
        ray.get([a.info.remote() for a in self.policy + self.prm] + [w.ping.remote() for w in self.workers])
        log.info(
            "pool up: %d policy, %d PRM replicas, %d search workers; %s",
            len(self.policy),
            len(self.prm),
            len(self.workers),
            ", ".join(f"{name} on {where}" for name, where in self.placement().items()),
        )

    def _new_worker(self, i: int) -> Any:
        import ray

        # max_concurrency 2: `progress()` answers while `search_shards` runs; failures are handled by the pool.
        cls = ray.remote(self.worker_cls).options(
            name=f"search-{i}",
            num_cpus=self.cfg.worker_num_cpus,
            resources=dict(self.cfg.worker_resources),
            max_concurrency=2,
            max_restarts=0,
        )
        backend = RayBackend(self.policy, self.prm, offset=i)
        fallbacks = list(self.backbone.answer_fallbacks)
        trees = self.cfg.trees_in_flight  # a default only: run_shards passes every call its own count
        trees = 1 if str(trees) == "auto" else int(trees)
        return cls.remote(backend, trees, self.backbone.answer_prefix, i, fallbacks)

    def release(self) -> None:
        """Stop every actor: model memory, devices and Ray resources are free for training."""
        _kill_all(self.workers + self.policy + self.prm)
        self.policy, self.prm, self.workers = [], [], []

    def reload(self, policy_dir: str | None = None, prm_dir: str | None = None) -> None:
        """Serve new weights (either or both): replicas and workers are rebuilt on the new directories."""
        self.release()
        self.policy_dir = str(policy_dir or self.policy_dir)
        self.prm_dir = str(prm_dir or self.prm_dir)
        self._build()

    def shutdown(self) -> None:
        self.release()

    # ------------------------------------------------------------------------------ search

    def run_shards(
        self,
        shards: Sequence[Shard],
        search_cfg: Any,
        progress: Callable[[dict[str, Any]], None] | None = None,
        progress_every: float = 30.0,
        on_shard: Callable[[Shard], None] | None = None,
        shards_per_call: int = 0,
        trees_in_flight: int | None = None,
    ) -> list[str]:
        """Run every shard on the search workers; returns the shard files in `shards` order.

        Each worker gets one streaming `search_shards` call over its share of the shards (every W-th
        shard; `shards_per_call=k` > 0 instead hands out k shards per call, a worker taking the next
        ones as its call ends: k=1 is the old one-shard-at-a-time pool), with up to `trees_in_flight()`
        trees of them in flight at once. The workers return each shard's rows through Ray's object store
        as the shard's last tree ends, and this process (the driver) writes the file atomically at once,
        so the workers need no access to the run directory and a killed run keeps every shard finished
        so far. `progress(self.progress())` is called every `progress_every` seconds; `on_shard(shard)`
        once per shard as its file is written; `trees_in_flight` overrides the pool's setting."""
        import ray

        trees = trees_in_flight or self.trees_in_flight([q.content for s in shards for q in s.questions[:1]])
        w_count = len(self.workers)
        if shards_per_call > 0:
            groups = [list(shards[i : i + shards_per_call]) for i in range(0, len(shards), shards_per_call)]
        else:
            groups = [list(shards[w::w_count]) for w in range(w_count) if shards[w::w_count]]
        pending, free = deque(groups), deque(range(w_count))
        failures: dict[int, int] = {}
        running: dict[Any, tuple[int, dict[int, Shard]]] = {}  # call -> (worker, its unfinished shards)
        paths: dict[int, str] = {}
        last = time.monotonic()
        while pending or running:
            while pending and free:
                w, group = free.popleft(), pending.popleft()
                call = self.workers[w].search_shards.remote(group, search_cfg, trees)
                running[call] = (w, {s.shard_id: s for s in group})
            ready, _ = ray.wait(list(running), num_returns=1, timeout=progress_every)
            for call in ready:
                w, left = running[call]
                shard = self._collect(call, w, left, paths, failures)
                if shard is None:  # the call ended (all its shards written) or its worker died
                    del running[call]
                    if left:
                        pending.appendleft(list(left.values()))
                    free.append(w)
                elif on_shard is not None:
                    on_shard(shard)
            if progress and time.monotonic() - last >= progress_every:
                progress(self.progress())
                last = time.monotonic()
        return [paths[s.shard_id] for s in shards]

    def trees_in_flight(self, questions: Sequence[str]) -> int:
        """Trees each search worker keeps in flight: `pool.trees_in_flight`, or for `auto` enough that
        one worker's policy batch reaches the knee of the policy's measured raw throughput curve
        (`knee_rows`; measured once per pool on policy-0 with `questions`' prompts, kept across reloads;
        an engine without a curve: `policy.max_batch_size` rows)."""
        import ray

        setting = self.cfg.trees_in_flight
        if str(setting) != "auto":
            return int(setting)
        if self.curve is None:
            self.curve = ray.get(
                self.policy[0].throughput_curve.remote(
                    list(questions[:64]) or ["1"], CURVE_ROWS, CURVE_TOKENS
                )
            )
            log.info("policy throughput curve: %s", curve_line(self.curve))
        rows = knee_rows(self.curve) if self.curve else int(self.policy_cfg.max_batch_size)
        trees = max(1, math.ceil(rows / ROWS_PER_TREE))
        log.info("pool.trees_in_flight=auto: %d trees per worker (policy batches of ~%d rows)", trees, rows)
        return trees

    def _collect(
        self, call: Any, w: int, left: dict[int, Shard], paths: dict[int, str], failures: dict[int, int]
    ) -> Shard | None:
        """Write the next finished shard of a streaming call and return it; None when the call has ended
        or its worker died (then `left` keeps the shards to run again, each counted as a failure)."""
        import ray
        from ray.exceptions import RayActorError

        try:
            result = ray.get(next(call))
        except StopIteration:
            return None
        except RayActorError as e:
            self.shard_retries += len(left)
            ids = sorted(left)
            log.warning("search-%d died on shards %s (%s); re-queued", w, ids, type(e).__name__)
            for i in ids:
                failures[i] = failures.get(i, 0) + 1
                if failures[i] > int(self.cfg.max_restarts):
                    raise RuntimeError(f"shard {i} failed {failures[i]} times") from e
            self._replace_worker(w)
            return None
        shard = left.pop(result["shard_id"])
        paths[shard.shard_id] = write_shard(shard, result["rows"])
        return shard

    def _replace_worker(self, w: int) -> None:
        _kill_all([self.workers[w]])
        self.workers[w] = self._new_worker(w)
        self.worker_replacements += 1

    def progress(self) -> dict[str, Any]:
        """Counters summed over the workers (trees, expansions, tokens, ...) plus the pool's retries."""
        import ray
        from ray.exceptions import RayActorError

        refs = [w.progress.remote() for w in self.workers]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=10)
        per_worker = []
        for ref in ready:  # already finished: these gets do not block
            try:
                per_worker.append(ray.get(ref))
            except RayActorError:  # a worker that just died reports nothing; the pool replaces it
                pass
        total: dict[str, Any] = {
            "shard_retries": self.shard_retries,
            "worker_replacements": self.worker_replacements,
        }
        for p in per_worker:
            for k, v in p.items():
                if isinstance(v, int | float) and k != "worker_id":
                    total[k] = total.get(k, 0) + v
        return total

    def replica_info(self) -> dict[str, dict[str, Any]]:
        """Per replica: model dir, device, pid and its counters (calls, rows, busy seconds)."""
        import ray

        names = [f"policy-{i}" for i in range(len(self.policy))] + [f"prm-{i}" for i in range(len(self.prm))]
        return dict(zip(names, ray.get([a.info.remote() for a in self.policy + self.prm]), strict=True))

    def placement(self) -> dict[str, str]:
        """Per actor (policy-<i>, prm-<i>, search-<i>): the node it runs on, as `actors.cluster.node_label`
        writes it (address, short node id, custom resources)."""
        import ray

        from actors.cluster import node_id, node_labels

        actors = {f"policy-{i}": a for i, a in enumerate(self.policy)}
        actors.update({f"prm-{i}": a for i, a in enumerate(self.prm)})
        actors.update({f"search-{i}": w for i, w in enumerate(self.workers)})
        # __ray_call__ runs a function inside the actor: no method needed on the actor classes.
        ids = ray.get([a.__ray_call__.remote(node_id) for a in actors.values()])
        labels = node_labels()
        return {name: labels.get(node, node[:8]) for name, node in zip(actors, ids, strict=True)}

    def restarts(self) -> dict[str, int]:
        """Times Ray restarted each model replica (from the state API; needs the dashboard)."""
        import ray
        from ray.util.state import list_actors

        address = ray.get_runtime_context().gcs_address  # this cluster, not another one on the machine
        out = {}
        for name in [f"policy-{i}" for i in range(len(self.policy))] + [
            f"prm-{i}" for i in range(len(self.prm))
        ]:
            live = [
                a
                for a in list_actors(address=address, filters=[("name", "=", name)], detail=True)
                if a.state != "DEAD"
            ]
            out[name] = int(live[0].num_restarts) if live else 0
        return out

    # ------------------------------------------------------------------------------ plain batched calls

    def greedy(self, questions: Sequence[str], max_steps: int, seed: int = 0, chunk: int = 256) -> list[Any]:
        """`PolicyActor.greedy_solve` over chunks of `questions`: one SolutionSample each, in order."""
        return _map(self.policy, "greedy_solve", questions, chunk, {"max_steps": max_steps, "seed": seed})

    def sample(
        self,
        questions: Sequence[str],
        n: int,
        temperature: float,
        seed: int = 0,
        max_steps: int = 0,
        chunk: int = 32,
    ) -> list[list[Any]]:
        """`PolicyActor.sample_solutions`: `n` SolutionSamples per question, in question order."""
        kwargs = {"n": n, "temperature": temperature, "seed": seed, "max_steps": max_steps}
        return _map(self.policy, "sample_solutions", questions, chunk, kwargs)

    def score(self, requests: Sequence[Any], chunk: int = 256) -> list[float]:
        """`PRMActor.score` over chunks of Score requests: one value in [0, 1] each, in order."""
        return _map(self.prm, "score", requests, chunk, {})


def _resources(res: Any) -> dict[str, Any]:
    """Ray actor options of a `backbone.*_resources` section."""
    return {"num_cpus": res.num_cpus, "num_gpus": res.num_gpus, "resources": dict(res.resources)}


def _map(
    replicas: list[Any], method: str, items: Sequence[Any], chunk: int, kwargs: dict[str, Any]
) -> list[Any]:
    """`replica.<method>(chunk, **kwargs)` over chunks of `items`, spread over the replicas (least-loaded
    first, at most 2 chunks queued per replica); results in item order."""
    import ray

    chunks = deque((i, list(items[i : i + chunk])) for i in range(0, len(items), max(1, chunk)))
    load = [0] * len(replicas)
    running: dict[Any, tuple[int, int]] = {}
    out: dict[int, list[Any]] = {}
    while chunks or running:
        while chunks and min(load) < 2:
            r = load.index(min(load))
            start, part = chunks.popleft()
            running[getattr(replicas[r], method).remote(part, **kwargs)] = (start, r)
            load[r] += 1
        [ref], _ = ray.wait(list(running), num_returns=1)
        start, r = running.pop(ref)
        load[r] -= 1
        out[start] = ray.get(ref)
    return [x for start in sorted(out) for x in out[start]]


def _kill_all(handles: list[Any]) -> None:
    """Kill actors for good and wait until Ray reports each dead (so their names can be reused)."""
    import ray
    from ray.exceptions import RayActorError

    for h in handles:
        ray.kill(h, no_restart=True)
    for h in handles:
        try:
            ray.get(h.__ray_terminate__.options(max_task_retries=0).remote())
        except RayActorError:
            pass
