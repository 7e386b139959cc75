"""Value inference on a hand-computed tree, its properties on random trees, and SFT selection."""

from __future__ import annotations

import random

import pytest

from conf.schema import SelectionConfig
from pipeline.prompting import PromptFormat
from pipeline.records import NodeRecord, PRMExample
from pipeline.values import (
    grade_leaves,
    infer_values,
    prm_examples,
    quality_value,
    recompute_target,
    select_sft,
)

# node id: (parent id, step text, is_end, search V)
WORKED = {
    0: (-1, None, False, 0.5),
    1: (0, "A", False, 0.6),  # A
    2: (0, "B", False, 0.3),  # B
    3: (1, "The answer is 5", True, 0.9),  # A1: correct
    4: (1, "The answer is 6", True, 0.4),  # A2: wrong
    5: (2, "B1", False, 0.3),  # B1
    6: (5, "The answer is 7", True, 0.2),  # B2: wrong
    7: (0, "C", False, 0.1),  # C: unexpanded, not an end leaf
    8: (0, "D", False, 0.5),  # D
    9: (8, "D1", False, 0.6),  # D1
    10: (9, "The answer is 5.0", True, 0.8),  # D2: correct
    11: (9, "The answer is 9", True, 0.3),  # D1x: wrong
}


def make_tree(spec: dict, question_id: str = "q") -> list[NodeRecord]:
    steps: dict[int, tuple[str, ...]] = {}
    records = []
    for node_id, (parent, text, is_end, value) in spec.items():
        steps[node_id] = () if parent < 0 else steps[parent] + (text,)
        records.append(
            NodeRecord(
                question_id=question_id,
                node_id=node_id,
                parent_id=parent,
                steps=steps[node_id],
                depth=len(steps[node_id]),
                value=value,
                prm_value=value,
                visits=1,
                is_end=is_end,
            )
        )
    return records


def test_worked_example_by_hand():
    tree = make_tree(WORKED)
    correct = grade_leaves(tree, "5")
    assert correct == {3: True, 4: False, 6: False, 10: True, 11: False}
    values = infer_values(tree, correct)
    # Reasoning distance m (steps to the nearest correct leaf):
    #   A1 = 0, A = 1, D2 = 0, D1 = 1, D = 2, root = min(1 + 1, 2 + 1) = 2.
    #   No correct leaf below B, B1, B2: they take the root's m = 2; A2 takes A's m = 1; D1x takes D1's 1.
    # Step reward r: 0 for A, A1, D, D1, D2 (a correct leaf below); 1 for A2, B, B1, B2, D1x.
    # Values, v_root = 0, v = clip(v_parent + (1 - v_parent) / (m + 1) * (1 - 2 r), 0, 1):
    #   A   = 0 + 1 / 2                = 0.5
    #   A1  = 0.5 + 0.5 / 1            = 1.0
    #   A2  = 0.5 - 0.5 / 2            = 0.25
    #   B   = 0 - 1 / 3 -> clip        = 0.0;  B1 = 0 - 1/3 -> 0.0;  B2 = 0.0
    #   D   = 0 + 1 / 3                = 0.3333...
    #   D1  = 1/3 + (2/3) / 2          = 0.6666...
    #   D2  = 2/3 + (1/3) / 1          = 1.0
    #   D1x = 2/3 - (1/3) / 2          = 0.5
    #   C is on no path to an end leaf: no value.
    expected = {
        1: (1, 0, 0.5),
        3: (0, 0, 1.0),
        4: (1, 1, 0.25),
        2: (2, 1, 0.0),
        5: (2, 1, 0.0),
        6: (2, 1, 0.0),
        8: (2, 0, 1 / 3),
        9: (1, 0, 2 / 3),
        10: (0, 0, 1.0),
        11: (1, 1, 0.5),
    }
    assert set(values) == set(expected)
    for node_id, (m, r, v) in expected.items():
        got = values[node_id]
        assert (got.m, got.r) == (m, r), node_id
        assert got.v == pytest.approx(v), node_id


def test_prm_examples_carry_their_formula_inputs():
    tree = make_tree(WORKED)
    examples = prm_examples(tree, "What is 2 + 3?", gold="5")
    assert [e.steps[-1] for e in examples][:3] == ["A", "B", "The answer is 5"]
    assert len(examples) == 10 and all(e.question == "What is 2 + 3?" for e in examples)
    for example in examples:
        assert recompute_target(example) == example.target
    d1x = next(e for e in examples if e.steps == ("D", "D1", "The answer is 9"))
    assert (d1x.m, d1x.r, d1x.parent_target) == (1, 1, pytest.approx(2 / 3))


def test_no_correct_leaf_means_no_value_examples():
    tree = make_tree(WORKED)
    assert prm_examples(tree, "q", gold="42") == []
    assert infer_values(tree, {3: False, 10: False}) == {}


def test_leaf_without_answer_is_incorrect():
    spec = {
        0: (-1, None, False, 0.5),
        1: (0, "thinking hard", True, 0.95),
        2: (0, "The answer is 1", True, 0.6),
    }
    assert grade_leaves(make_tree(spec), "1") == {1: False, 2: True}


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_correct_path_of_k_steps_has_v_k_over_k_and_wrong_children_follow_the_formula(k):
    spec = {0: (-1, None, False, 0.0)}
    for d in range(1, k + 1):
        spec[d] = (d - 1, f"s{d}" if d < k else "The answer is 3", d == k, 0.5)
    for d in range(0, k):  # a wrong end leaf hanging off every node of the path
        spec[100 + d] = (d, "The answer is 4", True, 0.5)
    values = infer_values(make_tree(spec), grade_leaves(make_tree(spec), "3"))
    for d in range(1, k + 1):
        assert values[d].v == pytest.approx(d / k) and values[d].m == k - d and values[d].r == 0
    assert values[k].v == 1.0 and values[k].m == 0
    for d in range(0, k):
        v_d = 0.0 if d == 0 else d / k
        big_m = k - d
        assert values[100 + d].m == big_m
        assert values[100 + d].v == pytest.approx(max(0.0, v_d - (1 - v_d) / (big_m + 1)))


def random_tree(rng: random.Random, size: int) -> list[NodeRecord]:
    spec = {0: (-1, None, False, 0.5)}
    for node_id in range(1, size):
        parent = rng.randrange(node_id)
        while spec[parent][2]:  # end leaves have no children
            parent = rng.randrange(node_id)
        end = rng.random() < 0.35
        text = f"The answer is {rng.randrange(3)}" if end else f"step {node_id}"
        spec[node_id] = (parent, text, end, rng.random())
    return make_tree(spec)


@pytest.mark.parametrize("seed", range(30))
def test_properties_on_random_trees(seed):
    rng = random.Random(seed)
    tree = random_tree(rng, rng.randrange(2, 40))
    correct = grade_leaves(tree, "1")
    values = infer_values(tree, correct)
    if not any(correct.values()):
        assert values == {}
        return
    by_id = {n.node_id: n for n in tree}
    for node_id, value in values.items():
        assert 0.0 <= value.v <= 1.0
        assert value.v == quality_value(value.parent_v, value.m, value.r)
        if correct.get(node_id):
            assert value.m == 0 and value.r == 0 and value.v == 1.0
        parent = by_id[node_id].parent_id
        assert value.parent_v == (values[parent].v if parent in values else 0.0)
    for example in prm_examples(tree, "q", "1"):
        assert recompute_target(example) == example.target


def test_quality_value_range_and_sign():
    assert quality_value(0.0, 0, 0) == 1.0
    assert quality_value(0.2, 3, 1) == 0.0  # 0.2 - 0.8 / 4 = 0.0
    assert quality_value(0.0, 0, 1) == 0.0  # clipped from -1
    assert recompute_target(PRMExample("q", "Q", ("a",), 0.5, 1, 0, 0.0)) == 0.5


# ------------------------------------------------------------------------------------------------ SFT

SFT_SPEC = {
    0: (-1, None, False, 0.5),
    1: (0, "x = 2 + 3", False, 0.6),
    2: (1, "The answer is 5", True, 0.7),  # correct
    3: (0, "x = 5", False, 0.9),
    4: (3, "The answer is 5", True, 0.95),  # correct, best
    5: (0, "guess", False, 0.2),
    6: (5, "The answer is 6", True, 0.99),  # wrong, highest V
    7: (0, "x  = 5 ", False, 0.8),
    8: (7, "The answer is 5", True, 0.85),  # correct; "x  = 5 " differs from "x = 5" inside
}
FMT = PromptFormat(template="Q:{question}\n", delimiter="\n")


def test_select_sft_keeps_best_distinct_correct_traces():
    tree = make_tree(SFT_SPEC)
    chosen = select_sft(tree, "2+3?", SelectionConfig(sft_top_k=2), FMT, gold="5")
    assert [c.steps for c in chosen] == [("x = 5", "The answer is 5"), ("x  = 5 ", "The answer is 5")]
    assert [c.value for c in chosen] == [0.95, 0.85]
    first = chosen[0]
    assert first.prompt == "Q:2+3?\n" and first.solution == "x = 5\nThe answer is 5\n"
    assert first.question_id == "q" and first.source == "mcts"
    assert select_sft(tree, "2+3?", SelectionConfig(sft_top_k=5), FMT, gold="5")[-1].value == 0.7
    assert select_sft(tree, "2+3?", SelectionConfig(), FMT, gold=None) == []


def test_select_sft_deduplicates_by_step_text():
    spec = dict(SFT_SPEC)
    spec[7] = (0, " x = 5", False, 0.8)  # same text as node 3 once stripped
    chosen = select_sft(make_tree(spec), "2+3?", SelectionConfig(sft_top_k=5), FMT, gold="5")
    assert [c.value for c in chosen] == [0.95, 0.7]


def test_select_sft_authors_filter_checks_no_correctness():
    tree = make_tree(SFT_SPEC)
    cfg = SelectionConfig(sft_filter="authors", sft_top_k=5, authors_min_value=0.2, authors_min_chars=20)
    chosen = select_sft(tree, "2+3?", cfg, FMT)
    # solution texts (stripped): "guess\nThe answer is 6" 21 chars, PRM 0.99: kept although wrong;
    # "x = 5\n..." 21, "x  = 5 \n..." 23, "x = 2 + 3\n..." 25 chars
    assert [c.value for c in chosen] == [0.99, 0.95, 0.85, 0.7]
    strict = SelectionConfig(sft_filter="authors", sft_top_k=5, authors_min_value=0.9, authors_min_chars=21)
    assert [c.value for c in select_sft(tree, "2+3?", strict, FMT)] == [0.99, 0.95]
    longer = SelectionConfig(sft_filter="authors", sft_top_k=5, authors_min_value=0.8, authors_min_chars=23)
    assert [c.value for c in select_sft(tree, "2+3?", longer, FMT)] == [0.85]


def test_select_sft_oracle_uses_the_trace_checker():
    tree = make_tree(SFT_SPEC)
    cfg = SelectionConfig(sft_filter="oracle", sft_top_k=5)
    chosen = select_sft(tree, "2+3?", cfg, FMT, gold="5", trace_ok=lambda steps: "+" in steps[0])
    assert [c.steps[0] for c in chosen] == ["x = 2 + 3"]
    assert len(select_sft(tree, "2+3?", cfg, FMT, gold="5")) == 3  # no checker: same as "correct"
    with pytest.raises(ValueError, match="sft_filter"):
        select_sft(tree, "2+3?", SelectionConfig(sft_filter="best"), FMT, gold="5")
