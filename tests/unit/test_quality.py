"""PRM step AUC: the rank statistic and the labelling of tree nodes by the arith step checker."""

from __future__ import annotations

import pytest

from pipeline.quality import arith_first_error, auc, prefix_right, step_auc
from pipeline.records import NodeRecord, Question


def test_auc_extremes_ties_and_one_class():
    assert auc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert auc([0.1, 0.2, 0.9, 0.8], [True, True, False, False]) == 0.0
    assert auc([0.5, 0.5], [True, False]) == 0.5
    # one positive (0.6) above 2 of 3 negatives, tied with none: 2/3
    assert auc([0.6, 0.7, 0.5, 0.1], [True, False, False, False]) == pytest.approx(2 / 3)
    # tie with one negative counts half: (1 + 0.5) / 2
    assert auc([0.6, 0.6, 0.1], [True, False, False]) == pytest.approx(0.75)
    assert auc([0.3, 0.4], [True, True]) is None
    with pytest.raises(ValueError):
        auc([0.1], [True, False])


def test_prefix_right():
    assert prefix_right(None, 3)
    assert prefix_right(2, 2)  # the wrong step is the third, after this prefix
    assert not prefix_right(1, 2)


def _node(qid, i, steps, prm):
    return NodeRecord(qid, i, -1 if i == 0 else 0, tuple(steps), len(steps), prm, prm, 1, False)


def test_step_auc_on_a_hand_written_tree():
    q = Question(id="q", content="((9*9)-30)-16", answer="35")
    nodes = [
        _node("q", 0, [], 0.0),  # root: ignored
        _node("q", 1, ["9*9=81"], 0.9),  # right
        _node("q", 2, ["9*9=80"], 0.2),  # wrong arithmetic
        _node("q", 3, ["9*9=81", "81-30=51"], 0.8),  # right
        _node("q", 4, ["9*9=81", "81-16=65"], 0.3),  # skipped operation
        _node("q", 5, ["9*9=80", "80-30=50"], 0.4),  # wrong from the first step on
        _node("other", 1, ["1+1=2"], 0.0),  # question not in the set: ignored
    ]
    check = arith_first_error("The answer is")
    result = step_auc([nodes], {"q": q}, check)
    # `_node` hangs every node under node 0: 2 right x 3 wrong sibling pairs
    assert result == {"auc": 1.0, "nodes": 5, "right": 2, "sibling_auc": 1.0, "sibling_pairs": 6}
    # a value model that prefers the wrong prefixes scores below chance
    flipped = [_node("q", n.node_id, n.steps, 1 - n.prm_value) for n in nodes[:6]]
    assert step_auc([flipped], {"q": q}, check)["auc"] == 0.0
    assert step_auc([flipped], {"q": q}, check)["sibling_auc"] == 0.0


def test_sibling_auc_ignores_depth_confounding():
    """Values rising with depth rank wrong deep nodes above right shallow ones (all-node AUC < 0.5),
    while every parent still prefers its right child (sibling AUC 1)."""
    q = Question(id="q", content="((9*9)-30)-16", answer="35")

    def node(i, parent, steps, prm):
        return NodeRecord("q", i, parent, tuple(steps), len(steps), prm, prm, 1, False)

    nodes = [
        node(0, -1, [], 0.0),
        node(1, 0, ["9*9=81"], 0.3),
        node(2, 0, ["9*9=80"], 0.2),
        node(3, 2, ["9*9=80", "80-30=50"], 0.6),  # below a wrong node: wrong, only child
        node(4, 3, ["9*9=80", "80-30=50", "50-16=34"], 0.9),
    ]
    result = step_auc([nodes], {"q": q}, arith_first_error("The answer is"))
    assert result["auc"] < 0.5
    assert result["sibling_auc"] == 1.0 and result["sibling_pairs"] == 1


def test_countdown_nodes_are_labelled_by_reachability_and_illegal_ones_left_out():
    """Countdown: a node is right when the solver can still make the target from it; nodes the rules
    rejected are left out (the search values them low without the PRM: with them every AUC read 1.0)."""
    from pipeline.quality import task_node_label
    from pipeline.tasks import countdown

    q = Question(id="q", content="4 6 8 to 24", answer="24")

    def node(i, steps, prm, illegal=False):
        return NodeRecord(
            "q", i, 0 if i else -1, tuple(steps), len(steps), prm, prm, 1, illegal, illegal=illegal
        )  # illegal: an end leaf

    label = task_node_label(countdown, "The answer is")
    nodes = [
        node(0, [], 0.5),
        node(1, ["6*4=24 (left: 24 8)"], 0.4),  # the target is made: right
        node(2, ["4+6=10 (left: 10 8)"], 0.6),  # 18, 2, 80, 1.25: the target is out of reach
        node(3, ["4+6=11 (left: 11 8)"], 0.0, illegal=True),  # wrong arithmetic: left out
    ]
    assert label(q, nodes[1]) is True and label(q, nodes[2]) is False and label(q, nodes[3]) is None
    result = step_auc([nodes], {"q": q}, label=label)
    assert result["nodes"] == 2 and result["right"] == 1
    assert result["sibling_pairs"] == 1 and result["sibling_auc"] == 0.0  # the PRM preferred the dead end
    with pytest.raises(ValueError):
        step_auc([nodes], {"q": q})
