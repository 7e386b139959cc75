"""The equal-budget sweep of evaluate_methods (eval.budgets) on a fake pool: scripted policy and PRM for
cot/sc/bon, real SearchWorkers over scripted fakes for mcts/tot_bfs/tot_dfs. No Ray, no torch."""

from __future__ import annotations

import json
import sys
import types
from collections import namedtuple

import pytest

import loop.evaluate as evaluate
from actors.search_worker import LocalBackend, SearchWorker
from conf.load import ConfigError, compose
from pipeline.records import Question
from tests.fakes import FakeProposer, FakeScorer, hashed_proposer, hashed_scorer

Sample = namedtuple("Sample", "steps tokens")
QUESTIONS = [Question(f"q{i}", f"Q{i}", answer=str(i % 4), difficulty=2 + i % 2) for i in range(8)]
ALL = "[cot,sc,bon,mcts,tot_bfs,tot_dfs]"
BASE = [f"eval.methods={ALL}", "eval.n=4", "eval.search.iteration_limit=4", "eval.tot.beam=2"]
BASE += ["eval.tot.budget=4", "eval.tot.max_depth=4", "eval.search.max_depth=4", "pool.search_workers=2"]


class FakePool:
    """The Pool surface evaluate_methods uses. Sample j of question i (gold i % 4) answers (i + 1 + j) % 4:
    only n >= 4 holds the gold answer. The PRM values right answers 0.9, wrong ones 0.2."""

    def __init__(self):
        self.proposer = FakeProposer(hashed_proposer(width=4, answer_depth=2))
        self.scorer = FakeScorer(hashed_scorer())
        backend = LocalBackend(self.proposer, self.scorer)
        self.workers = [SearchWorker(backend, 4, "The answer is", worker_id=i) for i in range(2)]
        self.policy_calls: list[tuple[str, int | None]] = []
        self.search_cfgs: list[tuple[str, object]] = []

    def map_policy(self, method, items, chunk, **kw):
        self.policy_calls.append((method, kw.get("n")))
        if method == "greedy_solve":
            return [Sample((f"The answer is {int(q[1:]) % 3}",), 5) for q in items]
        assert method == "sample_solutions"
        return [
            [Sample((f"The answer is {(int(q[1:]) + 1 + j) % 4}",), 10) for j in range(kw["n"])]
            for q in items
        ]

    def greedy(self, questions, max_steps, seed=0, chunk=256):
        return self.map_policy("greedy_solve", questions, chunk, max_steps=max_steps, seed=seed)

    def sample(self, questions, n, temperature, seed=0, max_steps=0, chunk=32):
        kw = {"n": n, "temperature": temperature, "seed": seed, "max_steps": max_steps}
        return self.map_policy("sample_solutions", questions, chunk, **kw)

    def score(self, requests, chunk=256):
        return self.map_prm("score", requests, chunk)

    def map_prm(self, method, items, chunk, **kw):
        return [0.9 if r.steps[-1].endswith(str(int(r.question[1:]) % 4)) else 0.2 for r in items]

    def run_shards(self, shards, search_cfg, progress=None, progress_every=30.0, on_shard=None):
        self.search_cfgs.append((shards[0].kind, search_cfg))
        return [self.workers[i % 2].run_shard(s, search_cfg)["path"] for i, s in enumerate(shards)]


def test_budget_values_scale_each_knob():
    ev = compose(BASE).eval
    scales = [0.25, 0.5, 1, 2]
    assert [evaluate.budget_value(ev, "sc", s) for s in scales] == [1, 2, 4, 8]
    assert [evaluate.budget_value(ev, "bon", s) for s in scales] == [1, 2, 4, 8]
    assert [evaluate.budget_value(ev, "mcts", s) for s in scales] == [1, 2, 4, 8]
    assert [evaluate.budget_value(ev, "tot_bfs", s) for s in scales] == [1, 1, 2, 4]  # 0.5 rounds up
    assert [evaluate.budget_value(ev, "tot_dfs", s) for s in scales] == [1, 2, 4, 8]
    assert evaluate.budget_value(ev, "cot", 2) is None
    assert compose([]).eval.budgets == []
    with pytest.raises(ConfigError, match="eval.budgets"):
        compose(["eval.budgets=[0.5,0]"])


def test_no_budgets_means_no_sweep(tmp_path):
    pool, cfg = FakePool(), compose(BASE)
    results = evaluate.evaluate_methods(pool, QUESTIONS, cfg, 0, tmp_path)
    assert "sweep" not in results and list(results["methods"]) == list(cfg.eval.methods)
    assert pool.policy_calls == [("greedy_solve", None), ("sample_solutions", 4)]
    # the configured search configs go to the workers as they are
    assert [(k, c) for k, c in pool.search_cfgs] == [
        ("mcts", cfg.eval.search),
        ("tot_bfs", cfg.eval.tot),
        ("tot_dfs", cfg.eval.tot),
    ]
    assert all(c is cfg.eval.tot for k, c in pool.search_cfgs if k != "mcts")
    assert results["methods"]["sc"]["tokens_per_question"] == 40.0
    assert (tmp_path / "mcts" / "shard-00000.jsonl").exists()
    assert evaluate.sweep_table(results) == ""


def test_sweep_scales_knobs_and_keeps_cot_single(tmp_path):
    cfg = compose([*BASE, "eval.budgets=[0.5,1,2]"])
    pool = FakePool()
    results = evaluate.evaluate_methods(pool, QUESTIONS, cfg, 0, tmp_path)
    sweep = results["sweep"]
    assert sweep["budgets"] == [0.5, 1.0, 2.0]
    assert sweep["knobs"] == {
        "sc": "eval.n",
        "bon": "eval.n",
        "mcts": "eval.search.iteration_limit",
        "tot_bfs": "eval.tot.beam",
        "tot_dfs": "eval.tot.budget",
    }
    # cot: one greedy point, computed once
    assert [(p["scale"], p["value"]) for p in sweep["methods"]["cot"]] == [(None, None)]
    assert pool.policy_calls.count(("greedy_solve", None)) == 1
    # sc/bon: one sampling call per n, shared by both; tokens are n samples of 10
    assert sorted(c for c in pool.policy_calls if c[0] == "sample_solutions") == [
        ("sample_solutions", 2),
        ("sample_solutions", 4),
        ("sample_solutions", 8),
    ]
    for m in ("sc", "bon"):
        assert [(p["value"], p["tokens_per_question"]) for p in sweep["methods"][m]] == [
            (2, 20),
            (4, 40),
            (8, 80),
        ]
    assert [p["accuracy"] for p in sweep["methods"]["bon"]] == [0.0, 1.0, 1.0]  # the PRM knows the answer
    # searches: each knob value searched once (scale 1 reuses the configured run), with the scaled config
    seen = [
        (k, c.iteration_limit if k == "mcts" else c.beam if k == "tot_bfs" else c.budget)
        for k, c in pool.search_cfgs
    ]
    assert sorted(seen) == sorted(
        [("mcts", 4), ("mcts", 2), ("mcts", 8), ("tot_bfs", 2), ("tot_bfs", 1), ("tot_bfs", 4)]
        + [("tot_dfs", 4), ("tot_dfs", 2), ("tot_dfs", 8)]
    )
    for k, c in pool.search_cfgs:  # only the knob changes
        assert (c.branch, c.max_depth) == ((3, 4) if k != "mcts" else (cfg.eval.search.branch, 4))
    for m in ("mcts", "tot_bfs", "tot_dfs"):
        points = sweep["methods"][m]
        assert [p["scale"] for p in points] == [0.5, 1.0, 2.0]
        assert points[1] == {"scale": 1.0, "value": points[1]["value"], **results["methods"][m]}
        assert points[0]["tokens_per_question"] <= points[2]["tokens_per_question"]
        assert (tmp_path / "sweep" / f"{m}-{points[2]['value']}" / "shard-00000.jsonl").exists()
    assert points[0]["tokens_per_question"] < points[2]["tokens_per_question"]  # tot_dfs: 2 vs 8 expansions
    json.dumps(results)  # eval.json-ready

    text = evaluate.sweep_table(results)
    rows = [line for line in text.splitlines()[2:]]
    assert len(rows) == 1 + 5 * 3
    assert rows[0].startswith("| cot | - | greedy |")
    assert "| sc | 0.5 | eval.n=2 |" in text and "| tot_dfs | 2 | eval.tot.budget=8 |" in text
    points = evaluate.budget_points(results)
    assert list(points) == ["cot", "sc (n)", "bon (n)", "mcts (iters)", "tot_bfs (beam)", "tot_dfs (budget)"]
    assert len(points["cot"]) == 1 and [p[2] for p in points["tot_bfs (beam)"]] == ["1", "2", "4"]


def test_plot_budget_draws_lines_and_single_points(tmp_path):
    from loop.plots import plot_budget

    lines = {"cot": [(12.0, 0.3, "")], "sc": [(20, 0.4, "n=2"), (40, 0.5, "n=4")], "empty": []}
    path = plot_budget(lines, tmp_path / "sub" / "budget.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(path.parent.glob(".*tmp*"))


def test_evaluate_main_prints_both_tables_and_draws_the_png(tmp_path, monkeypatch, capsys):
    import actors.cluster
    import loop.round0

    pool = FakePool()
    pool.shutdown = lambda: None
    fake_pool_module = types.ModuleType("actors.pool")
    fake_pool_module.Pool = types.SimpleNamespace(from_config=lambda cfg, p, v: pool)
    monkeypatch.setitem(sys.modules, "actors.pool", fake_pool_module)
    monkeypatch.setattr(actors.cluster, "init_ray", lambda ray_cfg: "http://dash")
    monkeypatch.setattr(actors.cluster, "shutdown_ray", lambda: None)
    monkeypatch.setattr(actors.cluster, "alive_nodes", lambda: [])  # no Ray: no cluster to check
    monkeypatch.setattr(loop.round0, "round0_models", lambda cfg: ("policy", "prm"))
    cfg = compose([*BASE, "eval.budgets=[0.5,2]", f"run.root={tmp_path}", "run.name=sweep"])
    assert evaluate.evaluate_main(cfg, [], QUESTIONS) == 0
    out = capsys.readouterr().out
    assert "| method | accuracy (%) |" in out and "| method | budget scale | knob |" in out
    assert "| mcts | 2 | eval.search.iteration_limit=8 |" in out
    data = json.loads((tmp_path / "sweep" / "eval.json").read_text())
    assert set(data["sweep"]["methods"]) == {"cot", "sc", "bon", "mcts", "tot_bfs", "tot_dfs"}
    assert (tmp_path / "sweep" / "eval_budget.png").stat().st_size > 0


def test_every_method_prints_progress_with_its_total(tmp_path, caplog):
    import logging

    cfg = compose([*BASE, "eval.budgets=[2]"])
    with caplog.at_level(logging.INFO):
        evaluate.evaluate_methods(FakePool(), QUESTIONS, cfg, 0, tmp_path)
    for method in cfg.eval.methods:
        if method != "bon":  # bon reuses the samples sc drew (one sampling pass, one progress line)
            assert f"round 0 eval {method}: done 8/8 questions" in caplog.text
    for method in ("sc", "mcts", "tot_dfs"):  # the sweep's points too, named by their knob value
        assert f"round 0 eval {method} (" in caplog.text
