"""DeepSpeed config dicts built from TrainConfig (no deepspeed import)."""

from __future__ import annotations

import pytest

from conf.schema import TrainConfig
from trainers.ds_config import build_ds_config, use_bf16


def test_batch_sizes_optimizer_and_scheduler():
    cfg = TrainConfig(
        lr=2e-5, weight_decay=0.1, micro_batch_size=3, gradient_accumulation_steps=4, warmup_ratio=0.1
    )
    ds = build_ds_config(cfg, world_size=8, total_steps=100)
    assert ds["train_micro_batch_size_per_gpu"] == 3
    assert ds["gradient_accumulation_steps"] == 4
    assert ds["train_batch_size"] == 3 * 4 * 8
    assert ds["gradient_clipping"] == cfg.max_grad_norm
    assert ds["optimizer"]["type"] == "AdamW"
    assert ds["optimizer"]["params"]["lr"] == 2e-5
    assert ds["optimizer"]["params"]["weight_decay"] == 0.1
    sched = ds["scheduler"]
    assert sched["type"] == "WarmupDecayLR"
    assert sched["params"]["total_num_steps"] == 100
    assert sched["params"]["warmup_num_steps"] == 10
    assert sched["params"]["warmup_max_lr"] == 2e-5


def test_unknown_total_steps_uses_warmup_lr():
    ds = build_ds_config(TrainConfig(), world_size=1, total_steps=None)
    assert ds["scheduler"]["type"] == "WarmupLR"
    assert "total_num_steps" not in ds["scheduler"]["params"]


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_zero_stages(stage):
    ds = build_ds_config(TrainConfig(zero_stage=stage), world_size=2, total_steps=10)
    assert ds["zero_optimization"]["stage"] == stage
    assert "offload_optimizer" not in ds["zero_optimization"]
    assert ("stage3_gather_16bit_weights_on_model_save" in ds["zero_optimization"]) == (stage == 3)


def test_offload_optimizer_and_params_at_stage_3():
    z2 = build_ds_config(TrainConfig(zero_stage=2, offload=True), world_size=2, total_steps=10)[
        "zero_optimization"
    ]
    assert z2["offload_optimizer"]["device"] == "cpu"
    assert "offload_param" not in z2
    z3 = build_ds_config(TrainConfig(zero_stage=3, offload=True), world_size=2, total_steps=10)[
        "zero_optimization"
    ]
    assert z3["offload_optimizer"]["device"] == "cpu"
    assert z3["offload_param"]["device"] == "cpu"
    with pytest.raises(ValueError, match="zero_stage"):
        build_ds_config(TrainConfig(zero_stage=0, offload=True), world_size=2, total_steps=10)


def test_bad_stage_is_refused():
    with pytest.raises(ValueError, match="0-3"):
        build_ds_config(TrainConfig(zero_stage=4), world_size=1, total_steps=10)


@pytest.mark.parametrize(
    ("bf16", "use_gpu", "expected"),
    [("auto", False, False), ("auto", True, True), ("true", False, True), ("false", True, False)],
)
def test_bf16_auto_follows_device(bf16, use_gpu, expected):
    assert use_bf16(bf16, use_gpu) is expected
    ds = build_ds_config(TrainConfig(bf16=bf16, use_gpu=use_gpu), world_size=1, total_steps=10)
    assert ds["bf16"]["enabled"] is expected
    assert ds["fp16"]["enabled"] is False


def test_cpu_uses_torch_adamw_gpu_fused():
    cpu = build_ds_config(TrainConfig(use_gpu=False), world_size=1, total_steps=10)
    gpu = build_ds_config(TrainConfig(use_gpu=True), world_size=1, total_steps=10)
    assert cpu["optimizer"]["params"].get("torch_adam") is True
    assert "torch_adam" not in gpu["optimizer"]["params"]


@pytest.mark.parametrize("total", [1, 2, 100])
def test_first_step_learns_and_matches_the_in_process_engine(total):
    """DeepSpeed's WarmupDecayLR gives step 0 exactly warmup_min_lr: it must not be 0 (a 1-step job would
    learn nothing), and it is the in-process engine's first learning rate."""
    lr_schedules = pytest.importorskip("deepspeed.runtime.lr_schedules")
    import torch

    from trainers.engine import TorchEngine

    cfg = TrainConfig(lr=1e-3, warmup_ratio=0.1)
    params = build_ds_config(cfg, world_size=1, total_steps=total)["scheduler"]["params"]
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = lr_schedules.WarmupDecayLR(opt, **params)
    ds_first = sched.get_lr()[0]
    engine = TorchEngine(torch.nn.Linear(1, 1), cfg, total)
    assert ds_first > 0
    assert ds_first == pytest.approx(engine.optimizer.param_groups[0]["lr"])
