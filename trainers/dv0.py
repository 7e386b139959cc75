"""D_V0: the initial PRM's training data, from questions with worked gold solutions (no search yet).

For a question whose gold solution has K steps (the answer step included):
- every gold prefix p_k, k = 1..K, has m = K - k, r = 0 and target v_k = k / K;
- a corrupted branch replaces gold step d + 1 (d = 0..K-1) by a wrong step: it has m = K - d (the
  distance of its parent, its nearest ancestor on a correct path) and r = 1, so
  v = max(0, v_d - (1 - v_d) / (K - d + 1)) with v_d = d / K;
- steps after a wrong step (the wrong trace continued consistently to a wrong answer) keep r = 1 and
  the same m = K - d (nearest correct ancestor unchanged), the recursion going on from the previous
  value: each further wrong step lowers v again, towards 0.
All targets come from `pipeline.values.quality_value`, the same recursion as for search trees.

Wrong steps: on arith-style steps (`a<op>b=c`) a wrong result (c off by a small amount) or a wrong
operand (correct arithmetic on a changed operand), the rest of the trace recomputed from the wrong
value; a wrong final answer line; for any other text a step copied from another question's solution.
Deterministic for (questions, seed, corruptions).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from pipeline.records import PRMExample, Question
from pipeline.values import quality_value

STEP = re.compile(r"^(\d+)([+\-*])(\d+)=(-?\d+)$")


def _apply(op: str, a: int, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def _wrong_value(rng: random.Random, true: int) -> int:
    choices = [true + delta for delta in (-10, -2, -1, 1, 2, 10) if true + delta >= 0]
    return rng.choice(choices)


def _continue(rest: Sequence[str], old: int, new: int, answer_prefix: str) -> list[str]:
    """Gold steps after a wrong value: the previous result `old` replaced by `new`, recomputed."""
    out = []
    for step in rest:
        match = STEP.match(step)
        if match is None:
            if step.startswith(answer_prefix):
                out.append(f"{answer_prefix} {new}")
            break
        a, op, b = int(match[1]), match[2], int(match[3])
        if a == old:
            a = new
        elif b == old:
            b = new
        else:
            break
        old, new = int(match[4]), _apply(op, a, b)
        out.append(f"{a}{op}{b}={new}")
    return out


def corrupt(
    rng: random.Random, steps: Sequence[str], d: int, donors: Sequence[Sequence[str]], answer_prefix: str
) -> list[str]:
    """A wrong trace: gold steps[:d] kept, step d+1 wrong, then (arith) its consistent continuation.

    Returns only the new steps (wrong step first); empty when no wrong step could be made.
    """
    step = steps[d]
    match = STEP.match(step)
    if match is not None:
        a, op, b, c = int(match[1]), match[2], int(match[3]), int(match[4])
        if rng.random() < 0.5:
            new = _wrong_value(rng, c)
            wrong = f"{a}{op}{b}={new}"
        else:  # wrong operand: one the question does not have at this point, arithmetic right
            b2 = rng.choice([x for x in range(max(1, b - 3), b + 4) if x != b])
            new = _apply(op, a, b2)
            wrong = f"{a}{op}{b2}={new}"
        if new == c:
            return []
        return [wrong, *_continue(steps[d + 1 :], c, new, answer_prefix)]
    if step.startswith(answer_prefix):
        true = step[len(answer_prefix) :].strip()
        if true.lstrip("-").isdigit():
            return [f"{answer_prefix} {_wrong_value(rng, int(true))}"]
    options = [s for other in donors for s in other if s != step and not s.startswith(answer_prefix)]
    return [rng.choice(options)] if options else []


def build_dv0(
    questions: Sequence[Question], seed: int, corruptions: int = 2, answer_prefix: str = "The answer is"
) -> list[PRMExample]:
    """PRM examples for every gold prefix and `corruptions` wrong branches per question."""
    solved = [q for q in questions if q.solution]
    out: list[PRMExample] = []
    for i, q in enumerate(solved):
        rng = random.Random(f"dv0/{seed}/{q.id}")
        steps, k_total = tuple(q.solution), len(q.solution)
        seen = {steps[:k] for k in range(1, k_total + 1)}
        v = 0.0
        for k in range(1, k_total + 1):
            target = quality_value(v, k_total - k, 0)
            out.append(PRMExample(q.id, q.content, steps[:k], target, k_total - k, 0, v))
            v = target
        donors = [solved[(i + j) % len(solved)].solution for j in (1, 2, 3) if j < len(solved)]
        for _ in range(corruptions):
            d = rng.randrange(k_total)
            wrong = corrupt(rng, steps, d, donors, answer_prefix)
            m = k_total - d
            v = d / k_total
            prefix = steps[:d]
            for s in wrong:
                prefix = (*prefix, s)
                target = quality_value(v, m, 1)
                if prefix not in seen:
                    seen.add(prefix)
                    out.append(PRMExample(q.id, q.content, prefix, target, m, 1, v))
                v = target
    return out
