"""The countdown task: solver, generator (determinism, solvability, gold steps, splits), step checker."""

from __future__ import annotations

import random
import subprocess
import sys
from types import SimpleNamespace

import pytest

from pipeline.tasks import countdown as cd
from pipeline.tasks.countdown import (
    apply_steps,
    check_trace,
    dv0_set,
    generate,
    make_task_split,
    parse_question,
    parse_step,
    reachable,
    shortest_solution,
    solve,
    value_of_state,
    verify,
    warm_start_set,
)

Q = "8 3 5 2 to 24"
GOLD = ("8*3=24 (left: 24 5 2)", "The answer is 24")


def errors(question, steps):
    return [s.error for s in check_trace(question, steps).steps]


def naive_reachable(nums: list[int], target: int) -> bool:
    """Independent brute force over ordered pairs (no memo, no canonical forms)."""
    if target in nums:
        return True
    for i, a in enumerate(nums):
        for j, b in enumerate(nums):
            if i != j:
                rest = [x for k, x in enumerate(nums) if k not in (i, j)]
                for r in (a + b, a - b, a * b, a // b if a % b == 0 else 0):
                    if r > 0 and naive_reachable([*rest, r], target):
                        return True
    return False


def task(**overrides):
    cfg = dict(
        train_size=30,
        heldout_size=20,
        train_difficulties=[3, 4, 5],
        heldout_difficulties=[3, 4, 5],
        warm_difficulties=[3],
        warm_size=40,
        warm_long_fraction=0.25,
        max_operand=20,
        dv0_size=24,
        dv0_difficulties=[],
    )
    cfg.update(overrides)
    return SimpleNamespace(**cfg)


# ---------------------------------------------------------------------------------------- format/solver


def test_module_is_pure_standard_library():
    code = (
        "import sys; before = set(sys.modules); import pipeline.tasks.countdown; "
        "ok = sys.stdlib_module_names | {'pipeline'}; "
        "bad = [m for m in set(sys.modules) - before if m.split('.')[0] not in ok]; "
        "assert not bad, bad"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_parse_question_and_step():
    assert parse_question(Q) == ((8, 3, 5, 2), 24)
    assert parse_question(" 4 7 8 8  to 24 ") == ((4, 7, 8, 8), 24)
    for bad in ("8 3 5 2 24", "8,3 to 24", "to 24", "8 3 to -4", "8 3 to 2x"):
        with pytest.raises(ValueError):
            parse_question(bad)
    assert parse_step("8*3=24 (left: 24 5 2)") == cd.Step(8, "*", 3, 24, (24, 5, 2))
    assert parse_step(" 8 * 3 = 24 (left: 24 5 2) ") == cd.Step(8, "*", 3, 24, (24, 5, 2))
    assert parse_step("3-8=-5 (left: -5 5 2)") == cd.Step(3, "-", 8, -5, (-5, 5, 2))
    for junk in ("8*3=24", "8x3=24 (left: 24 5 2)", "8*3=24 (left: )", "8*3*1=24 (left: 24)", "hello", ""):
        assert parse_step(junk) is None, junk


def test_solver_on_known_instances():
    # 4 7 8 8 -> 24: no single step makes 24 (pairs give 11 3 28 12 4 32 2 15 1 56 16 64 1), two do
    sols = solve([4, 7, 8, 8], 24)
    assert sols and all(len(s) == 3 and verify("4 7 8 8 to 24", s) for s in sols)
    assert ("7-4=3 (left: 3 8 8)", "8*3=24 (left: 24 8)", "The answer is 24") in sols
    assert len(set(sols)) == len(sols)
    # 1 1 1 -> at most 1+1+1 = 3
    assert solve([1, 1, 1], 100) is None and shortest_solution([1, 1, 1], 100) is None
    assert not reachable((1, 1, 1), 100)
    assert shortest_solution([8, 3, 5, 2], 24) == GOLD
    assert cd.shortest_length([8, 3, 5, 2], 24) == 1 and cd.shortest_length([24, 3], 24) == 0
    assert shortest_solution([24, 3], 24) == ("The answer is 24",)
    a = shortest_solution([4, 7, 8, 8], 24, random.Random(3))
    assert a == shortest_solution([4, 7, 8, 8], 24, random.Random(3)) and a in sols
    assert solve([4, 7, 8, 8], 24, limit=1) == sols[:1]
    assert solve([6, 4], 24, answer_prefix="So") == [("6*4=24 (left: 24)", "So 24")]


def test_reachable_on_states_and_against_brute_force():
    assert reachable((24, 5, 2), 24) and reachable((3, 24), 24) and reachable((5,), 5)
    assert reachable((2, 3), 6) and not reachable((2, 3), 7) and not reachable((5,), 6)
    assert reachable((25, 4), 100) and reachable((7, 4, 8, 8), 24) and not reachable((11, 5, 2), 24)
    rng = random.Random(0)
    for _ in range(120):
        nums = [rng.randint(1, 20) for _ in range(rng.choice((2, 3, 4)))]
        target = rng.randint(10, 100)
        assert reachable(nums, target) == naive_reachable(nums, target), (nums, target)


def test_apply_steps_tracks_the_multiset():
    assert apply_steps((8, 3, 5, 2), []) == (8, 3, 5, 2)
    assert apply_steps((8, 3, 5, 2), ["5-3=2 (left: 2 8 2)", "8/2=4 (left: 4 2)"]) == (4, 2)
    assert apply_steps((8, 3, 5, 2), [parse_step("3*8=24 (left: 2 5 24)")]) == (24, 5, 2)
    assert apply_steps((8, 3, 5, 2), ["8*8=64 (left: 64 3 5 2)"]) is None
    assert apply_steps((8, 3, 5, 2), ["not a step"]) is None


# ------------------------------------------------------------------------------------------- checker


def test_right_traces():
    c = check_trace(Q, GOLD)
    assert c.correct and c.answer_correct and c.gold == 24 and c.answer == 24 and c.first_error is None
    assert all(s.ok and s.follows_plan and s.arithmetic_ok for s in c.steps)
    assert verify(Q, "\n".join(GOLD) + "\n")  # a solution text works too
    assert verify(Q, ["3*8=24 (left: 2 5 24)", "The answer is 24."])  # + * either order, left any order
    assert verify(
        "4 7 8 8 to 24", ["8/8=1 (left: 1 4 7)", "7-1=6 (left: 6 4)", "6*4=24 (left: 24)", "The answer is 24"]
    )
    assert verify(
        "6 4 1 to 24", ["6*4=24 (left: 24 1)", "24*1=24 (left: 24)", "The answer is 24"]
    )  # wasteful
    assert verify(Q, ["8*3=24 (left: 24 5 2)", "So 24"], answer_prefix="So")
    assert verify("24 3 to 24", ["The answer is 24"])  # target given: no step needed


def test_illegal_operands():
    assert errors(Q, ["8*8=64 (left: 64 3 5 2)"]) == [cd.UNAVAILABLE]  # a number used twice
    reuse = ["8*3=24 (left: 24 5 2)", "24+8=32 (left: 32 5 2)", "The answer is 32"]
    assert errors("8 3 5 2 to 32", reuse)[1] == cd.UNAVAILABLE  # used up by step 1
    c = check_trace(Q, ["9*3=27 (left: 27 8 5 2)"])  # a number not given
    assert c.steps[0].error == cd.UNAVAILABLE and not c.steps[0].follows_plan and c.steps[0].arithmetic_ok
    assert errors("5 5 3 to 15", ["5*3=15 (left: 15 5)", "The answer is 15"]) == ["", ""]  # two copies


def test_illegal_arithmetic():
    c = check_trace(Q, ["8*3=25 (left: 25 5 2)", "25-1=24 (left: 24)", "The answer is 24"])
    assert (
        c.steps[0].error == cd.WRONG_ARITHMETIC and c.steps[0].follows_plan and not c.steps[0].arithmetic_ok
    )
    assert c.answer_correct and not c.correct and c.first_error == 0
    assert errors(Q, ["8/3=2 (left: 2 5 2)"]) == [cd.INEXACT_DIVISION]
    assert errors(Q, ["8/3=2.67 (left: 5 2)"]) == [cd.GARBAGE]
    assert errors(Q, ["3-8=-5 (left: -5 5 2)"]) == [cd.NOT_POSITIVE]  # negative
    assert errors(Q, ["3-8=5 (left: 5 5 2)"]) == [cd.NOT_POSITIVE]  # operands swapped
    assert errors("5 5 3 to 15", ["5-5=0 (left: 0 3)"]) == [cd.NOT_POSITIVE]  # zero
    assert errors(Q, ["8/2=4 (left: 4 3 5)"]) == [""]


def test_wrong_left_list():
    assert errors(Q, ["8*3=24 (left: 24 5)"]) == [cd.WRONG_LEFT]
    assert errors(Q, ["8*3=24 (left: 24 8 5 2)"]) == [cd.WRONG_LEFT]
    assert errors(Q, ["8*3=24 (left: 5 2)"]) == [cd.WRONG_LEFT]
    assert errors(Q, ["8*3=24 (left: 24 5 2 2)"]) == [cd.WRONG_LEFT]


def test_target_through_an_illegal_step():
    q = "6 4 3 to 20"
    for trace in (
        ["6*3=18 (left: 18 4)", "18+2=20 (left: 20)", "The answer is 20"],  # 2 not available
        ["6*4=24 (left: 24 3)", "24-3=20 (left: 20)", "The answer is 20"],  # 24-3 is 21
        ["6*4=24 (left: 24 3)", "24-4=20 (left: 20 3)", "The answer is 20"],  # 4 used twice
    ):
        c = check_trace(q, trace)
        assert c.answer_correct and not c.correct and not verify(q, trace) and c.first_error == 1
        assert c.steps[2].ok  # later steps are judged on the trace's own left list: counted once


def test_answer_line_errors():
    c = check_trace(Q, ["The answer is 24"])  # bare final line
    assert (
        c.steps[0].error == cd.ANSWER_TOO_EARLY and c.answer_correct and not verify(Q, ["The answer is 24"])
    )
    c = check_trace(Q, GOLD[:1])  # missing final line
    assert not c.correct and c.answer is None and c.first_error == 1
    assert errors(Q, [GOLD[0], "The answer is 25"]) == ["", cd.WRONG_ANSWER]
    assert errors(Q, [GOLD[0], "The answer is twenty-four"]) == ["", cd.WRONG_ANSWER]
    assert errors(Q, [GOLD[0], "5-2=3 (left: 3 24)", "The answer is 24"])[2] == cd.ANSWER_TOO_EARLY
    assert errors(Q, [*GOLD, "5-2=3 (left: 3 24)"])[2] == cd.AFTER_ANSWER
    assert errors(Q, [GOLD[0], "hmm", GOLD[1]]) == ["", cd.GARBAGE, ""]
    assert check_trace(Q, []).first_error == 0 and not verify(Q, [])
    with pytest.raises(ValueError):
        check_trace("what is 2+2?", GOLD)


def test_value_of_state():
    assert value_of_state("2 3 4 to 24", []) == 1.0
    assert value_of_state("2 3 4 to 24", ["2*3=6 (left: 6 4)"]) == 1.0
    assert value_of_state("2 3 4 to 24", ["2+3=5 (left: 5 4)"]) == 0.0  # 5 4 -> 9 1 20
    assert value_of_state("2 3 4 to 24", ["2*3=7 (left: 7 4)"]) == 0.0  # illegal
    assert value_of_state("2 3 4 to 24", ["2*3=6 (left: 6 4)", "6*4=24 (left: 24)"]) == 1.0
    assert (
        value_of_state("2 3 4 to 24", ["2*3=6 (left: 6 4)", "6*4=24 (left: 24)", "The answer is 24"]) == 1.0
    )
    assert value_of_state("2 3 4 to 24", ["2*3=6 (left: 6 4)", "6*4=24 (left: 24)", "The answer is 6"]) == 0.0
    assert value_of_state("1 1 1 to 100", []) == 0.0
    # target made, then a later step leaves it in the multiset but not as the last result
    made = "6*4=24 (left: 24 1 1)"
    assert value_of_state("6 4 1 1 to 24", [made, "1+1=2 (left: 2 24)"]) == 0.0
    assert value_of_state("6 4 1 1 to 24", [made, "1/1=1 (left: 1 24)"]) == 1.0  # 24*1=24 finishes


# ---------------------------------------------------------------------------------------- generation


def test_generate_is_deterministic_and_seed_dependent():
    a = generate(30, [3, 4, 5], seed=7)
    assert a == generate(30, [3, 4, 5], seed=7)
    assert [q.content for q in a] != [q.content for q in generate(30, [3, 4, 5], seed=8)]


def test_generated_instances_are_distinct_solvable_and_gold_is_shortest():
    qs = generate(61, [3, 4, 5], seed=0)
    keys = {(tuple(sorted(parse_question(q.content)[0])), q.answer) for q in qs}
    assert len(qs) == 61 and len(keys) == 61 and len({q.id for q in qs}) == 61
    assert [q.difficulty for q in qs[:6]] == [3, 4, 5, 3, 4, 5]  # interleaved
    assert {d: sum(q.difficulty == d for q in qs) for d in (3, 4, 5)} == {3: 21, 4: 20, 5: 20}
    for q in qs:
        numbers, target = parse_question(q.content)
        assert len(numbers) == q.difficulty == cd.difficulty(q) and all(1 <= x <= 20 for x in numbers)
        assert 10 <= target <= 100 and target not in numbers and q.answer == str(target)
        assert q.source == "countdown" and q.id == cd.question_id(q.content, q.difficulty)
        assert q.id.startswith(f"countdown-d{q.difficulty}-")
        assert reachable(numbers, target) and verify(q, q.solution)
        assert len(q.solution) - 1 == cd.shortest_length(numbers, target) >= 1
        assert q.solution in solve(numbers, target, limit=10_000)


def test_generate_options_exclude_and_impossible_requests():
    qs = generate(20, [3, 4], seed=1, max_number=9, min_target=20, max_target=30)
    assert all(max(parse_question(q.content)[0]) <= 9 and 20 <= int(q.answer) <= 30 for q in qs)
    first = generate(10, [3], seed=0)
    shuffled = {f"{' '.join(q.content.split()[:3][::-1])} to {q.answer}" for q in first}  # other order
    again = generate(10, [3], seed=0, exclude=shuffled)
    assert not {q.content for q in first} & {q.content for q in again}
    pairs = generate(8, [2], seed=1, max_number=9, min_target=20, max_target=30)  # all 8 such pairs
    assert len(pairs) == 8 and all(verify(q, q.solution) for q in pairs)
    with pytest.raises(ValueError, match="distinct"):
        generate(5, [2], seed=0, max_number=2)  # 2 numbers <= 2 make at most 4 < 10
    with pytest.raises(ValueError, match="difficulty 6"):
        generate(1, [6], seed=0)
    with pytest.raises(ValueError):
        generate(1, [], seed=0)


def test_task_split_warm_start_and_dv0():
    cfg = task()
    train, heldout = make_task_split(cfg, seed=0)
    assert len(train) == 30 and len(heldout) == 20 and {q.difficulty for q in heldout} == {3, 4, 5}
    warm, dv0 = warm_start_set(cfg, seed=0), dv0_set(cfg, seed=0)
    assert {d: sum(q.difficulty == d for q in warm) for d in (3, 4, 5)} == {3: 30, 4: 7, 5: 3}
    assert len(dv0) == 24 and {q.difficulty for q in dv0} == {3, 4, 5}
    assert all(verify(q, q.solution) for q in warm + dv0)

    def keys(qs):
        return {(tuple(sorted(parse_question(q.content)[0])), q.answer) for q in qs}

    assert not keys(train) & keys(heldout) and not (keys(train) | keys(heldout)) & (keys(warm) | keys(dv0))
    assert make_task_split(task(train_size=5), seed=0)[1] == heldout  # held-out ignores train_size
    assert warm_start_set(task(train_size=5, heldout_size=3), seed=0) == warm
    assert make_task_split(cfg, seed=1)[1] != heldout


# -------------------------------------------------------------------------------- reasoning-gym check


def _expression(numbers, steps) -> str:
    """The derivation as one parenthesised expression of the given numbers."""
    pool = [(x, str(x)) for x in numbers]
    for line in steps:
        s = parse_step(line)
        if s is None:
            break
        ia = next(i for i, (v, _) in enumerate(pool) if v == s.a)
        ea = pool.pop(ia)[1]
        ib = next(i for i, (v, _) in enumerate(pool) if v == s.b)
        eb = pool.pop(ib)[1]
        pool.insert(0, (s.result, f"({ea}{s.op}{eb})"))
    return pool[0][1]


def test_cross_check_with_reasoning_gym():
    rg = pytest.importorskip("reasoning_gym.games.countdown")
    ds = rg.CountdownDataset(rg.CountdownConfig(seed=0, size=1))
    for q in generate(12, [3, 4, 5], seed=5):
        numbers, target = parse_question(q.content)
        for sol in solve(numbers, target, limit=5):
            expr = _expression(numbers, sol)
            used = rg._extract_ints(expr)
            assert ds.score_answer(expr, {"metadata": {"numbers": used, "target": target}}) == 1.0, expr
            full = {"metadata": {"numbers": list(numbers), "target": target}}
            assert ds.score_answer(expr, full) == (1.0 if len(used) == len(numbers) else 0.05)
    # a trace our verifier rejects for wrong arithmetic has the wrong value for reasoning-gym too
    bad = ["8*3=25 (left: 25 5 2)", "The answer is 25"]
    assert not verify("8 3 5 2 to 25", bad) and _expression((8, 3, 5, 2), bad) == "(8*3)"
    assert ds.score_answer("(8*3)", {"metadata": {"numbers": [8, 3], "target": 25}}) < 1.0
