"""task=countdown through one whole self-training iteration at tiny sizes (round 0 built from the solver's
shortest solutions and D_V0, search, values, SFT, PRM, evaluation), with the verifier deciding what is
correct: a tree's end leaves carry the verifier's verdict, never a bare answer match."""

from __future__ import annotations

import json

import pytest

from conf.load import compose

pytestmark = pytest.mark.ray

ARGS = [
    "task=countdown",
    "iteration=1",
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
    "backbone.max_step_tokens=24",
    "eval.search.iteration_limit=2",
    "eval.methods=[cot,mcts]",
    "selection.sft_replay=8",
    "backbone.sft.num_workers=0",
    "backbone.sft.max_steps=2",
    "backbone.prm_train.num_workers=0",
    "backbone.prm_train.max_steps=2",
    "pool.search_workers=1",
    "pool.shard_size=4",
]


def test_countdown_runs_one_full_iteration_with_the_verifier(ray_session, tmp_path):
    from loop.driver import Driver
    from pipeline.data import load_questions
    from pipeline.rundir import RunDir
    from pipeline.shards import load_shard
    from pipeline.tasks import countdown

    cfg = compose([*ARGS, f"cache_dir={tmp_path / 'cache'}", f"run.root={tmp_path / 'runs'}"])
    train, heldout = load_questions(cfg.task, cfg.data, seed=cfg.seed)
    assert all(q.source == "countdown" and q.solution for q in train + heldout)
    run = RunDir(tmp_path / "runs" / "cd")
    run.check_or_save_config(cfg)
    evals = Driver(cfg, train, heldout, run).fit()

    assert sorted(evals) == [0, 1] and set(evals[1]["methods"]) == {"cot", "mcts"}
    for name in ("search", "values", "sft", "prm", "eval"):
        assert run.phase_done(1, name), name
    by_id = {q.id: q for q in train}
    trees = [t for p in sorted((run.round_dir(1) / "search").glob("shard-*.jsonl")) for t in load_shard(p)]
    assert sorted(t.question_id for t in trees) == sorted(by_id)
    for tree in trees:
        for node in tree.nodes:
            if node.is_end:  # the verifier's verdict on the whole derivation, not the answer alone
                assert node.correct == countdown.verify(by_id[tree.question_id], node.steps)
    for line in (run.round_dir(1) / "sft.jsonl").read_text().splitlines():
        row = json.loads(line)
        assert countdown.verify(by_id[row["question_id"]], row["steps"])
    eval_json = json.loads((run.round_dir(0) / "eval.json").read_text())
    assert eval_json["questions"] == len(heldout)
