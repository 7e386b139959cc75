"""Pool placement arithmetic (actors/placement.py), without Ray: what the pool asks for against what the
cluster has; the one-line message names the resources and the keys to change."""

from __future__ import annotations

import pytest

from actors.placement import bundles, describe, never_fits, pool_asks, shortfall, train_asks
from conf.load import compose


def asks_of(*args):
    cfg = compose(list(args))
    return pool_asks(cfg.backbone, cfg.policy, cfg.prm, cfg.pool)


def test_default_and_every_cpu_backbone_fit_two_cores():
    for backbone in ("tiny", "smollm2"):
        asks = asks_of(f"backbone={backbone}")
        assert never_fits(asks, {"CPU": 2.0}, [{"CPU": 2.0}]) is None, backbone


def test_the_message_of_the_issue():
    asks = asks_of(
        "backbone.policy_resources.num_cpus=1",
        "backbone.prm_resources.num_cpus=1",
        "pool.search_workers=2",
        "pool.worker_num_cpus=0.25",
    )
    msg = never_fits(asks, {"CPU": 2.0})
    assert msg == (
        "the pool needs 2.5 CPUs (policy 1 x 1 [backbone.policy_resources.num_cpus], "
        "prm 1 x 1 [backbone.prm_resources.num_cpus], search workers 2 x 0.25 [pool.worker_num_cpus]) "
        "but the Ray cluster has 2; lower backbone.policy_resources.num_cpus, policy.replicas, "
        "backbone.prm_resources.num_cpus, prm.replicas, pool.worker_num_cpus, pool.search_workers"
    )
    assert "\n" not in msg


def test_policy_num_cpus_4_on_two_cores_names_the_key():
    msg = never_fits(asks_of("backbone.policy_resources.num_cpus=4"), {"CPU": 2.0}, [{"CPU": 2.0}])
    assert msg and "5 CPUs" in msg and "policy 1 x 4 [backbone.policy_resources.num_cpus]" in msg


def test_replicas_multiply():
    asks = asks_of("policy.replicas=3", "prm.replicas=2", "pool.search_workers=4")
    assert describe(asks, "CPU").startswith("3.5 CPUs (policy 3 x 0.5")
    assert len(bundles(asks)) == 9


@pytest.mark.parametrize("backbone", ["llama", "mistral", "glm"])
def test_gpu_backbones_explain_gpu_nodes(backbone):
    asks = asks_of(f"backbone={backbone}")
    msg = never_fits(asks, {"CPU": 2.0}, [{"CPU": 2.0}])
    assert msg and "2 GPUs" in msg and "but the Ray cluster has 0" in msg
    assert "backbone.policy_resources.num_gpus" in msg and "sized for GPU nodes" in msg
    # a GPU node that holds both replicas fits
    assert never_fits(asks, {"CPU": 16.0, "GPU": 2.0}, [{"CPU": 16.0, "GPU": 2.0}]) is None


def test_enough_in_total_but_no_node_large_enough():
    asks = asks_of("backbone.policy_resources.num_cpus=3")
    msg = never_fits(asks, {"CPU": 8.0}, [{"CPU": 2.0}] * 4)
    assert msg and "one policy actor needs 3 CPUs [backbone.policy_resources.num_cpus]" in msg
    assert "largest Ray node has 2" in msg
    assert never_fits(asks, {"CPU": 8.0}, [{"CPU": 4.0}, {"CPU": 4.0}]) is None


def test_shortfall_names_what_is_pending():
    asks = asks_of()  # tiny: 0.5 + 0.5 + 2 x 0.25 = 1.5 CPUs
    assert shortfall(asks, {"CPU": 0.5}) == "CPU 1.5 needed, 0.5 free"
    assert "needed" not in shortfall(asks, {"CPU": 2.0})


def test_training_job_asks():
    asks = train_asks("SFT workers", 8, 4, True, "backbone.sft")
    msg = never_fits(asks, {"CPU": 64.0, "GPU": 4.0})
    assert msg and "8 GPUs (SFT workers 8 x 1 [backbone.sft.use_gpu])" in msg
    assert "backbone.sft.num_workers" in msg


def test_custom_resources_place_actors_and_are_counted():
    asks = asks_of(
        "backbone.policy_resources.resources={node2: 0.5}",
        "pool.worker_resources={node2: 0.25}",
        "pool.search_workers=2",
    )
    head, node2 = {"CPU": 2.0, "head": 1.0}, {"CPU": 2.0, "node2": 1.0}
    assert never_fits(asks, {"CPU": 4.0, "head": 1.0, "node2": 1.0}, [head, node2]) is None
    assert sorted(b.get("node2", 0) for b in bundles(asks)) == [0, 0.25, 0.25, 0.5]
    # no node has the resource: the message names the amount, the keys and how to give a node one
    msg = never_fits(asks, {"CPU": 4.0}, [{"CPU": 2.0}, {"CPU": 2.0}])
    assert msg and "1 of resource 'node2' (policy 1 x 0.5 [backbone.policy_resources.resources.node2]" in msg
    assert "search workers 2 x 0.25 [pool.worker_resources.node2]" in msg
    assert "ray start --resources='{\"node2\": N}'" in msg and "\n" not in msg


def test_custom_resource_and_cpus_must_meet_on_one_node():
    asks = asks_of("backbone.policy_resources.num_cpus=2", "backbone.policy_resources.resources={node2: 1}")
    # the CPUs exist (on the head) and node2 exists, but node2 has 1 CPU: the policy fits nowhere
    msg = never_fits(asks, {"CPU": 5.0, "node2": 1.0}, [{"CPU": 4.0}, {"CPU": 1.0, "node2": 1.0}])
    assert msg and "one policy actor needs CPU 2, node2 1 on one node but no Ray node has all of it" in msg
    assert "backbone.policy_resources.num_cpus" in msg and "backbone.policy_resources.resources.node2" in msg


def test_can_host_picks_the_nodes_an_actor_could_use():
    from actors.placement import can_host

    gpu_only = asks_of("backbone=llama", "pool.worker_resources={gpu_pool: 1}")
    assert can_host(gpu_only, {"CPU": 8.0, "GPU": 1.0, "gpu_pool": 1.0})
    assert not can_host(gpu_only, {"CPU": 8.0})  # no GPU, no gpu_pool: nothing of this pool goes there
    assert not can_host(gpu_only, {"CPU": 0.0})
    job = train_asks("SFT workers", 2, 1, False, "backbone.sft", {"trainer": 1})
    assert job[0].key("trainer") == "train.worker_resources.trainer"
    assert can_host(job, {"CPU": 1.0, "trainer": 1.0}) and not can_host(job, {"CPU": 4.0})
