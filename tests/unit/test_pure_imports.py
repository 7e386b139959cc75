"""The search core, value inference and grading import no torch and no ray (docs/ALGORITHM.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PURE = [
    "pipeline.search.protocol",
    "pipeline.search.tree",
    "pipeline.search.reflection",
    "pipeline.search.mcts",
    "pipeline.search.tot",
    "pipeline.search.seeding",
    "pipeline.values",
    "pipeline.quality",
    "pipeline.grading",
    "pipeline.records",
    "pipeline.prompting",
]


def test_pure_modules_import_without_torch_or_ray():
    available = [m for m in PURE if (Path(__file__).parents[2] / (m.replace(".", "/") + ".py")).exists()]
    code = (
        f"import {', '.join(available)}; import sys; "
        "heavy = [m for m in ('torch', 'ray', 'transformers', 'deepspeed') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    root = Path(__file__).parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
