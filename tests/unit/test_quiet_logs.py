"""What a person sees of a training job: plain progress lines with done/total and an ETA off a terminal,
and the libraries' noise hidden at the default log level (shown at DEBUG)."""

from __future__ import annotations

import io
import logging
import os
import re
import sys

import pytest

from conf.schema import TrainConfig
from pipeline import progress
from pipeline.prompting import PromptFormat
from pipeline.records import SFTExample

FMT = PromptFormat()
LINE = re.compile(
    r"^sft-quiet: (\d+)/(\d+) steps \(\d+%\) [\d.]+ steps/s, elapsed \d+s, ETA (\d+s|\d+m\d\ds), loss=[\d.]+$"
)
SUMMARY = re.compile(r"^sft-quiet: done (\d+)/(\d+) steps in \d+s — loss ([\d.]+) -> ([\d.]+)$")


@pytest.fixture
def restore_quiet():
    """quiet_logs changes process-wide state: put it back as it was."""
    before = progress.is_quiet()
    env = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
    yield
    progress.quiet_logs("INFO" if before else "DEBUG")
    if env is None:
        os.environ.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    else:
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = env


def _examples(n: int) -> list[SFTExample]:
    out = []
    for i in range(n):
        a, b = i % 9 + 1, (i * 7) % 9 + 1
        gold = (f"{a}*{b}={a * b}", f"The answer is {a * b}")
        out.append(SFTExample(str(i), FMT.prompt(f"{a}*{b}"), FMT.solution(gold), gold, 1.0, "gold"))
    return out


def test_in_process_sft_job_logs_done_total_and_eta_off_a_terminal(
    tiny_dirs, tmp_path, monkeypatch, caplog, restore_quiet
):
    from trainers import engine
    from trainers.sft import train_sft

    stderr = io.StringIO()  # not a terminal: plain lines, no bar
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.setattr(engine, "PROGRESS_INTERVAL_S", 0.0)  # a line per step instead of every 15 s
    caplog.set_level(logging.INFO)  # the driver's default log level: the job must still be quiet
    cfg = TrainConfig(num_workers=0, epochs=2, micro_batch_size=8, lr=1e-2, torch_threads=1)
    m = train_sft(
        tiny_dirs.policy_dir, _examples(24), str(tmp_path / "p"), cfg, str(tmp_path / "j"), "sft-quiet"
    )

    lines = [r.getMessage() for r in caplog.records if r.name == progress.LOGGER]
    *steps, summary = lines
    assert len(steps) == m["steps"] == 6
    for i, line in enumerate(steps, start=1):
        match = LINE.match(line)
        assert match, line
        assert (int(match[1]), int(match[2])) == (i, 6)
        assert float(line.rsplit("loss=", 1)[1]) == pytest.approx(m["loss_curve"][i - 1], rel=1e-3)
    match = SUMMARY.match(summary)
    assert match, summary
    assert (match[1], match[2]) == ("6", "6")
    assert float(match[3]) == pytest.approx(m["first_loss"], rel=1e-3)
    assert float(match[4]) == pytest.approx(m["final_loss"], rel=1e-3)
    assert not any("train progress" in r.getMessage() for r in caplog.records)  # the old dict lines
    drawn = stderr.getvalue()  # HF's bars would be drawn here (loading the base, saving the result)
    assert "Loading weights" not in drawn and "Writing model shards" not in drawn


def test_deepspeed_noise_hidden_at_info_and_shown_at_debug(restore_quiet):
    ds = logging.getLogger("DeepSpeed")
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Keep()
    ds.addHandler(handler)
    try:
        assert progress.quiet_logs("INFO") is True
        ds.warning(
            "Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it."
        )
        ds.warning("Attempting to get learning rate from scheduler before it has started")
        ds.warning("ZeRO: something that matters")
        assert seen == ["ZeRO: something that matters"]
        assert progress.quiet_logs("DEBUG") is False
        ds.warning(
            "Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it."
        )
        assert seen[-1].startswith("Setting accelerator to CPU")
        progress.quiet_logs("INFO")
        assert sum(isinstance(f, progress._NoiseFilter) for f in ds.filters) == 1  # idempotent
    finally:
        ds.removeHandler(handler)


def test_hub_progress_bar_variable_set_when_quiet_and_a_users_choice_kept(monkeypatch, restore_quiet):
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    progress.quiet_logs("DEBUG")
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ
    progress.quiet_logs("WARNING")
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    progress.quiet_logs("DEBUG")  # taken back: it was ours
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")
    progress.quiet_logs("INFO")
    progress.quiet_logs("DEBUG")
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "0"
    assert progress.log_level("debug") == logging.DEBUG and progress.log_level(None) == logging.INFO


def test_worker_quiets_transformers_bars_and_ray_train_reports(restore_quiet):
    from transformers.utils import logging as hf_logging

    from trainers.worker import _ray_train_report_logger, quiet_worker_logs

    report_logger = _ray_train_report_logger()
    root_level = logging.getLogger().level
    try:
        assert quiet_worker_logs("INFO", in_ray=True) is True
        assert not hf_logging.is_progress_bar_enabled()
        assert not report_logger.isEnabledFor(logging.INFO)  # "Reporting training result ..." hidden
        assert quiet_worker_logs("DEBUG", in_ray=True) is False
        assert hf_logging.is_progress_bar_enabled() and report_logger.isEnabledFor(logging.INFO)
    finally:
        logging.getLogger().setLevel(root_level)
        report_logger.setLevel(logging.NOTSET)
        hf_logging.disable_progress_bar()


def test_ray_train_report_logger_is_the_one_ray_logs_on():
    """The "Reporting training result" logger is named after its file; the name must be the one Ray uses."""
    pytest.importorskip("ray")
    import inspect

    from ray.train.v2._internal.execution import context

    from trainers.worker import _ray_train_report_logger

    assert "Reporting training result" in inspect.getsource(context)
    assert context.logger is _ray_train_report_logger()


def test_prints_inside_a_quiet_block_go_to_the_debug_log(caplog, restore_quiet):
    from trainers.engine import _captured_stdout

    caplog.set_level(logging.INFO)  # a Ray Train worker's root level
    caplog.set_level(logging.DEBUG, logger="trainers.engine")
    progress.quiet_logs("INFO")
    with _captured_stdout("setup"):
        print("DeepSpeed deepspeed.ops.comm.deepspeed_shm_comm_op built successfully")
        logging.getLogger().info("a print patched onto the root logger (Ray Train workers)")
        logging.getLogger().warning("a root warning still shows")
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert (logging.WARNING, "a root warning still shows") in messages
    debug = [m for level, m in messages if level == logging.DEBUG and m.startswith("setup printed:")]
    assert len(debug) == 1 and "built successfully" in debug[0] and "patched onto the root" in debug[0]
    assert not any(level == logging.INFO for level, _ in messages)
