"""Answer extraction and grading: a table of equivalences, GSM8K golds, adversarial inputs, threads."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline import grading
from pipeline.grading import GradeResult, extract_answer, grade, gsm8k_gold, normalize_answer

# (predicted, gold, expected correct)
TABLE = [
    ("18", "18", True),
    ("18", "19", False),
    ("18.0", "18", True),
    ("18.00", "18", True),
    ("018", "18", True),
    ("-3", "-3", True),
    ("-3", "3", False),
    ("+7", "7", True),
    ("1,800", "1800", True),
    ("1,234,567", "1234567", True),
    ("$18", "18", True),
    ("\\$18", "18", True),
    ("$18.50", "18.5", True),
    ("18 apples", "18", True),
    ("18 dollars", "18", True),
    ("5 cm.", "5", True),
    ("50%", "50", True),
    ("50\\%", "50", True),
    ("0.5", "1/2", True),
    ("1/2", "0.5", True),
    ("\\frac{1}{2}", "0.5", True),
    ("\\dfrac{3}{4}", "0.75", True),
    ("-\\frac{1}{2}", "-0.5", True),
    ("2/4", "1/2", True),
    ("1/3", "0.333", False),
    ("0.1", "1/10", True),
    ("\\boxed{42}", "42", True),
    ("\\text{42}", "42", True),
    ("x = 5", "5", True),
    ("12", "1,2", False),
    ("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2", True),
    ("x^2+1", "1+x^2", True),
    ("2^{10}", "1024", True),
    ("(1,2)", "(1, 2)", True),
    ("\\pi", "\\pi", True),
    ("2\\pi", "\\pi", False),
    ("\\sqrt{4}", "2", True),
    ("3\\sqrt{2}", "\\sqrt{18}", True),
    ("banana", "5", False),
    ("", "5", False),
    (None, "5", False),
]

ADVERSARIAL = [
    "9**9**9**9",
    "__import__('os').system('echo hacked')",
    "9^{9^{9^{9}}}",
    "10^{10^{10}}",
    "2^99999999",
    "99999!",
    "(lambda: 1)()",
    "a" * 200_000,
    "\\frac{" * 5_000 + "1" + "}" * 5_000,
    "{" * 10_000,
    "1e999999999",
    "\\boxed{" * 1000,
]


@pytest.mark.parametrize(("predicted", "gold", "expected"), TABLE)
def test_grading_table(predicted, gold, expected):
    result = grade(predicted, gold)
    assert result.correct is expected, result


def test_table_is_big_enough():
    assert len(TABLE) + len(ADVERSARIAL) >= 40


@pytest.mark.parametrize(
    ("solution", "gold", "expected"),
    [
        ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72", "72", True),
        ("She earns 12/60 = $0.2 per minute.\n#### 10", "10", True),
        ("#### 1,800", "1800", True),
        ("#### 5", "6", False),
    ],
)
def test_gsm8k_style(solution, gold, expected):
    assert grade(extract_answer(solution), gsm8k_gold(f"work\n#### {gold}")).correct is expected


def test_gsm8k_gold():
    assert gsm8k_gold("Natalia sold 24 clips.\n#### 72") == "72"
    assert gsm8k_gold("x #### 1,800 ") == "1800"
    with pytest.raises(ValueError, match="####"):
        gsm8k_gold("no marker here")


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("The answer is 18", "18"),
        ("the answer is: 18.", "18"),
        ("So the answer is $\\frac{1}{2}$.", "\\frac{1}{2}"),
        ("The answer is \\boxed{7}.", "7"),
        (["step one", "The answer is 1,800 dollars"], "1,800 dollars"),
        ("we get \\boxed{\\frac{a}{b}} done", "\\frac{a}{b}"),
        ("#### 42", "42"),
        ("The answer is\n#### 3", "3"),
        ("no answer here", None),
        ("", None),
        ("The answer is 4\nThe answer is 5", "5"),
    ],
)
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


def test_extract_answer_custom_prefix():
    assert extract_answer(["Answer: 12"], answer_prefix="Answer:") == "12"


def test_normalize_answer():
    assert normalize_answer("$1,234.50 dollars.") == "1234.50"
    assert normalize_answer("\\text{ 5 }") == "5"
    assert normalize_answer("2pi") == "2pi"  # not a unit


@pytest.mark.parametrize("text", ADVERSARIAL)
def test_adversarial_inputs_return_fast_and_safely(text):
    for predicted, gold in ((text, "5"), ("5", text), (text, text + "x")):
        start = time.monotonic()
        result = grade(predicted, gold, timeout=0.5)
        assert time.monotonic() - start < 1.0
        assert result.correct in (None, False)
    start = time.monotonic()
    extract_answer(text)
    assert time.monotonic() - start < 1.0


def test_huge_integers_compare_exactly():
    digits = "7" * 10_000
    assert grade(digits, digits).correct is True
    assert grade(digits, digits[:-1] + "8").correct is False
    assert grade(digits, "7").correct is False


def test_no_gold_and_unsafe_are_none():
    assert grade("5", None) == GradeResult(None, "no_gold")
    assert grade("__import__('os')", "5").correct is None


def test_grading_works_in_a_non_main_thread():
    results = {}

    def worker():
        results["frac"] = grade("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2")
        results["num"] = grade("1,800", "1800")
        results["bad"] = grade("9^{9^{9^9}}", "1")

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(30)
    assert results["frac"].correct is True and results["num"].correct is True
    assert results["bad"].correct is None


def _spin() -> bool:
    while True:
        pass


def test_deadline_interrupts_in_the_main_thread():
    start = time.monotonic()
    assert grading._with_deadline(_spin, 0.2) is None
    assert time.monotonic() - start < 1.0


def test_deadline_abandons_a_slow_call_in_other_threads():
    box = {}
    done = threading.Event()

    def slow() -> bool:
        done.wait(5)
        return True

    def worker():
        start = time.monotonic()
        box["result"] = grading._with_deadline(slow, 0.2)
        box["seconds"] = time.monotonic() - start

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(5)
    done.set()  # let the abandoned call finish
    assert box["result"] is None and box["seconds"] < 1.0


def test_timeout_is_reported_as_ungradable(monkeypatch):
    monkeypatch.setattr(grading, "_math_verify_equal", lambda gold, predicted: _spin())
    start = time.monotonic()
    assert grade("x+1", "1+x", timeout=0.2) == GradeResult(None, "timeout")
    assert time.monotonic() - start < 1.0
