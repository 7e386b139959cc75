"""RayBackend: a search worker's view of the model replicas (least-loaded routing, completion order).

Each search worker holds its own RayBackend (built by the pool from the replicas' handles). A batch goes
to the replica with the fewest of this worker's batches in flight (ties rotate by worker id, so workers
start on different replicas); answers are consumed with `ray.wait` in completion order. A replica that
dies is restarted by Ray (`max_restarts`) and the calls it had in flight are re-sent by Ray
(`max_task_retries`): the worker sees a slower answer, not an error. Only a replica out of restarts
surfaces as an error, which fails the shard and lets the pool re-queue it.
"""

from __future__ import annotations

from typing import Any

GROUP_OF = {"propose": "policy", "critique": "policy", "score": "prm"}


class RayBackend:
    def __init__(self, policy: list[Any], prm: list[Any], offset: int = 0):
        self.replicas = {"policy": list(policy), "prm": list(prm)}
        self.load = {g: [0] * len(h) for g, h in self.replicas.items()}
        self.offset = offset
        self.in_flight: dict[Any, tuple[str, int]] = {}

    def capacity(self, kind: str) -> int:
        """Batches of one kind this worker keeps in flight: one per replica of its group."""
        return len(self.replicas[GROUP_OF[kind]])

    def submit(self, kind: str, batch: list[Any]) -> Any:
        group = GROUP_OF[kind]
        load = self.load[group]
        n = len(load)
        idx = min(((i + self.offset) % n for i in range(n)), key=lambda i: load[i])
        ref = getattr(self.replicas[group][idx], kind).remote(batch)
        load[idx] += 1
        self.in_flight[ref] = (group, idx)
        return ref

    def wait(self) -> tuple[Any, list[Any]]:
        """The next finished batch, whichever it is: (ticket, answers)."""
        import ray

        [ref], _ = ray.wait(list(self.in_flight), num_returns=1)
        group, idx = self.in_flight.pop(ref)
        self.load[group][idx] -= 1
        return ref, ray.get(ref)
