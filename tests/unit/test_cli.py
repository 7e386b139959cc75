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


def test_bad_cluster_key_exits_2_before_anything_starts(tmp_path):
    """mode=evaluate builds round 0 before its Ray session: the cluster keys are checked at start."""
    proc = run("mode=evaluate", "train.storage_path=ftp://host/x", f"cache_dir={tmp_path}/cache")
    assert proc.returncode == 2
    assert "unknown filesystem scheme 'ftp'" in error_line(proc)
    assert not (tmp_path / "cache").exists()  # nothing drawn, nothing built


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


def test_help_exits_0_with_groups_keys_examples_and_docs():
    from conf.load import compose, group_options

    for flag in ("--help", "-h"):
        proc = run(flag, timeout=30)
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout
        for mode in ("train", "evaluate", "compare"):
            assert f"\n  {mode} " in out
        for group in ("backbone", "task", "preset"):
            assert f"{group}=" in out
            for name in group_options(group):
                assert f"\n    {name} " in out, (group, name)
        assert out.count("\n  python run.py") == 3  # three examples
        defaults = compose([])
        assert f"search.iteration_limit      [{defaults.search.iteration_limit}]" in out
        assert "eval.methods                [[cot, mcts]]" in out
        assert "runs/<run.name>/" in out and ".cache/restmcts/" in out
        assert "docs/ARCHITECTURE.md" in out


def test_help_lists_a_file_added_under_a_group(tmp_path):
    """The choices are the files under conf/<group>/, read when --help runs: a new file is listed."""
    import shutil

    from conf.help import help_text

    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (conf / "backbone" / "qwen_local.yaml").write_text(
        "# My local Qwen checkpoint. Second sentence.\nbackbone:\n  name: qwen_local\n"
    )
    (conf / "preset" / "gpu8.yaml").write_text("preset: gpu8\n")
    text = help_text(conf)
    assert "\n    qwen_local  My local Qwen checkpoint.\n" in text
    assert "\n    gpu8\n" in text  # no comment: the name alone
    assert "Second sentence" not in text
    assert "qwen_local" not in help_text()  # the real conf/ has no such file


def test_defaults_shown_are_the_composed_config(monkeypatch):
    """Every listed key shows what `python run.py` would get; change that config, the help follows."""
    from omegaconf import OmegaConf

    import conf.help as help_mod
    from conf.load import compose

    text = help_mod.help_text()
    defaults = compose([])
    for key, _ in help_mod.KEYS:
        assert f"  {key:<28}[{help_mod._show(OmegaConf.select(defaults, key))}]" in text, key
    monkeypatch.setattr(help_mod, "compose", lambda argv: compose([*argv, "pool.search_workers=7"]))
    assert "  pool.search_workers         [7]" in help_mod.help_text()


def test_version_exits_0():
    from conf.help import version

    proc = run("--version", timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"restmcts {version()}\n"
    assert version()[0].isdigit()
