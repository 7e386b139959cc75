"""Self-critic of the searches: is a partial solution finished (end) or not (continue)?

Rules, in order (docs/ALGORITHM.md section 2): the empty root continues; a state `max_depth` steps long
ends (guard against runaway policies, applied with any reflection mode); with `use_reflection="none"`
everything else continues; a state with an answer line (a step starting with the answer prefix, or a
`\\boxed`) ends; with `critic="policy"` the policy is asked (Critique requests, batched), "solved" ends,
"unsolved" continues, and no usable reply after CRITIC_TRIES tries ends.
"""

from __future__ import annotations

import random
from collections.abc import Generator, Sequence

from pipeline.search.protocol import Answer, Critique, Request
from pipeline.search.tree import CONTINUE, END

CRITIC_TRIES = 3
SEED_RANGE = 2**31  # per-request seeds fit a signed 32-bit int (engines' seed arguments)


def states_answer(steps: Sequence[str], answer_prefix: str) -> bool:
    """Rule critic: some step starts with the answer prefix (case-insensitive) or contains `\\boxed`."""
    prefix = answer_prefix.strip().lower()
    return any((prefix and step.strip().lower().startswith(prefix)) or "\\boxed" in step for step in steps)


class Reflector:
    """Judges states for one search; draws critic seeds from the search's rng; counts critic tokens."""

    def __init__(
        self,
        question: str,
        use_reflection: str,
        critic: str,
        max_depth: int,
        answer_prefix: str,
        rng: random.Random,
    ) -> None:
        self.question = question
        self.mode = use_reflection
        self.critic = critic
        self.max_depth = max_depth
        self.answer_prefix = answer_prefix
        self.rng = rng
        self.tokens = 0  # policy tokens spent by the critic

    def rule(self, steps: tuple[str, ...]) -> str | None:
        """END or CONTINUE when decided without a model; None when the policy critic must be asked."""
        if not steps:
            return CONTINUE
        if len(steps) >= self.max_depth:
            return END
        if self.mode == "none":
            return CONTINUE
        if states_answer(steps, self.answer_prefix):
            return END
        return None if self.critic == "policy" else CONTINUE

    def judge(
        self, states: Sequence[tuple[str, ...]], want_text: bool
    ) -> Generator[list[Request], list[Answer], list[tuple[str, str]]]:
        """(END or CONTINUE, reflection text) per state; one Critique batch per try for all undecided."""
        results: list[tuple[str, str] | None] = []
        for steps in states:
            decided = self.rule(steps)
            results.append(None if decided is None else (decided, ""))
        pending = [i for i, r in enumerate(results) if r is None]
        for _ in range(CRITIC_TRIES):
            if not pending:
                break
            requests = [
                Critique(self.question, states[i], want_text, self.rng.randrange(SEED_RANGE)) for i in pending
            ]
            verdicts = yield requests
            still = []
            for i, verdict in zip(pending, verdicts, strict=True):
                self.tokens += verdict.tokens
                if verdict.solved is None:
                    still.append(i)
                else:
                    results[i] = (
                        END if verdict.solved else CONTINUE,
                        verdict.reflection if want_text else "",
                    )
            pending = still
        for i in pending:  # no usable reply after CRITIC_TRIES tries
            results[i] = (END, "")
        return results  # type: ignore[return-value]
