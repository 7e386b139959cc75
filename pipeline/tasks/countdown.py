"""Countdown: a seeded generator, an exact solver and a step checker (standard library only).

Rules. Given N numbers (the difficulty, 2..5; drawn independently from 1..max_number, so duplicates
are allowed and each copy is a separate number) and a target (min_target..max_target), combine numbers
with + - * / to make the target. Each given number is used at most once; not all need to be used. Every
step takes two available numbers and replaces them by its result, which must be a positive integer:
`a-b` needs a > b, `a/b` needs b to divide a exactly. `x*1` and `x/1` are legal (merely wasteful). The
generator yields solvable instances only (checked by the exact solver) whose target is not a given number.

Question content (what the model reads): the numbers in drawn order, then `to` and the target:
`8 3 5 2 to 24`. Two orderings of one multiset count as the same question (generation keeps one).

Solution format: one operation per line, then the answer line:

    8*3=24 (left: 24 5 2)
    The answer is 24

`left` is the multiset still available after the step. Canonical order (gold solutions): the new result
first, then the untouched numbers in their previous order (the first copy of each operand is the one
removed). Gold steps write the larger operand first. The checker compares `left` as a multiset and
accepts `+` / `*` operands in either order. A trace is correct when every step is legal, the last
operation's result equals the target, and the answer line (last line) states the target. A bare answer
line is correct only when the target is one of the given numbers (never generated). Gold solutions are
shortest derivations (fewest steps), one drawn among the shortest with an rng seeded by the content.
Steps are parsed with a regular expression, never `eval`.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.records import Question
from pipeline.tasks import sets
from pipeline.tasks.countdown_solver import (
    apply_op,
    can_finish,
    moves,
    reachable,
    remove_pair,
    shortest_length,
    within_steps,
)
from pipeline.tasks.trace import (
    AFTER_ANSWER,
    ANSWER_TOO_EARLY,
    GARBAGE,
    ILLEGAL,
    LEGAL,
    SOLVED,
    WRONG_ANSWER,
    WRONG_ARITHMETIC,
    StepCheck,
    TraceCheck,
)

MIN_DIFFICULTY, MAX_DIFFICULTY = 2, 5
MAX_NUMBER, MIN_TARGET, MAX_TARGET = 20, 10, 100  # defaults
ANSWER_PREFIX = "The answer is"
SOURCE = "countdown"
CHARS = "0123456789+-*/=() :\nTheanswrilft"  # every character of the task's text (tiny vocabulary)

_QUESTION = re.compile(r"\s*([0-9]+(?:\s+[0-9]+)*)\s+to\s+([0-9]+)\s*")
_STEP = re.compile(
    r"([0-9]+)\s*([-+*/])\s*([0-9]+)\s*=\s*(-?[0-9]+)\s*\(\s*left:\s*(-?[0-9]+(?:\s+-?[0-9]+)*)\s*\)"
)

# ------------------------------------------------------------------------------------ format and rules


@dataclass(frozen=True)
class Step:
    """One parsed operation line `a op b = result (left: ...)`; values as written, not checked."""

    a: int
    op: str
    b: int
    result: int
    left: tuple[int, ...]


def format_step(a: int, op: str, b: int, result: int, left: Sequence[int]) -> str:
    return f"{a}{op}{b}={result} (left: {' '.join(map(str, left))})"


def format_question(numbers: Sequence[int], target: int) -> str:
    return f"{' '.join(map(str, numbers))} to {target}"


def parse_question(content: str) -> tuple[tuple[int, ...], int]:
    """(numbers in written order, target) of `8 3 5 2 to 24`. Raises ValueError."""
    m = _QUESTION.fullmatch(content)
    if not m:
        raise ValueError(f"not a countdown question: {content!r}")
    return tuple(int(t) for t in m.group(1).split()), int(m.group(2))


def parse_step(line: str) -> Step | None:
    """The operation line parsed (spaces around symbols tolerated), or None when it is not one."""
    m = _STEP.fullmatch(line.strip())
    if not m:
        return None
    a, op, b, result, left = m.groups()
    return Step(int(a), op, int(b), int(result), tuple(int(t) for t in left.split()))


def difficulty(question: Question | str) -> int:
    """N, the count of given numbers."""
    return len(parse_question(question.content if isinstance(question, Question) else question)[0])


def question_id(content: str, difficulty: int) -> str:
    """Stable id from the content alone: the same problem has the same id under every seed."""
    return f"countdown-d{difficulty}-{hashlib.sha1(content.encode()).hexdigest()[:10]}"


def _optimal(state: tuple[int, ...], target: int, k: int) -> list[tuple[str, tuple[int, ...]]]:
    """(step line, next state) of each step after which the target is made in k - 1 more steps."""
    return [
        (format_step(a, op, b, r, nxt), nxt)
        for a, op, b, r, nxt in moves(state)
        if within_steps(tuple(sorted(nxt)), target, k - 1)
    ]


def solve(
    numbers: Sequence[int], target: int, limit: int = 1000, answer_prefix: str = ANSWER_PREFIX
) -> list[tuple[str, ...]] | None:
    """Up to `limit` distinct shortest solutions (step lines + answer line) in a fixed order; None if
    the target cannot be made."""
    k = shortest_length(numbers, target)
    if k is None:
        return None
    out: list[tuple[str, ...]] = []

    def walk(state: tuple[int, ...], k: int, lines: tuple[str, ...]) -> None:
        if len(out) >= limit:
            return
        if k == 0:
            out.append((*lines, f"{answer_prefix} {target}"))
            return
        for line, nxt in _optimal(state, target, k):
            walk(nxt, k - 1, (*lines, line))

    walk(tuple(numbers), k, ())
    return out


def shortest_solution(
    numbers: Sequence[int], target: int, rng: random.Random | None = None, answer_prefix: str = ANSWER_PREFIX
) -> tuple[str, ...] | None:
    """One shortest solution: the first in `solve`'s order, or with `rng` a uniform choice among the
    optimal steps at each step (not uniform over whole solutions). None if unsolvable."""
    k = shortest_length(numbers, target)
    if k is None:
        return None
    state, lines = tuple(numbers), []
    for left in range(k, 0, -1):
        options = _optimal(state, target, left)
        line, state = rng.choice(options) if rng else options[0]
        lines.append(line)
    return (*lines, f"{answer_prefix} {target}")


# ------------------------------------------------------------------------------------------- generation


def _key(numbers: Sequence[int], target: int) -> tuple[tuple[int, ...], int]:
    return tuple(sorted(numbers)), target


def _question(numbers: list[int], target: int) -> Question:
    content = format_question(numbers, target)
    gold = shortest_solution(numbers, target, random.Random(f"countdown/gold/{content}"))
    return Question(
        id=question_id(content, len(numbers)),
        content=content,
        answer=str(target),
        source=SOURCE,
        difficulty=len(numbers),
        solution=gold or (),
    )


def _generate(
    counts: dict[int, int], stream: str, ranges: tuple[int, int, int], exclude: set
) -> list[Question]:
    """`counts[d]` distinct solvable problems per difficulty, none whose (sorted numbers, target) is in
    `exclude`; interleaved by difficulty."""
    max_number, lo, hi = ranges
    if max_number < 1 or not 1 <= lo <= hi:
        raise ValueError(f"bad ranges: max_number {max_number}, targets {lo}..{hi}")
    for d in counts:
        if not MIN_DIFFICULTY <= d <= MAX_DIFFICULTY:
            raise ValueError(f"difficulty {d} outside {MIN_DIFFICULTY}..{MAX_DIFFICULTY}")

    def sample(rng: random.Random, d: int):
        numbers, target = [rng.randint(1, max_number) for _ in range(d)], rng.randint(lo, hi)
        if target in numbers:
            return None
        return _key(
            numbers, target
        ), lambda: _question(numbers, target) if reachable(numbers, target) else None

    return sets.draw_distinct(
        counts,
        lambda d: f"countdown/{stream}/d{d}",
        sample,
        exclude,
        lambda count: 200 * count + 2000,
        # the ranges enter the set cache's key through this description (the probe would catch most
        # changes by itself), and a failed draw names them
        f"solvable countdown problems (numbers 1..{max_number}, targets {lo}..{hi})",
    )


def generate(
    n: int,
    difficulties: Sequence[int],
    seed: int,
    max_number: int = MAX_NUMBER,
    *,
    min_target: int = MIN_TARGET,
    max_target: int = MAX_TARGET,
    exclude: frozenset[str] | set[str] = frozenset(),
) -> list[Question]:
    """`n` distinct solvable problems spread evenly over `difficulties` (earlier ones get the remainder).

    Deterministic for the arguments; `exclude` holds contents (in any number order) not to produce.
    """
    if not difficulties:
        raise ValueError("difficulties must not be empty")
    keys = {_key(*parse_question(c)) for c in exclude}
    ranges = (max_number, min_target, max_target)
    return _generate(sets.even_counts(n, list(difficulties)), str(seed), ranges, keys)


def _ranges(task_cfg: Any) -> tuple[int, int, int]:
    """(max_number, min_target, max_target) from a task config: `max_number` (else `max_operand`),
    `min_target`, `max_target`, each defaulting to this module's defaults."""
    max_number = getattr(task_cfg, "max_number", getattr(task_cfg, "max_operand", MAX_NUMBER))
    return (
        max_number,
        getattr(task_cfg, "min_target", MIN_TARGET),
        getattr(task_cfg, "max_target", MAX_TARGET),
    )


def _draw(task_cfg: Any):
    ranges = _ranges(task_cfg)
    return lambda counts, stream, exclude: _generate(counts, stream, ranges, exclude)


def _question_key(q: Question) -> tuple[tuple[int, ...], int]:
    return _key(*parse_question(q.content))


def warm_start_set(task_cfg: Any, seed: int) -> list[Question]:
    """`warm_size` problems with gold solutions over `warm_difficulties` plus a `warm_long_fraction`
    with more numbers (`sets.warm_counts`); the train and held-out sets avoid them."""
    return _draw(task_cfg)(sets.warm_counts(task_cfg, MAX_DIFFICULTY), f"{seed}/warm", set())


def dv0_set(task_cfg: Any, seed: int) -> list[Question]:
    """D_V0's `dv0_size` questions with gold solutions over `dv0_difficulties` (empty: the train
    difficulties); the train and held-out sets avoid them."""
    return _draw(task_cfg)(sets.dv0_counts(task_cfg), f"{seed}/dv0", set())


def make_task_split(task_cfg: Any, seed: int) -> tuple[list[Question], list[Question]]:
    """(train, heldout) as in arith (pipeline.tasks.sets), distinct by (sorted numbers, target)."""
    return sets.task_split(task_cfg, seed, _draw(task_cfg), _question_key, MAX_DIFFICULTY)


# --------------------------------------------------------------------------------------- step checking

# Per-step error labels ("" = the step is right).
UNAVAILABLE = "unavailable number"  # an operand not in the current multiset (not given, or used up)
INEXACT_DIVISION = "inexact division"
NOT_POSITIVE = "not positive"  # a-b with a <= b: the true result is zero or negative
WRONG_LEFT = "wrong left"  # the `left` list is not the remaining multiset


def _judge(state: tuple[int, ...], step: Step) -> str:
    """Error label of `step` applied to the ordered multiset `state` ("" when legal)."""
    rest = remove_pair(state, step.a, step.b)
    if rest is None:
        return UNAVAILABLE
    value = apply_op(step.op, step.a, step.b)
    if value is None:
        return INEXACT_DIVISION
    if value <= 0:
        return NOT_POSITIVE
    if value != step.result:
        return WRONG_ARITHMETIC
    return "" if Counter(step.left) == Counter((value, *rest)) else WRONG_LEFT


def apply_steps(numbers: Sequence[int], steps: Sequence[Step | str]) -> tuple[int, ...] | None:
    """The canonical ordered multiset after legal operation steps; None if one does not parse or is
    illegal."""
    state = tuple(numbers)
    for raw in steps:
        step = raw if isinstance(raw, Step) else parse_step(raw)
        if step is None or _judge(state, step):
            return None
        state = (step.result, *remove_pair(state, step.a, step.b))  # type: ignore[misc]
    return state


def _parse_int(text: str) -> int | None:
    text = text.strip().rstrip(".").strip()
    digits = text[1:] if text.startswith("-") else text
    return int(text) if digits.isdigit() and digits.isascii() else None


def _split(question: Question | str, steps: Sequence[str] | str) -> tuple[tuple[int, ...], int, list[str]]:
    numbers, target = parse_question(question.content if isinstance(question, Question) else question)
    return numbers, target, steps.splitlines() if isinstance(steps, str) else list(steps)


def check_trace(
    question: Question | str, steps: Sequence[str] | str, answer_prefix: str = ANSWER_PREFIX
) -> TraceCheck:
    """Check a solution line by line (`steps`: lines without delimiter, or one string split into lines).

    After an illegal step the trace's own `left` list becomes the state, so one mistake is not counted
    again for every later step. Raises ValueError if the question does not parse.
    """
    numbers, target, lines = _split(question, steps)
    state, last, checks, answer, answered = numbers, None, [], None, False
    for raw in lines:
        text = raw.strip()
        if answered:
            checks.append(StepCheck(text, "garbage", False, False, AFTER_ANSWER))
        elif text.startswith(answer_prefix):
            answered, answer = True, _parse_int(text[len(answer_prefix) :])
            made = last == target if last is not None else target in numbers
            error = ANSWER_TOO_EARLY if not made else ("" if answer == target else WRONG_ANSWER)
            checks.append(StepCheck(text, "answer", answer == target, made, error))
        elif (step := parse_step(text)) is None:
            checks.append(StepCheck(text, "garbage", False, False, GARBAGE))
        else:
            error = _judge(state, step)
            exact = apply_op(step.op, step.a, step.b) == step.result
            available = remove_pair(state, step.a, step.b) is not None
            checks.append(StepCheck(text, "operation", exact, available, error))
            state = step.left if error else (step.result, *remove_pair(state, step.a, step.b))  # type: ignore[misc]
            last = step.result
    first_error = next((i for i, c in enumerate(checks) if c.error), None)
    if first_error is None and not answered:
        first_error = len(checks)
    return TraceCheck(tuple(checks), target, answer, answer == target, first_error is None, first_error)


def verify(question: Question | str, steps: Sequence[str] | str, answer_prefix: str = ANSWER_PREFIX) -> bool:
    """True only for a legal derivation of the target ending with the answer line stating it."""
    return check_trace(question, steps, answer_prefix).correct


def value_of_state(
    question: Question | str, steps: Sequence[str] | str, answer_prefix: str = ANSWER_PREFIX
) -> float:
    """Solver value of a partial solution (D_V0's target): 1.0 if every line so far is legal and some
    continuation verifies (after an answer line: the trace is correct), else 0.0."""
    check = check_trace(question, steps, answer_prefix)
    if check.correct or check.first_error != len(check.steps):  # an error, or a finished trace
        return float(check.correct)
    numbers, target, lines = _split(question, steps)
    state = apply_steps(numbers, lines) or ()  # every line is a legal operation here
    made = state[0] == target if lines else target in numbers
    return float(made or can_finish(tuple(sorted(state)), target))


# ------------------------------------------------------------------------- the rules a search plays by

# A search may trust the verifier at test time: it needs the question only, never the gold answer.
VERIFIABLE_AT_TEST_TIME = True


def step_rule(question: Question | str, steps: Sequence[str], answer_prefix: str = ANSWER_PREFIX) -> str:
    """The last step of a partial solution judged by the rules (pipeline.tasks.rules): `solved` when the
    whole trace verifies (it ends with a right answer line), `illegal` when any line is wrong (bad
    arithmetic, a number not available, a wrong `left` list, garbage, an answer too early or wrong, a line
    after the answer), else `legal`. The empty solution is `legal`."""
    check = check_trace(question, steps, answer_prefix)
    if check.correct:
        return SOLVED
    return LEGAL if check.first_error == len(check.steps) else ILLEGAL


def has_moves(question: Question | str, steps: Sequence[str], answer_prefix: str = ANSWER_PREFIX) -> bool:
    """Whether any line can legally follow the legal `steps`: two numbers or more left (`a+b` always
    is), or the target itself left (its answer line). False after the answer line, and when one number
    is left that is not the target: every line from there is illegal (the search's dead end)."""
    if steps and steps[-1].strip().startswith(answer_prefix):
        return False
    state, target = _state(question, steps)
    return len(state) >= 2 or state == (target,)


def _state(question: Question | str, steps: Sequence[str]) -> tuple[tuple[int, ...], int]:
    """(numbers left, target) after `steps` (legal operation lines; an answer line is skipped)."""
    numbers, target, lines = _split(question, steps)
    ops = [line for line in lines if parse_step(line) is not None]
    state = apply_steps(numbers, ops)
    if state is None:
        raise ValueError(f"not a legal partial solution of {target}: {lines!r}")
    return state, target


def state_key(question: Question | str, steps: Sequence[str], answer_prefix: str = ANSWER_PREFIX):
    """Two legal partial solutions with the same key are the same search state: the sorted multiset of
    numbers left (and whether the answer line was written), whatever lines led there."""
    state, _ = _state(question, steps)
    answered = bool(steps) and steps[-1].strip().startswith(answer_prefix)
    return (tuple(sorted(state)), answered)


def state_text(question: Question | str, steps: Sequence[str]) -> str:
    """The whole state of a legal partial solution as text, `24 5 2 to 41` (numbers left, largest first,
    then the target): countdown is Markov, so this is all a value model needs to read."""
    state, target = _state(question, steps)
    return format_question(sorted(state, reverse=True), target)
