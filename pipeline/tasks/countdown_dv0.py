"""D_V0 for countdown: the initial PRM's data, with targets from the exact solver (no search yet).

For a question whose gold solution has K steps (K - 1 operations and the answer line), as for arith
(trainers/dv0.py), every gold prefix p_k has m = K - k, r = 0 and v_k = k / K. Branches off the gold path
at depth d (d = 0..K-2, after d gold operations, value v_d = d / K) are what makes countdown a search
problem, and the solver labels them:
- a *dead end*: a legal operation after which the target can no longer be made: r = 1, m = K - d (its
  nearest ancestor on a correct path is the gold prefix), v = max(0, v_d - (1 - v_d) / (m + 1));
  then random legal operations to the end and an answer line, each lowering v again (r = 1, same m);
- a *detour*: a legal non-gold operation after which the target is still reachable in j more
  operations: r = 0, m = j + 1 (the answer line included), v = v_d + (1 - v_d) / (m + 1): the value a
  search tree would give it had the search finished it (pipeline.values);
- an *error*: an illegal line (wrong arithmetic, or a number not available): r = 1, as a dead end.
All targets come from `pipeline.values.quality_value`. Deterministic for (questions, seed, corruptions).
Pure: standard library only.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from pipeline.records import PRMExample, Question
from pipeline.tasks.countdown import apply_steps, format_step, parse_question
from pipeline.tasks.countdown import verify as countdown_verify
from pipeline.tasks.countdown_solver import moves, reachable, shortest_length
from pipeline.values import quality_value


def _branches(state: tuple[int, ...], target: int, gold_next: str) -> tuple[list[str], list[str]]:
    """(dead-end lines, detour lines) among the legal operations from `state`, gold's own left out."""
    dead, detour = [], []
    for a, op, b, r, nxt in moves(state):
        line = format_step(a, op, b, r, nxt)
        if line == gold_next:
            continue
        ok = r == target or (len(nxt) > 1 and reachable(nxt, target))
        (detour if ok else dead).append(line)
    return dead, detour


def _error_line(rng: random.Random, state: tuple[int, ...]) -> str:
    """An illegal line from `state`: a legal-looking operation with a wrong result."""
    a, b = sorted(rng.sample(state, 2), reverse=True) if len(state) > 1 else (state[0], state[0])
    true = a + b
    wrong = true + rng.choice([-2, -1, 1, 2])
    rest = list(state)
    for x in (a, b):
        if x in rest:
            rest.remove(x)
    return format_step(a, "+", b, wrong, (wrong, *rest))


def _run_out(rng: random.Random, state: tuple[int, ...], answer_prefix: str) -> list[str]:
    """Random legal operations until one number is left, then an answer line stating it."""
    lines = []
    while len(state) > 1:
        a, op, b, r, nxt = rng.choice(list(moves(state)))
        lines.append(format_step(a, op, b, r, nxt))
        state = nxt
    return [*lines, f"{answer_prefix} {state[0]}"]


def build_dv0(
    questions: Sequence[Question], seed: int, corruptions: int = 2, answer_prefix: str = "The answer is"
) -> list[PRMExample]:
    """PRM examples for every gold prefix, and per question `corruptions` wrong branches (dead ends or
    illegal lines, continued to an answer) and up to `corruptions` detours."""
    return [e for q in questions if q.solution for e in _examples(q, seed, corruptions, answer_prefix)]


def _examples(q: Question, seed: int, corruptions: int, answer_prefix: str) -> list[PRMExample]:
    rng = random.Random(f"dv0/{seed}/{q.id}")
    numbers, target = parse_question(q.content)
    steps, k_total = tuple(q.solution), len(q.solution)
    out: dict[tuple[str, ...], PRMExample] = {}  # by prefix: the first label of a prefix wins
    v = 0.0
    for k in range(1, k_total + 1):
        value = quality_value(v, k_total - k, 0)
        out[steps[:k]] = PRMExample(q.id, q.content, steps[:k], value, k_total - k, 0, v)
        v = value
    for _ in range(corruptions):
        d = rng.randrange(k_total - 1)  # branch before a gold operation, never at the answer line
        state = apply_steps(numbers, steps[:d]) or tuple(numbers)
        dead, detour = _branches(state, target, steps[d])
        v, m = d / k_total, k_total - d
        if dead and rng.random() < 0.75:
            first = rng.choice(dead)
            wrong = [first, *_run_out(rng, apply_steps(state, [first]) or state, answer_prefix)]
        else:
            wrong = [_error_line(rng, state)]
        prefix = steps[:d]
        for line in wrong:
            prefix = (*prefix, line)
            value = quality_value(v, m, 1)
            out.setdefault(prefix, PRMExample(q.id, q.content, prefix, value, m, 1, v))
            v = value
        if detour:
            line = rng.choice(detour)
            m_detour = (shortest_length(apply_steps(state, [line]) or state, target) or 0) + 1
            parent, prefix = d / k_total, (*steps[:d], line)
            value = quality_value(parent, m_detour, 0)
            out.setdefault(prefix, PRMExample(q.id, q.content, prefix, value, m_detour, 0, parent))
    return list(out.values())


def label_sample(q: Question, steps: Sequence[str], answer_prefix: str = "The answer is") -> list[PRMExample]:
    """PRM examples for every prefix of one of the policy's own sampled solutions, valued like a search
    tree's nodes (pipeline.values) with the solver standing in for the finished tree: a prefix whose
    lines are all legal and from whose state the target can still be made in j more operations has
    r = 0, m = j + 1 (the answer line included); a correct answer line has m = 0 (v = 1); any other
    prefix (an illegal line, a dead end, a wrong or early answer) has r = 1 and the m of its last good
    ancestor, so its value falls. Lines after the first bad one keep falling."""
    numbers, target = parse_question(q.content)
    out: list[PRMExample] = []
    v, m_good, good = 0.0, (shortest_length(numbers, target) or 0) + 1, True
    state: tuple[int, ...] | None = tuple(numbers)
    for k in range(1, len(steps) + 1):
        line = steps[k - 1].strip()
        if good and line.startswith(answer_prefix):
            ok = countdown_verify(q, steps[:k], answer_prefix)
            m, r = (0, 0) if ok else (m_good, 1)
        elif good:
            state = apply_steps(state, [line]) if state is not None else None
            left = shortest_length(state, target) if state else None
            made = state is not None and state[0] == target
            if state is not None and (made or left is not None):
                m, r = (1 if made else left + 1), 0
            else:
                m, r = m_good, 1
        else:
            m, r = m_good, 1
        value = quality_value(v, m, r)
        out.append(PRMExample(q.id, q.content, tuple(steps[:k]), value, m, r, v))
        v, good = value, good and r == 0
        if r == 0:
            m_good = m
    return out


def label_samples(
    questions: Sequence[Question],
    samples: Sequence[Sequence[Sequence[str]]],
    answer_prefix: str = "The answer is",
) -> list[PRMExample]:
    """PRM examples valued by the solver for every prefix of each question's sampled solutions, distinct
    per (question, prefix): `label_sample`."""
    out, seen = [], set()
    for q, group in zip(questions, samples, strict=True):
        for steps in group:
            for e in label_sample(q, list(steps), answer_prefix):
                if (q.id, e.steps) not in seen:
                    seen.add((q.id, e.steps))
                    out.append(e)
    return out


def _walk(rng: random.Random, numbers: tuple[int, ...], target: int, answer_prefix: str) -> list[str]:
    """One random legal walk from the question: each operation keeps the target reachable half the time
    (when one can), else is any legal operation; it stops with a right answer line once the target is
    made, and at a single number left (a dead end, valued as such without an answer line)."""
    state, lines = numbers, []
    while True:
        if lines and state[0] == target:
            return [*lines, f"{answer_prefix} {target}"]
        options = list(moves(state))
        if not options:
            return lines
        if rng.random() < 0.5:
            live = [o for o in options if o[3] == target or (len(o[4]) > 1 and reachable(o[4], target))]
            options = live or options
        a, op, b, r, nxt = rng.choice(options)
        lines.append(format_step(a, op, b, r, nxt))
        state = nxt


def walk_dv0(
    questions: Sequence[Question],
    seed: int,
    walks: int,
    answer_prefix: str = "The answer is",
    illegal_share: float = 0.1,
) -> list[PRMExample]:
    """D_V0 for a value model that reads the state: `walks` random legal walks per question (`_walk`),
    every prefix valued by the solver as a search tree would value it (`label_sample`: live states rise
    towards 1 with the operations left, dead ends fall), distinct per (question, prefix); and for a
    share `illegal_share` of the questions one illegal line (a wrong result), valued as a wrong step.
    Deterministic for (questions, seed, walks)."""
    out, seen = [], set()
    for q in questions:
        rng = random.Random(f"dv0-walk/{seed}/{q.id}")
        numbers, target = parse_question(q.content)
        traces = [_walk(rng, tuple(numbers), target, answer_prefix) for _ in range(walks)]
        if rng.random() < illegal_share:
            traces.append([_error_line(rng, tuple(numbers))])
        for steps in traces:
            for e in label_sample(q, steps, answer_prefix):
                if (q.id, e.steps) not in seen:
                    seen.add((q.id, e.steps))
                    out.append(e)
    return out
