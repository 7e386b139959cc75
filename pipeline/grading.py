"""Answer extraction and equivalence, safe on adversarial model output.

`grade` decides cheap cases in-process: the same normalised text ("exact"), or two plain numbers
("numeric": integers of any length, decimals, fractions, `\\frac`, compared exactly). Everything else goes
to math-verify on LaTeX only (never `parse_expr`, which evaluates Python), in two layers:

1. A shape filter refuses, before sympy sees them, answers that are long, Python-ish, or whose value
   explodes: huge literals, exponent towers and nested powers with large exponents (`((9^{999})^{999})`),
   huge exponents (`2^{99999}`, `(x+y+z)^{999}`), nested factorials or factorials of large numbers
   (`(9!)!`, `(1000)!`), binomials/Gamma/sums/products of 5-digit numbers. They are "unsafe" (ungradable).
2. What passes runs in a grading worker process (`pipeline.grading_pool`) that is killed and replaced when
   the deadline passes: sympy computes powers and factorials in single C calls that hold the GIL, so
   neither a thread join nor a signal timer can stop it; a kill works the same in any thread. Measured
   (2 busy cores): a pipe round trip costs ~30 us, a math-verify comparison ~7 ms median either way, the
   in-process paths ~15 us, so numbers never leave the process. A worker's start (importing sympy,
   0.5-2 s, ~60 MB) is paid on the first math-verify call and after each kill (the replacement starts at
   once), never counted against a deadline.

If the workers cannot start (or `RESTMCTS_GRADING_WORKERS=0`, or `_math_verify_equal` is replaced, as tests
do), math-verify runs in-process under the old limit: a real-time interval timer in the main thread, an
abandoned daemon thread elsewhere (which cannot stop C code: "busy" after `MAX_ABANDONED` stuck threads).

`extract_answer_rule` finds the final answer by a documented chain of rules (see its docstring); the
default chain is the historical one, `REAL_TEXT_FALLBACKS` extends it for real model text. Nothing here
evaluates text. Ungradable comparisons give `correct=None` with a reason.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from pipeline import grading_pool
from pipeline.grading_pool import load_math_verify as _load_math_verify
from pipeline.grading_pool import pathological as _pathological
from pipeline.grading_pool import verify_equal as _math_verify_equal

logger = logging.getLogger(__name__)

MAX_GRADE_CHARS = 100_000  # longer answers are not graded at all
MAX_VERIFY_CHARS = 120  # math-verify is only asked about answers this short
MAX_FRACTION_CHARS = 64  # decimals/fractions longer than this skip the exact-fraction path
MAX_ABANDONED = 4  # grader threads still running past their limit before grading refuses more
DEFAULT_TIMEOUT = 1.0  # seconds per math-verify comparison

_abandoned = 0
_abandoned_lock = threading.Lock()


@dataclass(frozen=True)
class GradeResult:
    """`correct`: True/False when decided, None when ungradable (timeout, unsafe or missing input)."""

    correct: bool | None
    reason: str  # exact | numeric | math_verify | no_answer | no_gold | unsafe | too_long | timeout
    # | error | busy (no grading worker free in time, or too many abandoned in-process grader threads)


# ------------------------------------------------------------------------------------------ extraction


def _boxed_contents(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`), braces matched; None when absent."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, begin = 1, i
    while i < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[begin : i - 1] if depth == 0 else text[begin:]


def _clean(answer: str) -> str | None:
    answer = answer.strip().strip("$").strip()
    answer = re.sub(r"^(?:is|:|=)\s*", "", answer).strip()
    answer = answer.rstrip(".").strip().strip("$").strip()
    return answer or None


FALLBACKS = ("boxed", "hash", "answer_line", "math_verify", "last_number")
# For real model text. boxed and hash are explicit end markers (and always tried anyway); answer_line is an
# explicit "A: ..." line; math_verify reads LaTeX ($...$, \(...\), "final answer is") and finds nothing in
# plain prose, so it runs before last_number, which would read `$\frac{1}{2}$` as "2".
REAL_TEXT_FALLBACKS = FALLBACKS
_ANSWER_LINE = re.compile(
    r"^\W*(?:(?:(?:the\s+)?final\s+answer|answer)\s*(?:is\b|:)|(?:a|ans)\s*:)\s*(.*)$", re.I
)
_NUMBER = re.compile(r"(?:(?<![\w)}\]])-)?(?<![\w.])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?")


def _by_prefix(text: str, prefix: str) -> str | None:
    pos = text.lower().rfind(prefix.lower().strip()) if prefix.strip() else -1
    if pos < 0:
        return None
    line = text[pos + len(prefix.strip()) :].split("\n", 1)[0]
    boxed = _boxed_contents(line)
    return _clean(boxed if boxed is not None else line)


def _by_answer_line(lines: list[str]) -> str | None:
    for line in reversed(lines):
        found = _ANSWER_LINE.match(line.strip())
        if found:
            boxed = _boxed_contents(found.group(1))
            return _clean((boxed if boxed is not None else found.group(1)).strip("* "))
    return None


def _by_last_number(lines: list[str]) -> str | None:
    numbers = _NUMBER.findall(lines[-1]) if lines else []
    return numbers[-1].replace(",", "") if numbers else None


def _by_math_verify(last_step: str, timeout: float) -> str | None:
    tail = last_step[-grading_pool.MAX_PARSE_CHARS :]
    if not tail.strip() or _pathological(tail):
        return None
    status, value = _run_limited("parse", (tail,), timeout)
    return _clean(value) if status == "ok" and isinstance(value, str) else None


def extract_answer_rule(
    text_or_steps: str | Sequence[str],
    answer_prefix: str = "The answer is",
    fallbacks: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[str | None, str]:
    """The final answer stated by a solution and the rule that found it ("none" when no rule did).

    Rules, in order: `prefix` (text after the last `answer_prefix`, case-insensitive, anywhere in a line;
    a `\\boxed{}` in it wins), `boxed` (the last `\\boxed{}` anywhere, braces balanced), `hash` (the last
    `#### X`), then the other `fallbacks` in the order given: `answer_line` (the last line starting
    "A:", "Answer:", "Answer is", "Final answer:"), `math_verify` (math-verify's LaTeX extractor on the
    last step, time-limited like `grade`), `last_number` (the last number in the last non-empty line).
    With `fallbacks=()` this is the historical behaviour exactly: the first of prefix/boxed/hash that
    matches decides, even with empty content. With fallbacks, a rule finding nothing usable passes on.
    """
    unknown = [name for name in fallbacks if name not in FALLBACKS]
    if unknown:
        raise ValueError(f"unknown answer fallbacks {unknown}; allowed: {', '.join(FALLBACKS)}")
    steps = [text_or_steps] if isinstance(text_or_steps, str) else list(text_or_steps)
    text = "\n".join(steps)
    answer = _by_prefix(text, answer_prefix)
    if answer is not None:
        return answer, "prefix"
    lines = [line for line in text.split("\n") if line.strip()]
    for rule in ("boxed", "hash", *(name for name in fallbacks if name not in ("boxed", "hash"))):
        if rule == "boxed":
            boxed = _boxed_contents(text)
            matched, answer = boxed is not None, _clean(boxed) if boxed is not None else None
        elif rule == "hash":
            pos = text.rfind("####")
            matched, answer = pos >= 0, _clean(text[pos + 4 :].split("\n", 1)[0]) if pos >= 0 else None
        elif rule == "answer_line":
            matched, answer = False, _by_answer_line(lines)
        elif rule == "last_number":
            matched, answer = False, _by_last_number(lines)
        else:
            last = next((s for s in reversed(steps) if s.strip()), "")
            matched, answer = False, _by_math_verify(last, timeout)
        if answer is not None:
            return answer, rule
        if matched and not fallbacks:
            return None, "none"
    return None, "none"


def extract_answer(
    text_or_steps: str | Sequence[str], answer_prefix: str = "The answer is", fallbacks: Sequence[str] = ()
) -> str | None:
    """The final answer stated by a solution, or None: `extract_answer_rule` without the rule's name."""
    return extract_answer_rule(text_or_steps, answer_prefix, fallbacks)[0]


def gsm8k_gold(answer: str) -> str:
    """Gold answer of a GSM8K solution "... #### 1,800" -> "1800". Raises ValueError without `####`."""
    if "####" not in answer:
        raise ValueError("GSM8K answer has no '#### <number>' line")
    return answer.rsplit("####", 1)[1].strip().replace(",", "")


# ---------------------------------------------------------------------------------------- normalising

_UNWRAP = re.compile(r"\\(?:text|textbf|mathrm|mbox|mathbf)\{([^{}]*)\}")
_DROP = re.compile(r"\\[,!;: ]|\\(?:left|right|displaystyle)\b|\\?\$|\\?%|\^\{?\\circ\}?|°")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
# a number followed by unit words ("18 apples", "5 cm."); not "2pi" or "3i"
_UNITS = re.compile(r"^(-?[\d.]+(?:/[\d.]+)?)\s*(?!(?:pi|sqrt|infty)\b)[a-z]{2,}[a-z .]*$")


def normalize_answer(answer: str) -> str:
    """Canonical text of an answer: no `$`, `%`, `\\text{}`, thousands commas, trailing unit words."""
    s = answer.strip()
    boxed = _boxed_contents(s)
    if boxed is not None:
        s = boxed
    s = _UNWRAP.sub(r"\1", s)
    s = _DROP.sub("", s)
    s = _THOUSANDS.sub("", s).strip().rstrip(".").strip().lower()
    s = re.sub(r"^[a-z]\s*=\s*", "", s)  # "x = 5" -> "5"
    s = re.sub(r"\s+", " ", s)
    units = _UNITS.match(s)
    return units.group(1) if units else s


_INT = re.compile(r"[+-]?\d+")
_DEC = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+)")
_FRAC = re.compile(r"([+-]?)\\[dt]?frac\{([+-]?\d+(?:\.\d+)?)\}\{([+-]?\d+(?:\.\d+)?)\}")
_SLASH = re.compile(r"([+-]?\d+(?:\.\d+)?)/([+-]?\d+(?:\.\d+)?)")


def _canonical_int(s: str) -> str:
    sign = "-" if s.startswith("-") else ""
    digits = s.lstrip("+-").lstrip("0") or "0"
    return ("" if digits == "0" else sign) + digits


def as_number(normalized: str) -> str | Fraction | None:
    """An integer as canonical digit text (any length, never converted), a short decimal or fraction as
    a Fraction, or None when the text is not a plain number."""
    s = normalized.replace(" ", "")
    if _INT.fullmatch(s):
        return _canonical_int(s)
    if len(s) > MAX_FRACTION_CHARS:
        return None
    if _DEC.fullmatch(s):
        return Fraction(s)
    frac = _FRAC.fullmatch(s)
    if frac:
        sign, num, den = frac.groups()
        s = f"{sign}{num}/{den}"
    slash = _SLASH.fullmatch(s)
    if slash and Fraction(slash.group(2)) != 0:
        return Fraction(slash.group(1)) / Fraction(slash.group(2))
    return None


def _same_number(a: str | Fraction, b: str | Fraction) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if isinstance(a, str):
        a, b = b, a
    if isinstance(b, str):  # a Fraction against an integer's digit text
        return a.denominator == 1 and len(b) <= MAX_FRACTION_CHARS and a == Fraction(int(b))
    return a == b


# ----------------------------------------------------------------------------------------- guarding

_UNSAFE = re.compile(
    r"\*\*|__|['\"`@#;]|\bimport\b|\blambda\b"  # Python-ish text: never meant as math
    r"|\d{25,}"  # huge literals (plain integers never reach math-verify)
    r"|\d{4,}\s*!"  # big factorials
    r"|\^\s*\{[^{}]*\^|\^\s*[\d\w]+\s*\^"  # nested or chained powers
    r"|\^\s*\{?\s*-?\d{4,}"  # huge exponents
)


def _is_safe(text: str) -> bool:
    return len(text) <= MAX_VERIFY_CHARS and not _UNSAFE.search(text) and not _pathological(text)


class _Deadline(BaseException):
    """Raised by the timer in the main thread; BaseException so math-verify's `except Exception` lets it
    through."""


def _raise_deadline(signum: int, frame: Any) -> None:
    raise _Deadline


def _call_main_thread(fn: Callable[[], bool], seconds: float) -> bool | None:
    old_handler = signal.signal(signal.SIGALRM, _raise_deadline)
    old_delay, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        try:
            return fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Deadline:  # also when it fires between fn's return and the disarm
        return None
    finally:
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay > 0:  # give back whatever timer the caller had running
            signal.setitimer(signal.ITIMER_REAL, max(old_delay - (time.monotonic() - started), 1e-3))


def _call_other_thread(fn: Callable[[], bool], seconds: float) -> bool | None | str:
    """Run `fn` in a daemon thread; past `seconds` it is abandoned (Python threads cannot be killed)."""
    global _abandoned
    with _abandoned_lock:
        if _abandoned >= MAX_ABANDONED:
            return "busy"
    box: list[Any] = []  # fn's result, or the exception it raised
    state = {"done": False, "abandoned": False}  # both read and written under _abandoned_lock

    def target() -> None:
        global _abandoned
        try:
            box.append(fn())
        except Exception as error:
            box.append(error)
        finally:
            with _abandoned_lock:
                state["done"] = True
                if state["abandoned"]:
                    _abandoned -= 1

    worker = threading.Thread(target=target, name="grade", daemon=True)
    worker.start()
    worker.join(seconds)
    with _abandoned_lock:
        if not state["done"]:
            state["abandoned"] = True
            _abandoned += 1
            return None
    if isinstance(box[0], Exception):
        raise box[0]
    return box[0]


def _with_deadline(fn: Callable[[], bool], seconds: float) -> bool | None | str:
    in_main = threading.current_thread() is threading.main_thread()
    if in_main and hasattr(signal, "setitimer"):
        return _call_main_thread(fn, seconds)
    return _call_other_thread(fn, seconds)


GRADING_WORKERS = int(os.environ.get("RESTMCTS_GRADING_WORKERS", "2"))  # 0: in-process math-verify
_pool_failed = False  # the workers could not start: in-process from then on


def _run_limited(task: str, args: tuple[str, ...], timeout: float) -> tuple[str, Any]:
    """Run a grading_pool task with a hard deadline: ("ok", value) | ("timeout"|"busy", None) | ("error", _).

    In a worker process when possible; in-process under `_with_deadline` when workers are off or broken,
    or when the comparison was replaced (a replacement cannot be sent to a worker)."""
    global _pool_failed
    fn = _math_verify_equal if task == "verify" else grading_pool.TASKS[task]
    if fn is grading_pool.TASKS[task] and GRADING_WORKERS > 0 and grading_pool.AVAILABLE and not _pool_failed:
        try:
            status, value = grading_pool.default_pool().call(task, args, timeout)
        except OSError:
            status, value = "error", grading_pool.NOT_STARTED
        if value != grading_pool.NOT_STARTED:
            return status, value
        _pool_failed = True
        logger.warning("grading workers do not start; math-verify runs in-process (no hard deadline)")
    try:
        _load_math_verify()
        outcome = _with_deadline(lambda: fn(*args), timeout)
    except Exception as error:
        return "error", repr(error)
    if outcome is None or outcome == "busy":
        return ("busy" if outcome == "busy" else "timeout"), None
    return "ok", outcome


# -------------------------------------------------------------------------------------------- grading


def grade(predicted: str | None, gold: str | None, timeout: float = DEFAULT_TIMEOUT) -> GradeResult:
    """Is `predicted` the same final answer as `gold`? Returns within about `timeout` seconds."""
    if gold is None or not gold.strip():
        return GradeResult(None, "no_gold")
    if predicted is None or not predicted.strip():
        return GradeResult(False, "no_answer")
    if len(gold) > MAX_GRADE_CHARS or len(predicted) > MAX_GRADE_CHARS:
        return GradeResult(None, "too_long")
    g, p = normalize_answer(gold), normalize_answer(predicted)
    if g == p:
        return GradeResult(True, "exact")
    g_num, p_num = as_number(g), as_number(p)
    if g_num is not None and p_num is not None:
        return GradeResult(_same_number(g_num, p_num), "numeric")
    if not (_is_safe(g) and _is_safe(p)):
        return GradeResult(None, "unsafe")
    status, value = _run_limited("verify", (g, p), max(timeout, 0.01))
    if status == "error":  # a math-verify/sympy bug on odd input is an expected, counted outcome
        logger.debug("math-verify failed on %r vs %r: %s", g[:50], p[:50], value)
        return GradeResult(None, "error")
    if status in ("busy", "timeout"):
        return GradeResult(None, status)
    return GradeResult(bool(value), "math_verify")
