"""`selection.sft_from`: where each round's policy training starts, and on which rounds' data."""

from __future__ import annotations

import pytest

from conf.load import ConfigError, compose
from loop.methods.common import policy_start
from pipeline.records import SFTExample, to_dict
from pipeline.rundir import RunDir, atomic_write_jsonl

MODELS = {"policy_dir0": "/models/round0", "policy_dir": "/models/round1"}


def _run_with_traces(tmp_path) -> RunDir:
    run = RunDir(tmp_path / "run")
    for k in (1, 2):
        rows = [SFTExample(f"q{k}-{i}", "Q:", "s\n", ("s",), 1.0) for i in range(k + 1)]
        atomic_write_jsonl(run.round_dir(k) / "sft.jsonl", [to_dict(r) for r in rows])
    return run


def test_round0_trains_the_round0_policy_on_every_round_so_far(tmp_path):
    run = _run_with_traces(tmp_path)
    start, rows = policy_start(compose([]), run, MODELS, 2, "sft.jsonl", SFTExample)
    assert start == "/models/round0"
    assert [r.question_id for r in rows] == ["q1-0", "q1-1", "q2-0", "q2-1", "q2-2"]


def test_previous_trains_the_last_policy_on_this_round_only(tmp_path):
    run = _run_with_traces(tmp_path)
    cfg = compose(["selection.sft_from=previous"])
    start, rows = policy_start(cfg, run, MODELS, 2, "sft.jsonl", SFTExample)
    assert start == "/models/round1"
    assert [r.question_id for r in rows] == ["q2-0", "q2-1", "q2-2"]


def test_unknown_start_is_a_config_error():
    with pytest.raises(ConfigError, match="selection.sft_from"):
        compose(["selection.sft_from=best"])
