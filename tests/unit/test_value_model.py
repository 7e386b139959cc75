"""What a PRM reads (text or the task's state), the value model of its own, the dtype rule, the
round-0 cache keys of issue 26."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conf.load import compose
from conf.schema import TrainConfig
from models.device import cpu_flags, cpu_has_bf16, train_bf16, train_dtype_name
from models.prm import HEAD_FILE, load_prm, save_prm, score_texts
from models.value import ILLEGAL_TEXT, PRMReader, build_value_base, reader_of, render_state, value_spec
from pipeline.prompting import PromptFormat
from pipeline.records import Question

Q = Question(id="q", content="8 3 5 2 to 24", source="countdown")


# ------------------------------------------------------------------------------------ what it reads


@pytest.mark.parametrize(
    ("steps", "text"),
    [
        ((), "8 5 3 2 to 24\n"),
        (("8*3=24 (left: 24 5 2)",), "24 5 2 to 24\n"),
        (("8*3=24 (left: 24 5 2)", "The answer is 24"), "24 5 2 to 24\nThe answer is 24\n"),
        (("5+2=7 (left: 7 8 3)", "8*3=24 (left: 24 7)"), "24 7 to 24\n"),
        (("8*3=25 (left: 25 5 2)",), ILLEGAL_TEXT),  # wrong arithmetic: no state to read
        (("8*3=24 (left: 24 5 2)", "The answer is 23"), ILLEGAL_TEXT),
        (("5+2=7 (left: 7 8 3)", "The answer is 7"), ILLEGAL_TEXT),  # an answer before the target
    ],
)
def test_state_rendering(steps, text):
    assert render_state(Q, steps, "The answer is") == text
    assert PRMReader("state", "countdown").text(Q.content, steps).text == text


def test_two_paths_to_one_state_read_the_same():
    reader = PRMReader("state", "countdown")
    a = reader.text(Q.content, ("8*3=24 (left: 24 5 2)", "5-2=3 (left: 3 24)"))
    b = reader.text(Q.content, ("5-2=3 (left: 3 8 3)", "8*3=24 (left: 24 3)"))
    assert a == b and a.text == "24 3 to 24\n"


def test_text_reader_is_the_prompt_format():
    fmt = PromptFormat()
    assert PRMReader("text", "", fmt).text(Q.content, ("8*3=24 (left: 24 5 2)",)) == fmt.prm_text(
        Q.content, ("8*3=24 (left: 24 5 2)",)
    )


def test_state_of_a_task_without_one_and_unknown_reads_are_refused():
    with pytest.raises(ValueError, match="prm_reads=text"):
        render_state(Question(id="a", content="((9*9)-30)-16", source="arith"), ("9*9=81",), "The answer is")
    with pytest.raises(ValueError, match="prm_reads"):
        PRMReader("pixels")


# -------------------------------------------------------------------------- the value model's files


def test_value_model_saves_and_loads_as_a_plain_hf_directory(tmp_path):
    from transformers import AutoModel, AutoTokenizer

    cfg = compose(["task=countdown", "backbone.value_hidden=32", "backbone.value_layers=2"])
    reader = PRMReader("state", "countdown")
    params = build_value_base(value_spec(cfg.backbone, seed=0), reader, tmp_path / "base")
    assert 1000 < params < 200_000
    assert reader_of(str(tmp_path / "base"), PromptFormat()) == reader
    model, tok = load_prm(str(tmp_path / "base"), head="linear")  # a base: a fresh linear head
    texts = [reader.text(Q.content, s) for s in [("8*3=24 (left: 24 5 2)",), ("8*3=25 (left: 25 5 2)",)]]
    with torch.no_grad():
        model.value_head.weight.normal_()  # a head that says something
    before = score_texts(model, tok, texts, 64, 8)
    save_prm(model, tok, str(tmp_path / "prm"), extra=reader.meta())
    # plain HF: the backbone and tokenizer load without project code
    assert AutoModel.from_pretrained(tmp_path / "prm").config.hidden_size == 32
    assert AutoTokenizer.from_pretrained(tmp_path / "prm")("24 5 2 to 24\n")["input_ids"]
    assert (tmp_path / "prm" / HEAD_FILE).is_file()
    meta = json.loads((tmp_path / "prm" / "prm_config.json").read_text())
    assert meta["reads"] == "state" and meta["task"] == "countdown" and meta["head"] == "linear_sigmoid"
    again, tok2 = load_prm(str(tmp_path / "prm"), head="logprob")  # the saved head kind wins
    assert again.head_kind == "linear"
    assert score_texts(again, tok2, texts, 64, 8) == pytest.approx(before, abs=1e-6)
    assert before[0] != pytest.approx(before[1], abs=1e-6)


def test_reader_of_a_directory_without_a_record_reads_text(tmp_path):
    assert reader_of(str(tmp_path), PromptFormat()).reads == "text"


# --------------------------------------------------------------------------------- the dtype rule


def test_bf16_auto_follows_the_cpu_units():
    assert not cpu_has_bf16(frozenset({"avx512f", "avx512bw"}))
    assert cpu_has_bf16(frozenset({"avx512f", "avx512_bf16"}))
    assert cpu_has_bf16(frozenset({"amx_bf16", "amx_tile"}))
    assert train_bf16("auto", "cpu", frozenset({"avx512f"})) is False
    assert train_bf16("auto", "cpu", frozenset({"avx512_bf16"})) is True
    assert train_bf16("true", "cpu", frozenset()) is True
    assert train_bf16("false", "cpu", frozenset({"amx_bf16"})) is False
    with pytest.raises(ValueError, match="bf16"):
        train_bf16("maybe", "cpu", frozenset())


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t: fpu\n")
    assert cpu_flags(str(info)) == frozenset({"fpu", "avx512f", "avx512_bf16"})
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_dtype_name_matches_the_rule():
    assert train_dtype_name("false") == "float32"
    assert train_dtype_name("true") == "bfloat16"
    assert train_dtype_name("auto") == ("bfloat16" if cpu_has_bf16() else "float32")


# --------------------------------------------------------------------------------- round-0 cache keys


def _state_key(*overrides: str) -> str:
    from models.backbones import _key
    from trainers.state_prm import state_prm_spec

    cfg = compose(["task=countdown", "backbone.prm_reads=state", *overrides])
    data = {"walks": cfg.backbone.value_walks}
    return _key(state_prm_spec(cfg.backbone, cfg.task, 0, data, None))


def test_state_prm_cache_key_changes_with_the_recipe():
    base = _state_key()
    assert _state_key() == base
    for change in (
        "backbone.value_walks=9",
        "backbone.value_hidden=64",
        "backbone.initial_prm.lr=0.005",
        "backbone.initial_prm.prm_loss=mse",
        "backbone.initial_prm.bf16=false",
        "backbone.initial_prm.bf16=true",
    ):
        assert _state_key(change) != base, change


def test_warm_start_cache_key_changes_with_the_recipe_and_dtype():
    from models.backbones import _key
    from trainers.warm_start import _spec

    def key(**changes) -> str:
        cfg = TrainConfig(lr=2e-3, epochs=3, micro_batch_size=64, bf16="false")
        for k, v in changes.items():
            setattr(cfg, k, v)
        return _key(_spec("warm_start", "/tmp/base", compose([]).backbone, {"size": 1}, cfg, 0))

    base = key()
    assert key() == base
    for change in ({"lr": 1e-3}, {"epochs": 4}, {"group_by_length": True}, {"bf16": "true"}):
        assert key(**change) != base, change
    # entries built before a key existed keep their key at its old default
    assert "group_by_length" not in json.dumps(_spec("w", "/b", compose([]).backbone, {}, TrainConfig(), 0))


def test_an_fp32_round0_job_keys_as_auto_did_before_the_dtype_followed_the_cpu(monkeypatch):
    import trainers.warm_start as ws
    from models.backbones import _key

    bb = compose([]).backbone
    fp32_cpu = lambda setting, device="cpu": "bfloat16" if setting == "true" else "float32"  # noqa: E731
    monkeypatch.setattr(ws, "train_dtype_name", fp32_cpu)
    auto = _key(ws._spec("warm_start", "/b", bb, {}, TrainConfig(bf16="auto"), 0))
    assert _key(ws._spec("warm_start", "/b", bb, {}, TrainConfig(bf16="false"), 0)) == auto
    bf16 = ws._spec("warm_start", "/b", bb, {}, TrainConfig(bf16="true"), 0)
    assert bf16["dtype"] == "bfloat16" and _key(bf16) != auto


TINY_ROUND0 = [
    "task=countdown",
    "task.warm_size=48",
    "task.dv0_size=8",
    "backbone.tiny_hidden=32",
    "backbone.tiny_layers=1",
    "backbone.tiny_heads=2",
    "backbone.tiny_intermediate=64",
    "backbone.value_hidden=32",
    "backbone.value_layers=1",
    "backbone.value_heads=2",
    "backbone.value_intermediate=64",
    "backbone.value_walks=1",
    "backbone.warm_start.max_steps=2",
    "backbone.initial_prm.max_steps=2",
    "backbone.warm_start.compile=false",
    "backbone.initial_prm.compile=false",
]


def test_round0_builds_the_state_prm_beside_the_warm_start_then_finds_both(tmp_path, caplog, monkeypatch):
    import logging

    import trainers.warm_start as ws
    from trainers.state_prm import cached_state_prm, ensure_state_prm
    from trainers.warm_start import ensure_round0, ensure_warm_start

    cfg = compose(TINY_ROUND0)
    assert cfg.backbone.initial_prm.torch_threads == 2
    args = (cfg.backbone, cfg.task, str(tmp_path), 0)
    assert cached_state_prm(*args) is None
    monkeypatch.setattr(ws.os, "cpu_count", lambda: 4)  # 2 cores left for the warm start: side by side
    with caplog.at_level(logging.INFO, logger="trainers.warm_start"):
        policy, prm = ensure_round0(*args)
    assert any(
        "child process (2 torch thread) beside the warm start (2)" in r.message for r in caplog.records
    )
    assert cached_state_prm(*args) == prm
    # the child built the same entry a serial build names, and the parent the warm start
    assert prm == ensure_state_prm(*args) and policy == ensure_warm_start(*args)
    assert (Path(prm) / "prm_config.json").is_file() and (Path(policy) / "config.json").is_file()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="trainers.warm_start"):
        assert ensure_round0(*args) == (policy, prm)
    assert not any("child process" in r.message for r in caplog.records)
    # on 2 cores the two are built in turn: the same entries, no child
    monkeypatch.setattr(ws.os, "cpu_count", lambda: 2)
    other = (cfg.backbone, cfg.task, str(tmp_path / "serial"), 0)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="trainers.warm_start"):
        serial = ensure_round0(*other)
    assert not any("child process" in r.message for r in caplog.records)
    assert (Path(serial[1]) / "prm_config.json").is_file() and (Path(serial[0]) / "config.json").is_file()
    assert cached_state_prm(*other) == serial[1]
