"""Run directory manifest: checksums decide what resume trusts; config changes are refused."""

from __future__ import annotations

import json

import pytest

from conf.load import ConfigError, compose
from loop.metrics import MetricsLog
from pipeline.rundir import RunDir, atomic_write_jsonl, config_differences, read_jsonl


def test_phase_done_needs_matching_checksums(tmp_path):
    run = RunDir(tmp_path / "run")
    f = run.round_dir(1) / "sft.jsonl"
    atomic_write_jsonl(f, [{"a": 1}, {"a": 2}])
    assert not run.phase_done(1, "values")
    run.mark_done(1, "values", [f], {"n": 2})
    assert RunDir(tmp_path / "run").phase_done(1, "values")  # survives a reload from disk
    assert run.phase_info(1, "values") == {"n": 2}
    f.write_text('{"a": 1}\n')  # a truncated / edited file is not trusted
    assert not RunDir(tmp_path / "run").phase_done(1, "values")
    f.unlink()
    assert not run.phase_done(1, "values")


def test_directory_checksum_and_atomic_write(tmp_path):
    run = RunDir(tmp_path)
    ckpt = run.round_dir(1) / "policy"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(b"x" * 10)
    run.mark_done(1, "sft", [ckpt])
    assert run.phase_done(1, "sft")
    (ckpt / "model.safetensors").write_bytes(b"y" * 10)
    assert not run.phase_done(1, "sft")
    assert not list(tmp_path.rglob("*.tmp"))  # no temp files left behind


def test_config_change_refused_except_safe_keys(tmp_path):
    run = RunDir(tmp_path)
    run.check_or_save_config(compose(["seed=1"]))
    run.check_or_save_config(compose(["seed=1", "iteration=5", "pool.search_workers=4"]))  # safe keys
    with pytest.raises(ConfigError, match="search.branch"):
        run.check_or_save_config(compose(["seed=1", "search.branch=5"]))
    assert config_differences(compose([]), compose(["seed=3"])) == ["seed"]


def test_a_key_added_since_the_run_started_resumes_at_its_default():
    from omegaconf import OmegaConf

    old = OmegaConf.to_container(compose([]), resolve=True)
    del old["search"]["widen"]  # a run saved before the key existed
    saved = OmegaConf.create(old)
    assert config_differences(saved, compose([])) == []
    assert config_differences(saved, compose(["search.widen=2"])) == ["search.widen"]


def test_metrics_log_lines_and_phase_timer(tmp_path):
    m = MetricsLog(tmp_path / "metrics.jsonl")
    m.event("hello", round=0, x=1.5)
    with m.phase("search", round=1) as info:
        info.update(shards=2, round=7, seconds=-1)  # a phase's own round/seconds never clobber the event's
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["event"] for r in rows] == ["hello", "phase_start", "phase_end"]
    assert rows[2]["phase"] == "search" and rows[2]["shards"] == 2 and rows[2]["seconds"] >= 0
    assert rows[2]["round"] == 1


def test_jsonl_round_trip(tmp_path):
    rows = [{"q": "1+1", "steps": ["1+1=2", "The answer is 2"]}, {"q": "é", "steps": []}]
    atomic_write_jsonl(tmp_path / "a.jsonl", rows)
    assert read_jsonl(tmp_path / "a.jsonl") == rows
