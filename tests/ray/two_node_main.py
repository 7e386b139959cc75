"""A two-node Ray cluster on this machine (`ray.cluster_utils.Cluster`: a head with resource `head`, a
second node with resource `node2`), for tests/ray/test_two_node.py. Run in its own process, so the test
session's shared local Ray (tests/conftest.py) is left alone; the cluster is shut down on the way out.

    python tests/ray/two_node_main.py check RUNS CACHE   # the shared-storage check, passing and failing
    python tests/ray/two_node_main.py run -- ARGS...     # `python run.py ray.address=<cluster> ARGS...`

Prints one JSON line `{"head": node id, "node2": node id, ...}` on stdout (the result of the mode), and
the logs on stderr.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger("two_node")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cluster(cpus: int):
    """Head (`head`: 1) and node2 (`node2`: 4), `cpus` logical CPUs each; dashboard on 127.0.0.1 on a free
    port (Ray Train's controller needs it; the test session's own Ray may hold 8265)."""
    import ray
    from ray.cluster_utils import Cluster

    # Ray processes that look for "the" cluster on this machine (Ray Train's PlacementGroupCleaner) would
    # pick the latest one started, maybe another test session's: name ours in the environment they inherit.
    port = free_port()
    os.environ["RAY_ADDRESS"] = f"{ray.util.get_node_ip_address()}:{port}"
    head = {
        "gcs_server_port": port,
        "num_cpus": cpus,
        "resources": {"head": 1},
        "include_dashboard": True,
        "dashboard_host": "127.0.0.1",
        "dashboard_port": free_port(),
    }
    cluster = Cluster(initialize_head=True, head_node_args=head)
    cluster.add_node(num_cpus=cpus, resources={"node2": 4})
    cluster.wait_for_nodes()
    return cluster


def node_ids() -> dict[str, str]:
    import ray

    ids = {}
    for n in ray.nodes():
        if n.get("Alive"):
            ids["head" if "head" in n["Resources"] else "node2"] = n["NodeID"]
    return ids


def check(address: str, runs: str, cache: str) -> dict:
    """The check as `python run.py` meets it (loop.session.ray_session): once as it is, once with node2's
    probe told to look under another directory (a node without the shared mount)."""
    import actors.cluster
    from conf.load import ConfigError, compose
    from loop.session import ray_session

    cfg = compose([f"ray.address={address}", f"run.root={runs}", f"cache_dir={cache}"])
    with ray_session(cfg):
        ids = node_ids()
    out: dict = {**ids, "passed": True}
    real = actors.cluster.read_tokens
    blind_node = ids["node2"]

    def blind(checks):  # runs on each node (pickled by value from this script)
        import ray

        if ray.get_runtime_context().get_node_id() == blind_node:
            checks = [(k, p.replace(runs, runs + "-elsewhere"), t) for k, p, t in checks]
        return real(checks)

    actors.cluster.read_tokens = blind
    try:
        with ray_session(cfg):
            out["failed_with"] = None
    except ConfigError as e:
        out["failed_with"] = str(e)
    finally:
        actors.cluster.read_tokens = real
    return out


def run(address: str, args: list[str]) -> dict:
    """`python run.py ray.address=<cluster> ARGS` (its log on our stderr); its exit code."""
    import ray

    ray.init(address=address, log_to_driver=False)
    ids = node_ids()
    ray.shutdown()
    proc = subprocess.run([sys.executable, "run.py", f"ray.address={address}", *args], cwd=ROOT)
    return {**ids, "returncode": proc.returncode}


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    mode = argv[0]
    cluster = start_cluster(cpus=1 if mode == "check" else 2)
    try:
        if mode == "check":
            result = check(cluster.address, argv[1], argv[2])
        else:
            result = run(cluster.address, argv[2:])
    finally:
        cluster.shutdown()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
