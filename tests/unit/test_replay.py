"""selection.sft_replay: the round-0 SFT examples mixed into each round's policy SFT."""

from __future__ import annotations

import pytest

from conf.load import ConfigError, compose, validate
from loop.methods.common import replay_examples
from pipeline.tasks.arith import warm_start_set


def test_replay_is_a_fixed_seeded_sample_of_the_warm_start_set():
    cfg = compose(["selection.sft_replay=16", "task.warm_size=200"])
    first, again = replay_examples(cfg, 16), replay_examples(cfg, 16)
    assert len(first) == 16 and first == again  # the same examples every round
    warm = {q.id: q for q in warm_start_set(cfg.task, cfg.seed)}
    for e in first:
        q = warm[e.question_id]
        assert e.source == "replay" and e.steps == tuple(q.solution)
        assert e.prompt == f"Q:{q.content}\n" and e.solution.endswith(f"The answer is {q.answer}\n")
    other_seed = replay_examples(compose(["task.warm_size=200", "seed=1"]), 16)
    assert {e.question_id for e in other_seed} != {e.question_id for e in first}
    assert replay_examples(cfg, 0) == []
    assert len(replay_examples(cfg, 10_000)) == 200  # at most the whole set


def test_replay_is_empty_without_a_warm_start_set_and_negative_is_refused(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"content": "1+1", "answer": "2"}\n')
    assert replay_examples(compose(["task=file", f"data.path={path}", "selection.sft_replay=8"]), 8) == []
    assert replay_examples(compose(["backbone=smollm2"]), 8) == []  # not warm-started: its own round 0
    with pytest.raises(ConfigError, match="must be >= 0"):
        validate(compose(["selection.sft_replay=-1"]))
