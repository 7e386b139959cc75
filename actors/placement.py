"""Will the pool fit on this Ray cluster? Checked before any actor is created, so a pool that can never
be placed fails at once with one line naming the config keys, instead of waiting silently in `ray.get`.

    asks = pool_asks(cfg.backbone, cfg.policy, cfg.prm, cfg.pool)
    msg = never_fits(asks, totals, nodes)          # str (never placeable) or None; pure, no Ray
    wait_until_placeable(asks, timeout_s=cfg.pool.placement_timeout_s)   # Ray: the probe and the wait

`never_fits` compares what the pool asks for (policy replicas x backbone.policy_resources, PRM replicas
x backbone.prm_resources, pool.search_workers x pool.worker_num_cpus; CPU, GPU and the custom resources
of `*.resources` / `pool.worker_resources`, which place actors on the nodes that have them) with the
cluster's total resources, and checks that every single actor fits on some node.

Assumption: the cluster is FIXED — a locally started Ray, or a joined cluster whose nodes are all up.
Its total is what it will ever have, so "the total is too small" means "never". An autoscaling cluster
that could add nodes later is not detected; start it with enough minimum workers.

When the total is enough but the cluster is busy (another job holds resources), `wait_until_placeable`
reserves the pool's bundles in a probe placement group and waits for it with a progress line every
~10 s saying what is pending, then frees it (the actors are created right after). After
`pool.placement_timeout_s` it raises `PlacementError` with the same kind of line.

Training jobs (Ray Train: `num_workers` x `cpus_per_worker`, one GPU each with `use_gpu`) can use the
same arithmetic through `train_asks` + `never_fits`; trainers may not import actors (docs/ARCHITECTURE.md),
so that check belongs to the loop, before it launches the job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

EPS = 1e-9


class PlacementError(RuntimeError):
    """The pool cannot be placed on the Ray cluster (never, or not within the timeout); one line."""


@dataclass(frozen=True)
class Ask:
    """`count` actors of one kind, each asking `cpus` CPUs and `gpus` GPUs; the keys that set them."""

    label: str  # "policy", "prm", "search workers", "SFT workers"
    count: int
    cpus: float
    gpus: float
    cpu_key: str
    gpu_key: str | None
    count_key: str
    custom: tuple[tuple[str, float], ...] = ()  # custom Ray resources per actor: (name, amount)
    custom_key: str | None = None  # the config key holding `custom`, e.g. "pool.worker_resources"

    def per(self, resource: str) -> float:
        if resource in ("CPU", "GPU"):
            return self.cpus if resource == "CPU" else self.gpus
        return dict(self.custom).get(resource, 0.0)

    def key(self, resource: str) -> str | None:
        if resource in ("CPU", "GPU"):
            return self.cpu_key if resource == "CPU" else self.gpu_key
        return f"{self.custom_key}.{resource}" if self.custom_key else None

    def resources(self) -> dict[str, float]:
        """What one actor asks of Ray: every resource with a positive amount."""
        every = {"CPU": self.cpus, "GPU": self.gpus, **dict(self.custom)}
        return {r: float(v) for r, v in every.items() if v > 0}


def _custom(resources: Any) -> tuple[tuple[str, float], ...]:
    return tuple(sorted((str(k), float(v)) for k, v in dict(resources or {}).items()))


def resource_names(asks: Sequence[Ask]) -> list[str]:
    """CPU, GPU, then the custom resources the asks use (sorted)."""
    return ["CPU", "GPU", *sorted({r for a in asks for r, _ in a.custom} - {"CPU", "GPU"})]


def _plural(resource: str) -> str:
    return {"CPU": "CPUs", "GPU": "GPUs"}.get(resource, f"of resource '{resource}'")


def pool_asks(backbone: Any, policy: Any, prm: Any, pool: Any) -> list[Ask]:
    """What the search pool asks for, from the `backbone`, `policy`, `prm` and `pool` config sections."""
    pr, vr = backbone.policy_resources, backbone.prm_resources
    return [
        Ask(
            "policy",
            int(policy.replicas),
            float(pr.num_cpus),
            float(pr.num_gpus),
            "backbone.policy_resources.num_cpus",
            "backbone.policy_resources.num_gpus",
            "policy.replicas",
            _custom(pr.resources),
            "backbone.policy_resources.resources",
        ),
        Ask(
            "prm",
            int(prm.replicas),
            float(vr.num_cpus),
            float(vr.num_gpus),
            "backbone.prm_resources.num_cpus",
            "backbone.prm_resources.num_gpus",
            "prm.replicas",
            _custom(vr.resources),
            "backbone.prm_resources.resources",
        ),
        Ask(
            "search workers",
            int(pool.search_workers),
            float(pool.worker_num_cpus),
            0.0,
            "pool.worker_num_cpus",
            None,
            "pool.search_workers",
            _custom(pool.worker_resources),
            "pool.worker_resources",
        ),
    ]


def train_asks(
    label: str,
    num_workers: int,
    cpus_per_worker: float,
    use_gpu: bool,
    prefix: str,
    worker_resources: Any = None,
) -> list[Ask]:
    """What a Ray Train job asks for (`prefix`: e.g. "backbone.sft"): one GPU per worker with use_gpu,
    plus `train.worker_resources` (custom resources per worker)."""
    return [
        Ask(
            label,
            int(num_workers),
            float(cpus_per_worker),
            1.0 if use_gpu else 0.0,
            f"{prefix}.cpus_per_worker",
            f"{prefix}.use_gpu",
            f"{prefix}.num_workers",
            _custom(worker_resources),
            "train.worker_resources",
        )
    ]


def needed(asks: Sequence[Ask], resource: str) -> float:
    return sum(a.count * a.per(resource) for a in asks)


def _num(x: float) -> str:
    return f"{x:g}"


def describe(asks: Sequence[Ask], resource: str) -> str:
    """'2.5 CPUs (policy 1 x 1 [backbone.policy_resources.num_cpus], ...)' for the asks using `resource`."""
    parts = [
        f"{a.label} {a.count} x {_num(a.per(resource))} [{a.key(resource)}]"
        for a in asks
        if a.count > 0 and a.per(resource) > 0
    ]
    return f"{_num(needed(asks, resource))} {_plural(resource)} ({', '.join(parts)})"


def _keys(asks: Sequence[Ask], resource: str) -> list[str]:
    out = []
    for a in asks:
        if a.count > 0 and a.per(resource) > 0:
            out += [k for k in (a.key(resource), a.count_key) if k and k not in out]
    return out


def _fits(one: dict[str, float], node: dict[str, float]) -> bool:
    return all(v <= float(node.get(r, 0.0)) + EPS for r, v in one.items())


def _node_problems(asks: Sequence[Ask], nodes: Sequence[dict[str, float]]) -> tuple[list[str], list[str]]:
    """(problems, keys) for actors that no single node can hold although the cluster's total could."""
    problems: list[str] = []
    keys: list[str] = []
    for a in (a for a in asks if a.count > 0 and not any(_fits(a.resources(), n) for n in nodes)):
        one = a.resources()
        short = [r for r in one if one[r] > max(float(n.get(r, 0.0)) for n in nodes) + EPS]
        if short:  # one resource alone is more than any node has
            r = short[0]
            biggest = max(float(n.get(r, 0.0)) for n in nodes)
            problems.append(
                f"one {a.label} actor needs {_num(one[r])} {_plural(r)} [{a.key(r)}] "
                f"but the largest Ray node has {_num(biggest)}"
            )
            keys += [k for k in (a.key(r),) if k and k not in keys]
        else:  # each resource exists somewhere, never all on one node
            what = ", ".join(f"{r} {_num(v)}" for r, v in one.items())
            problems.append(f"one {a.label} actor needs {what} on one node but no Ray node has all of it")
            keys += [k for r in one if (k := a.key(r)) and k not in keys]
    return problems, keys


def can_host(asks: Sequence[Ask], node: dict[str, float]) -> bool:
    """Could Ray place at least one of these actors on a node with these total resources?"""
    return any(a.count > 0 and _fits(a.resources(), node) for a in asks)


def never_fits(
    asks: Sequence[Ask], totals: dict[str, float], nodes: Sequence[dict[str, float]] | None = None
) -> str | None:
    """One line saying why `asks` can never be placed on a fixed cluster with `totals` (and `nodes`, the
    per-node resources: an actor must fit on one node), or None when it can."""
    problems, keys, missing = [], [], []
    for resource in resource_names(asks):
        need, have = needed(asks, resource), float(totals.get(resource, 0.0))
        if need > have + EPS:
            problems.append(f"{describe(asks, resource)} but the Ray cluster has {_num(have)}")
            keys += [k for k in _keys(asks, resource) if k not in keys]
            missing += [resource] if resource not in ("CPU", "GPU") else []
    if not problems and nodes:
        problems, keys = _node_problems(asks, nodes)
    if not problems:
        return None
    msg = f"the pool needs {' and '.join(problems)}; lower {', '.join(keys)}"
    if missing:
        spec = ", ".join(f'"{r}": N' for r in missing)
        msg += f" (or start the nodes meant for them with ray start --resources='{{{spec}}}')"
    if needed(asks, "GPU") > EPS and float(totals.get("GPU", 0.0)) < EPS:
        msg += (
            " (this backbone is sized for GPU nodes: join a Ray cluster with GPUs, ray.address=auto, or set "
            "the num_gpus keys to 0 and num_cpus to what this machine has)"
        )
    return msg


def shortfall(asks: Sequence[Ask], available: dict[str, float]) -> str:
    """What is pending right now: 'CPU 2.5 needed, 1 available; ...' (only the short resources)."""
    out = []
    for resource in resource_names(asks):
        need = needed(asks, resource)
        if need > EPS:
            have = float(available.get(resource, 0.0))
            if need > have + EPS:
                out.append(f"{resource} {_num(need)} needed, {_num(have)} free")
    return "; ".join(out) or "resources are free but not yet reserved"


def bundles(asks: Sequence[Ask]) -> list[dict[str, float]]:
    """One placement-group bundle per actor (actors that ask for nothing need no bundle)."""
    out = []
    for a in asks:
        b = a.resources()
        out += [dict(b) for _ in range(a.count)] if b else []
    return out


# ---------------------------------------------------------------------------------------- with Ray


def cluster_resources() -> tuple[dict[str, float], list[dict[str, float]]]:
    """(total resources, per-node resources of the live nodes) of the connected Ray cluster."""
    import ray

    nodes = [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]
    return dict(ray.cluster_resources()), nodes


def check_feasible(asks: Sequence[Ask]) -> None:
    """Raise PlacementError at once when the pool can never be placed (fixed cluster, see above)."""
    totals, nodes = cluster_resources()
    msg = never_fits(asks, totals, nodes)
    if msg:
        raise PlacementError(msg)


def wait_until_placeable(asks: Sequence[Ask], timeout_s: float, log_every: float = 10.0) -> float:
    """Check feasibility, then wait (progress line every `log_every` s) until the cluster can hold every
    actor at once; returns the seconds waited. Raises PlacementError when it never fits or on timeout."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    check_feasible(asks)
    wanted = bundles(asks)
    if not wanted:
        return 0.0
    t0 = time.monotonic()
    pg = placement_group(wanted, strategy="PACK", name="restmcts-pool-probe")
    try:
        while True:
            waited = time.monotonic() - t0
            step = max(0.0, min(log_every, float(timeout_s) - waited))
            ready, _ = ray.wait([pg.ready()], timeout=step)
            if ready:
                if waited >= log_every:
                    log.info("pool placed after waiting %.0f s for Ray resources", waited)
                return time.monotonic() - t0
            waited = time.monotonic() - t0
            pending = shortfall(asks, ray.available_resources())
            if waited >= float(timeout_s):
                raise PlacementError(
                    f"the pool was not placed within pool.placement_timeout_s={_num(float(timeout_s))} s: "
                    f"it needs {describe(asks, 'CPU')}"
                    + (f" and {describe(asks, 'GPU')}" if needed(asks, "GPU") > EPS else "")
                    + f"; pending: {pending}; free resources or lower {', '.join(_keys(asks, 'CPU'))}"
                )
            log.info(
                "pool waits for Ray resources (%.0f of %.0f s): %d actors, %s",
                waited,
                float(timeout_s),
                len(wanted),
                pending,
            )
    finally:
        remove_placement_group(pg)
