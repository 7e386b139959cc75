"""Sizing work in flight from the policy's raw throughput curve (pool.trees_in_flight=auto)."""

from __future__ import annotations

import pytest

from actors.pool import curve_line, knee_rows
from conf.schema import BackboneConfig, PolicyConfig

# HF generate with sampling on the arith tiny backbone, 2 cores (shared/MEASURED.md)
MEASURED = [
    {"rows": 1, "tokens_per_s": 358.0},
    {"rows": 64, "tokens_per_s": 7622.0},
    {"rows": 256, "tokens_per_s": 10339.0},
    {"rows": 512, "tokens_per_s": 10471.0},
]


def test_knee_is_the_smallest_batch_near_the_best_speed():
    assert knee_rows(MEASURED) == 256  # 10,339 >= 0.95 x 10,471; 7,622 is not
    assert knee_rows(MEASURED, share=0.7) == 64
    assert knee_rows(MEASURED, share=1.0) == 512
    assert knee_rows([{"rows": 8, "tokens_per_s": 5.0}, {"rows": 1, "tokens_per_s": 5.0}]) == 1
    assert curve_line(MEASURED[:2]) == "1: 358, 64: 7622 tokens/s"
    # per CPU-second where measured: a loaded wall clock (the 64-row point) does not move the knee
    loaded = [p | {"tokens_per_cpu_s": p["tokens_per_s"]} for p in MEASURED]
    loaded[2] = loaded[2] | {"tokens_per_s": 2000.0}
    assert knee_rows(loaded) == 256


def test_policy_measures_its_raw_curve_per_batch_size(tmp_path):
    from actors.policy import PolicyActor
    from tests.unit.test_actors_local import build_tiny

    backbone = BackboneConfig(max_prompt_tokens=32, max_step_tokens=8, max_solution_tokens=32, dtype="auto")
    actor = PolicyActor(build_tiny(tmp_path / "m"), backbone, PolicyConfig(max_batch_size=4))
    curve = actor.throughput_curve(["1+2", "3*4"], [1, 8], new_tokens=4, repeats=2)
    assert [p["rows"] for p in curve] == [1, 8]
    for p in curve:
        assert p["tokens_per_s"] == pytest.approx(p["rows"] * 4 * 2 / p["seconds"])
        assert p["seconds"] > 0 and p["cpu_seconds"] > 0
        assert p["tokens_per_cpu_s"] == pytest.approx(p["rows"] * 4 * 2 / p["cpu_seconds"])
    tokens_before = actor.info()["tokens"]
    assert tokens_before == 0  # the curve is not counted as served work


def test_generate_chunks_cut_at_max_rows_and_where_prefixes_get_much_shorter():
    from actors.engines.hf import length_chunks

    lengths = [100] * 3 + [90] * 3 + [40] * 4  # longest first
    rows = list(range(len(lengths)))
    assert length_chunks(rows, lengths.__getitem__, max_rows=4, min_rows=2) == [
        [0, 1, 2, 3],
        [4, 5],
        [6, 7, 8, 9],
    ]
    assert length_chunks(rows, lengths.__getitem__, max_rows=16, min_rows=2) == [rows[:6], rows[6:]]
    assert length_chunks(rows, lengths.__getitem__, max_rows=16, min_rows=8) == [rows[:8], rows[8:]]
    assert length_chunks(rows, lengths.__getitem__, max_rows=16, min_rows=16) == [rows]
