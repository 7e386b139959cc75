"""Tree-of-Thought baselines with scripted fakes: BFS beam bookkeeping, DFS order, determinism."""

from __future__ import annotations

from dataclasses import replace

import pytest

from conf.schema import TotConfig
from pipeline.search.protocol import Propose, answer_all, serve_sync
from pipeline.search.seeding import derive_seed
from pipeline.search.tot import search_bfs, search_dfs
from tests.fakes import (
    FakeProposer,
    FakeScorer,
    hashed_proposer,
    hashed_scorer,
    run_interleaved,
    table_proposer,
    table_scorer,
)


def batches_of(gen, proposer, scorer):
    """Run a search, returning (outcome, [[steps of each Propose in one yield], ...])."""
    batches = []
    try:
        requests = next(gen)
        while True:
            proposals = [r.steps for r in requests if isinstance(r, Propose)]
            if proposals:
                batches.append(proposals)
            requests = gen.send(answer_all(requests, proposer, scorer))
    except StopIteration as stop:
        return stop.value, batches


BFS_SCRIPT = {
    (): ["a", "b", "c"],
    ("b",): ["b1", "The answer is 1"],
    ("c",): ["c1", "c2"],
    ("c", "c1"): ["The answer is 2", "c1x"],
}
BFS_VALUES = {
    ("a",): 0.5,
    ("b",): 0.9,
    ("c",): 0.7,
    ("b", "b1"): 0.6,
    ("b", "The answer is 1"): 0.95,
    ("c", "c1"): 0.8,
    ("c", "c2"): 0.3,
    ("c", "c1", "The answer is 2"): 0.85,
    ("c", "c1", "c1x"): 0.4,
}


def test_bfs_beam_bookkeeping():
    cfg = TotConfig(beam=2, branch=3, max_depth=6, proposal_retries=2)
    proposer = FakeProposer(table_proposer(BFS_SCRIPT))
    scorer = FakeScorer(table_scorer(BFS_VALUES))
    out, batches = batches_of(search_bfs("Q", cfg, 0, question_id="q", gold="1"), proposer, scorer)
    # level 1: root -> a .5, b .9, c .7; keep b, c (both expanded together, in PRM order)
    # level 2: b1 .6, b:answer .95, c1 .8, c2 .3 -> keep b:answer (finished) and c1
    # level 3: c1 -> c:answer .85, c1x .4 -> keep both (beam 2); only c1x goes on
    # level 4: c1x gets no proposals (1 try + 2 retries) and becomes a dead end: nothing left
    assert batches == [
        [()],
        [("b",), ("c",)],
        [("c", "c1")],
        [("c", "c1", "c1x")],
        [("c", "c1", "c1x")],
        [("c", "c1", "c1x")],
    ]
    assert out.result.iterations == 4 and out.result.expansions == 5
    assert out.result.solution == ("b", "The answer is 1") and out.result.answer == "1"
    assert out.result.correct is True and not out.result.fallback and not out.result.early_stop
    kept = {r.steps for r in out.tree if r.visits}
    assert kept == {(), ("b",), ("c",), ("b", "The answer is 1"), ("c", "c1")} | {
        ("c", "c1", "The answer is 2"),
        ("c", "c1", "c1x"),
    }
    ends = {r.steps for r in out.tree if r.is_end}
    assert ("b", "The answer is 1") in ends and ("c", "c1", "c1x") in ends
    assert out.result.scored == 3 + 4 + 2


def test_bfs_scores_each_level_in_one_batch():
    cfg = TotConfig(beam=2, branch=3)
    scorer = FakeScorer(table_scorer(BFS_VALUES))
    serve_sync(search_bfs("Q", cfg, 0), FakeProposer(table_proposer(BFS_SCRIPT)), scorer)
    assert [len(r.steps) for r in scorer.requests[:7]] == [1, 1, 1, 2, 2, 2, 2]


def test_bfs_ties_are_seeded():
    cfg = TotConfig(beam=2, branch=4, max_depth=1)
    proposer = FakeProposer(table_proposer({(): ["w", "x", "y", "z"]}))

    def kept(seed):
        out = serve_sync(search_bfs("Q", cfg, seed), proposer, FakeScorer(lambda s: 0.5))
        return frozenset(r.steps for r in out.tree if r.visits and r.steps)

    assert kept(5) == kept(5)
    assert len({kept(seed) for seed in range(20)}) > 1
    assert all(len(kept(seed)) == 2 for seed in range(5))


def test_bfs_stops_at_max_depth():
    cfg = TotConfig(beam=1, branch=2, max_depth=3)
    proposer = FakeProposer(lambda r: [f"s{len(r.steps)}a", f"s{len(r.steps)}b"])
    out = serve_sync(search_bfs("Q", cfg, 0), proposer, FakeScorer(lambda s: 0.5))
    assert out.result.iterations == 3 and max(r.depth for r in out.tree) == 3
    assert all(r.is_end for r in out.tree if r.depth == 3)
    assert out.result.answer is None and out.result.solution and len(out.result.solution) == 3


DFS_SCRIPT = {
    (): ["a", "b", "c"],
    ("a",): ["a1", "a2"],
    ("a", "a1"): ["The answer is 3", "a1x"],
    ("b",): ["The answer is 4"],
}
DFS_VALUES = {
    ("a",): 0.8,
    ("b",): 0.6,
    ("c",): 0.2,
    ("a", "a1"): 0.5,
    ("a", "a2"): 0.1,
    ("a", "a1", "The answer is 3"): 0.7,
    ("a", "a1", "a1x"): 0.25,
    ("b", "The answer is 4"): 0.95,
}


def run_dfs(**overrides):
    cfg = replace(TotConfig(threshold=0.3, gate=0.9, budget=10, branch=3, proposal_retries=0), **overrides)
    proposer = FakeProposer(table_proposer(DFS_SCRIPT))
    out = serve_sync(search_dfs("Q", cfg, 0, gold="4"), proposer, FakeScorer(table_scorer(DFS_VALUES)))
    return out, [p.steps for p in proposer.proposals]


def test_dfs_prunes_backtracks_and_stops_at_the_gate():
    out, order = run_dfs()
    # root: a .8, b .6 explored in that order; c .2 < threshold pruned (never expanded)
    # a: a1 .5 explored, a2 .1 pruned; a1: answer 3 (.7, finished below the gate), a1x .25 pruned
    # backtrack to b: answer 4 scores .95 >= gate: stop
    assert order == [(), ("a",), ("a", "a1"), ("b",)]
    assert out.result.early_stop and out.result.answer == "4" and out.result.correct is True
    assert out.result.expansions == 4 and out.result.iterations == 4


def test_dfs_budget_limits_expansions():
    out, order = run_dfs(budget=3)
    assert order == [(), ("a",), ("a", "a1")]
    # no gated solution: the best finished one found is the answer
    assert not out.result.early_stop and out.result.answer == "3" and not out.result.fallback
    out, order = run_dfs(budget=2)
    assert order == [(), ("a",)]
    assert out.result.fallback and out.result.solution == ("a",)  # no finished node: highest V


def test_dfs_threshold_zero_explores_everything_before_giving_up():
    out, order = run_dfs(gate=0.99, threshold=0.0)
    assert order == [(), ("a",), ("a", "a1"), ("a", "a1", "a1x"), ("a", "a2"), ("b",), ("c",)]
    assert out.result.answer == "4" and not out.result.early_stop


@pytest.mark.parametrize("search_fn", [search_bfs, search_dfs])
def test_same_seed_same_tree_under_any_batching(search_fn):
    cfg = TotConfig(beam=2, branch=3, max_depth=5, threshold=0.2, gate=0.8, budget=8)
    questions = [f"question {i}" for i in range(6)]

    def gens():
        return [search_fn(q, cfg, derive_seed(0, q), question_id=q, gold="1") for q in questions]

    def fakes():
        return FakeProposer(hashed_proposer(answer_depth=3)), FakeScorer(hashed_scorer())

    alone = [serve_sync(gen, *fakes()) for gen in gens()]
    for order_seed, max_trees in [(0, 1), (1, 4), (2, 6)]:
        mixed = run_interleaved(gens(), *fakes(), order_seed, max_trees)
        for a, b in zip(alone, mixed, strict=True):
            assert a.tree == b.tree
            assert replace(a.result, seconds=0.0) == replace(b.result, seconds=0.0)
    assert len({len(o.tree) for o in alone}) > 1
