"""The rules a search plays by: the optional parts of a task, bound to one question.

A task module (pipeline/tasks/<name>.py) may define, besides its generator:

    verify(question, steps, answer_prefix) -> bool          the whole derivation is right
    step_rule(question, steps, answer_prefix) -> str        LEGAL | ILLEGAL | SOLVED, for the last step
    state_key(question, steps, answer_prefix) -> Hashable   equal keys = the same state (legal steps only)
    state_text(question, steps) -> str                      the state as a value model may read it
    has_moves(question, steps, answer_prefix) -> bool       some line can legally follow the legal steps
    VERIFIABLE_AT_TEST_TIME: bool                           `verify` needs the question only, not the gold

Searches (pipeline/search) ask a `Rules` object: an illegal child stays in the tree but is never
selected, expanded or rolled out from; a child whose state equals a sibling's merges into it; a SOLVED
child may stop the search when the task is verifiable at test time. A task without these parts (file,
gsm8k; arith today) gets `NO_RULES`: every step legal, nothing merged, nothing solved, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from types import ModuleType

from pipeline.records import Question
from pipeline.tasks.trace import ILLEGAL, LEGAL, SOLVED

__all__ = ["ILLEGAL", "LEGAL", "NO_RULES", "SOLVED", "Rules", "rules_for", "state_text", "task_verifier"]


@dataclass(frozen=True)
class Rules:
    """One question's rules. `step(steps)`: the verdict on the last of `steps` (None: no rules, all
    legal); `key(steps)`: a legal state's identity (None: no merging); `verifiable`: a SOLVED verdict
    needs no gold answer, so a search may stop on it at test time; `moves(steps)`: whether any line can
    legally follow (None: always)."""

    step: Callable[[tuple[str, ...]], str] | None = None
    key: Callable[[tuple[str, ...]], Hashable] | None = None
    verifiable: bool = False
    moves: Callable[[tuple[str, ...]], bool] | None = None

    def judge(self, steps: tuple[str, ...]) -> str:
        return LEGAL if self.step is None else self.step(steps)

    def stuck(self, steps: tuple[str, ...]) -> bool:
        """True when no line can legally follow the legal, unsolved `steps` (False without the rule)."""
        return self.moves is not None and not self.moves(steps)

    def state(self, steps: tuple[str, ...]) -> Hashable:
        """The state key of legal `steps`; the steps themselves when the task merges nothing."""
        return steps if self.key is None else self.key(steps)


NO_RULES = Rules()


def task_module(source: str) -> ModuleType | None:
    """The built-in task module whose questions carry `source` (Question.source), else None."""
    from pipeline.tasks import BUILTIN, builtin

    return builtin(source) if source in BUILTIN else None


def rules_for(question: Question, answer_prefix: str = "The answer is") -> Rules:
    """The rules of `question`'s task (NO_RULES for a task that has none)."""
    task = task_module(question.source)
    if task is None:
        return NO_RULES
    step = getattr(task, "step_rule", None)
    key = getattr(task, "state_key", None)
    moves = getattr(task, "has_moves", None)
    return Rules(
        step=None if step is None else (lambda steps: step(question, steps, answer_prefix)),
        key=None if key is None else (lambda steps: key(question, steps, answer_prefix)),
        verifiable=bool(getattr(task, "VERIFIABLE_AT_TEST_TIME", False)),
        moves=None if moves is None else (lambda steps: moves(question, steps, answer_prefix)),
    )


def task_verifier(question: Question) -> Callable[[Sequence[str], str], bool] | None:
    """`verify(question, steps, answer_prefix)` of the question's task, when it has one."""
    task = task_module(question.source)
    verify = getattr(task, "verify", None) if task is not None else None
    return None if verify is None else (lambda steps, prefix: verify(question, list(steps), prefix))


def state_text(question: Question, steps: Sequence[str]) -> str | None:
    """The task's rendering of the state after `steps`, or None when the task has none."""
    task = task_module(question.source)
    render = getattr(task, "state_text", None) if task is not None else None
    return None if render is None else render(question, steps)
