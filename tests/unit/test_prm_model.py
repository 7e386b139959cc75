"""The value-head PRM: bounded output, padding-side independence, save/load round trip, scoring."""

from __future__ import annotations

import pytest
import torch

from trainers.prm_model import HEAD_FILE, ValueHeadModel, last_real_index, load_prm, save_prm, score_texts


@pytest.fixture(scope="module")
def base_dir(tiny_dirs):
    return tiny_dirs.prm_dir


TEXTS = ["Q:9*9\n9*9=81\n", "Q:1+2\n", "Q:((9*9)-30)-16\n9*9=81\n81-30=51\n51-16=35\nThe answer is 35\n"]


def test_last_real_index_left_and_right_padding():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_real_index(right).tolist() == [2, 4]
    assert last_real_index(left).tolist() == [4, 4]


def test_values_in_unit_interval_and_padding_side_independent(base_dir):
    model, tok = load_prm(base_dir)
    assert isinstance(model, ValueHeadModel)
    outs = {}
    for side in ("left", "right"):
        tok.padding_side = side
        enc = tok(TEXTS, padding=True, return_tensors="pt")
        with torch.no_grad():
            outs[side] = model(enc["input_ids"], enc["attention_mask"])
    assert outs["left"].shape == (len(TEXTS),)
    assert torch.all((outs["right"] >= 0) & (outs["right"] <= 1))
    torch.testing.assert_close(outs["left"], outs["right"], atol=1e-5, rtol=1e-4)
    single = [score_texts(model, tok, [t], max_length=256, batch_size=1)[0] for t in TEXTS]
    batched = score_texts(model, tok, TEXTS, max_length=256, batch_size=2)
    assert batched == pytest.approx(single, abs=1e-5)


def test_fresh_head_is_deterministic_and_backbone_is_loaded(base_dir):
    from transformers import AutoModelForCausalLM

    a, _ = load_prm(base_dir)
    b, _ = load_prm(base_dir)
    torch.testing.assert_close(a.value_head.weight, b.value_head.weight)
    lm = AutoModelForCausalLM.from_pretrained(base_dir)
    torch.testing.assert_close(a.backbone.embed_tokens.weight, lm.get_input_embeddings().weight)


def test_save_load_round_trip(base_dir, tmp_path):
    model, tok = load_prm(base_dir)
    with torch.no_grad():
        model.value_head.bias.fill_(0.7)  # make it differ from a fresh head
    before = score_texts(model, tok, TEXTS, max_length=256, batch_size=8)
    out = tmp_path / "prm"
    save_prm(model, tok, str(out))
    assert (out / HEAD_FILE).exists() and (out / "prm_config.json").exists()
    assert list(out.glob("*.safetensors")) and not list(out.glob("*.bin"))
    again, tok2 = load_prm(str(out))
    assert score_texts(again, tok2, TEXTS, max_length=256, batch_size=8) == pytest.approx(before, abs=1e-6)
