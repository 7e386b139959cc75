"""What every generation engine shares: the jobs it runs and how texts are rendered and read back.

`propose`, `critique`, `greedy_solve` and `sample_solutions` are defined once here (`SamplingEngine`)
with the semantics of the HF `PolicyActor`; an engine only implements `_sample(jobs)`: for each job, `n`
sampled continuations of the job's text, stopped at the step delimiter, with the number of generated
tokens and whether each sample ended for good (EOS or token limit) rather than at the delimiter.

Whole solutions (CoT, sc, bon) are generated one step per round for all unfinished rows, since a stop
string cannot express "after the line that starts with the answer prefix"; with prefix caching (vLLM)
the repeated prefixes are cheap. A row ends at its answer step, at EOS, after `max_steps` steps or at
`max_solution_tokens` tokens, as in PolicyActor.

Rendering (same text as PolicyActor): the prompt is `PromptFormat.prefix(question, steps)`, then
`Hint: <reflection><delimiter>` in "common" reflection mode, or the critic question for `critique`.
A step is the continuation cut at the delimiter and stripped ("" for an empty sample).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from pipeline.prompting import PromptFormat
from pipeline.records import SolutionSample
from pipeline.search.protocol import Critique, Proposal, Propose, Verdict

CRITIC_TEMPERATURE = 0.7  # sampled, so the search's critic retries can get a different reply
CRITIC_QUESTION = 'Is the problem solved? Reply "solved" or "unsolved"'
CRITIC_REFLECT = ", then give one short hint for the next step"


@dataclass(frozen=True)
class Job:
    """`n` samples continuing `prompt(question) + solution(steps) + suffix`."""

    question: str
    steps: tuple[str, ...]
    suffix: str  # "" | "Hint: ...<delimiter>" | the critic question
    n: int
    temperature: float  # 0 = greedy
    seed: int  # per-job seed (fits a signed 32-bit int)
    max_tokens: int = 0  # 0 = the engine's step limit (backbone.max_step_tokens)


@dataclass(frozen=True)
class Sampled:
    texts: tuple[str, ...]  # n continuations, stop string removed
    tokens: int  # generated tokens, all n samples together
    ended: tuple[bool, ...] = ()  # per sample: EOS or token limit, not the delimiter (() = unknown)


def hint(reflection: str, fmt: PromptFormat) -> str:
    """The "common" reflection mode's critic hint, placed before the next step."""
    return f"Hint: {reflection}{fmt.delimiter}" if reflection else ""


def critic_ask(want_reflection: bool) -> str:
    return CRITIC_QUESTION + (CRITIC_REFLECT if want_reflection else "") + ":"


def completion_prompt(job: Job, fmt: PromptFormat, tokenizer: Any = None) -> str:
    """The completion-API text for a job (chat-style backbones need the tokenizer's chat template)."""
    return fmt.prefix(job.question, job.steps, tokenizer) + job.suffix


def chat_messages(job: Job, fmt: PromptFormat) -> list[dict[str, str]]:
    """Chat-API messages: the question as the user turn, the partial solution as an assistant turn that
    the server continues (vLLM: `continue_final_message`); no assistant turn before the first step."""
    messages = [{"role": "system", "content": fmt.system_prompt}] if fmt.system_prompt else []
    messages.append({"role": "user", "content": job.question})
    partial = fmt.solution(job.steps) + job.suffix
    if partial:
        messages.append({"role": "assistant", "content": partial})
    return messages


def step_text(text: str, delimiter: str) -> str:
    return text.split(delimiter, 1)[0].strip()


def parse_verdict(text: str, delimiter: str, tokens: int) -> Verdict:
    """The critic's reply: first word "solved"/"unsolved" (else None), the rest of the line a hint."""
    line = step_text(text, delimiter)
    word = line.lower().lstrip('"').split(" ", 1)[0].strip('".,:;!')
    solved = {"solved": True, "unsolved": False}.get(word)
    rest = line.split(" ", 1)[1].strip() if " " in line else ""
    return Verdict(solved=solved, reflection=rest, tokens=tokens)


class SamplingEngine:
    """The StepProposer protocol plus whole solutions on top of `_sample`; subclasses set `fmt` and
    `solution_tokens` (backbone.max_solution_tokens)."""

    fmt: PromptFormat
    solution_tokens: int

    def _sample(self, jobs: Sequence[Job]) -> list[Sampled]:
        raise NotImplementedError

    def _run(self, jobs: Sequence[Job]) -> list[Sampled]:
        """`_sample`, except that a greedy job asks for one sample and repeats it n times (vLLM refuses
        n > 1 at temperature 0; the copies would be identical). Its tokens count the one generation."""
        sent = [replace(j, n=1) if j.temperature == 0 and j.n > 1 else j for j in jobs]
        out = self._sample(sent)
        return [
            s if j.n == len(s.texts) else Sampled(s.texts * j.n, s.tokens, s.ended * j.n)
            for j, s in zip(jobs, out, strict=True)
        ]

    def propose(self, requests: Sequence[Propose]) -> list[Proposal]:
        """`n` next steps per request (delimiter cut, stripped; "" for an empty sample) and token counts."""
        jobs = [
            Job(r.question, tuple(r.steps), hint(r.reflection, self.fmt), r.n, r.temperature, r.seed)
            for r in requests
        ]
        return [
            Proposal(steps=tuple(step_text(t, self.fmt.delimiter) for t in s.texts), tokens=s.tokens)
            for s in self._run(jobs)
        ]

    def critique(self, requests: Sequence[Critique]) -> list[Verdict]:
        """Ask the policy whether `steps` solve the question. Reply "solved"/"unsolved" (+ hint text)."""
        jobs = [
            Job(r.question, tuple(r.steps), critic_ask(r.want_reflection), 1, CRITIC_TEMPERATURE, r.seed)
            for r in requests
        ]
        return [parse_verdict(s.texts[0], self.fmt.delimiter, s.tokens) for s in self._run(jobs)]

    def greedy_solve(self, questions: Sequence[str], max_steps: int, seed: int = 0) -> list[SolutionSample]:
        """Whole greedy solutions (CoT), up to `max_solution_tokens` tokens each."""
        return self._solutions([(q, 0.0) for q in questions], max_steps, seed)

    def sample_solutions(
        self, questions: Sequence[str], n: int, temperature: float, seed: int = 0, max_steps: int = 0
    ) -> list[list[SolutionSample]]:
        """`n` sampled whole solutions per question (self-consistency, best-of-n)."""
        flat = self._solutions([(q, temperature) for q in questions for _ in range(n)], max_steps, seed)
        return [flat[i * n : (i + 1) * n] for i in range(len(questions))]

    def _solutions(self, rows: list[tuple[str, float]], max_steps: int, seed: int) -> list[SolutionSample]:
        budget = int(self.solution_tokens)
        raw = [""] * len(rows)  # the exact continuation so far, blank lines included (the next prompt)
        steps: list[list[str]] = [[] for _ in rows]
        tokens = [0] * len(rows)
        live, depth = list(range(len(rows))), 0
        while live:
            jobs = [
                Job(rows[i][0], (), raw[i], 1, rows[i][1], _row_seed(seed, i, depth), budget - tokens[i])
                for i in live
            ]
            nxt = []
            for i, out in zip(live, self._run(jobs), strict=True):
                tokens[i] += out.tokens
                text = step_text(out.texts[0], self.fmt.delimiter)
                if text:  # a blank line is not a step (as in PolicyActor)
                    steps[i].append(text)
                raw[i] += out.texts[0] + self.fmt.delimiter
                ended = out.ended[0] if out.ended else not text  # unknown: an empty reply ends it
                done = (
                    ended
                    or out.tokens == 0
                    or tokens[i] >= budget
                    or text.startswith(self.fmt.answer_prefix)
                    or (max_steps > 0 and len(steps[i]) >= max_steps)
                )
                if not done:
                    nxt.append(i)
            live, depth = nxt, depth + 1
        return [SolutionSample(tuple(s), t) for s, t in zip(steps, tokens, strict=True)]


def _row_seed(seed: int, row: int, depth: int) -> int:
    """A per-(row, step) seed in [0, 2**31) from the call's seed (deterministic, no global state)."""
    return (seed * 1_000_003 + row * 10_007 + depth * 101) % 2**31
