"""loop.progress: plain lines off a terminal (done/total, rate, ETA, rate-limited), a summary at close,
and a live bar on a terminal."""

from __future__ import annotations

import io
import logging

import pytest

from loop.progress import Progress, format_duration


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def lines(caplog):
    caplog.set_level(logging.INFO, logger="restmcts.progress")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "restmcts.progress"]


def test_format_duration():
    assert format_duration(0) == "0s"
    assert format_duration(33.9) == "33s"
    assert format_duration(245) == "4m05s"
    assert format_duration(3720) == "1h02m"
    assert format_duration(-5) == "0s"


def test_plain_lines_carry_done_total_eta_and_are_rate_limited(lines):
    clock, stream = FakeClock(), io.StringIO()
    with Progress("search round 1", total=13, unit="shards", stream=stream, interval=15, clock=clock) as bar:
        for i in range(13):
            clock.t += 4.0  # a shard every 4 s: 13 updates over 52 s, a line at most every 15 s
            bar.update(1, traces=10 * (i + 1))
        bar.summary = "130 traces kept"
    out = lines()
    progress, summary = out[:-1], out[-1]
    assert len(progress) == 3  # at 16 s, 32 s, 48 s
    assert progress[0] == "search round 1: 4/13 shards (31%) 0.25 shards/s, elapsed 16s, ETA 36s, traces=40"
    for line in progress:
        assert "/13 shards" in line and "ETA " in line and "ETA ?" not in line
    assert summary == "search round 1: done 13/13 shards in 52s — 130 traces kept"
    assert stream.getvalue() == ""  # off a terminal, nothing is drawn on the stream


def test_eta_unknown_before_first_unit_and_set_absolute(lines):
    clock = FakeClock()
    bar = Progress("warm start", total=200, unit="steps", stream=io.StringIO(), interval=10, clock=clock)
    clock.t += 10
    bar.update(0)
    assert lines()[-1] == "warm start: 0/200 steps (0%) ? steps/s, elapsed 10s, ETA ?"
    clock.t += 10
    bar.set(50, loss=0.76712)
    assert lines()[-1] == "warm start: 50/200 steps (25%) 2.5 steps/s, elapsed 20s, ETA 1m00s, loss=0.7671"
    assert bar.close("loss 2.31 -> 0.77") == "warm start: done 50/200 steps in 20s — loss 2.31 -> 0.77"
    assert bar.close() == ""  # closing twice does nothing
    bar.update(5)
    assert bar.done == 50


def test_failed_phase_says_so(lines):
    clock = FakeClock()
    with pytest.raises(RuntimeError):
        with Progress("sft round 1", total=10, unit="steps", stream=io.StringIO(), clock=clock) as bar:
            bar.update(3)
            raise RuntimeError("boom")
    assert lines()[-1] == "sft round 1: failed at 3/10 steps in 0s"


def test_total_required():
    with pytest.raises(ValueError, match="total"):
        Progress("x", total=None)  # type: ignore[arg-type]


def test_tty_draws_a_bar_and_logs_the_summary(lines):
    stream = TTY()
    with Progress("eval cot", total=5, unit="questions", stream=stream, interval=0.0) as bar:
        for _ in range(5):
            bar.update(1, acc=0.5)
    drawn = stream.getvalue()
    assert "eval cot" in drawn and "5/5" in drawn
    assert lines() == [lines()[-1]] and lines()[-1].startswith("eval cot: done 5/5 questions in ")
