"""The value-head PRM: bounded output, padding-side independence, save/load round trip, scoring."""

from __future__ import annotations

import json

import pytest
import torch

from models.prm import (
    HEAD_FILE,
    LIKELIHOOD_FEATURES,
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


def test_logprob_head_sees_only_the_four_features(base_dir, tmp_path):
    """The logprob head is an MLP on the log-probability features alone: its value is a function of them
    (two texts with the same features score the same, whatever their hidden states), and it round-trips."""
    model, tok = load_prm(base_dir, head="logprob")
    assert model.head_kind == "logprob" and model.value_head[0].in_features == len(LIKELIHOOD_FEATURES)
    with torch.no_grad():
        model.value_head[-1].weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    items = likelihood_inputs()
    enc = encode(tok, items, max_length=256)
    seen = []
    hook = model.value_head.register_forward_hook(lambda mod, args, out: seen.append(args[0].detach()))
    values = score_texts(model, tok, items, max_length=256, batch_size=len(items))
    hook.remove()
    with torch.no_grad():
        out = model.backbone(
            **{k: enc[k] for k in ("input_ids", "attention_mask")}, output_hidden_states=True
        )
    real = enc["attention_mask"].bool()
    sol = real & enc["solution_mask"].bool() & torch.nn.functional.pad(real[:, :-1], (1, 0), value=False)
    want = likelihood_features(out.logits, enc["input_ids"], sol, sol & enc["last_mask"].bool())
    order = sorted(range(len(items)), key=lambda i: len(items[i].text))
    torch.testing.assert_close(seen[0], want[order], atol=1e-5, rtol=1e-5)
    out_dir = tmp_path / "prm"
    save_prm(model, tok, str(out_dir))
    assert saved_head(str(out_dir)) == "logprob"
    assert json.loads((out_dir / "prm_config.json").read_text())["head"] == "logprob_mlp"
    again, tok2 = load_prm(str(out_dir))
    assert again.head_kind == "logprob"
    assert score_texts(again, tok2, items, 256, 4) == pytest.approx(values, abs=1e-6)


def test_unknown_head_is_refused(base_dir):
    with pytest.raises(ValueError, match="unknown PRM head"):
        load_prm(base_dir, head="nope")


# ------------------------------------------- the likelihood head's log-probabilities, chunk by chunk


def _reference_features(logits, input_ids, solution, last_step):
    """The implementation before chunking: one float copy of all (B, T - 1, V) logits."""
    shifted = logits[:, :-1].float()
    token_lp = shifted.gather(-1, input_ids[:, 1:, None]).squeeze(-1) - torch.logsumexp(shifted, dim=-1)
    token_lp = token_lp.clamp(min=-20.0) / 10.0
    cols = []
    for mask in (solution[:, 1:], last_step[:, 1:]):
        masked = torch.where(mask, token_lp, torch.zeros_like(token_lp))
        cols += [masked.amin(dim=1), masked.sum(dim=1) / mask.sum(dim=1).clamp(min=1)]
    return torch.stack(cols, dim=1)


def _reference_forward(model, enc):
    """ValueHeadModel.forward before chunking: the backbone's full logits, then `_reference_features`."""
    out = model.backbone(
        input_ids=enc["input_ids"],
        attention_mask=enc["attention_mask"],
        use_cache=False,
        output_hidden_states=True,
    )
    hidden = out.hidden_states[-1]
    picked = hidden[torch.arange(hidden.shape[0]), last_real_index(enc["attention_mask"])]
    real = enc["attention_mask"].bool()
    sol = real & enc["solution_mask"].bool()
    tail = sol & enc["last_mask"].bool()
    stats = _reference_features(out.logits, enc["input_ids"], sol, tail)
    return torch.sigmoid(model.value_head(torch.cat([picked, stats], dim=-1)).squeeze(-1).float())


class RecordingHead(torch.nn.Module):
    """Wraps an LM head and records the number of rows (positions) of every call."""

    def __init__(self, head):
        super().__init__()
        self.head, self.out_features, self.rows = head, head.out_features, []

    @property
    def weight(self):
        return self.head.weight

    def forward(self, x):
        self.rows.append(x.numel() // x.shape[-1])
        return self.head(x)


def _likelihood_model(base_dir):
    model, tok = load_prm(base_dir, head="likelihood")
    with torch.no_grad():
        model.value_head[-1].bias.fill_(0.3)
        model.value_head[-1].weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    return model, tok


def _many_inputs() -> list[PRMText]:
    qs = ["((9*9)-30)-16", "1+2", "7*8-3", "(4+4)*(6-1)"]
    return [FMT.prm_text(q, s) for q in qs for s in STEPS]


@pytest.mark.parametrize("chunk_rows", [None, 1, 7])
def test_chunked_likelihood_head_matches_the_full_logits_implementation(base_dir, monkeypatch, chunk_rows):
    import models.prm as prm

    model, tok = _likelihood_model(base_dir)
    vocab = model.backbone.get_output_embeddings().out_features
    if chunk_rows is not None:
        monkeypatch.setattr(prm, "LOGPROB_CHUNK_ELEMENTS", chunk_rows * vocab)
    items = _many_inputs()
    for side in ("left", "right"):
        tok.padding_side = side
        enc = encode(tok, items, max_length=256)
        with torch.no_grad():
            new = model(**enc)
            ref = _reference_forward(model, enc)
            out = model.backbone(
                **{k: enc[k] for k in ("input_ids", "attention_mask")}, output_hidden_states=True
            )
            sol, tail = enc["solution_mask"].bool(), enc["last_mask"].bool()
            got = prm.hidden_likelihood_features(
                out.hidden_states[-1], model.backbone.get_output_embeddings(), enc["input_ids"], sol, tail
            )
            want = _reference_features(out.logits, enc["input_ids"], sol, tail)
            logits_path = prm.likelihood_features(out.logits, enc["input_ids"], sol, tail)
        assert (got - want).abs().max().item() <= 1e-6
        assert (logits_path - want).abs().max().item() <= 1e-6
        assert (new - ref).abs().max().item() <= 1e-6
        assert got.abs().sum() > 0  # real features, not all-zero
    if chunk_rows != 1:
        return
    # batched == one at a time, and the padding side does not matter, with one-row chunks too
    scores = {}
    for side in ("left", "right"):
        tok.padding_side = side
        scores[side] = score_texts(model, tok, items, max_length=256, batch_size=5)
    single = [score_texts(model, tok, [t], max_length=256, batch_size=1)[0] for t in items]
    assert scores["left"] == pytest.approx(scores["right"], abs=1e-6)
    assert scores["right"] == pytest.approx(single, abs=1e-6)


def test_lm_head_sees_at_most_a_chunk_of_positions(base_dir, monkeypatch):
    import models.prm as prm

    model, tok = _likelihood_model(base_dir)
    items = _many_inputs()
    before = score_texts(model, tok, items, max_length=256, batch_size=8)
    head = RecordingHead(model.backbone.get_output_embeddings())
    model.backbone.set_output_embeddings(head)
    vocab = head.out_features
    monkeypatch.setattr(prm, "LOGPROB_CHUNK_ELEMENTS", 6 * vocab + vocab // 2)  # 6 rows per chunk
    after = score_texts(model, tok, items, max_length=256, batch_size=8)
    assert after == pytest.approx(before, abs=1e-6)
    # the backbone's own LM head call gets no position (logits_to_keep=[]); every other call <= 6 rows
    forwards = -(-len(items) // 8)
    assert head.rows.count(0) >= forwards
    assert max(head.rows) == 6
    # exactly the positions that predict a solution token, each once
    solution_tokens = 0
    for start in range(0, len(items), 8):
        enc = encode(tok, items[start : start + 8], max_length=256)
        solution_tokens += int((enc["solution_mask"][:, 1:].bool()).sum())
    assert sum(head.rows) == solution_tokens
    assert len(head.rows) > forwards + solution_tokens // 6  # many small calls, not one big one


def test_gradients_through_the_chunked_features_match_the_full_logits(base_dir, monkeypatch):
    import models.prm as prm

    items = _many_inputs()[:6]
    targets = torch.linspace(0, 1, len(items))
    grads = {}
    for kind in ("reference", "chunked"):
        model, tok = _likelihood_model(base_dir)
        model.train()
        vocab = model.backbone.get_output_embeddings().out_features
        monkeypatch.setattr(prm, "LOGPROB_CHUNK_ELEMENTS", 4 * vocab)
        enc = encode(tok, items, max_length=256)
        values = _reference_forward(model, enc) if kind == "reference" else model(**enc)
        torch.nn.functional.mse_loss(values, targets).backward()
        grads[kind] = {n: p.grad.clone() for n, p in model.backbone.named_parameters() if p.grad is not None}
    assert grads["chunked"].keys() == grads["reference"].keys() and grads["chunked"]
    emb = "model.embed_tokens.weight"
    assert grads["chunked"][emb].abs().sum() > 0  # the LM head (tied) and the layers get gradients
    for name, g in grads["reference"].items():
        torch.testing.assert_close(grads["chunked"][name], g, atol=1e-6, rtol=1e-4)


def test_likelihood_head_on_a_model_without_logits_to_keep_reads_its_logits(base_dir):
    model, tok = _likelihood_model(base_dir)
    items = _many_inputs()
    fast = score_texts(model, tok, items, max_length=256, batch_size=8)
    model._skip_logits = False  # as for a remote-code model whose forward lacks `logits_to_keep`
    assert score_texts(model, tok, items, max_length=256, batch_size=8) == pytest.approx(fast, abs=1e-6)
