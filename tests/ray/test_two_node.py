"""Two Ray nodes on one machine (`ray.cluster_utils.Cluster`, started in a child process by
tests/ray/two_node_main.py, so this session's shared local Ray is untouched):

- the shared-storage check at start passes on the two nodes, and names node2 in one line when node2's
  probe is told to look elsewhere (a node without the shared mount), before any actor exists (~20 s);
- (slow) one iteration of the tiny loop through `python run.py ray.address=<cluster>`, with the policy
  replica, the search worker and the SFT job's Ray Train worker placed on node2 by custom resources,
  the PRM replica on the head; the run log names the node of every actor and training worker, and Ray
  Train's state lands under `train.storage_path`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def two_nodes(args: list[str], timeout: float) -> tuple[dict, str]:
    """Run two_node_main.py; (its JSON result, its stderr). The child and the Ray processes it started
    are killed as a group if it runs past `timeout`."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "two_node_main.py"), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"two-node run took over {timeout} s; stderr tail:\n{err[-3000:]}")
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1]), err


@pytest.mark.ray
def test_shared_storage_check_on_two_nodes(tmp_path):
    runs, cache = str(tmp_path / "runs"), str(tmp_path / "cache")
    result, err = two_nodes(["check", runs, cache], timeout=180)
    assert result["passed"] and result["head"] != result["node2"]
    assert "shared storage: 2 of 2 nodes read run.root and cache_dir" in err
    msg = result["failed_with"]
    assert msg and "\n" not in msg
    node2 = result["node2"][:8]
    assert re.match(f"node \\S+ {node2} \\[node2\\] cannot read run.root=", msg), msg
    assert f"run.root={runs} (token file: FileNotFoundError" in msg
    assert "mount one shared filesystem" in msg and "docs/CLUSTER.md" in msg
    assert not os.listdir(runs) and not os.listdir(cache)  # the token files were removed


TINY = [
    "iteration=1",
    "run.name=two",
    "task.train_size=8",
    "task.heldout_size=4",
    "task.warm_size=128",
    "task.dv0_size=8",
    "backbone.tiny_hidden=64",
    "backbone.tiny_layers=2",
    "backbone.tiny_heads=2",
    "backbone.tiny_intermediate=128",
    "backbone.warm_start.max_steps=3",
    "backbone.initial_prm.max_steps=3",
    "backbone.warm_start.compile=false",  # compiling costs more than these 3-step jobs
    "backbone.initial_prm.compile=false",
    "search.iteration_limit=3",
    "search.branch=2",
    "eval.search.iteration_limit=2",
    "eval.methods=[cot]",
    "pool.shard_size=4",
    "pool.search_workers=1",
    # placement: policy replica, search worker and the SFT worker on node2; the PRM replica on the head
    "backbone.policy_resources.resources={node2: 1}",
    "backbone.prm_resources.resources={head: 0.5}",
    "pool.worker_resources={node2: 1}",
    "train.worker_resources={node2: 1}",
    "backbone.sft.num_workers=1",
    "backbone.sft.max_steps=2",
    # the barely trained policy finds no correct trace: keep every depth-2 leaf, so the SFT job runs
    "search.max_depth=2",
    "selection.sft_filter=authors",
    "selection.authors_min_value=0",
    "selection.authors_min_chars=0",
    "backbone.prm_train.num_workers=0",
    "backbone.prm_train.max_steps=2",
]


@pytest.mark.slow
def test_one_iteration_on_two_nodes_with_placement(tmp_path):
    runs, store = tmp_path / "runs", tmp_path / "store"
    args = [
        f"run.root={runs}",
        f"cache_dir={tmp_path / 'cache'}",
        f"train.storage_path=file://{store}",
        *TINY,
    ]
    result, err = two_nodes(["run", "--", *args], timeout=900)
    assert result["returncode"] == 0, err[-3000:]
    head, node2 = result["head"][:8], result["node2"][:8]
    assert "shared storage: 2 of 2 nodes read run.root and cache_dir" in err
    # every pool build (round-0 eval, search, round-1 eval) logs where each actor runs
    builds = re.findall(r"pool up: .*", err)
    assert len(builds) >= 2, err[-3000:]
    for line in builds:
        assert re.search(f"policy-0 on \\S+ {node2} \\[node2\\]", line), line
        assert re.search(f"search-0 on \\S+ {node2} \\[node2\\]", line), line
        assert re.search(f"prm-0 on \\S+ {head} \\[head\\] \\(head\\)", line), line
    # the SFT job's one Ray Train worker ran on node2, with the node2 resource it asked for
    sft = re.findall(r"training job sft-round-1 workers: (.*)", err)
    assert sft and re.fullmatch(f"rank 0 on \\S+ {node2} \\(CPU 1, node2 1\\)", sft[0]), sft
    state = json.loads((runs / "two" / "state.json").read_text())
    assert "rank 0 on" in json.dumps(state)  # the phase info keeps it too
    assert (store / "two" / "ray_train" / "sft-round-1" / ".validate_storage_marker").is_file()
