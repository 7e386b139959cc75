"""Trainers end to end: policy SFT and PRM regression on 2 Ray Train workers with DeepSpeed (CPU, gloo),
and the same jobs in-process (num_workers=0). Each TorchTrainer.fit costs ~30 s here: two fits in all."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from conf.schema import LoraConfig, TrainConfig
from models.prm import load_prm, saved_head, score_texts
from pipeline.prompting import PromptFormat
from pipeline.records import PRMExample, SFTExample
from trainers.prm_train import pairwise_accuracy, split_heldout, train_prm
from trainers.sft import encode_sft, train_sft

FMT = PromptFormat()


def _problems(n: int) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """(question, gold steps, steps with a wrong first result) for small products."""
    out = []
    for i in range(n):
        a, b = i % 9 + 1, (i * 7) % 9 + 1
        gold = (f"{a}*{b}={a * b}", f"The answer is {a * b}")
        bad = (f"{a}*{b}={a * b + 1}",)
        out.append((f"{a}*{b}", gold, bad))
    return out


def sft_examples(n: int = 48) -> list[SFTExample]:
    return [
        SFTExample(str(i), FMT.prompt(q), FMT.solution(gold), gold, 1.0, "gold")
        for i, (q, gold, _) in enumerate(_problems(n))
    ]


def prm_examples(n: int = 32) -> list[PRMExample]:
    out = []
    for i, (q, gold, bad) in enumerate(_problems(n)):
        out.append(PRMExample(str(i), q, gold[:1], 0.5, 1, 0, 0.0))
        out.append(PRMExample(str(i), q, bad, 0.0, 1, 1, 0.0))
        out.append(PRMExample(str(i), q, gold, 1.0, 0, 0, 0.5))
    return out


@pytest.fixture(scope="module")
def base_dir(tiny_dirs):
    return tiny_dirs.policy_dir


def test_sft_labels_mask_the_prompt(base_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_dir)
    ex = sft_examples(1)[0]
    ids, labels = encode_sft(tok, ex.prompt, ex.solution, max_length=256)
    n_prompt = len(tok(ex.prompt)["input_ids"])
    assert labels[:n_prompt] == [-100] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:]
    assert tok.decode(ids[n_prompt:], skip_special_tokens=True) == ex.solution


def test_heldout_split_and_pairwise_accuracy():
    examples = prm_examples(20)
    train, held = split_heldout(examples, 0.25, seed=0)
    assert split_heldout(examples, 0.25, seed=0) == (train, held)
    assert {e.question_id for e in train}.isdisjoint({e.question_id for e in held})
    assert len({e.question_id for e in held}) == 5
    scores = [e.target for e in held]  # a perfect PRM
    assert pairwise_accuracy(held, scores) == (1.0, 5)
    assert pairwise_accuracy(held, [1.0 - s for s in scores])[0] == 0.0


def test_in_process_sft_with_lora_and_prm(base_dir, tmp_path):
    """num_workers=0: plain torch AdamW in this process, same outputs and metrics as a Ray Train job."""
    from transformers import AutoModelForCausalLM

    # fp32: on a CPU with avx512_bf16, `auto` trains in bf16 autocast, and these 2-epoch toy jobs then do
    # not always lower the PRM's loss (the dtype choice is tested on its own)
    cfg = TrainConfig(num_workers=0, epochs=2, micro_batch_size=8, lr=1e-2, torch_threads=1, bf16="false")
    lora = replace(cfg, lora=LoraConfig(enabled=True, r=4))
    m = train_sft(base_dir, sft_examples(24), str(tmp_path / "policy"), lora, str(tmp_path / "jobs"))
    assert m["engine"] == "torch" and m["steps"] == 6 and m["final_loss"] < m["first_loss"]
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "policy"))
    assert not any("lora" in k for k in merged.state_dict())
    p = train_prm(base_dir, prm_examples(12), str(tmp_path / "prm"), cfg, FMT, str(tmp_path / "jobs"))
    assert p["final_loss"] < p["first_loss"]
    assert p["heldout_after"]["mse"] < p["heldout_before"]["mse"]


def test_in_process_likelihood_prm_with_frozen_backbone(base_dir, tmp_path):
    """The tiny default PRM: frozen LM with its LM head, only the MLP value head learns."""
    import torch

    cfg = TrainConfig(
        num_workers=0, epochs=3, micro_batch_size=8, lr=3e-3, torch_threads=1, freeze_backbone=True
    )
    out = tmp_path / "prm"
    p = train_prm(base_dir, prm_examples(12), str(out), cfg, FMT, str(tmp_path / "jobs"), head="likelihood")
    assert p["final_loss"] < p["first_loss"]
    assert saved_head(str(out)) == "likelihood"
    trained, _ = load_prm(str(out))
    fresh, _ = load_prm(base_dir, head="likelihood")
    fresh_state = fresh.backbone.state_dict()
    for name, a in trained.backbone.state_dict().items():
        torch.testing.assert_close(a, fresh_state[name], msg=f"frozen backbone changed: {name}")
    assert not torch.equal(trained.value_head[0].weight, fresh.value_head[0].weight)


def test_launcher_needs_ray(base_dir, tmp_path, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with pytest.raises(RuntimeError, match="needs Ray"):
        train_sft(base_dir, sft_examples(4), str(tmp_path / "p"), TrainConfig(num_workers=2), str(tmp_path))


@pytest.mark.ray
def test_ray_train_deepspeed_sft_zero3_and_prm_zero2(ray_session, base_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    sft_cfg = TrainConfig(num_workers=2, zero_stage=3, epochs=4, micro_batch_size=8, lr=3e-3)
    m = train_sft(base_dir, sft_examples(), str(tmp_path / "policy"), sft_cfg, str(tmp_path / "jobs"))
    assert m["engine"] == "deepspeed" and m["world_size"] == 2
    assert m["steps"] == 12 and len(m["loss_curve"]) == 12
    assert m["final_loss"] < m["first_loss"]
    policy = AutoModelForCausalLM.from_pretrained(str(tmp_path / "policy"))
    assert policy.num_parameters() > 0

    prm_cfg = TrainConfig(num_workers=2, zero_stage=2, epochs=6, micro_batch_size=8, lr=3e-3)
    p = train_prm(base_dir, prm_examples(), str(tmp_path / "prm"), prm_cfg, FMT, str(tmp_path / "jobs"))
    assert p["engine"] == "deepspeed" and p["final_loss"] < p["first_loss"]
    assert p["heldout_after"]["mse"] < p["heldout_before"]["mse"]
    model, tok = load_prm(str(tmp_path / "prm"))
    values = score_texts(model, tok, [FMT.prefix(e.question, e.steps) for e in prm_examples(2)], 256, 4)
    assert all(0.0 <= v <= 1.0 for v in values)


def test_round0_warm_start_and_initial_prm_are_cached(tmp_path):
    """The driver's round-0 entry points on a tiny budget: built once, then found in the cache."""
    from transformers import AutoModelForCausalLM

    from conf.load import compose
    from trainers.warm_start import ensure_initial_prm, ensure_warm_start

    cfg = compose(
        [
            "task.warm_size=24",
            "task.dv0_size=8",
            "task.train_size=16",
            "task.heldout_size=8",
            "backbone.warm_start.max_steps=2",
            "backbone.warm_start.micro_batch_size=8",
            "backbone.initial_prm.max_steps=2",
            "backbone.initial_prm.micro_batch_size=8",
        ]
    )
    cache = str(tmp_path / "cache")
    policy = ensure_warm_start(cfg.backbone, cfg.task, cache, seed=0)
    AutoModelForCausalLM.from_pretrained(policy)
    prm = ensure_initial_prm(cfg.backbone, cfg.task, cache, seed=0)
    model, tok = load_prm(prm)
    assert model.head_kind == cfg.backbone.prm_head == "likelihood"
    assert 0.0 <= score_texts(model, tok, [FMT.prm_text("1+2", ("1+2=3",))], 64, 1)[0] <= 1.0
    mtime = (tmp_path / "cache").stat().st_mtime_ns
    assert ensure_warm_start(cfg.backbone, cfg.task, cache, seed=0) == policy
    assert ensure_initial_prm(cfg.backbone, cfg.task, cache, seed=0) == prm
    assert (tmp_path / "cache").stat().st_mtime_ns == mtime  # nothing rebuilt
    with pytest.raises(ValueError, match=r"built-in task \(arith, countdown\), not task=file"):
        ensure_warm_start(cfg.backbone, SimpleNamespace(name="file"), cache, seed=0)
