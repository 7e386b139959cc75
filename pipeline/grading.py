"""Answer extraction and equivalence, safe on adversarial model output.

`grade` first tries a fast exact path (both answers plain numbers after normalisation: integers of any
length, decimals, fractions, `\\frac`), then math-verify on LaTeX only (never `parse_expr`, which evaluates
Python), behind input guards (length, nested or huge powers, factorials) and a wall-clock limit that works
in any thread: a real-time interval timer in the main thread, an abandoned daemon thread elsewhere (math-
verify's own timeout uses `signal.alarm`, which only works in the main thread, e.g. not in threaded Ray
actors). Nothing here evaluates text. Ungradable comparisons give `correct=None` with a reason.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

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
    # | error | busy (too many abandoned grader threads still running)


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


def extract_answer(text_or_steps: str | Sequence[str], answer_prefix: str = "The answer is") -> str | None:
    """The final answer stated by a solution, or None.

    Looks, in order, at the last line containing `answer_prefix` (case-insensitive; a `\\boxed{}` in it
    wins), the last `\\boxed{}` anywhere, then the last `#### N` line (GSM8K style).
    """
    text = text_or_steps if isinstance(text_or_steps, str) else "\n".join(text_or_steps)
    lowered, prefix = text.lower(), answer_prefix.lower().strip()
    pos = lowered.rfind(prefix) if prefix else -1
    if pos >= 0:
        line = text[pos + len(prefix) :].split("\n", 1)[0]
        boxed = _boxed_contents(line)
        answer = _clean(boxed if boxed is not None else line)
        if answer is not None:
            return answer
    boxed = _boxed_contents(text)
    if boxed is not None:
        return _clean(boxed)
    pos = text.rfind("####")
    if pos >= 0:
        return _clean(text[pos + 4 :].split("\n", 1)[0])
    return None


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
    return len(text) <= MAX_VERIFY_CHARS and not _UNSAFE.search(text)


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


_math_verify_api: tuple[Any, Any, Any] | None = None


def _load_math_verify() -> tuple[Any, Any, Any]:
    """Import math-verify (sympy) and build its LaTeX parser once, outside any deadline: a cold start
    takes about a second and must not be mistaken for a slow comparison."""
    global _math_verify_api
    if _math_verify_api is None:
        from math_verify import LatexExtractionConfig, parse, verify

        _quiet_math_verify()
        parse("$1/2$", extraction_config=[LatexExtractionConfig()], parsing_timeout=None)
        _math_verify_api = (LatexExtractionConfig, parse, verify)
    return _math_verify_api


def _math_verify_equal(gold: str, predicted: str) -> bool:
    latex_config, parse, verify = _load_math_verify()
    config = [latex_config()]  # LaTeX only: the expression extractor evaluates Python
    gold_parsed = parse(f"${gold}$", extraction_config=config, parsing_timeout=None)
    pred_parsed = parse(f"${predicted}$", extraction_config=config, parsing_timeout=None)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


class _DropTimeoutWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


def _quiet_math_verify() -> None:
    """math-verify warns when its signal timeout is off; ours replaces it, so drop that one line."""
    for name in ("math_verify.parser", "math_verify.grader"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropTimeoutWarning) for f in log.filters):
            log.addFilter(_DropTimeoutWarning())


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
    try:
        _load_math_verify()
        outcome = _with_deadline(lambda: _math_verify_equal(g, p), max(timeout, 0.01))
    except Exception:  # a math-verify/sympy bug on odd input is an expected, counted outcome
        logger.debug("math-verify failed on %r vs %r", g[:50], p[:50], exc_info=True)
        return GradeResult(None, "error")
    if outcome == "busy":
        return GradeResult(None, "busy")
    if outcome is None:
        return GradeResult(None, "timeout")
    return GradeResult(bool(outcome), "math_verify")
