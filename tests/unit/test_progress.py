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


def _fake_compare(monkeypatch, tmp_path, fail: str | None = None):
    """compare_main with its three training runs and analysis replaced by recorders (no Ray, no model);
    the clock advances 60 s per part."""
    import functools

    import loop.compare as compare
    import loop.driver as driver
    import pipeline.data as data
    from conf.load import compose

    clock = FakeClock()
    monkeypatch.setattr(compare, "Progress", functools.partial(Progress, clock=clock))
    done: list[str] = []

    def train_main(cfg, train, heldout):
        clock.t += 60.0
        done.append(cfg.method)
        return 3 if cfg.method == fail else 0

    def analyse(cfg, dirs, train, heldout, out):
        clock.t += 60.0
        done.append("analysis")

    def build_report(out, dirs, iteration):
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text("# report\n")
        return out / "report.md"

    monkeypatch.setattr(driver, "train_main", train_main)
    monkeypatch.setattr(data, "load_questions", lambda task, data_cfg, seed: ([], []))
    monkeypatch.setattr(compare, "analyse", analyse)
    monkeypatch.setattr(compare, "build_report", build_report)
    argv = ["mode=compare", "iteration=0", f"run.root={tmp_path}", "run.name=cmp"]
    return compare.compare_main(compose(argv), argv), done


@pytest.fixture
def compare_lines(caplog):
    caplog.set_level(logging.INFO, logger="loop.compare")
    return lambda: [r.getMessage() for r in caplog.records if r.getMessage().startswith("compare: ")]


def test_compare_prints_done_total_rate_and_eta_per_part(compare_lines, monkeypatch, tmp_path, capsys):
    rc, done = _fake_compare(monkeypatch, tmp_path)
    assert rc == 0 and done == ["rest_mcts", "rest_em", "self_rewarding", "analysis"]
    out = [line for line in compare_lines() if " parts" in line]
    assert out[:4] == [
        "compare: 1/4 parts (25%) 0.017 parts/s, elapsed 1m00s, ETA 3m00s, last=rest_mcts",
        "compare: 2/4 parts (50%) 0.017 parts/s, elapsed 2m00s, ETA 2m00s, last=rest_em",
        "compare: 3/4 parts (75%) 0.017 parts/s, elapsed 3m00s, ETA 1m00s, last=self_rewarding",
        "compare: 4/4 parts (100%) 0.017 parts/s, elapsed 4m00s, ETA 0s, last=analysis",
    ]
    assert out[4].startswith("compare: done 4/4 parts in 4m00s — report ")
    assert "# report" in capsys.readouterr().out


def test_compare_says_which_run_failed(compare_lines, monkeypatch, tmp_path):
    rc, done = _fake_compare(monkeypatch, tmp_path, fail="rest_em")
    assert rc == 3 and done == ["rest_mcts", "rest_em"]
    assert compare_lines()[-1] == "compare: failed at 1/4 parts in 2m00s — run rest_em exited with 3"


def test_slow_rates_keep_their_digits():
    clock = FakeClock()
    bar = Progress("x", total=10, unit="runs", stream=TTY(), interval=0.0, clock=clock, live=False)
    assert bar._bar is None  # live=False: plain lines even on a terminal
    clock.t += 800
    bar.update(1)
    assert bar.line() == "x: 1/10 runs (10%) 0.0013 runs/s, elapsed 13m20s, ETA 2h00m"
