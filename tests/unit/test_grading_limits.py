"""Hard grading limits in any thread (shape guard + killable worker processes) and answer fallbacks."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipeline import grading, grading_pool
from pipeline.grading import REAL_TEXT_FALLBACKS, extract_answer, extract_answer_rule, grade

LIMIT = 0.5
PATHOLOGICAL = [
    "((9^{999})^{999})^{999}",
    "((9!)!)!",
    "(9!)!",
    "\\binom{99999999}{49999999}",
    "(x+y+z)^{999}",
]
SLOW_FOR_SYMPY = "(x+y+z)^{99}"  # passes no guard test below; expanding it takes sympy > 20 s


def _in_thread(fn):
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result(timeout=120)


def _timed(fn):
    start = time.monotonic()
    result = fn()
    return result, time.monotonic() - start


@pytest.fixture(scope="module")
def warm_pool():
    """The process pool with its workers started: start-up is never counted against a deadline."""
    pool = grading_pool.default_pool()
    assert pool.call("ping", (), 60.0) == ("ok", True)
    return pool


@pytest.mark.parametrize("answer", PATHOLOGICAL)
def test_pathological_answers_are_ungradable_in_time_off_the_main_thread(answer, warm_pool):
    result, seconds = _in_thread(lambda: _timed(lambda: grade(answer, "18", timeout=LIMIT)))
    assert result.correct is None and seconds < LIMIT + 1.0, (result, seconds)
    after = _in_thread(lambda: grade("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2", timeout=5.0))
    assert after.correct is True, after


def test_the_shape_guard_keeps_ordinary_answers():
    for answer in (
        "9^{999}",
        "(x^2+1)^2",
        "2^{10}",
        "999!",
        "9!!",
        "(1+r)^{12}",
        "\\binom{10}{3}",
        "x^{999}",
    ):
        assert not grading_pool.pathological(answer), answer
    for answer in (*PATHOLOGICAL, SLOW_FOR_SYMPY, "(1000)!", "9^{9!}", "(9^{99})^{99}", "2^{100\\cdot 100}"):
        assert grading_pool.pathological(answer), answer


def test_a_runaway_sympy_call_is_killed_at_the_deadline(warm_pool, monkeypatch):
    """What slips past the guard still stops: the worker computing it is killed, and replaced."""
    monkeypatch.setattr(grading, "_pathological", lambda text: False)
    result, seconds = _in_thread(lambda: _timed(lambda: grade(SLOW_FOR_SYMPY, "18", timeout=LIMIT)))
    assert result == grading.GradeResult(None, "timeout") and seconds < LIMIT + 1.0, (result, seconds)
    assert _in_thread(lambda: grade("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2", timeout=30.0)).correct is True


def test_concurrent_runaway_calls_do_not_leave_grading_busy():
    pool = grading_pool.GradingPool(max_workers=2)
    try:
        with ThreadPoolExecutor(4) as threads:
            jobs = [threads.submit(pool.call, "verify", ("18", SLOW_FOR_SYMPY), LIMIT) for _ in range(4)]
            outcomes = [job.result(timeout=120)[0] for job in jobs]
        assert set(outcomes) <= {"timeout", "busy"} and "timeout" in outcomes, outcomes
        for _ in range(3):  # later calls are served normally, never "busy"
            assert pool.call("verify", ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}"), 30.0) == ("ok", True)
    finally:
        pool.close()


def test_many_threads_grading_pathological_then_normal_answers(warm_pool):
    with ThreadPoolExecutor(8) as threads:
        bad = list(threads.map(lambda a: grade(a, "18", timeout=LIMIT), PATHOLOGICAL * 2))
        good = list(threads.map(lambda _: grade("x^2+1", "1+x^2", timeout=30.0), range(8)))
    assert all(r.correct is None for r in bad), bad
    assert all(r == grading.GradeResult(True, "math_verify") for r in good), good


def test_pool_reports_errors_and_rejects_unknown_tasks(warm_pool):
    assert warm_pool.call("nope", (), 5.0)[0] == "error"
    assert warm_pool.call("ping", (), 5.0) == ("ok", True)


def test_workers_disabled_runs_in_process(monkeypatch):
    monkeypatch.setattr(grading, "GRADING_WORKERS", 0)
    result = _in_thread(lambda: grade("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2", timeout=30.0))
    assert result == grading.GradeResult(True, "math_verify")


def test_numeric_answers_never_start_a_worker(monkeypatch):
    def no_pool():
        raise AssertionError("numbers must stay in-process")

    monkeypatch.setattr(grading_pool, "default_pool", no_pool)
    assert grade("1,800", "1800") == grading.GradeResult(True, "exact")
    assert grade("0.5", "\\frac{1}{2}") == grading.GradeResult(True, "numeric")
    assert grade("18", "19") == grading.GradeResult(False, "numeric")


# ------------------------------------------------------------------------------------------ extraction

REAL_TEXT = [
    ("She has 3 + 15 = 18 apples.\nA: 18", "18", "answer_line"),
    ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72", "72", "hash"),
    ("The sum is $9+9$, so we get $\\boxed{18}$.", "18", "boxed"),
    ("She starts with 20 apples and eats 2.\nSo she has 18 apples.", "18", "last_number"),
    ("Adding them, 1,200 + 600 = 1,800.\nSo he paid $1,800 in total.", "1800", "last_number"),
    ("Dividing gives the probability\nwhich is $\\frac{1}{2}$.", "\\frac{1}{2}", "math_verify"),
    ("We solve for x.\nTherefore $x = 5$ and we are done", "5", "math_verify"),
    ("**Final Answer:** 42", "42", "answer_line"),
    ("Step 1: 2 + 2 = 4\nThe answer is 4.\nThat was easy.", "4", "prefix"),
    ("I am not sure how to solve this problem.", None, "none"),
    ("", None, "none"),
]


@pytest.mark.parametrize(("text", "answer", "rule"), REAL_TEXT)
def test_extract_answer_from_real_model_text(text, answer, rule):
    assert extract_answer_rule(text, "The answer is", REAL_TEXT_FALLBACKS) == (answer, rule)
    assert extract_answer(text.split("\n"), "The answer is", REAL_TEXT_FALLBACKS) == answer


def test_steps_and_prefix_win_over_fallbacks():
    steps = ["48/2 = 24 clips in May", "24 + 48 = 72", "The answer is 72"]
    assert extract_answer_rule(steps, "The answer is", REAL_TEXT_FALLBACKS) == ("72", "prefix")
    assert extract_answer_rule(["A: 7", "So 9 in all"], "Q:", ("last_number",)) == ("9", "last_number")
    assert extract_answer_rule(["A: 7", "So 9 in all"], "Q:", ("answer_line",)) == ("7", "answer_line")


def test_default_extraction_is_unchanged():
    for text in ("A: 18", "So she has 18 apples.", "which is $\\frac{1}{2}$."):
        assert extract_answer_rule(text) == (None, "none")
        assert extract_answer(text) is None
    assert extract_answer_rule("we get \\boxed{7} done") == ("7", "boxed")
    assert extract_answer_rule("\\boxed{}\n#### 5") == (None, "none")  # a matched rule decides, as before
    assert extract_answer_rule("\\boxed{}\n#### 5", fallbacks=("hash",)) == ("5", "hash")


def test_unknown_fallback_names_the_allowed_ones():
    with pytest.raises(ValueError, match="answer_line") as error:
        extract_answer("A: 1", fallbacks=("box",))
    assert "box" in str(error.value) and "last_number" in str(error.value)


def test_math_verify_fallback_is_time_limited(warm_pool):
    text = "so the value is $((9^{999})^{999})^{999}$"
    (answer, rule), seconds = _in_thread(
        lambda: _timed(lambda: extract_answer_rule(text, fallbacks=("math_verify",)))
    )
    assert (answer, rule) == (None, "none") and seconds < 2.0


def test_workers_that_cannot_start_fall_back_to_in_process(monkeypatch):
    monkeypatch.setattr(grading_pool, "_pool", None)
    monkeypatch.setattr(grading_pool.sys, "executable", "/nonexistent/python")
    monkeypatch.setattr(grading, "_pool_failed", False)
    assert grade("x+1", "1+x", timeout=30.0) == grading.GradeResult(True, "math_verify")
    assert grading._pool_failed
    grading_pool.shutdown()


def test_answer_line_needs_an_answer_marker():
    assert extract_answer_rule("Let a = 5\nb = 7 + a", fallbacks=("answer_line",)) == (None, "none")
    assert extract_answer_rule("Work.\nAnswer is 7.", fallbacks=("answer_line",)) == ("7", "answer_line")
    assert extract_answer_rule("Ans: \\boxed{9}", "Q:", ("answer_line",)) == ("9", "boxed")
