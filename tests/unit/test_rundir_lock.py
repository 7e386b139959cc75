"""One run per run directory (a flock on <run>/.lock that the kernel drops when the holder dies), and a
manifest that is not valid JSON reported in one line naming the file."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from pipeline.rundir import RunDir, RunDirError, clear_run_dir, lock_run_dir

HOLD = """
import sys, time
from pipeline.rundir import lock_run_dir
with lock_run_dir(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_second_holder_is_refused_then_admitted(tmp_path):
    run = RunDir(tmp_path / "run")
    with run.lock():
        with pytest.raises(RunDirError, match=r"in use by another run \(pid \d+\)") as e:
            with lock_run_dir(tmp_path / "run"):  # a second descriptor: flock refuses it too
                pass
        assert "\n" not in str(e.value) and str(tmp_path / "run") in str(e.value)
    with lock_run_dir(tmp_path / "run"):  # released at the end of the block
        pass


def test_a_killed_holder_leaves_no_stuck_lock(tmp_path):
    root = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(root)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match=f"pid {proc.pid}"):
            with lock_run_dir(root):
                pass
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 5
    while True:
        try:
            with lock_run_dir(root):
                break
        except RunDirError:
            assert time.monotonic() < deadline, "the lock outlived its killed holder"
            time.sleep(0.05)


def test_clear_keeps_only_the_lock(tmp_path):
    root = tmp_path / "run"
    with lock_run_dir(root):
        (root / "round_1").mkdir()
        (root / "round_1" / "sft.jsonl").write_text("{}\n")
        (root / "state.json").write_text("{}")
        clear_run_dir(root)
        assert [p.name for p in root.iterdir()] == [".lock"]


@pytest.mark.parametrize("text", ['{"version": 1, "rounds": {', "", "\xff\xfe"])
def test_manifest_that_is_not_json_names_the_file(tmp_path, text):
    (tmp_path / "state.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(RunDirError) as e:
        RunDir(tmp_path)
    msg = str(e.value)
    assert f"manifest {tmp_path / 'state.json'} is not valid JSON" in msg and "\n" not in msg


def test_manifest_without_rounds_is_refused(tmp_path):
    (tmp_path / "state.json").write_text("[1, 2]")
    with pytest.raises(RunDirError, match="no 'rounds' object"):
        RunDir(tmp_path)
