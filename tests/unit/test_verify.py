"""One correctness question for every task (pipeline.verify): gold answers graded as before, countdown
derivations checked by its verifier wherever the pipeline decides what is correct."""

from __future__ import annotations

from pipeline.baselines import select_rest_em
from pipeline.prompting import PromptFormat
from pipeline.records import NodeRecord, Question
from pipeline.tasks import countdown
from pipeline.values import grade_leaves, prm_examples, select_sft
from pipeline.verify import answer_check, as_check, solution_check

CD = Question("cd1", "8 3 5 2 to 24", "24", source="countdown", difficulty=4)
RIGHT = ("8*3=24 (left: 24 5 2)", "The answer is 24")
BARE = ("The answer is 24",)
ILLEGAL = ("8*3=24 (left: 24 5 2)", "24*1=24 (left: 24 5 2)", "The answer is 24")  # 1 was never given
FMT = PromptFormat()


def test_answer_tasks_grade_the_stated_answer_as_before():
    q = Question("a1", "(2+3)*4", "20", source="arith")
    check = solution_check(q)
    assert check(("2+3=5", "5*4=20", "The answer is 20"), "20") is True
    assert check(("The answer is 21",), "21") is False
    assert check(("no answer",), None) is False  # no answer stated: wrong
    assert solution_check(Question("x", "?")) is None  # no gold, no verifier: nothing to check
    assert as_check(None) is None and as_check("7")((), "7.0") is True
    assert answer_check("7")(("The answer is 8",), "8") is False


def test_countdown_needs_a_legal_derivation_not_just_the_number():
    check = solution_check(CD)
    assert check(RIGHT, "24") is True
    assert check(BARE, "24") is False
    assert check(ILLEGAL, "24") is False
    other_prefix = solution_check(CD, answer_prefix="Answer:")
    assert other_prefix(("8*3=24 (left: 24 5 2)", "Answer: 24"), "24") is True
    assert countdown.verify(CD, RIGHT) and not countdown.verify(CD, BARE)


def _tree(*leaves: tuple[str, ...]) -> list[NodeRecord]:
    nodes = [NodeRecord("cd1", 0, -1, (), 0, 0.5, 0.5, 1, False)]
    for steps in leaves:
        parent = 0
        for depth in range(1, len(steps) + 1):
            node_id = len(nodes)
            end = depth == len(steps)
            nodes.append(NodeRecord("cd1", node_id, parent, steps[:depth], depth, 0.5, 0.5, 1, end))
            parent = node_id
    return nodes


def test_values_and_selection_use_the_verifier():
    tree = _tree(RIGHT, BARE, ILLEGAL)
    check = solution_check(CD)
    verdicts = grade_leaves(tree, check)
    ends = {n.steps: verdicts[n.node_id] for n in tree if n.is_end}
    assert ends == {RIGHT: True, BARE: False, ILLEGAL: False}
    assert grade_leaves(tree, "24") == {n.node_id: True for n in tree if n.is_end}  # answer-only: fooled
    chosen = select_sft(tree, CD.content, _Selection(), FMT, gold=check)
    assert [c.steps for c in chosen] == [RIGHT]
    values = {e.steps: e.target for e in prm_examples(tree, CD.content, check)}
    assert values[RIGHT] == 1.0 and values[BARE] == 0.0
    samples = [(BARE, 5), (ILLEGAL, 9), (RIGHT, 7)]
    assert [e.steps for e in select_rest_em(CD, samples, check, FMT, 3)] == [RIGHT]


class _Selection:
    sft_filter = "correct"
    sft_top_k = 3
