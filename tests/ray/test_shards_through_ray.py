"""Search results travel through Ray: a search worker returns its rows and writes nothing; the pool (the
driver process) writes every shard file, and a resumed search skips the shards already on disk."""

from __future__ import annotations

import os

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
    "pool.shard_size=2",
    "task.train_size=6",
]


def guarded_worker(forbidden: str):
    """A SearchWorker whose process refuses (PermissionError, via an audit hook) any write, create,
    rename or delete under `forbidden`: a worker that wrote its shard file would fail the shard."""
    from actors.search_worker import SearchWorker

    def writes(event, args):
        if event == "open":
            path, mode, flags = args
            if isinstance(mode, str):
                return path, any(c in mode for c in "wax+")
            return path, bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC))
        if event in ("os.rename", "os.remove", "os.mkdir", "os.rmdir", "os.truncate", "os.chmod"):
            return args[0], True
        return None, False

    def hook(event, args):
        path, writing = writes(event, args)
        if writing and isinstance(path, str | bytes | os.PathLike):
            p = os.fsdecode(path)
            if os.path.abspath(p).startswith(forbidden):
                raise PermissionError(f"search worker wrote {p}")

    class GuardedWorker(SearchWorker):
        def __init__(self, *args, **kwargs):
            import sys

            sys.addaudithook(hook)
            super().__init__(*args, **kwargs)

        def try_write(self, path: str) -> str:
            from pathlib import Path

            from pipeline.rundir import atomic_write_jsonl

            try:
                atomic_write_jsonl(Path(path), [{"x": 1}])
            except PermissionError as e:
                return f"refused: {e}"
            return "written"

    return GuardedWorker


@pytest.fixture(scope="module")
def cfg():
    return compose(ARGS)


@pytest.fixture(scope="module")
def forbidden(tmp_path_factory):
    return str(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def pool(ray_session, tiny_dirs, cfg, forbidden):
    from actors.pool import Pool

    class GuardedPool(Pool):
        worker_cls = guarded_worker(forbidden)

    p = GuardedPool(tiny_dirs.policy_dir, tiny_dirs.prm_dir, cfg.backbone, cfg.policy, cfg.prm, cfg.pool)
    yield p
    p.shutdown()


def test_the_guard_really_refuses_a_worker_write(pool, forbidden, ray_session):
    out = ray_session.get(pool.workers[0].try_write.remote(os.path.join(forbidden, "probe", "x.jsonl")))
    assert out.startswith("refused: search worker wrote")
    assert not os.path.exists(os.path.join(forbidden, "probe", "x.jsonl"))


def test_workers_write_nothing_and_the_driver_writes_every_shard(pool, cfg, forbidden):
    from pipeline.shards import Shard, load_shard
    from pipeline.tasks.arith import generate

    qs = generate(6, [2, 3], seed=11, max_operand=cfg.task.max_operand)
    out = os.path.join(forbidden, "round_1", "search")  # does not exist yet: the driver creates it
    work = [
        Shard(i, 1, tuple(qs[2 * i : 2 * i + 2]), os.path.join(out, f"shard-{i:05d}.jsonl")) for i in range(3)
    ]
    paths = pool.run_shards(work, cfg.search)
    assert paths == [s.out_path for s in work]
    for path, shard in zip(paths, work, strict=True):
        trees = load_shard(path)
        assert [t.question_id for t in trees] == [q.id for q in shard.questions]
        assert all(t.shard_id == shard.shard_id and t.round == 1 for t in trees)
    assert sorted(os.listdir(out)) == [f"shard-{i:05d}.jsonl" for i in range(3)]  # no temp files left
    assert pool.progress()["shards_done"] >= 3


def test_a_resumed_search_skips_the_shards_on_disk(pool, cfg, forbidden):
    from loop.methods.rest_mcts import search
    from pipeline.rundir import RunDir
    from pipeline.tasks.arith import generate

    run = RunDir(os.path.join(forbidden, "resume"))
    train = generate(6, [2, 3], seed=12, max_operand=cfg.task.max_operand)
    files, info = search(cfg, run, lambda: pool, train, 1)
    assert info["shards"] == 3 and info["shards_searched"] == 3
    kept = {str(f): (os.stat(f).st_mtime_ns, f.read_bytes()) for f in files[:2]}
    files[2].unlink()  # as if the run was killed before this shard's file was renamed into place
    files2, info2 = search(cfg, run, lambda: pool, train, 1)
    assert info2["shards_searched"] == 1 and files2 == files
    assert {str(f): (os.stat(f).st_mtime_ns, f.read_bytes()) for f in files2[:2]} == kept
    assert files2[2].exists()
