"""`TrainConfig.compile`: in-process jobs run their forward through torch.compile, the same parameters are
trained and saved, a compile failure falls back to eager with a warning, and the key leaves old round-0
cache keys alone."""

from __future__ import annotations

import logging
from dataclasses import replace

import torch

from conf.schema import BackboneConfig, TrainConfig
from trainers.engine import TorchEngine
from trainers.warm_start import _spec


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def forward(self, x):
        return ((self.lin(x) - 1.0) ** 2).mean()


def _train(cfg: TrainConfig, steps: int = 5) -> tuple[_Tiny, list[float]]:
    torch.manual_seed(0)
    module = _Tiny()
    engine = TorchEngine(module, cfg, total_steps=steps)
    x = torch.ones(8, 4)
    losses = []
    for _ in range(steps):
        loss = engine(x)
        engine.backward(loss)
        engine.step()
        losses.append(float(loss))
    return module, losses


def test_compile_failure_falls_back_to_eager_with_a_warning(monkeypatch, caplog):
    def broken(module, **kwargs):
        def call(*args, **kw):
            raise RuntimeError("Compiler: cc is not found\nmore text")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    cfg = TrainConfig(lr=0.1, bf16="false", compile=True)
    with caplog.at_level(logging.WARNING, logger="trainers.engine"):
        module, losses = _train(cfg)
    _, eager = _train(replace(cfg, compile=False))
    assert losses == eager  # the same model trained eager
    assert any("torch.compile failed (Compiler: cc is not found)" in r.message for r in caplog.records)


def test_compiled_forward_trains_the_module_itself(monkeypatch):
    seen = []

    def wrap(module, **kwargs):
        seen.append(kwargs)
        return lambda *a, **k: module(*a, **k)  # what torch.compile returns: a callable over `module`

    monkeypatch.setattr(torch, "compile", wrap)
    module, losses = _train(TrainConfig(lr=0.1, bf16="false", compile=True))
    assert seen == [{"dynamic": True}]
    assert losses[-1] < losses[0]
    _, eager = _train(TrainConfig(lr=0.1, bf16="false"))
    assert losses == eager


def test_compile_false_keeps_old_round0_keys_and_true_changes_them():
    base = _spec("warm_start", "/tmp/x", BackboneConfig(), {"size": 1}, TrainConfig(), 0)
    assert "compile" not in base["train"]
    other = _spec("warm_start", "/tmp/x", BackboneConfig(), {"size": 1}, TrainConfig(compile=True), 0)
    assert other["train"]["compile"] is True
