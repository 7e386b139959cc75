"""D_V0 targets follow the closed forms of docs/ALGORITHM.md section 3."""

from __future__ import annotations

import pytest

from pipeline.records import Question
from pipeline.tasks.arith import check_trace, generate
from pipeline.values import recompute_target
from trainers.dv0 import build_dv0

QUESTIONS = generate(40, [2, 3, 4, 5], seed=0, max_operand=20)


def test_gold_prefixes_are_k_over_K():
    examples = build_dv0(QUESTIONS, seed=0)
    for q in QUESTIONS:
        K = len(q.solution)
        gold = {e.steps: e for e in examples if e.question_id == q.id and e.r == 0}
        assert len(gold) == K
        for k in range(1, K + 1):
            e = gold[q.solution[:k]]
            assert e.target == pytest.approx(k / K)
            assert e.m == K - k and e.parent_target == pytest.approx((k - 1) / K)


def test_wrong_steps_follow_the_formula():
    examples = build_dv0(QUESTIONS, seed=0, corruptions=3)
    by_q = {q.id: q for q in QUESTIONS}
    wrong = [e for e in examples if e.r == 1]
    assert len(wrong) > len(QUESTIONS)
    for e in wrong:
        gold = by_q[e.question_id].solution
        K = len(gold)
        d = next(i for i in range(len(e.steps)) if e.steps[i] != gold[i])  # the inserted wrong step
        assert e.m == K - d
        assert 0.0 <= e.target <= 1.0
        assert e.target == pytest.approx(recompute_target(e))
        if len(e.steps) == d + 1:  # the first wrong step: v = max(0, v_d - (1 - v_d) / (K - d + 1))
            v_d = d / K
            assert e.target == pytest.approx(max(0.0, v_d - (1 - v_d) / (K - d + 1)))
            assert e.parent_target == pytest.approx(v_d)
        else:  # later steps: the recursion goes on from the previous wrong value, r = 1, m unchanged
            parent = next(x for x in examples if x.question_id == e.question_id and x.steps == e.steps[:-1])
            assert e.parent_target == pytest.approx(parent.target)
            assert e.target <= parent.target


def test_arith_corrupted_traces_are_wrong_and_siblings_exist():
    examples = build_dv0(QUESTIONS, seed=1)
    by_q = {q.id: q for q in QUESTIONS}
    finished = [e for e in examples if e.r == 1 and e.steps[-1].startswith("The answer is")]
    assert finished
    for e in finished:
        assert e.steps[-1] != by_q[e.question_id].solution[-1]
        check = check_trace(by_q[e.question_id].content, e.steps)
        assert not check.correct and not check.answer_correct
    gold_keys = {(e.question_id, e.steps[:-1]) for e in examples if e.r == 0}
    assert any((e.question_id, e.steps[:-1]) in gold_keys for e in examples if e.r == 1)


def test_deterministic_and_seed_dependent():
    assert build_dv0(QUESTIONS, seed=0) == build_dv0(QUESTIONS, seed=0)
    assert build_dv0(QUESTIONS, seed=0) != build_dv0(QUESTIONS, seed=1)


def test_generic_steps_are_copied_from_other_questions():
    qs = [
        Question("a", "who", "x", solution=("Alice met Bob.", "Bob is the one.", "The answer is Bob")),
        Question("b", "what", "y", solution=("It is red.", "Red means stop.", "The answer is stop")),
    ]
    examples = build_dv0(qs, seed=0, corruptions=4)
    other = {"a": set(qs[1].solution), "b": set(qs[0].solution)}
    for e in examples:
        if e.r == 1 and not e.steps[-1].startswith("The answer is"):
            assert e.steps[-1] in other[e.question_id]
