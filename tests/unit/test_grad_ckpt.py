"""TrainConfig.gradient_checkpointing: an in-process tiny SFT job with it on recomputes activations (the
checkpoint function of the model's layers runs during training) and still learns; the PRM enables it on
its backbone, and not on a frozen one."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from conf.schema import TrainConfig
from pipeline.prompting import PromptFormat
from pipeline.records import PRMExample, SFTExample

FMT = PromptFormat()


def _problems(n: int) -> list[tuple[str, tuple[str, ...]]]:
    out = []
    for i in range(n):
        a, b = i % 9 + 1, (i * 7) % 9 + 1
        out.append((f"{a}*{b}", (f"{a}*{b}={a * b}", f"The answer is {a * b}")))
    return out


def _recording(monkeypatch, module) -> dict:
    """Patch `module.enable_gradient_checkpointing` to record the model it enables and count the calls of
    the checkpoint function it installs on the model's layers."""
    from trainers import engine

    seen: dict = {"models": [], "checkpoint_calls": 0}

    def enable(model):
        engine.enable_gradient_checkpointing(model)
        seen["models"].append(model)
        for layer in model.modules():
            func = getattr(layer, "_gradient_checkpointing_func", None)
            if getattr(layer, "gradient_checkpointing", False) and func is not None:

                def counted(*args, _func=func, **kwargs):
                    seen["checkpoint_calls"] += 1
                    return _func(*args, **kwargs)

                layer._gradient_checkpointing_func = counted

    monkeypatch.setattr(module, "enable_gradient_checkpointing", enable)
    return seen


def _checkpointing(model) -> bool:
    """The model's own flag (`is_activation_checkpointing` since transformers 5.2x)."""
    flag = getattr(type(model), "is_activation_checkpointing", None)
    return bool(model.is_activation_checkpointing if flag is not None else model.is_gradient_checkpointing)


def test_in_process_sft_with_gradient_checkpointing_trains(tiny_dirs, tmp_path, monkeypatch):
    import trainers.sft as sft

    seen = _recording(monkeypatch, sft)
    examples = [
        SFTExample(str(i), FMT.prompt(q), FMT.solution(gold), gold, 1.0, "gold")
        for i, (q, gold) in enumerate(_problems(24))
    ]
    cfg = TrainConfig(
        num_workers=0, epochs=2, micro_batch_size=8, lr=1e-2, torch_threads=1, gradient_checkpointing=True
    )
    m = sft.train_sft(tiny_dirs.policy_dir, examples, str(tmp_path / "policy"), cfg, str(tmp_path / "jobs"))

    assert m["steps"] == 6
    assert all(math.isfinite(x) for x in m["loss_curve"])
    assert m["final_loss"] < m["first_loss"]
    (model,) = seen["models"]
    assert _checkpointing(model) and model.config.use_cache is False
    assert seen["checkpoint_calls"] >= 6 * 3  # every layer of every micro-step's forward was checkpointed


def test_prm_enables_it_on_its_backbone_and_skips_a_frozen_one(tiny_dirs, tmp_path, monkeypatch):
    import trainers.prm_train as prm_train

    seen = _recording(monkeypatch, prm_train)
    examples = [
        PRMExample(str(i), q, gold[:k], k / len(gold), len(gold) - k, 0, 0.0)
        for i, (q, gold) in enumerate(_problems(8))
        for k in (1, 2)
    ]
    on = TrainConfig(
        num_workers=0, max_steps=2, micro_batch_size=8, torch_threads=1, gradient_checkpointing=True
    )
    jobs = str(tmp_path / "jobs")
    p = prm_train.train_prm(tiny_dirs.prm_dir, examples, str(tmp_path / "prm"), on, FMT, jobs)
    assert math.isfinite(p["final_loss"])
    (backbone,) = seen["models"]
    assert _checkpointing(backbone) and seen["checkpoint_calls"] > 0

    seen["models"].clear()
    frozen = replace(on, freeze_backbone=True)
    prm_train.train_prm(tiny_dirs.prm_dir, examples, str(tmp_path / "prm2"), frozen, FMT, jobs)
    assert seen["models"] == []  # nothing flows back through a frozen backbone: nothing to recompute


@pytest.mark.parametrize("enabled", [False, True])
def test_dpo_arguments_name_the_switch_this_transformers_has(enabled):
    from trl import DPOConfig

    from trainers.dpo import _checkpointing_args

    args = DPOConfig(
        output_dir="unused", use_cpu=True, report_to=[], **_checkpointing_args(DPOConfig, enabled)
    )
    assert args.gradient_checkpointing is enabled
