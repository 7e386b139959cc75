"""`python run.py ...` as a user runs it: dry runs, config mistakes and bad data fail fast with one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "run.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def error_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_dry_run_prints_resolved_yaml():
    proc = run("iteration=2", "backbone=mistral", "dry_run=true")
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["iteration"] == 2
    assert cfg["backbone"]["name"] == "mistral"
    assert cfg["backbone"]["sft"]["lr"] == 3.0e-6 and cfg["backbone"]["sft"]["zero_stage"] == 3
    assert "### Instruction:" in cfg["backbone"]["prompt_template"]


def test_unknown_key_exits_2_with_one_line():
    proc = run("no_such_key=1")
    assert proc.returncode == 2
    assert "no_such_key" in error_line(proc)


def test_unknown_backbone_exits_2_naming_the_choices():
    proc = run("backbone=nope")
    assert proc.returncode == 2
    line = error_line(proc)
    assert "nope" in line and "tiny" in line and "mistral" in line


def test_bad_jsonl_line_fails_fast_naming_file_and_line(tmp_path):
    path = tmp_path / "BAD.jsonl"
    path.write_text('{"content": "1+1?", "answer": "2"}\n{"content": "2+2?"}\n{"content": oops}\n')
    proc = run("task=file", f"data.path={path}", timeout=30)
    assert proc.returncode != 0
    line = error_line(proc)
    assert str(path) in line and "line 3" in line and "not JSON" in line


def test_json_item_without_content_names_item_and_field(tmp_path):
    path = tmp_path / "BAD.json"
    path.write_text('[{"content": "1+1?", "answer": "2"}, {"answer": "4"}]')
    proc = run("task=gsm8k", f"data.path={path}", timeout=30)
    assert proc.returncode != 0
    line = error_line(proc)
    assert str(path) in line and "item 1" in line and "'content'" in line
