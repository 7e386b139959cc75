"""The arith generator (determinism, difficulty, gold steps, splits) and the step checker."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pipeline.tasks import arith
from pipeline.tasks.arith import check_trace, dv0_set, evaluate, generate, make_task_split, warm_start_set

Q = "((9*9)-30)-16"
GOLD = ("9*9=81", "81-30=51", "51-16=35", "The answer is 35")


def task(**overrides):
    cfg = dict(
        train_size=60,
        heldout_size=40,
        train_difficulties=[2, 3, 4, 5],
        heldout_difficulties=[2, 3, 4, 5],
        warm_difficulties=[2, 3],
        warm_size=300,
        warm_long_fraction=0.1,
        max_operand=20,
        dv0_size=200,
        dv0_difficulties=[],
    )
    cfg.update(overrides)
    return SimpleNamespace(**cfg)


def test_generate_is_deterministic_and_seed_dependent():
    a = generate(50, [2, 3, 4], seed=7, max_operand=20)
    assert a == generate(50, [2, 3, 4], seed=7, max_operand=20)
    assert [q.content for q in a] != [q.content for q in generate(50, [2, 3, 4], seed=8, max_operand=20)]


def test_generate_counts_difficulty_and_no_duplicates():
    qs = generate(61, [1, 2, 3, 4, 5, 6], seed=0, max_operand=20)
    assert len(qs) == 61 and len({q.content for q in qs}) == 61 and len({q.id for q in qs}) == 61
    counts = {d: sum(q.difficulty == d for q in qs) for d in range(1, 7)}
    assert counts == {1: 11, 2: 10, 3: 10, 4: 10, 5: 10, 6: 10}
    assert [q.difficulty for q in qs[:6]] == [1, 2, 3, 4, 5, 6]  # interleaved
    for q in qs:
        assert q.source == "arith" and q.id.startswith(f"arith-d{q.difficulty}-")
        assert sum(q.content.count(op) for op in "+-*") == q.difficulty
        assert len(q.solution) == q.difficulty + 1


def test_gold_answer_equals_step_results_and_values_stay_small():
    for q in generate(200, [2, 3, 4, 5, 6], seed=1, max_operand=20, flip=0.3):
        results = [int(step.split("=")[1]) for step in q.solution[:-1]]
        assert all(1 <= r <= arith.MAX_VALUE for r in results)
        assert q.answer == str(results[-1]) == str(evaluate(q.content))
        assert q.solution[-1] == f"The answer is {q.answer}"
        assert check_trace(q, q.solution).correct


def test_operands_in_range_and_ids_stable():
    qs = generate(100, [3], seed=2, max_operand=9)
    for q in qs:
        nums = [int(t) for t in arith._tokenize(q.content) if t.isdigit()]
        assert all(1 <= n <= 9 for n in nums)
        assert q.id == arith.question_id(q.content, 3)


def test_flip_puts_operands_on_the_left():
    qs = generate(100, [3], seed=3, max_operand=20, flip=1.0)
    assert all(q.content[0] != "(" for q in qs)
    assert all(q.content.endswith("))") for q in qs)


def test_exclude_and_impossible_requests():
    first = generate(10, [2], seed=0, max_operand=20)
    again = generate(10, [2], seed=0, max_operand=20, exclude={q.content for q in first})
    assert not {q.content for q in first} & {q.content for q in again}
    with pytest.raises(ValueError, match="distinct"):
        generate(500, [1], seed=0, max_operand=3)
    with pytest.raises(ValueError, match="difficulty 7"):
        generate(1, [7], seed=0, max_operand=20)


def test_task_split_sizes_and_disjointness():
    cfg = task()
    train, heldout = make_task_split(cfg, seed=0)
    assert len(train) == 60 and len(heldout) == 40
    assert {q.difficulty for q in heldout} == {2, 3, 4, 5}
    assert all(sum(q.difficulty == d for q in heldout) == 10 for d in (2, 3, 4, 5))
    assert not {q.content for q in train} & {q.content for q in heldout}
    # held-out depends only on its own settings and the seed
    assert make_task_split(task(train_size=10), seed=0)[1] == heldout
    assert make_task_split(cfg, seed=1)[1] != heldout


def test_warm_start_set_mix_and_disjoint_from_heldout():
    cfg = task()
    train, heldout = make_task_split(cfg, seed=0)
    warm = warm_start_set(cfg, seed=0)
    assert len(warm) == 300
    counts = {d: sum(q.difficulty == d for q in warm) for d in (2, 3, 4, 5)}
    assert counts == {2: 135, 3: 135, 4: 20, 5: 10}
    assert not {q.content for q in warm} & ({q.content for q in heldout} | {q.content for q in train})
    assert warm == warm_start_set(cfg, seed=0)
    # round 0's data does not depend on the train/held-out sizes (one cached round 0 serves all)
    assert warm_start_set(task(train_size=7, heldout_size=5), seed=0) == warm
    dv0 = dv0_set(cfg, seed=0)
    assert len(dv0) == 200 and {q.difficulty for q in dv0} == {2, 3, 4, 5}
    assert dv0_set(task(train_size=7, heldout_size=5), seed=0) == dv0
    assert not {q.content for q in dv0} & ({q.content for q in heldout} | {q.content for q in train})
    none_long = warm_start_set(task(warm_long_fraction=0.0), seed=0)
    assert {q.difficulty for q in none_long} == {2, 3}


# ------------------------------------------------------------------------------------------- checker


def test_right_trace():
    c = check_trace(Q, GOLD)
    assert c.correct and c.answer_correct and c.gold == 35 and c.answer == 35 and c.first_error is None
    assert all(s.ok and s.follows_plan and s.arithmetic_ok for s in c.steps)
    assert check_trace(Q, "\n".join(GOLD) + "\n").correct  # a solution text works too
    assert check_trace(Q, ["9 * 9 = 81", "81 - 30 = 51", "51 - 16 = 35", "The answer is 35."]).correct


def test_commutative_operands_either_order():
    assert check_trace("(3+(4*5))-2", ["5*4=20", "20+3=23", "23-2=21", "The answer is 21"]).correct
    c = check_trace("30-(9-4)", ["4-9=5", "30-5=25", "The answer is 25"])
    assert c.steps[0].error == arith.WRONG_OPERATION  # minus is not commutative


def test_wrong_arithmetic_is_counted_once():
    c = check_trace(Q, ["9*9=81", "81-30=50", "50-16=34", "The answer is 34"])
    assert [s.error for s in c.steps] == ["", arith.WRONG_ARITHMETIC, "", arith.WRONG_ANSWER]
    assert c.steps[1].follows_plan and not c.steps[1].arithmetic_ok
    assert c.steps[2].follows_plan and c.steps[2].arithmetic_ok  # uses its own previous result
    assert not c.correct and not c.answer_correct and c.first_error == 1


def test_skipped_operation():
    c = check_trace(Q, ["9*9=81", "51-16=35", "The answer is 35"])
    assert c.steps[1].error == arith.SKIPPED_OPERATION and c.steps[1].arithmetic_ok
    assert c.steps[2].ok and c.answer_correct and not c.correct
    c = check_trace(Q, ["9*9=81", "81-16=65", "65-30=35", "The answer is 35"])  # order swapped
    assert [s.error for s in c.steps] == ["", arith.SKIPPED_OPERATION, arith.EXTRA_OPERATION, ""]
    assert c.answer_correct and not c.correct


def test_merged_operations():
    c = check_trace(Q, ["9*9-30=51", "51-16=35", "The answer is 35"])
    assert c.steps[0].error == arith.MERGED_OPERATIONS and c.steps[0].arithmetic_ok
    assert not c.steps[0].follows_plan
    assert c.steps[1].ok and c.steps[2].ok and c.answer_correct and not c.correct
    assert check_trace(Q, ["(9*9)-30-16=35", "The answer is 35"]).steps[0].error == arith.MERGED_OPERATIONS


def test_right_answer_through_wrong_steps():
    c = check_trace(Q, ["9*9=80", "80-30=51", "51-16=35", "The answer is 35"])
    assert [s.error for s in c.steps] == [arith.WRONG_ARITHMETIC, arith.WRONG_ARITHMETIC, "", ""]
    assert c.answer_correct and not c.correct and c.first_error == 0


def test_garbage_answer_order_and_missing_answer():
    c = check_trace(Q, ["9*9=81", "hello", "81-30=51", "51-16=35", "The answer is 35"])
    assert c.steps[1].error == arith.GARBAGE and c.steps[1].kind == "garbage" and not c.correct
    for junk in ("9*9=", "=81", "9*9=81=81", "9**9=81", "(9*9=81", "81", "9*9=8 1", "9*9=eighty"):
        assert check_trace(Q, [junk]).steps[0].error == arith.GARBAGE, junk
    assert check_trace(Q, ["81=81"]).steps[0].error == arith.GARBAGE
    c = check_trace(Q, ["9*9=81", "The answer is 35"])
    assert c.steps[1].error == arith.ANSWER_TOO_EARLY and c.answer_correct and not c.correct
    c = check_trace(Q, [*GOLD, "35+0=35"])
    assert c.steps[-1].error == arith.AFTER_ANSWER and not c.correct
    c = check_trace(Q, GOLD[:-1])
    assert not c.correct and c.answer is None and c.first_error == 3
    assert check_trace(Q, [*GOLD[:-1], "The answer is thirty-five"]).steps[-1].error == arith.WRONG_ANSWER
    assert check_trace(Q, []).first_error == 0


def test_wrong_operation_and_extra_operation():
    c = check_trace(Q, ["9+9=18", "18-30=-12"])
    assert c.steps[0].error == arith.WRONG_OPERATION and c.steps[0].arithmetic_ok
    assert c.steps[1].ok  # applies the next operation to the trace's own result
    c = check_trace(Q, [*GOLD[:-1], "35*2=70", "The answer is 70"])
    assert c.steps[3].error == arith.EXTRA_OPERATION


def test_evaluate_and_unparsable_question():
    assert evaluate("2+3*4") == 14 and evaluate("(2+3)*4") == 20 and evaluate("10-2-3") == 5
    with pytest.raises(ValueError):
        check_trace("what is 2+2?", ["2+2=4"])
    with pytest.raises(ValueError):
        evaluate("(" * 100 + "1" + ")" * 100)
