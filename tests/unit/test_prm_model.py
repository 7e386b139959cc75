"""The value-head PRM: bounded output, padding-side independence, save/load round trip, scoring."""

from __future__ import annotations

import pytest
import torch

from models.prm import (
    HEAD_FILE,
    ValueHeadModel,
    encode,
    last_real_index,
    likelihood_features,
    load_prm,
    save_prm,
    saved_head,
    score_texts,
)
from pipeline.prompting import PRMText, PromptFormat


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


# ------------------------------------------------------------------------------ the likelihood head

FMT = PromptFormat()
STEPS = [("9*9=81",), ("9*9=81", "81-30=51"), ("9*9=81", "81-30=51", "51-16=35", "The answer is 35")]


def likelihood_inputs() -> list[PRMText]:
    return [FMT.prm_text("((9*9)-30)-16", s) for s in STEPS] + [FMT.prm_text("1+2", ("1+2=3",))]


def test_prm_text_offsets_mark_solution_and_last_step():
    t = FMT.prm_text("((9*9)-30)-16", ("9*9=81", "81-30=51"))
    assert t.text == FMT.prefix("((9*9)-30)-16", ("9*9=81", "81-30=51"))
    assert t.text[: t.solution_start] == "Q:((9*9)-30)-16\n"
    assert t.text[t.solution_start : t.last_step_start] == "9*9=81\n"
    assert t.text[t.last_step_start :] == "81-30=51\n"


def test_encode_masks_follow_the_offsets(base_dir):
    _, tok = load_prm(base_dir)
    items = likelihood_inputs()
    for side in ("left", "right"):
        tok.padding_side = side
        enc = encode(tok, items, max_length=256)
        for row, item in enumerate(items):
            ids = enc["input_ids"][row][enc["attention_mask"][row].bool()]
            sol = enc["solution_mask"][row][enc["attention_mask"][row].bool()].bool()
            last = enc["last_mask"][row][enc["attention_mask"][row].bool()].bool()
            assert tok.decode(ids[sol]).replace(" ", "") == item.text[item.solution_start :].replace(" ", "")
            assert tok.decode(ids[last]).replace(" ", "") == item.text[item.last_step_start :].replace(
                " ", ""
            )
            assert not (last & ~sol).any()


def test_likelihood_features_are_min_and_mean_of_scaled_token_logprobs():
    # vocabulary of 2; position t's logits predict token t+1
    logits = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [5.0, -5.0], [0.0, 0.0]]])
    ids = torch.tensor([[0, 1, 1, 0]])
    solution = torch.tensor([[0, 1, 1, 1]]).bool()
    last = torch.tensor([[0, 0, 1, 1]]).bool()
    lp = torch.log_softmax(logits[0, :-1], -1).gather(1, ids[0, 1:, None])[:, 0].clamp(min=-20) / 10
    got = likelihood_features(logits, ids, solution, last)[0]
    torch.testing.assert_close(got[0], lp.min())
    torch.testing.assert_close(got[1], lp.mean())
    torch.testing.assert_close(got[2], lp[1:].min())
    torch.testing.assert_close(got[3], lp[1:].mean())
    empty = likelihood_features(logits, ids, solution & False, last & False)[0]
    assert empty.tolist() == [0.0, 0.0, 0.0, 0.0]


def test_likelihood_head_padding_independent_and_round_trips(base_dir, tmp_path):
    model, tok = load_prm(base_dir, head="likelihood")
    assert model.head_kind == "likelihood" and model.backbone.get_output_embeddings() is not None
    items = likelihood_inputs()
    with torch.no_grad():
        model.value_head[-1].bias.fill_(0.3)
        model.value_head[-1].weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    sides = {}
    for side in ("left", "right"):
        tok.padding_side = side
        sides[side] = score_texts(model, tok, items, max_length=256, batch_size=4)
    assert sides["left"] == pytest.approx(sides["right"], abs=1e-5)
    single = [score_texts(model, tok, [t], max_length=256, batch_size=1)[0] for t in items]
    assert sides["right"] == pytest.approx(single, abs=1e-5)
    # the features matter: the same text with another solution boundary scores differently
    shifted = [PRMText(t.text, t.solution_start, t.solution_start) for t in items[1:3]]
    assert score_texts(model, tok, shifted, 256, 4) != pytest.approx(sides["right"][1:3], abs=1e-4)
    out = tmp_path / "prm"
    save_prm(model, tok, str(out))
    assert saved_head(str(out)) == "likelihood"
    again, tok2 = load_prm(str(out))  # the saved kind wins over the default head="linear"
    assert again.head_kind == "likelihood"
    assert score_texts(again, tok2, items, 256, 4) == pytest.approx(sides["right"], abs=1e-6)


def test_unknown_head_is_refused(base_dir):
    with pytest.raises(ValueError, match="unknown PRM head"):
        load_prm(base_dir, head="nope")
