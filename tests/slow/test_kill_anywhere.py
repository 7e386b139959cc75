"""SIGKILL at 3 seeded moments spread over a small run's phases, rerunning after each kill: the run
completes with the uninterrupted run's datasets and shard files, no shard searched twice, a consistent
manifest after every kill and no process left (bench/kill_anywhere.py; N = 10 there)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_kill_anywhere_three_times(tmp_path):
    done = subprocess.run(
        [sys.executable, "bench/kill_anywhere.py", "--kills", "3", "--workdir", str(tmp_path / "ka")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=5400,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    assert "kill_anywhere: passed" in done.stdout
