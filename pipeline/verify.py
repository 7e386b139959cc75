"""Is a finished solution correct? One question for every task, answered per question.

Most tasks have a gold final answer: a solution is correct when the answer it states grades equal to
it (pipeline.grading). A task whose answer alone proves nothing has a verifier of the whole derivation
instead: countdown's "The answer is 24" is right only after legal steps that make 24 from the given
numbers (pipeline.tasks.countdown.verify). Search, value inference, trace selection, the baselines and
evaluation all ask through a `Check`, so they treat both kinds alike.

A Check is `check(steps, answer) -> True | False | None`: `steps` the solution's steps, `answer` the
answer extracted from them (None: none stated, which is wrong); None means ungradable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pipeline.grading import DEFAULT_TIMEOUT, extract_answer, grade
from pipeline.records import Question
from pipeline.tasks.rules import task_verifier

Check = Callable[[Sequence[str], "str | None"], "bool | None"]


def answer_check(
    gold: str,
    timeout: float = DEFAULT_TIMEOUT,
    answer_prefix: str = "The answer is",
    fallbacks: Sequence[str] = (),
) -> Check:
    """Correct when the stated answer grades equal to `gold` (no answer: wrong). With `fallbacks`
    (pipeline.grading rules, e.g. `\\boxed{}`, `#### N`), a solution whose answer was not found by the
    prefix is read again by those rules before it is judged."""

    def check(steps: Sequence[str], answer: str | None) -> bool | None:
        if answer is None and fallbacks:
            answer = extract_answer(list(steps), answer_prefix, fallbacks)
        return False if answer is None else grade(answer, gold, timeout).correct

    return check


def as_check(gold: str | Check | None, timeout: float = DEFAULT_TIMEOUT) -> Check | None:
    """A Check from a gold answer string, a Check itself, or None (no gold: nothing to check)."""
    if gold is None or callable(gold):
        return gold
    return answer_check(gold, timeout)


def solution_check(
    question: Question,
    answer_prefix: str = "The answer is",
    timeout: float = DEFAULT_TIMEOUT,
    fallbacks: Sequence[str] = (),
) -> Check | None:
    """The Check of `question`: its task's verifier (which reads the answer line by `answer_prefix`)
    when it has one, else its gold answer's (reading answers by `fallbacks` too, see answer_check);
    None when neither exists."""
    verifier = task_verifier(question)
    if verifier is not None:
        return lambda steps, answer: verifier(steps, answer_prefix)
    if question.answer is None:
        return None
    return answer_check(question.answer, timeout, answer_prefix, tuple(fallbacks))
