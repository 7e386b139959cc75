"""A Ray Train job at the default log level prints no per-report lines and no library noise.

The test session starts Ray with log_to_driver=False, so the workers' output never reaches this
process; Ray still writes each worker's stdout/stderr (and Ray Train's own log files) under the
session's log directory, and what log_to_driver would have shown is exactly that. The test reads the
files written during the job: rank 0's progress summary must be there (so these are the right files
and the workers' INFO lines do get through), and none of the noise. `test_debug_shows_them_again`
(slow) is the control: at DEBUG the same job's files hold the report lines again.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

import pytest

from conf.schema import TrainConfig
from pipeline.prompting import PromptFormat
from pipeline.records import SFTExample

FMT = PromptFormat()
NOISE = (
    "Reporting training result",  # Ray Train V2, every ray.train.report on every rank
    "Loading weights",  # transformers' bar, every from_pretrained
    "Writing model shards",  # transformers' bar, every save_pretrained
    "Setting accelerator to CPU",  # DeepSpeed, every process without a GPU
    "Attempting to get learning rate from scheduler",  # DeepSpeed's warmup scheduler, every rank
    "built successfully",  # DeepSpeed's shm comm op, printed by every rank
    "Started training worker group",  # Ray Train's controller (ray.train logger)
)


def _examples(n: int) -> list[SFTExample]:
    out = []
    for i in range(n):
        a, b = i % 9 + 1, (i * 7) % 9 + 1
        gold = (f"{a}*{b}={a * b}", f"The answer is {a * b}")
        out.append(SFTExample(str(i), FMT.prompt(f"{a}*{b}"), FMT.solution(gold), gold, 1.0, "gold"))
    return out


def _job_output(tiny_dirs, tmp_path: Path, name: str) -> tuple[dict, dict[Path, str]]:
    """Run a 2-worker, 4-step SFT job; return its metrics and the text of every Ray log file written
    while it ran, once rank 0's summary line is in one of them (or after 20 s). Ray Train's system log
    files (`train/ray-train-sys-*`) are left out: they keep every level of Ray Train's own logger by
    design and are never shown on a console."""
    import ray

    from trainers.sft import train_sft

    logs = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    start = time.time() - 1.0
    cfg = TrainConfig(num_workers=2, max_steps=4, micro_batch_size=8, lr=1e-2, zero_stage=0)
    metrics = train_sft(
        tiny_dirs.policy_dir, _examples(32), str(tmp_path / "policy"), cfg, str(tmp_path / "jobs"), name=name
    )
    deadline = time.time() + 20
    while True:
        texts = {
            p: p.read_text(encoding="utf-8", errors="replace")
            for p in logs.rglob("*")
            if p.is_file() and p.stat().st_mtime >= start and not p.name.startswith("ray-train-sys-")
        }
        if any(f"{name}: done 4/4 steps" in t for t in texts.values()) or time.time() > deadline:
            return metrics, texts
        time.sleep(0.5)


@pytest.mark.ray
def test_ray_train_job_is_quiet_at_the_default_level(ray_session, tiny_dirs, tmp_path, caplog):
    caplog.set_level(logging.INFO)  # run.py's default log_level: the workers follow the driver's level
    name = f"sft-quiet-{uuid.uuid4().hex[:6]}"
    metrics, texts = _job_output(tiny_dirs, tmp_path, name)
    assert metrics["engine"] == "deepspeed" and metrics["steps"] == 4  # every rank reported at step 4

    ours = [p for p, t in texts.items() if f"{name}: done 4/4 steps in " in t]
    assert ours, f"rank 0's summary line is in none of {sorted(p.name for p in texts)}"
    for path, text in texts.items():
        for noise in NOISE:
            assert noise not in text, f"{noise!r} in {path}"


@pytest.mark.ray
@pytest.mark.slow
def test_debug_shows_them_again(ray_session, tiny_dirs, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    try:
        name = f"sft-debug-{uuid.uuid4().hex[:6]}"
        _, texts = _job_output(tiny_dirs, tmp_path, name)
    finally:
        from pipeline.progress import quiet_logs

        quiet_logs("INFO")
    every = "\n".join(texts.values())
    assert f"{name}: done 4/4 steps" in every
    assert every.count("Reporting training result") >= 2  # one per rank
    assert "Writing model shards" in every and "Loading weights" in every
