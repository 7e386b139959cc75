"""What every generation engine shares: the jobs it runs and how texts are rendered and read back.

`propose` and `critique` are defined once here (`SamplingEngine`) with the semantics of the HF
`PolicyActor`; an engine only implements `_sample(jobs)`: for each job, `n` sampled continuations of the
job's text, stopped at the step delimiter, with the number of generated tokens.

Rendering (same text as PolicyActor): the prompt is `PromptFormat.prefix(question, steps)`, then
`Hint: <reflection><delimiter>` in "common" reflection mode, or the critic question for `critique`.
A step is the continuation cut at the delimiter and stripped ("" for an empty sample).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from actors.policy import CRITIC_QUESTION, CRITIC_REFLECT, CRITIC_TEMPERATURE
from pipeline.prompting import PromptFormat
from pipeline.search.protocol import Critique, Proposal, Propose, Verdict


@dataclass(frozen=True)
class Job:
    """`n` samples continuing `prompt(question) + solution(steps) + suffix`."""

    question: str
    steps: tuple[str, ...]
    suffix: str  # "" | "Hint: ...<delimiter>" | the critic question
    n: int
    temperature: float  # 0 = greedy
    seed: int  # per-job seed (fits a signed 32-bit int)


@dataclass(frozen=True)
class Sampled:
    texts: tuple[str, ...]  # n continuations, stop string removed
    tokens: int  # generated tokens, all n samples together


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
    """`propose`/`critique` (the StepProposer protocol) on top of `_sample`; subclasses set `self.fmt`."""

    fmt: PromptFormat

    def _sample(self, jobs: Sequence[Job]) -> list[Sampled]:
        raise NotImplementedError

    def _run(self, jobs: Sequence[Job]) -> list[Sampled]:
        """`_sample`, except that a greedy job asks for one sample and repeats it n times (vLLM refuses
        n > 1 at temperature 0; the copies would be identical). Its tokens count the one generation."""
        sent = [replace(j, n=1) if j.temperature == 0 and j.n > 1 else j for j in jobs]
        out = self._sample(sent)
        return [
            s if j.n == len(s.texts) else Sampled(s.texts * j.n, s.tokens)
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
