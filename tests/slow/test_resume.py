"""A run killed with SIGKILL during round 1's search resumes: no shard is searched twice, and the
round's datasets equal those of an uninterrupted run with the same seed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SMALL = [
    "iteration=1",
    "task.train_size=24",
    "task.heldout_size=8",
    "search.iteration_limit=8",
    "eval.search.iteration_limit=4",
    "eval.methods=[cot]",
    "pool.shard_size=4",
    "pool.search_workers=2",
    "backbone.sft.max_steps=4",
    "backbone.prm_train.max_steps=4",
]


def command(runs: Path, name: str) -> list[str]:
    return [sys.executable, "run.py", f"run.root={runs}", f"run.name={name}", *SMALL]


def events(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def shard_files(run: Path) -> list[Path]:
    return sorted((run / "round_1" / "search").glob("shard-*.jsonl"))


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the driver and every process of its session (Ray's workers sit in their own process
    groups, so killpg alone leaves them a moment to finish a shard), then wait until all are gone."""
    victims = [proc.pid]
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            if os.getsid(pid) == proc.pid:
                victims.append(pid)
        except OSError:  # exited meanwhile
            pass
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(alive(pid) for pid in victims[1:]):
        time.sleep(0.2)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie writes nothing
    except OSError:
        return False


def run_to_end(cmd: list[str]) -> None:
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_sigkill_during_search_then_resume(tmp_path):
    runs = tmp_path / "runs"
    killed = runs / "killed"
    proc = subprocess.Popen(
        command(runs, "killed"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # so the kill reaches Ray's processes too
    )
    deadline = time.monotonic() + 1500
    try:
        while time.monotonic() < deadline:
            searching = any(
                e["event"] == "phase_start" and e.get("phase") == "search" for e in events(killed)
            )
            if searching and shard_files(killed):
                break
            assert proc.poll() is None, "the run ended before round 1's search could be interrupted"
            time.sleep(0.5)
        else:
            pytest.fail("round 1's search never wrote a shard")
    finally:
        kill_session(proc)
    kept = len(shard_files(killed))
    total = -(-24 // 4)
    assert 0 < kept < total, f"kill landed after {kept} of {total} shards; the test needs a partial search"

    run_to_end(command(runs, "killed"))  # the same command again resumes
    ends = [e for e in events(killed) if e["event"] == "phase_end" and e.get("phase") == "search"]
    assert len(ends) == 1 and ends[0]["shards_searched"] == total - kept  # no shard searched twice
    state = json.loads((killed / "state.json").read_text())
    assert {"search", "values", "sft", "prm", "eval"} <= set(state["rounds"]["1"])

    run_to_end(command(runs, "clean"))
    for name in ("sft.jsonl", "prm.jsonl"):
        resumed = (killed / "round_1" / name).read_text()
        clean = (runs / "clean" / "round_1" / name).read_text()
        assert resumed == clean, f"{name} differs between the resumed and the uninterrupted run"
        assert resumed.strip(), f"{name} is empty: the test would prove nothing"
