"""The pool on a real local Ray: MCTS* with the tiny backbone over 8 questions in 2 shards on 2 workers,
surviving a killed search worker (shard re-queued) and a killed policy replica (restarted, retried)."""

from __future__ import annotations

import pytest

from conf.load import compose

pytestmark = pytest.mark.ray

ARGS = [
    "search.iteration_limit=3",
    "search.branch=2",
    "search.roll_forward_steps=1",
    "backbone.max_step_tokens=12",
    "pool.search_workers=2",
    "pool.trees_in_flight=4",
    "pool.worker_num_cpus=0.25",
    "backbone.policy_resources.num_cpus=1",
    "backbone.prm_resources.num_cpus=1",
]


@pytest.fixture(scope="module")
def cfg():
    return compose(ARGS)


@pytest.fixture(scope="module")
def pool(ray_session, tiny_dirs, cfg):
    from actors.pool import Pool

    p = Pool(tiny_dirs.policy_dir, tiny_dirs.prm_dir, cfg.backbone, cfg.policy, cfg.prm, cfg.pool)
    yield p
    p.shutdown()


def shards(cfg, tmp_path, round_=0):
    from pipeline.shards import Shard
    from pipeline.tasks.arith import generate

    qs = generate(8, [2, 3], seed=round_, max_operand=cfg.task.max_operand)
    return [
        Shard(i, round_, tuple(qs[4 * i : 4 * i + 4]), str(tmp_path / f"shard-{i:05d}.jsonl"))
        for i in range(2)
    ]


def check_files(paths, work):
    from pipeline.shards import load_shard

    assert [p for p in paths] == [s.out_path for s in work]
    for path, shard in zip(paths, work, strict=True):
        trees = load_shard(path)
        assert [t.question_id for t in trees] == [q.id for q in shard.questions]
        for t in trees:
            assert t.nodes[0].node_id == 0 and t.nodes[0].steps == ()
            assert 1 <= t.result.iterations <= 3 and t.result.generated_tokens > 0
            assert all(0.0 <= n.value <= 1.0 for n in t.nodes)


def test_two_shards_on_two_workers_write_valid_files(pool, cfg, tmp_path):
    work = shards(cfg, tmp_path)
    paths = pool.run_shards(work, cfg.search)
    check_files(paths, work)
    progress = pool.progress()
    assert progress["trees_done"] >= 8 and progress["tokens"] > 0 and progress["batches_propose"] > 0
    assert not list(tmp_path.glob(".*.tmp"))


def test_several_shards_per_worker_give_the_trees_of_one_shard_at_a_time(pool, cfg, tmp_path):
    """4 shards: each worker's call runs 2 shards' trees together (8 in flight); the old pool ran one
    shard per call. Same seeds, same trees, every shard file written."""
    from pipeline.shards import Shard, load_shard
    from pipeline.tasks.arith import generate

    qs = generate(8, [2, 3], seed=9, max_operand=cfg.task.max_operand)
    trees = {}
    for per_call in (0, 1):
        work = [
            Shard(i, 4, tuple(qs[2 * i : 2 * i + 2]), str(tmp_path / f"{per_call}-{i}.jsonl"))
            for i in range(4)
        ]
        done = []
        paths = pool.run_shards(work, cfg.search, on_shard=done.append, shards_per_call=per_call)
        assert sorted(s.shard_id for s in done) == [0, 1, 2, 3]
        trees[per_call] = [
            (t.question_id, t.seed, t.nodes, t.result.solution) for p in paths for t in load_shard(p)
        ]
    assert len(trees[0]) == 8
    for a, b in zip(trees[0], trees[1], strict=True):  # PRM values: up to float rounding of padded batches
        assert a[:2] == b[:2] and a[3] == b[3] and [n.steps for n in a[2]] == [n.steps for n in b[2]]
        assert [n.value for n in a[2]] == pytest.approx([n.value for n in b[2]], rel=1e-5)


def test_killed_search_worker_shard_is_requeued(pool, cfg, tmp_path, ray_session):
    work = shards(cfg, tmp_path, round_=1)
    before = pool.shard_retries
    killed = []

    def kill_one(progress):  # runs inside run_shards, between ray.wait calls
        if not killed and progress["trees_started"] > 0:
            ray_session.kill(ray_session.get_actor("search-0"), no_restart=True)
            killed.append(True)

    paths = pool.run_shards(work, cfg.search, progress=kill_one, progress_every=0.05)
    assert killed and pool.shard_retries == before + 1
    check_files(paths, work)


def test_killed_policy_replica_restarts_and_requests_are_retried(pool, cfg, tmp_path, ray_session):
    work = shards(cfg, tmp_path, round_=2)
    killed = []

    def kill_policy(progress):
        if not killed and progress["expansions"] > 0:
            ray_session.kill(ray_session.get_actor("policy-0"), no_restart=False)
            killed.append(True)

    retries = pool.shard_retries
    paths = pool.run_shards(work, cfg.search, progress=kill_policy, progress_every=0.05)
    assert killed and pool.shard_retries == retries  # no shard lost: the calls were retried by Ray
    assert pool.restarts()["policy-0"] == 1
    check_files(paths, work)


def test_evaluate_methods_through_the_pool(pool, cfg):
    from omegaconf import OmegaConf

    from loop.evaluate import evaluate_methods, table
    from pipeline.tasks.arith import generate

    qs = generate(4, [2, 3], seed=5, max_operand=cfg.task.max_operand)
    ecfg = OmegaConf.merge(
        cfg,
        {
            "eval": {
                "methods": ["cot", "sc", "bon", "mcts", "tot_bfs"],
                "n": 2,
                "search": {"iteration_limit": 2, "branch": 2, "roll_forward_steps": 1},
                "tot": {"beam": 1, "branch": 2, "max_depth": 2},
            },
            "backbone": {"max_solution_tokens": 24},
        },
    )
    results = evaluate_methods(pool, qs, ecfg, round=3)
    assert results["round"] == 3 and list(results["methods"]) == ["cot", "sc", "bon", "mcts", "tot_bfs"]
    for r in results["methods"].values():
        assert r["total"] == 4 and 0.0 <= r["accuracy"] <= 1.0 and r["correct"] + r["ungradable"] <= 4
        assert r["tokens_per_question"] > 0 and set(r["by_difficulty"]) <= {"2", "3"}
    assert results["methods"]["sc"]["tokens_per_question"] == results["methods"]["bon"]["tokens_per_question"]
    assert "| mcts |" in table(results)


def test_pool_that_can_never_fit_fails_at_once_naming_the_keys(ray_session, tiny_dirs):
    import time

    from actors.placement import PlacementError
    from actors.pool import Pool

    big = compose([*ARGS, "backbone.policy_resources.num_cpus=4"])  # the session's Ray has 4 CPUs
    before = sorted(_live_actors(ray_session))
    t0 = time.monotonic()
    with pytest.raises(PlacementError) as e:
        Pool(tiny_dirs.policy_dir, tiny_dirs.prm_dir, big.backbone, big.policy, big.prm, big.pool)
    assert time.monotonic() - t0 < 5
    msg = str(e.value)
    assert "the pool needs 5.5 CPUs (policy 1 x 4 [backbone.policy_resources.num_cpus]" in msg
    assert "but the Ray cluster has 4" in msg and "\n" not in msg
    assert sorted(_live_actors(ray_session)) == before  # no actor was created


def test_busy_cluster_waits_then_times_out_with_what_is_pending(ray_session, tiny_dirs, pool):
    from actors.placement import PlacementError
    from actors.pool import Pool

    # `pool` holds 2.5 of the 4 CPUs, so a second pool of 2.5 could fit later but not now
    cfg2 = compose([*ARGS, "pool.placement_timeout_s=2"])
    with pytest.raises(
        PlacementError, match=r"not placed within pool.placement_timeout_s=2 s.*CPU 2.5 needed"
    ):
        Pool(tiny_dirs.policy_dir, tiny_dirs.prm_dir, cfg2.backbone, cfg2.policy, cfg2.prm, cfg2.pool)
    assert ray_session.available_resources().get("CPU", 0) >= 1.5 - 1e-6  # the probe was given back


def _live_actors(ray):
    from ray.util.state import list_actors

    address = ray.get_runtime_context().gcs_address
    return [a.name for a in list_actors(address=address, filters=[("state", "=", "ALIVE")])]
