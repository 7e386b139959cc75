"""Searches that play by a task's rules (issue 25): illegal children recorded but never selected, expanded
or rolled out from; siblings reaching one state merged; a verified stop with its fallback; and a task
without rules searched exactly as before (golden hash of the trees at the commit before the rules)."""

from __future__ import annotations

import hashlib
import json

from conf.schema import SearchConfig, TotConfig
from pipeline.search import tot
from pipeline.search.mcts import search
from pipeline.search.protocol import Propose, serve_sync
from pipeline.tasks.rules import ILLEGAL, LEGAL, SOLVED, Rules
from tests.fakes import FakeProposer, FakeScorer, hashed_proposer, hashed_scorer, table_proposer, table_scorer

# A toy task: a step "xN" is illegal, "sN" solves the question, a step "aN"/"bN" reaches state N (so
# "a1" and "b1" are one state); anything else is legal with its own state.


def toy_rule(steps: tuple[str, ...]) -> str:
    last = steps[-1] if steps else ""
    return ILLEGAL if last.startswith("x") else SOLVED if last.startswith("s") else LEGAL


def toy_key(steps: tuple[str, ...]):
    return tuple(s[1:] if s[:1] in "ab" else s for s in steps)


TOY = Rules(step=toy_rule, key=toy_key, verifiable=True)
TOY_NO_STOP = Rules(step=toy_rule, key=toy_key, verifiable=False)


def mcts(cfg, script, values=None, rules=TOY, default=()):
    proposer = FakeProposer(table_proposer(script, default))
    scorer = FakeScorer(table_scorer(values or {}, 0.5))
    out = serve_sync(search("Q", cfg, 0, question_id="q", rules=rules), proposer, scorer)
    return out, proposer, scorer


def expanded_states(proposer: FakeProposer) -> set[tuple[str, ...]]:
    return {r.steps for r in proposer.proposals}


# ------------------------------------------------------------------------------------------- MCTS*


def test_illegal_children_are_recorded_but_never_scored_selected_or_expanded():
    script = {(): ["x1", "c", "x2"], ("c",): ["x3", "d"], ("c", "d"): ["e"]}
    cfg = SearchConfig(iteration_limit=10, roll_policy="none", branch=3, max_expansions=1)
    out, proposer, scorer = mcts(cfg, script, {("c",): 0.4})
    nodes = {r.steps: r for r in out.tree}
    for bad in (("x1",), ("x2",), ("c", "x3")):
        assert nodes[bad].illegal and nodes[bad].is_end and nodes[bad].visits == 0
        assert nodes[bad].value == cfg.low
    assert not any(r.steps[-1:] and r.steps[-1].startswith("x") for r in scorer.requests)
    assert not any(s and s[-1].startswith("x") for s in expanded_states(proposer))
    assert out.result.illegal == 3 and out.result.proposals == 6
    assert ("c", "d", "e") in nodes  # the legal line was searched to its end


def test_rollouts_drop_illegal_proposals_and_stop_when_none_is_legal():
    # the roll-out from "c" is offered only an illegal step: nothing is scored after it, no state below it
    script = {(): ["c"], ("c",): ["x9"]}
    cfg = SearchConfig(iteration_limit=1, roll_policy="greedy", roll_forward_steps=3, branch=1)
    out, proposer, scorer = mcts(cfg, script)
    assert [r.steps for r in proposer.proposals] == [(), ("c",)]  # expansion, then one roll-out step
    assert [r.steps for r in scorer.requests] == [("c",)]
    assert out.result.illegal == 1


def test_siblings_reaching_one_state_merge():
    script = {(): ["a1", "b1", "a2"]}
    cfg = SearchConfig(iteration_limit=1, roll_policy="none")
    out, _, scorer = mcts(cfg, script)
    children = [r.steps for r in out.tree if r.depth == 1]
    assert children == [("a1",), ("a2",)]  # b1 reaches a1's state: merged, no node, not scored
    assert out.result.merged == 1 and ("b1",) not in [r.steps for r in scorer.requests]


def test_all_illegal_proposals_are_retried_then_the_tree_is_closed():
    proposer_calls = []

    def propose(request: Propose):
        proposer_calls.append(request.steps)
        return [f"x{len(proposer_calls)}"]

    cfg = SearchConfig(iteration_limit=20, roll_policy="none", branch=1, proposal_retries=2, max_expansions=2)
    proposer, scorer = FakeProposer(propose), FakeScorer(lambda s: 0.5)
    out = serve_sync(search("Q", cfg, 0, question_id="q", rules=TOY), proposer, scorer)
    # 1 + 2 retries, the root reopened once (max_expansions=2), 3 more; then exhausted: the search ends
    assert proposer_calls == [()] * 6
    assert out.result.iterations == 2 and out.result.illegal == 6
    assert out.result.solution == () or all(not r.steps or r.illegal for r in out.tree)


def test_a_node_whose_children_are_all_closed_is_expanded_again():
    calls = []

    def propose(request: Propose):
        calls.append(request.steps)
        k = sum(1 for c in calls if c == request.steps)
        if request.steps == ():
            return ["c"] if k == 1 else ["d"]  # the second expansion of the root brings a new line
        if request.steps == ("c",):
            return ["x1"]  # a dead end: only illegal lines
        return ["s1"]

    cfg = SearchConfig(iteration_limit=20, roll_policy="none", branch=1, proposal_retries=0)
    out = serve_sync(
        search("Q", cfg, 0, question_id="q", rules=TOY), FakeProposer(propose), FakeScorer(lambda s: 0.5)
    )
    assert out.result.verified and out.result.solution == ("d", "s1")
    assert [r.steps for r in out.tree if r.depth == 1] == [("c",), ("d",)]  # both children of one root
    one = SearchConfig(iteration_limit=20, roll_policy="none", branch=1, proposal_retries=0, max_expansions=1)
    calls.clear()
    out = serve_sync(
        search("Q", one, 0, question_id="q", rules=TOY), FakeProposer(propose), FakeScorer(lambda s: 0.5)
    )
    assert not out.result.verified and out.result.iterations == 2  # closed for good: the search ends


# "dN" is a legal dead end: no line can follow it (countdown: one number left that is not the target)
TOY_DEAD = Rules(
    step=toy_rule, key=toy_key, verifiable=True, moves=lambda steps: not steps[-1].startswith("d")
)


def test_a_dead_end_is_a_leaf_never_expanded_and_ends_a_rollout():
    script = {(): ["d1", "c"], ("c",): ["d2"], ("c", "d2"): ["s9"], ("d1",): ["s1"]}
    cfg = SearchConfig(iteration_limit=10, roll_policy="none", branch=2, max_expansions=1)
    out, proposer, scorer = mcts(cfg, script, {("d1",): 0.9}, rules=TOY_DEAD)
    nodes = {r.steps: r for r in out.tree}
    assert nodes[("d1",)].is_end and not nodes[("d1",)].illegal  # scored, kept, an end: never expanded
    assert ("d1",) in [r.steps for r in scorer.requests]
    assert ("d1",) not in expanded_states(proposer) and ("c", "d2") not in expanded_states(proposer)
    assert not out.result.verified
    # without the rule the same script is searched into the "dead" lines and solved there
    out, proposer, _ = mcts(cfg, script, {("d1",): 0.9}, rules=TOY)
    assert out.result.verified and ("d1",) in expanded_states(proposer)
    # a roll-out stops at a dead end: nothing is proposed after it
    roll = SearchConfig(iteration_limit=1, roll_policy="greedy", roll_forward_steps=3, branch=1)
    out, proposer, _ = mcts(roll, {(): ["c"], ("c",): ["d2"], ("c", "d2"): ["s9"]}, rules=TOY_DEAD)
    assert [r.steps for r in proposer.proposals] == [(), ("c",)]


def test_widening_asks_an_open_node_for_more_children_as_its_visits_grow():
    calls = []

    def propose(request: Propose):
        calls.append(request.steps)
        k = sum(1 for c in calls if c == request.steps)
        if request.steps == ():
            return [f"c{k}"]  # every expansion of the root brings a new first line
        return [f"e{len(calls)}"]  # legal lines that never solve

    def run(widen: float):
        calls.clear()
        cfg = SearchConfig(
            iteration_limit=12,
            roll_policy="none",
            branch=1,
            proposal_retries=0,
            max_expansions=4,
            widen=widen,
        )
        out = serve_sync(
            search("Q", cfg, 0, question_id="q", rules=TOY), FakeProposer(propose), FakeScorer(lambda s: 0.5)
        )
        return [r.steps for r in out.tree if r.depth == 1]

    assert run(0.0) == [("c1",)]  # without widening the root keeps its one open child
    # widen 1: expanded again after 1, 4 and 9 visits (expansions^2), then capped by max_expansions
    assert run(1.0) == [("c1",), ("c2",), ("c3",), ("c4",)]
    assert calls.count(()) == 4


def test_kept_rollouts_become_nodes_that_selection_may_expand():
    script = {(): ["c"], ("c",): ["e"], ("c", "e"): ["f"], ("c", "e", "f"): ["d9"]}
    cfg = SearchConfig(
        iteration_limit=1, roll_policy="greedy", roll_forward_steps=3, branch=1, keep_rollouts=True
    )
    out, proposer, _ = mcts(cfg, script, rules=TOY_DEAD)
    nodes = {r.steps: r for r in out.tree}
    chain = [("c",), ("c", "e"), ("c", "e", "f"), ("c", "e", "f", "d9")]
    assert all(s in nodes for s in chain)
    for parent, child in zip(chain, chain[1:], strict=False):
        assert nodes[child].parent_id == nodes[parent].node_id and nodes[child].visits == 1
    assert nodes[chain[-1]].is_end and not nodes[chain[1]].is_end  # the dead end closed, the rest open
    assert out.result.proposals == 4  # no token spent twice: one expansion, three roll-out steps
    # the next iteration expands a kept state instead of proposing its line again
    cfg = SearchConfig(
        iteration_limit=2, roll_policy="greedy", roll_forward_steps=3, branch=2, keep_rollouts=True
    )
    script[("c",)] = ["e", "s1"]  # the roll-out (one proposal per step) takes "e"; the expansion both
    out, proposer, _ = mcts(cfg, script, rules=TOY_DEAD)
    assert out.result.verified and out.result.solution == ("c", "s1")
    assert [r.steps for r in proposer.proposals].count(("c",)) == 2  # roll-out step, then its expansion
    # without keeping, the same roll-out leaves only the expanded child behind
    off = SearchConfig(iteration_limit=1, roll_policy="greedy", roll_forward_steps=3, branch=1)
    out, _, _ = mcts(off, script, rules=TOY_DEAD)
    assert [r.steps for r in out.tree if r.depth > 1] == []


def test_tot_never_expands_a_dead_end():
    script = {(): ["d1", "c"], ("d1",): ["s1"], ("c",): ["s2"]}
    values = {("d1",): 0.9, ("c",): 0.2}
    out, proposer, _ = tot_run(tot.search_bfs, TotConfig(beam=2, branch=2), script, values, rules=TOY_DEAD)
    assert ("d1",) not in expanded_states(proposer)
    assert out.result.verified and out.result.solution == ("c", "s2")


def test_verified_stop_returns_the_first_solved_child():
    script = {(): ["c", "d"], ("c",): ["x1", "s1"], ("d",): ["s2"]}
    cfg = SearchConfig(iteration_limit=50, roll_policy="none", inf=0.0)  # UCT picks "c" (V 0.9) first
    out, proposer, _ = mcts(cfg, script, {("c",): 0.9, ("d",): 0.1})
    assert out.result.verified and out.result.early_stop and not out.result.fallback
    assert out.result.solution == ("c", "s1")
    assert ("d",) not in expanded_states(proposer)  # it stopped before expanding the other line


def test_verified_stop_found_by_a_rollout_is_grafted_into_the_tree():
    script = {(): ["c"], ("c",): ["d"], ("c", "d"): ["s1"]}
    cfg = SearchConfig(iteration_limit=50, roll_policy="greedy", roll_forward_steps=3, branch=1)
    out, _, _ = mcts(cfg, script)
    assert out.result.verified and out.result.solution == ("c", "d", "s1")
    nodes = {r.steps: r for r in out.tree}
    assert nodes[("c", "d")].parent_id == nodes[("c",)].node_id
    assert nodes[("c", "d", "s1")].is_end and nodes[("c", "d", "s1")].parent_id == nodes[("c", "d")].node_id


def test_without_a_verified_solution_the_prm_pick_is_returned():
    script = {(): ["c", "d"], ("c",): ["The answer is 1"], ("d",): ["The answer is 2"]}
    cfg = SearchConfig(iteration_limit=6, roll_policy="none")
    values = {("c", "The answer is 1"): 0.3, ("d", "The answer is 2"): 0.8}
    out, _, _ = mcts(cfg, script, values)
    assert not out.result.verified and not out.result.fallback
    assert out.result.solution == ("d", "The answer is 2")  # highest V among end leaves


def test_value_gate_is_off_when_the_rules_verify():
    # V >= end_gate would accept "c" unfinished in evaluation mode; with a verifier the search goes on
    script = {(): ["c"], ("c",): ["s1"]}
    cfg = SearchConfig(iteration_limit=5, roll_policy="none", branch=1, end_gate=0.9)
    out, _, _ = mcts(cfg, script, {("c",): 0.95})
    assert out.result.solution == ("c", "s1") and out.result.verified
    out, _, _ = mcts(cfg, script, {("c",): 0.95}, rules=TOY_NO_STOP)
    assert out.result.solution == ("c",) and out.result.early_stop and not out.result.verified


def test_data_collection_can_keep_searching_after_a_verified_solution():
    script = {(): ["c", "d"], ("c",): ["s1"], ("d",): ["s2"]}
    cfg = SearchConfig(iteration_limit=10, roll_policy="none", sample_value="full", verified_stop=False)
    out, _, _ = mcts(cfg, script)
    solved = [r.steps for r in out.tree if r.steps and r.steps[-1].startswith("s")]
    assert sorted(solved) == [("c", "s1"), ("d", "s2")]  # both traces found; ends are not re-selected


def test_constant_value_asks_no_prm():
    script = {(): ["c", "d"], ("c",): ["s1"], ("d",): ["s2"]}
    cfg = SearchConfig(iteration_limit=10, value="constant")
    out, _, scorer = mcts(cfg, script)
    assert scorer.requests == [] and out.result.scored == 0 and out.result.verified


# ---------------------------------------------------------------------------------------------- ToT


def tot_run(fn, cfg, script, values=None, rules=TOY):
    proposer = FakeProposer(table_proposer(script))
    scorer = FakeScorer(table_scorer(values or {}, 0.5))
    out = serve_sync(fn("Q", cfg, 0, question_id="q", rules=rules), proposer, scorer)
    return out, proposer, scorer


def test_tot_bfs_never_keeps_or_expands_illegal_children_and_stops_verified():
    script = {(): ["x1", "c", "a1", "b1"], ("c",): ["s1", "x2"], ("a1",): ["e"]}
    values = {("x1",): 1.0, ("c",): 0.6, ("a1",): 0.7}
    out, proposer, scorer = tot_run(tot.search_bfs, TotConfig(beam=3, branch=4), script, values)
    assert ("x1",) not in expanded_states(proposer) and ("x1",) not in [r.steps for r in scorer.requests]
    assert out.result.merged == 1 and out.result.illegal >= 1
    assert out.result.verified and out.result.solution == ("c", "s1")


def test_tot_dfs_skips_illegal_children_and_stops_verified():
    script = {(): ["x1", "c"], ("c",): ["x2", "d"], ("c", "d"): ["s1"]}
    out, proposer, _ = tot_run(tot.search_dfs, TotConfig(threshold=0.0, budget=10), script)
    assert not any(s and s[-1].startswith("x") for s in expanded_states(proposer))
    assert out.result.verified and out.result.solution == ("c", "d", "s1")


# ------------------------------------------------------------------------------- no rules: as before

OLD_NODE = ("question_id", "node_id", "parent_id", "steps", "depth", "value", "prm_value", "visits")
OLD_NODE += ("is_end", "answer", "correct", "reflection")
OLD_RESULT = ("question_id", "solution", "answer", "value", "correct", "iterations", "expansions")
OLD_RESULT += ("generated_tokens", "scored", "fallback", "early_stop", "empty_proposals")
# sha256 of these fields over the runs below, computed at 97a2549 (before the rules existed)
GOLDEN = "0289f4579a2faafc687242df95f2d63ab675ba7a78094ff42dd206ccf63ae6b2"


def _digest(outcome) -> str:
    tree = [{k: getattr(n, k) for k in OLD_NODE} for n in outcome.tree]
    result = {k: getattr(outcome.result, k) for k in OLD_RESULT}
    return json.dumps([tree, result], sort_keys=True, default=list)


def test_a_task_without_rules_is_searched_exactly_as_before():
    h = hashlib.sha256()
    cfgs = [
        SearchConfig(iteration_limit=12, branch=3),
        SearchConfig(iteration_limit=15, sample_value="full", end_gate=0.8, roll_forward_steps=1),
        SearchConfig(iteration_limit=10, roll_policy="random", roll_branch=2),
        SearchConfig(iteration_limit=8, roll_policy="none", weighted_verify=True),
    ]
    for c, cfg in enumerate(cfgs):
        for q in range(6):
            gen = search(f"Q{q}", cfg, 100 * c + q, question_id=f"q{q}", gold=str(q % 4))
            proposer = FakeProposer(hashed_proposer(width=4, answer_depth=3))
            h.update(_digest(serve_sync(gen, proposer, FakeScorer(hashed_scorer(f"s{q}")))).encode())
    for fn in (tot.search_bfs, tot.search_dfs):
        for q in range(6):
            tcfg = TotConfig(beam=2, budget=10, threshold=0.2, gate=0.7)
            gen = fn(f"Q{q}", tcfg, q, question_id=f"q{q}", gold=str(q % 4))
            proposer = FakeProposer(hashed_proposer(width=4, answer_depth=3))
            h.update(_digest(serve_sync(gen, proposer, FakeScorer(hashed_scorer(f"s{q}")))).encode())
    assert h.hexdigest() == GOLDEN


def test_new_keys_are_checked_at_config_load():
    import pytest

    from conf.load import ConfigError, compose

    for bad, key in (
        (["backbone.prm_reads=nope"], "backbone.prm_reads"),
        (["backbone.prm_train.prm_loss=l1"], "backbone.prm_train.prm_loss"),
        (["eval.search.value=zero"], "eval.search.value"),
        (["pool.trees_in_flight=lots"], "pool.trees_in_flight"),
        (["pool.trees_in_flight=0"], "pool.trees_in_flight"),
        (["search.max_expansions=0"], "search.max_expansions"),
    ):
        with pytest.raises(ConfigError, match=key):
            compose(bad)
    assert compose(["task=countdown"]).search.max_expansions == 4
    assert compose(["pool.trees_in_flight=32"]).pool.trees_in_flight in (32, "32")
