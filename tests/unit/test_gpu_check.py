"""bench/gpu_check: on a machine without CUDA it stops at once with one line; --help works; the table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.py"
NEEDS_CUDA = "gpu_check: needs a CUDA GPU (torch.cuda.is_available() is False)"


def _run(*cmd: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # no GPU even where one exists
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_without_cuda_it_exits_1_with_one_line():
    proc = _run(sys.executable, str(SCRIPT))
    assert proc.returncode == 1
    assert (proc.stdout + proc.stderr).strip().splitlines() == [NEEDS_CUDA]


def test_the_shell_wrapper_says_the_same():
    proc = _run("bash", str(ROOT / "bench" / "gpu_check.sh"), "--questions", "2")
    assert proc.returncode == 1
    assert (proc.stdout + proc.stderr).strip().splitlines() == [NEEDS_CUDA]
    assert len((ROOT / "bench" / "gpu_check.sh").read_text().strip().splitlines()) == 2


def test_help_works():
    proc = _run(sys.executable, str(SCRIPT), "--help")
    assert proc.returncode == 0, proc.stderr
    for flag in ("--questions", "--iterations", "--sft-steps", "--budget-s", "--no-ray", "--allow-cpu"):
        assert flag in proc.stdout


def test_summary_table_has_a_row_per_section():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "bench"))
    rows = [
        gpu_check.Row("actors", "ok", None, 1.0, "policy cuda:0 bfloat16"),
        gpu_check.Row("mcts-tiny", "ok", 1234.5, 2.0, "2/4 answered"),
        gpu_check.Row("sft-ray-ds", "skipped", None, 0.0, "ray not installed"),
    ]
    lines = gpu_check.table(rows).splitlines()
    assert len(lines) == 2 + len(rows)
    header = [c.strip() for c in lines[0].split("|")[1:6]]
    assert header == ["section", "status", "tokens/s", "seconds", "detail"]
    assert "1234" in lines[3] and "skipped" in lines[4]
    assert [name for name, _ in gpu_check.SECTIONS] == [
        "actors",
        "mcts-tiny",
        "mcts-smollm2",
        "ray-pool",
        "sft-local",
        "sft-ray-ds",
    ]


@pytest.mark.parametrize("argv", [["--questions", "x"], ["--nope"]])
def test_bad_arguments_exit_2(argv):
    proc = _run(sys.executable, str(SCRIPT), *argv)
    assert proc.returncode == 2
