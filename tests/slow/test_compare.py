"""mode=compare end to end on the tiny backbone: three runs, the analysis files and a report whose
numbers come from them; a second invocation reuses everything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SMALL = [
    "mode=compare",
    "run.name=cmp",
    "iteration=1",
    "task.train_size=16",
    "task.heldout_size=8",
    "search.iteration_limit=6",
    "eval.search.iteration_limit=4",
    "eval.n=2",
    "eval.tot.budget=6",
    "pool.shard_size=8",
    "backbone.sft.max_steps=4",
    "backbone.prm_train.max_steps=4",
    "baselines.dpo.max_steps=4",
]


def test_compare_end_to_end(tmp_path):
    cmd = [sys.executable, "run.py", f"run.root={tmp_path}", *SMALL]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "cmp-compare"
    report = (out / "report.md").read_text()
    for section in ("## (a)", "## (b)", "## (c)", "## (d)"):
        assert section in report
    search = json.loads((out / "search_eval.json").read_text())
    assert set(search["methods"]) == {"cot", "sc", "bon", "mcts", "tot_bfs", "tot_dfs"}
    verifier = json.loads((out / "verifier.json").read_text())["accuracy"]
    assert verifier["questions"] == 8 and verifier["candidates"] == 16
    ref = json.loads((tmp_path / "cmp-rest_mcts" / "state.json").read_text())
    budget = ref["rounds"]["1"]["search"]["info"]["tokens"]
    for m in ("rest_em", "self_rewarding"):
        info = json.loads((tmp_path / f"cmp-{m}" / "state.json").read_text())["rounds"]["1"]["search"]["info"]
        assert info["budget"] == budget and info["tokens"] >= budget
        assert f"| 1 | {m} | {info['tokens']} | {budget} |" in report

    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "analysis files are up to date" in again.stdout + again.stderr
    assert (out / "report.md").read_text() == report
