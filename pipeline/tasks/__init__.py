"""Built-in tasks (pure: standard library only), each a module with the same surface:

    SOURCE, CHARS                       Question.source of its questions; every character of its text
    make_task_split(task_cfg, seed)     (train, heldout)
    warm_start_set / dv0_set            round 0's question sets with gold solutions (tiny backbone)
    check_trace(question, steps, prefix) -> TraceCheck   the step checker (an evaluation instrument)

`builtin(name)` returns the module of `task=<name>`, or None for question files (file, gsm8k).
"""

from __future__ import annotations

from types import ModuleType

BUILTIN = ("arith", "countdown")


def builtin(name: str) -> ModuleType | None:
    if name == "arith":
        from pipeline.tasks import arith

        return arith
    if name == "countdown":
        from pipeline.tasks import countdown

        return countdown
    return None
