"""What a PRM reads, and the small value model of its own that reads a task's state.

`backbone.prm_reads` (recorded in every trained PRM directory's `prm_config.json` as `reads` and `task`):
- `text`: the prompt and the steps (`PromptFormat.prm_text`), what every PRM read before;
- `state`: the task's state after the steps, `pipeline.tasks.rules.state_text` (countdown: the numbers
  left and the target, `24 5 2 to 41`), one line, then the answer line when the steps end with a right
  one (a finished solution differs from the same numbers still to be combined), or `illegal` when the
  task's rules reject a step (there is no state to read). Countdown is Markov: the state is all there
  is to know about reachability, and a model reading it learned "is the target still reachable"
  several times faster per CPU-second than one reading the derivation (shared/MEASURED.md: 0.80 vs
  0.64 held-out sibling pairs after 7 minutes on 2 cores).

A state-reading PRM is a value model trained from scratch, not a head on the policy: a small Llama
(`backbone.value_*`, no LM head) with a character tokenizer over `state_alphabet`, saved as a plain HF
directory (`build_value_base`); `models.prm.load_prm` / `save_prm` load and save it with its `linear`
head like any PRM, and the per-round regression (trainers/prm_train.py) reads the same representation
because the directory says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.prompting import PRMText, PromptFormat
from pipeline.records import Question
from pipeline.tasks.rules import ILLEGAL, SOLVED, rules_for, state_text

READS = ("text", "state")
ILLEGAL_TEXT = "illegal\n"  # what a state-reading PRM sees for steps its task's rules reject
CONFIG_FILE = "prm_config.json"  # the same file models.prm writes next to the value head


@dataclass(frozen=True)
class PRMReader:
    """Renders (question content, steps) as the PRM reads it (see the module docstring)."""

    reads: str = "text"
    task: str = ""  # Question.source of the questions (a built-in task with `state_text`); state only
    fmt: PromptFormat = field(default_factory=PromptFormat)

    def __post_init__(self) -> None:
        if self.reads not in READS:
            raise ValueError(f"prm_reads must be one of {', '.join(READS)}, got {self.reads!r}")

    def text(self, question: str, steps: tuple[str, ...] | list[str], tokenizer: Any = None) -> PRMText:
        if self.reads == "text":
            return self.fmt.prm_text(question, steps, tokenizer)
        q = Question(id="", content=question, source=self.task)
        return PRMText(render_state(q, tuple(steps), self.fmt.answer_prefix))

    def meta(self) -> dict[str, str]:
        """What a PRM directory records about its input (`prm_config.json`)."""
        return {"reads": self.reads, "task": self.task}


def render_state(question: Question, steps: tuple[str, ...], answer_prefix: str) -> str:
    """The state text of `steps` (see the module docstring); ValueError for a task without a state."""
    verdict = rules_for(question, answer_prefix).judge(steps)
    if verdict == ILLEGAL:
        return ILLEGAL_TEXT
    state = state_text(question, steps)
    if state is None:
        raise ValueError(f"task {question.source!r} has no state_text: use backbone.prm_reads=text")
    return state + "\n" + (steps[-1].strip() + "\n" if verdict == SOLVED else "")


def reader_of(prm_dir: str, fmt: PromptFormat) -> PRMReader:
    """The reader a PRM (or value base) directory was built for; `text` when it records none."""
    path = Path(prm_dir, CONFIG_FILE)
    meta = json.loads(path.read_text()) if path.is_file() else {}
    return PRMReader(meta.get("reads", "text"), meta.get("task", ""), fmt)


def state_alphabet(answer_prefix: str) -> str:
    """Every character a state text can hold: digits, spaces, `to`, newline, `illegal`, the answer line."""
    return "".join(sorted(set("0123456789 \nto" + ILLEGAL_TEXT + answer_prefix)))


def value_spec(backbone_cfg: Any, seed: int) -> dict[str, Any]:
    """Everything the untrained value model depends on (part of the round-0 PRM's cache key)."""
    return {
        "hidden": int(backbone_cfg.value_hidden),
        "layers": int(backbone_cfg.value_layers),
        "heads": int(backbone_cfg.value_heads),
        "intermediate": int(backbone_cfg.value_intermediate),
        "alphabet": state_alphabet(backbone_cfg.answer_prefix),
        "seed": seed,
    }


def build_value_base(spec: dict[str, Any], reader: PRMReader, out: Path, max_positions: int = 64) -> int:
    """Write an untrained value model (a Llama without LM head, random init under `spec["seed"]`) and
    its character tokenizer to `out` as a plain HF directory, with `prm_config.json` saying what it
    reads. Returns the number of parameters."""
    import torch
    from transformers import LlamaModel

    from models.backbones import build_tiny_tokenizer, tiny_llama_config

    tokenizer = build_tiny_tokenizer(spec["alphabet"], max_positions)
    config = tiny_llama_config(spec, tokenizer, max_positions)
    torch.manual_seed(spec["seed"])
    model = LlamaModel(config).to(torch.float32)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / CONFIG_FILE).write_text(json.dumps(reader.meta(), indent=2))
    return model.num_parameters()
