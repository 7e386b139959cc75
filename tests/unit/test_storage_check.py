"""Cluster keys and the shared-storage check at start (loop/session.py, actors/cluster.py), without Ray:
bad keys fail before Ray starts with one line; the token files round-trip on a local path and a file://
URI; the check on a simulated two-node cluster names the node that cannot read run.root."""

from __future__ import annotations

import os

import pytest

from conf.load import ConfigError, compose
from loop import session
from trainers.job import RayTrainSettings, ray_train_settings, ray_train_storage


@pytest.mark.parametrize(
    ("arg", "words"),
    [
        (
            "train.storage_path=ftp://host/x",
            ["train.storage_path=ftp://host/x", "unknown filesystem scheme 'ftp'"],
        ),
        ("pool.worker_resources={CPU: 1}", ["pool.worker_resources.CPU", "num_cpus/num_gpus"]),
        ("train.worker_resources={trainer: -1}", ["train.worker_resources.trainer=-1.0", ">= 0"]),
    ],
)
def test_bad_cluster_keys_fail_with_one_line(arg, words):
    with pytest.raises(ConfigError) as e:
        session.check_cluster_keys(compose([arg]))
    assert all(w in str(e.value) for w in words) and "\n" not in str(e.value)


def test_good_cluster_keys_pass():
    for arg in ("train.storage_path=s3://bucket/restmcts", "train.storage_path=/mnt/shared/ray", "seed=0"):
        session.check_cluster_keys(compose([arg, "backbone.policy_resources.resources={gpu_pool: 1}"]))


def test_storage_path_mirrors_the_job_dir_under_run_root(tmp_path):
    job_dir = str(tmp_path / "runs" / "default" / "ray_train")
    assert ray_train_storage(job_dir, RayTrainSettings()) == job_dir  # default: under run.root
    uri = RayTrainSettings(storage_path="s3://bucket/rm/", run_root=str(tmp_path / "runs"))
    assert ray_train_storage(job_dir, uri) == "s3://bucket/rm/default/ray_train"
    outside = RayTrainSettings(storage_path="/mnt/ray", run_root=str(tmp_path / "elsewhere"))
    assert ray_train_storage(job_dir, outside) == "/mnt/ray/ray_train"
    # the session's settings: a relative local storage_path is made absolute, a URI kept
    cfg = compose(
        [f"run.root={tmp_path / 'runs'}", "train.storage_path=rel/ray", "train.worker_resources={t: 1}"]
    )
    with ray_train_settings(cfg.train, cfg.run.root) as s:
        assert s.storage_path == os.path.abspath("rel/ray") and s.worker_resources == {"t": 1.0}
        assert ray_train_storage(job_dir) == os.path.abspath("rel/ray") + "/default/ray_train"
    assert ray_train_storage(job_dir) == job_dir  # restored after the block


@pytest.mark.parametrize("uri", [False, True])
def test_tokens_round_trip(tmp_path, uri):
    from actors.cluster import read_tokens, remove_token, write_token

    directory = f"file://{tmp_path}/store" if uri else str(tmp_path / "store")
    path = write_token(directory, ".tok", "abc")
    assert path == f"{directory}/.tok" if uri else path == os.path.join(directory, ".tok")
    wrong = f"{directory}/missing" if uri else os.path.join(directory, "missing")
    got = read_tokens([("run.root", path, "abc"), ("run.root", path, "xyz"), ("cache_dir", wrong, "abc")])
    assert got[0] == "" and "another run's token" in got[1] and "FileNotFoundError" in got[2]
    remove_token(path)
    assert not os.path.exists(tmp_path / "store" / ".tok")


def fake_cluster(monkeypatch, tmp_path, blind: str | None):
    """Two nodes (head with 'head', n2 with 'node2'); the probe runs here, and on node `blind` it is told
    to look under another directory, as a node without the shared mount would."""
    import actors.cluster as cluster

    nodes = [
        {
            "NodeID": "a" * 40,
            "Alive": True,
            "NodeManagerAddress": "10.0.0.1",
            "Resources": {"CPU": 1, "head": 1},
        },
        {
            "NodeID": "b" * 40,
            "Alive": True,
            "NodeManagerAddress": "10.0.0.2",
            "Resources": {"CPU": 1, "node2": 1},
        },
    ]
    monkeypatch.setattr(cluster, "alive_nodes", lambda: nodes)
    asked: list[str] = []

    def probe_nodes(node_ids, checks, probe, timeout_s=60.0):
        asked.extend(node_ids)
        out = {}
        for n in node_ids:
            moved = [(k, p.replace(str(tmp_path), str(tmp_path / "elsewhere")), t) for k, p, t in checks]
            out[n] = probe(moved if n == blind else checks)
        return out

    monkeypatch.setattr(cluster, "probe_nodes", probe_nodes)
    return asked


def test_simulated_node_without_the_shared_mount_is_named(monkeypatch, tmp_path):
    asked = fake_cluster(monkeypatch, tmp_path, blind="b" * 40)
    cfg = compose([f"run.root={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}"])
    with pytest.raises(ConfigError) as e:
        session.check_shared_storage(cfg)
    msg = str(e.value)
    assert msg.startswith(f"node 10.0.0.2 bbbbbbbb [node2] cannot read run.root={tmp_path / 'runs'} ")
    assert "FileNotFoundError" in msg and "shared filesystem" in msg and "\n" not in msg
    assert asked == ["a" * 40, "b" * 40]
    assert not list((tmp_path / "runs").iterdir()) and not list((tmp_path / "cache").iterdir())  # tokens gone


def test_simulated_cluster_with_shared_storage_passes(monkeypatch, tmp_path):
    asked = fake_cluster(monkeypatch, tmp_path, blind=None)
    cfg = compose([f"run.root={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}"])
    session.check_shared_storage(cfg)
    assert asked == ["a" * 40, "b" * 40]


def test_only_nodes_that_can_host_work_are_probed(monkeypatch, tmp_path):
    asked = fake_cluster(monkeypatch, tmp_path, blind="a" * 40)  # the head cannot see the mount ...
    cfg = compose(
        [
            f"run.root={tmp_path / 'runs'}",
            f"cache_dir={tmp_path / 'cache'}",
            "backbone.policy_resources.resources={node2: 0.5}",
            "backbone.prm_resources.resources={node2: 0.25}",
            "pool.worker_resources={node2: 0.1}",
            "train.worker_resources={node2: 0.1}",
        ]
    )
    session.check_shared_storage(cfg)  # ... but every actor and training worker asks for node2
    assert asked == ["b" * 40]
