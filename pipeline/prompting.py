"""How a question and a partial solution become model text: one format for generation, SFT and the PRM.

The original writes `Problem:` without a space in PRM training data and `Problem: ` at inference; here
one function renders both, so the PRM is scored on exactly the text it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.records import Question, SFTExample


@dataclass(frozen=True)
class PRMText:
    """A text for the PRM and where its solution and its last step begin (character offsets)."""

    text: str
    solution_start: int = 0
    last_step_start: int = 0

    @classmethod
    def of(cls, item: PRMText | str) -> PRMText:
        """A bare string counts as all solution, one step (what the linear head sees anyway)."""
        return item if isinstance(item, PRMText) else cls(item)


@dataclass(frozen=True)
class PromptFormat:
    template: str = "Q:{question}\n"  # plain format; must contain {question}
    delimiter: str = "\n"  # ends every step
    style: str = "plain"  # plain | chat
    system_prompt: str = ""
    answer_prefix: str = "The answer is"

    @classmethod
    def from_backbone(cls, backbone: Any) -> PromptFormat:
        """Build from a `BackboneConfig` (or the OmegaConf node of one)."""
        return cls(
            template=backbone.prompt_template,
            delimiter=backbone.step_delimiter,
            style=backbone.prompt_format,
            system_prompt=backbone.system_prompt,
            answer_prefix=backbone.answer_prefix,
        )

    def prompt(self, question: str, tokenizer: Any = None) -> str:
        """The text before the first step. Chat style needs the tokenizer's chat template."""
        if self.style == "plain":
            return self.template.replace("{question}", question)
        if tokenizer is None:
            raise ValueError("chat prompt format needs a tokenizer with a chat template")
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages.append({"role": "user", "content": question})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def solution(self, steps: tuple[str, ...] | list[str]) -> str:
        """Steps as model text: each step followed by the delimiter."""
        return "".join(step + self.delimiter for step in steps)

    def prefix(self, question: str, steps: tuple[str, ...] | list[str], tokenizer: Any = None) -> str:
        """Prompt plus partial solution: what the policy continues and what the PRM scores."""
        return self.prompt(question, tokenizer) + self.solution(steps)

    def prm_text(self, question: str, steps: tuple[str, ...] | list[str], tokenizer: Any = None) -> PRMText:
        """`prefix(question, steps)` with the offsets of its solution and of its last step."""
        prompt = self.prompt(question, tokenizer)
        before_last = prompt + self.solution(steps[:-1])
        return PRMText(before_last + self.solution(steps[-1:]), len(prompt), len(before_last))

    def answer_step(self, answer: str) -> str:
        return f"{self.answer_prefix} {answer}"

    def gold_example(self, question: Question, source: str, tokenizer: Any = None) -> SFTExample:
        """An SFT example from a question's worked gold solution (warm start, its replay)."""
        steps = tuple(question.solution)
        prompt = self.prompt(question.content, tokenizer)
        return SFTExample(question.id, prompt, self.solution(steps), steps, 1.0, source)
