"""What a task's step checker returns (arith, countdown): one verdict per step and one for the trace.

An evaluation instrument (trace precision, step AUC) and the `oracle` filter's test; never a training
signal of ReST-MCTS* itself. Error labels shared by every task; each task adds its own.
"""

from __future__ import annotations

from dataclasses import dataclass

WRONG_ARITHMETIC = "wrong arithmetic"  # the stated result of a legal operation is wrong
GARBAGE = "garbage"  # neither an operation line nor an answer line
ANSWER_TOO_EARLY = "answer too early"  # answer line before the work is done
WRONG_ANSWER = "wrong answer"  # answer line whose number is not the gold answer / target
AFTER_ANSWER = "after answer"  # any line after the answer line

# A task's verdict on the last step of a partial solution (its `step_rule`, pipeline/tasks/rules.py)
LEGAL, ILLEGAL, SOLVED = "legal", "illegal", "solved"


@dataclass(frozen=True)
class StepCheck:
    text: str
    kind: str  # operation | answer | garbage
    arithmetic_ok: bool  # operation: the stated equation holds; answer: the number is the gold one
    # operation: the step is the one the task allows here (arith: the question's next operation on the
    # trace's own results; countdown: both operands available); answer: the work was done before it
    follows_plan: bool
    error: str = ""  # an error label; "" when the step is right

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass(frozen=True)
class TraceCheck:
    steps: tuple[StepCheck, ...]
    gold: int  # arith: the value of the question's expression; countdown: the target
    answer: int | None  # number stated by the (first) answer line; None when there is none
    answer_correct: bool  # answer == gold, however it was reached
    correct: bool  # every step right and in order, the answer line right and last
    first_error: int | None  # index of the first wrong step; len(steps) if only the answer line is missing
