"""Multi-step arithmetic: a seeded problem generator and a step checker (standard library only).

A problem of difficulty d is a chain of d operations on operands 1..max_operand, fully parenthesised
except at the top, e.g. `((9*9)-30)-16`. Its gold solution applies the operations innermost first, one
per line, each with the previous result, then states the answer:

    9*9=81
    81-30=51
    51-16=35
    The answer is 35

Every intermediate result is in [1, MAX_VALUE] and no step multiplies by 1, so no step is trivial and
no chain collapses to 0. With `flip > 0` a share of the later operations writes
the new operand on the left (`16+(9*9)` -> `16+81=97`); the order of operations is still unambiguous
(innermost parenthesis first). Expressions are parsed by a small hand-written parser, never `eval`.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.records import Question
from pipeline.tasks import sets
from pipeline.tasks.trace import (
    AFTER_ANSWER,
    ANSWER_TOO_EARLY,
    GARBAGE,
    WRONG_ANSWER,
    WRONG_ARITHMETIC,
    StepCheck,
    TraceCheck,
)

MIN_DIFFICULTY, MAX_DIFFICULTY = 1, 6
MAX_VALUE = 999  # every intermediate result lies in [1, MAX_VALUE]
OPS = ("+", "-", "*")
ANSWER_PREFIX = "The answer is"
SOURCE = "arith"
CHARS = "0123456789+-*()=Q: \nTheanswri"  # every character of the task's text (tiny vocabulary)

# ------------------------------------------------------------------------------------------ generation


def _apply(op: str, a: int, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    return a * b


def question_id(content: str, difficulty: int) -> str:
    """Stable id from the content alone: the same problem has the same id under every seed."""
    return f"arith-d{difficulty}-{hashlib.sha1(content.encode()).hexdigest()[:10]}"


def _fine(op: str, a: int, b: int) -> bool:
    """An allowed step: result in [1, MAX_VALUE], no multiplication by 1."""
    return 1 <= _apply(op, a, b) <= MAX_VALUE and not (op == "*" and 1 in (a, b))


def _operand_choices(op: str, value: int, left: bool, max_operand: int) -> list[int]:
    """Operands x in 1..max_operand for which `value op x` (or `x op value`) is an allowed step."""
    return [x for x in range(1, max_operand + 1) if (_fine(op, x, value) if left else _fine(op, value, x))]


def _sample(rng: random.Random, d: int, max_operand: int, flip: float) -> Question:
    op = rng.choice(OPS)
    a, b = rng.randint(1, max_operand), rng.randint(1, max_operand)
    while not _fine(op, a, b):
        a, b = rng.randint(1, max_operand), rng.randint(1, max_operand)
    value = _apply(op, a, b)
    expr = f"{a}{op}{b}"
    steps = [f"{a}{op}{b}={value}"]
    for _ in range(d - 1):
        left = rng.random() < flip
        ops = list(OPS)
        rng.shuffle(ops)
        for op in ops:
            choices = _operand_choices(op, value, left, max_operand)
            if choices:
                break
        x = rng.choice(choices)  # "+" (value < MAX_VALUE) or "-" (value > 1) always has a choice
        if left:
            new = _apply(op, x, value)
            expr, step = f"{x}{op}({expr})", f"{x}{op}{value}={new}"
        else:
            new = _apply(op, value, x)
            expr, step = f"({expr}){op}{x}", f"{value}{op}{x}={new}"
        steps.append(step)
        value = new
    steps.append(f"{ANSWER_PREFIX} {value}")
    return Question(
        id=question_id(expr, d),
        content=expr,
        answer=str(value),
        source=SOURCE,
        difficulty=d,
        solution=tuple(steps),
    )


def _generate(
    counts: dict[int, int], stream: str, max_operand: int, flip: float, exclude: set[str]
) -> list[Question]:
    """`counts[d]` distinct problems per difficulty, none in `exclude` (contents); interleaved by difficulty."""
    if max_operand < 2:
        raise ValueError(f"max_operand must be >= 2, got {max_operand}")
    for d in counts:
        if not MIN_DIFFICULTY <= d <= MAX_DIFFICULTY:
            raise ValueError(f"difficulty {d} outside {MIN_DIFFICULTY}..{MAX_DIFFICULTY}")

    def sample(rng: random.Random, d: int):
        q = _sample(rng, d, max_operand, flip)
        return q.content, lambda: q

    return sets.draw_distinct(
        counts,
        lambda d: f"arith/{stream}/d{d}",
        sample,
        exclude,
        lambda count: 50 * count + 1000,
        f"arith problems with max_operand {max_operand}",
    )


def generate(
    n: int,
    difficulties: Sequence[int],
    seed: int,
    max_operand: int,
    *,
    flip: float = 0.0,
    exclude: frozenset[str] | set[str] = frozenset(),
) -> list[Question]:
    """`n` distinct problems spread evenly over `difficulties` (earlier ones get the remainder).

    Deterministic for (n, difficulties, seed, max_operand, flip, exclude); `exclude` holds contents that
    must not be produced. `flip` in [0, 1] is the chance that a later operation puts its new operand
    on the left.
    """
    if not difficulties:
        raise ValueError("difficulties must not be empty")
    return _generate(sets.even_counts(n, list(difficulties)), str(seed), max_operand, flip, set(exclude))


def _draw(task_cfg: Any):
    return lambda counts, stream, exclude: _generate(counts, stream, task_cfg.max_operand, 0.0, exclude)


def make_task_split(task_cfg: Any, seed: int) -> tuple[list[Question], list[Question]]:
    """(train, heldout) over `train_difficulties` / `heldout_difficulties` (pipeline.tasks.sets)."""
    return sets.task_split(task_cfg, seed, _draw(task_cfg), lambda q: q.content, MAX_DIFFICULTY)


def warm_start_set(task_cfg: Any, seed: int) -> list[Question]:
    """`warm_size` problems over `warm_difficulties` plus a `warm_long_fraction` of longer ones
    (`sets.warm_counts`); the train and held-out sets avoid them."""
    return _draw(task_cfg)(sets.warm_counts(task_cfg, MAX_DIFFICULTY), f"{seed}/warm", set())


def dv0_set(task_cfg: Any, seed: int) -> list[Question]:
    """D_V0's `dv0_size` questions (with gold solutions) over `dv0_difficulties` (empty: the train
    difficulties); the train and held-out sets avoid them."""
    return _draw(task_cfg)(sets.dv0_counts(task_cfg), f"{seed}/dv0", set())


# ------------------------------------------------------------------------------------ expression parser


class _ParseError(ValueError):
    pass


@dataclass(frozen=True)
class _Node:
    op: str  # "" for a number
    value: int  # the number, or the node's true result
    left: _Node | None = None
    right: _Node | None = None


_MAX_DEPTH = 40


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "0123456789":
            j = i
            while j < len(text) and text[j] in "0123456789":
                j += 1
            tokens.append(text[i:j])
            i = j
        elif c in "+-*()":
            tokens.append(c)
            i += 1
        else:
            raise _ParseError(f"unexpected character {c!r}")
    return tokens


class _Parser:
    """expr := term (('+'|'-') term)* ; term := factor ('*' factor)* ; factor := INT | '(' expr ')'."""

    def __init__(self, text: str):
        self.tokens = _tokenize(text)
        self.pos = 0

    def parse(self) -> _Node:
        node = self._expr(0)
        if self.pos != len(self.tokens):
            raise _ParseError("trailing tokens")
        return node

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _binary(self, ops: str, sub, depth: int) -> _Node:
        node = sub(depth)
        while self._peek() is not None and self._peek() in ops:
            op = self.tokens[self.pos]
            self.pos += 1
            right = sub(depth)
            node = _Node(op, _apply(op, node.value, right.value), node, right)
        return node

    def _expr(self, depth: int) -> _Node:
        if depth > _MAX_DEPTH:
            raise _ParseError("nested too deeply")
        return self._binary("+-", self._term, depth)

    def _term(self, depth: int) -> _Node:
        return self._binary("*", self._factor, depth)

    def _factor(self, depth: int) -> _Node:
        tok = self._peek()
        if tok is None:
            raise _ParseError("unexpected end")
        self.pos += 1
        if tok == "(":
            node = self._expr(depth + 1)
            if self._peek() != ")":
                raise _ParseError("missing ')'")
            self.pos += 1
            return node
        if tok.isdigit():
            return _Node("", int(tok))
        raise _ParseError(f"unexpected {tok!r}")


def _count_ops(node: _Node) -> int:
    return 0 if not node.op else 1 + _count_ops(node.left) + _count_ops(node.right)  # type: ignore[arg-type]


def _parse_int(text: str) -> int | None:
    text = text.strip().rstrip(".").replace(",", "").strip()
    digits = text[1:] if text.startswith("-") else text
    return int(text) if digits.isdigit() and digits.isascii() else None


def evaluate(expression: str) -> int:
    """Value of an integer expression with + - * and parentheses (usual precedence). Raises ValueError."""
    return _Parser(expression).parse().value


# --------------------------------------------------------------------------------------- step checking

# Per-step error labels ("" = the step is right).
SKIPPED_OPERATION = "skipped operation"  # applies a later operation, leaving out the next one(s)
MERGED_OPERATIONS = "merged operations"  # more than one operation in one step (`9*9-30=51`)
WRONG_OPERATION = "wrong operation"  # an operation (or operands) the question does not ask for next
EXTRA_OPERATION = "extra operation"  # an operation after all of the question's are done


@dataclass(frozen=True)
class _PlanOp:
    op: str
    left: int | str  # a literal value, or "#j" = result of plan operation j
    right: int | str


def _plan(node: _Node, out: list[_PlanOp]) -> int | str:
    """Post-order list of operations (innermost first, left before right); returns the operand ref."""
    if not node.op:
        return node.value
    left = _plan(node.left, out)  # type: ignore[arg-type]
    right = _plan(node.right, out)  # type: ignore[arg-type]
    out.append(_PlanOp(node.op, left, right))
    return f"#{len(out) - 1}"


def _matches(plan_op: _PlanOp, op: str, a: int, b: int, stated: dict[int, int], wildcard: bool) -> bool:
    """Does `a op b` apply `plan_op`? Refs resolve to the value the trace stated for them; a ref the
    trace never stated matches anything when `wildcard` (a skipped operation), else nothing."""

    def same(operand: int | str, value: int) -> bool:
        if isinstance(operand, int):
            return operand == value
        j = int(operand[1:])
        return stated[j] == value if j in stated else wildcard

    if op != plan_op.op:
        return False
    if same(plan_op.left, a) and same(plan_op.right, b):
        return True
    return op in "+*" and same(plan_op.left, b) and same(plan_op.right, a)


def _check_operation(text: str, plan: list[_PlanOp], state: dict) -> StepCheck:
    lhs_text, rhs_text = text.split("=")
    lhs = _Parser(lhs_text).parse()
    rhs_text = rhs_text.strip()
    if not (rhs_text.lstrip("-").isdigit() and rhs_text.count("-") <= 1 and rhs_text.isascii()):
        raise _ParseError("right-hand side is not a number")
    rhs = int(rhs_text)
    arith = lhs.value == rhs
    n_ops, k, stated = _count_ops(lhs), state["next"], state["stated"]
    if n_ops == 0:
        return StepCheck(text, "garbage", False, False, GARBAGE)
    if n_ops > 1:
        state["next"] = min(k + n_ops, len(plan))
        stated[state["next"] - 1] = rhs
        return StepCheck(text, "operation", arith, False, MERGED_OPERATIONS)
    if k >= len(plan):
        return StepCheck(text, "operation", arith, False, EXTRA_OPERATION)
    a, b = lhs.left.value, lhs.right.value  # type: ignore[union-attr]
    if _matches(plan[k], lhs.op, a, b, stated, wildcard=False):
        stated[k], state["next"] = rhs, k + 1
        return StepCheck(text, "operation", arith, True, "" if arith else WRONG_ARITHMETIC)
    for j in range(k + 1, len(plan)):
        if _matches(plan[j], lhs.op, a, b, stated, wildcard=True):
            stated[j], state["next"] = rhs, j + 1
            return StepCheck(text, "operation", arith, False, SKIPPED_OPERATION)
    stated[k], state["next"] = rhs, k + 1
    return StepCheck(text, "operation", arith, False, WRONG_OPERATION)


def check_trace(
    question: Question | str, steps: Sequence[str] | str, answer_prefix: str = ANSWER_PREFIX
) -> TraceCheck:
    """Check a solution step by step against the question's expression (`Question` or its content).

    `steps` are step texts without delimiter (a single string is split into lines). An operation step is
    `expression=number`; the answer line starts with `answer_prefix`. Operands of + and * may be written
    in either order. After a wrong step, later steps are judged against the trace's own results, so one
    mistake is not counted again for every step after it. Raises ValueError if the question does not parse.
    """
    content = question.content if isinstance(question, Question) else question
    try:
        root = _Parser(content).parse()
    except _ParseError as e:
        raise ValueError(f"not an arith expression: {content!r} ({e})") from e
    plan: list[_PlanOp] = []
    _plan(root, plan)
    lines = steps.splitlines() if isinstance(steps, str) else list(steps)
    state: dict[str, Any] = {"next": 0, "stated": {}}
    checks: list[StepCheck] = []
    answer: int | None = None
    answered = False
    for raw in lines:
        text = raw.strip()
        if answered:
            checks.append(StepCheck(text, "garbage", False, False, AFTER_ANSWER))
        elif text.startswith(answer_prefix):
            answered = True
            answer = _parse_int(text[len(answer_prefix) :])
            right = answer == root.value
            error = ANSWER_TOO_EARLY if state["next"] < len(plan) else ("" if right else WRONG_ANSWER)
            checks.append(StepCheck(text, "answer", right, state["next"] >= len(plan), error))
        else:
            try:
                if text.count("=") != 1:
                    raise _ParseError("not expression=number")
                checks.append(_check_operation(text, plan, state))
            except _ParseError:
                checks.append(StepCheck(text, "garbage", False, False, GARBAGE))
    first_error = next((i for i, c in enumerate(checks) if c.error), None)
    if first_error is None and not answered:
        first_error = len(checks)
    return TraceCheck(
        steps=tuple(checks),
        gold=root.value,
        answer=answer,
        answer_correct=answer is not None and answer == root.value,
        correct=first_error is None,
        first_error=first_error,
    )
