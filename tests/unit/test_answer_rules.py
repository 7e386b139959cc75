"""Answers in real model text (issue 19): with the real backbones' `answer_fallbacks`, evaluation and the
grading of end leaves find `A: 18`, `#### 18`, `\\boxed{18}` and a last line's number, and evaluation
reports which rule found each answer."""

from __future__ import annotations

from conf.load import compose
from loop.evaluate import Answered, _score
from pipeline.records import NodeRecord, Question
from pipeline.values import grade_leaves
from pipeline.verify import solution_check

RULES = tuple(compose(["backbone=smollm2"]).backbone.answer_fallbacks)
TEXTS = {
    "answer_line": ("She sells 16 - 3 - 4 = 9 eggs.", "She makes 9 * 2 = 18 dollars.", "A: 18"),
    "hash": ("9 eggs at $2 each is $18.", "#### 18"),
    "boxed": ("So the total is $\\boxed{18}$.",),
    "last_number": ("Janet makes 9 * 2 = 18 dollars.", "So she makes 18 dollars every day."),
    "prefix": ("9 * 2 = 18", "The answer is 18"),
}
Q = Question("g1", "How much does Janet make?", "18")


def test_real_backbones_read_answers_by_every_rule_and_evaluation_counts_them():
    assert RULES == ("boxed", "hash", "answer_line", "math_verify", "last_number")
    rows = [Answered.of(steps, 10, "The answer is", RULES) for steps in TEXTS.values()]
    assert [(r.answer, r.rule) for r in rows] == [("18", rule) for rule in TEXTS]
    result = _score([Q] * len(rows), rows, 1.0, "The answer is", RULES)
    assert result["correct"] == len(rows) and result["ungradable"] == 0
    assert result["answer_rules"] == {rule: 1 for rule in sorted(TEXTS)}
    plain = [Answered.of(steps, 10, "The answer is") for steps in TEXTS.values()]
    assert [r.rule for r in plain] == ["none", "hash", "boxed", "none", "prefix"]  # the tiny default
    assert _score([Q] * 5, plain, 1.0, "The answer is", ())["correct"] == 3


def test_end_leaves_are_graded_with_the_same_fallbacks():
    tree = [NodeRecord("g1", 0, -1, (), 0, 0.5, 0.5, 1, False)]
    for i, steps in enumerate(TEXTS.values(), start=1):
        tree.append(NodeRecord("g1", i, 0, steps, len(steps), 0.5, 0.5, 1, True))
    with_rules = grade_leaves(tree, solution_check(Q, fallbacks=RULES))
    assert all(with_rules.values()) and len(with_rules) == len(TEXTS)
    prefix_only = grade_leaves(tree, solution_check(Q))
    assert sum(prefix_only.values()) == 3  # `A: 18` and a bare last line are missed without fallbacks
