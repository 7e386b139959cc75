"""Start or join Ray.

`init_ray(cfg.ray)` joins a cluster when `ray.address` (or the `RAY_ADDRESS` environment variable, which
`ray job submit` sets) names one; otherwise it starts a local Ray with the dashboard on
`ray.dashboard_host` (127.0.0.1 by default). Ray 2.60 turns token authentication on by default for a
local start; we keep it (a `ray job submit` to it needs `RAY_AUTH_MODE=token` in the submitting shell).

On a cluster: `node_labels()` names nodes in logs (address, short id, custom resources), and
`probe_nodes` runs a tiny zero-CPU task pinned to each node; `loop.session` uses it with
`write_token` / `read_tokens` to check that every node hosting work sees run.root and cache_dir.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


_dashboard_url = ""  # set by the init_ray call that started or joined Ray in this process


def init_ray(ray_cfg: Any, log_to_driver: bool = True) -> str:
    """Start or join Ray once per process; returns the dashboard URL ("" when there is none)."""
    import ray

    global _dashboard_url
    if ray.is_initialized():
        return _dashboard_url
    address = ray_cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        ctx = ray.init(address=address, log_to_driver=log_to_driver, configure_logging=False)
    else:
        # "local": always a new instance, even when `ray start` left a cluster on this machine (a plain
        # ray.init() would silently join the latest one); join one with ray.address=auto instead.
        ctx = ray.init(
            address="local",
            num_cpus=ray_cfg.num_cpus,
            include_dashboard=ray_cfg.include_dashboard,
            dashboard_host=ray_cfg.dashboard_host,
            log_to_driver=log_to_driver,
            configure_logging=False,
        )
    url = ctx.dashboard_url or ""
    _dashboard_url = url if not url or url.startswith("http") else f"http://{url}"
    log.info(
        "Ray %s; dashboard %s",
        f"joined at {address}" if address else "started locally",
        _dashboard_url or "off",
    )
    return _dashboard_url


def shutdown_ray() -> None:
    """Disconnect (and stop a locally started Ray); a no-op when Ray is not running."""
    import ray

    global _dashboard_url
    if ray.is_initialized():
        ray.shutdown()
    _dashboard_url = ""


# ---------------------------------------------------------------------------------------- nodes

# Resources every Ray node reports; anything else is a custom resource that names what the node is for.
_STANDARD = ("CPU", "GPU", "memory", "object_store_memory")


def node_label(node: dict[str, Any]) -> str:
    """'10.0.0.5 3f8a48c4 [gpu_pool]' (address, short node id, custom resources; `(head)` on the head)
    for one entry of `ray.nodes()`."""
    res = node.get("Resources", {})
    custom = sorted(r for r in res if r not in _STANDARD and not r.startswith(("node:", "accelerator_type:")))
    head = " (head)" if "node:__internal_head__" in res else ""
    tags = f" [{', '.join(custom)}]" if custom else ""
    return f"{node.get('NodeManagerAddress', '?')} {node['NodeID'][:8]}{tags}{head}"


def alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def node_labels() -> dict[str, str]:
    """node id -> `node_label` for the live nodes of the connected cluster."""
    return {n["NodeID"]: node_label(n) for n in alive_nodes()}


def node_id(_actor: Any = None) -> str:
    """The node this process runs on (`actor.__ray_call__.remote(node_id)` asks an actor)."""
    import ray

    return ray.get_runtime_context().get_node_id()


# ------------------------------------------------------------------------------ shared-storage probe


def write_token(directory: str, name: str, token: str) -> str:
    """Write `token` to `<directory>/<name>` from the driver (a local directory is created; a URI goes
    through pyarrow); returns the file's path or URI. OSError / pyarrow errors propagate."""
    if "://" in directory:
        from pyarrow import fs

        filesystem, inner = fs.FileSystem.from_uri(directory)
        filesystem.create_dir(inner, recursive=True)
        with filesystem.open_output_stream(f"{inner.rstrip('/')}/{name}") as f:
            f.write(token.encode())
        return f"{directory.rstrip('/')}/{name}"
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(token)
    return path


def remove_token(path: str) -> None:
    """Delete a token file `write_token` wrote (already gone is fine)."""
    try:
        if "://" in path:
            from pyarrow import fs

            filesystem, inner = fs.FileSystem.from_uri(path)
            filesystem.delete_file(inner)
        else:
            os.remove(path)
    except (OSError, FileNotFoundError):
        log.debug("token %s already gone", path)


def read_tokens(checks: list[tuple[str, str, str]]) -> list[str]:
    """Run on one node: for each (key, token file, token) "" when the file there holds the token, else why
    not. A path with '://' is read through pyarrow (train.storage_path may be s3://, gs://, ...)."""
    out = []
    for _key, path, token in checks:
        try:
            if "://" in path:
                from pyarrow import fs

                filesystem, inner = fs.FileSystem.from_uri(path)
                with filesystem.open_input_stream(inner) as f:
                    got = f.read().decode()
            else:
                with open(path, encoding="utf-8") as f:
                    got = f.read()
            out.append("" if got == token else "the file there holds another run's token")
        except Exception as e:  # any failure to read is the answer we report, per node
            out.append(f"{type(e).__name__}: {getattr(e, 'strerror', None) or e}")
    return out


def probe_nodes(
    node_ids: list[str],
    checks: list[tuple[str, str, str]],
    probe: Callable[[list[tuple[str, str, str]]], list[str]] = read_tokens,
    timeout_s: float = 60.0,
) -> dict[str, list[str]]:
    """`probe(checks)` once on each node (a zero-CPU task pinned to it, so a busy node still answers):
    node id -> one error text per check ("" = fine). A node that does not answer within `timeout_s`
    or whose task fails gets that as the error of every check."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, max_retries=0)(probe)
    refs = {
        task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote(checks): n
        for n in node_ids
    }
    ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
    out = {n: [f"no answer from the node within {timeout_s:g} s"] * len(checks) for n in node_ids}
    for ref in ready:
        try:
            out[refs[ref]] = ray.get(ref)
        except Exception as e:  # the probe task itself failed on that node (e.g. the code is not there)
            out[refs[ref]] = [f"the check task failed: {type(e).__name__}"] * len(checks)
    return out
