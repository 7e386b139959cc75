"""What a person sees while a long phase runs: progress lines with totals and ETA, and quiet libraries.

Pure (stdlib only; tqdm is imported lazily when there is a terminal), so every room may use it: the
loop's phases (`loop.progress` re-exports it), the training workers (`trainers.engine`) and the actors.

Progress of one long phase: done/total in the phase's unit, rate, elapsed and ETA.

On a terminal (`stream.isatty()`) a live tqdm bar is drawn on `stream`; otherwise (CI, `nohup`,
`ray job submit`, a log file, a Ray worker) a plain line goes to the `restmcts.progress` logger at most
every `interval` seconds, so the progress lands in the same log as everything else:

    search round 1: 7/13 shards (54%) 0.21 shards/s, elapsed 33s, ETA 28s, traces=120

When the phase ends, one summary line is logged either way:

    search round 1: done 13/13 shards in 1m01s — 412 traces kept

Usage (the total must be known before the phase starts: steps = epochs x batches, questions in shards):

    with Progress("search round 1", total=len(shards), unit="shards") as bar:
        for result in results:
            bar.update(1, traces=n_traces)
        bar.summary = f"{kept} traces kept"      # or bar.close(summary=...) explicitly

`update(n)` adds `n` done units; `set(done)` sets the absolute count (for cumulative counters reported
by workers). Closing twice is a no-op; an exception inside the `with` block closes the bar and logs the
line with "failed" instead of "done".

Quiet libraries: `quiet_logs(level)` hides, below DEBUG, the per-process noise of the libraries
(HF hub/transformers progress bars through `HF_HUB_DISABLE_PROGRESS_BARS`, DeepSpeed's "Setting
accelerator to CPU" and lr-scheduler warnings through a filter on its logger); at DEBUG it shows them
again. Call it before those libraries load a model (the environment variable is read when
huggingface_hub/transformers are imported; a process started after it, e.g. a local Ray worker, inherits
it). The training workers do more (transformers' own switch, Ray Train's report lines): see
`trainers.worker.quiet_worker_logs`.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable
from typing import IO, Any

# The log line of `run.py` (and of the processes it spawns itself, e.g. the round-0 PRM build)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_DATEFMT = "%H:%M:%S"

__all__ = [
    "LOG_DATEFMT",
    "LOG_FORMAT",
    "NOISE",
    "Progress",
    "format_duration",
    "is_quiet",
    "log_level",
    "quiet_logs",
]

LOGGER = "restmcts.progress"


def format_duration(seconds: float) -> str:
    """Compact duration: "33s", "4m05s", "1h02m" (rounded down to the shown unit; negatives are 0)."""
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _format_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class Progress:
    """Progress of one phase; a context manager. See the module docstring."""

    def __init__(
        self,
        name: str,
        total: int,
        unit: str = "steps",
        stream: IO[str] | None = None,
        interval: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
        live: bool = True,
    ):
        """`live=False`: plain lines even on a terminal, for a phase whose units take minutes while other
        phases log in between (a bar would be torn by their lines): compare's runs."""
        if total is None or total < 0:
            raise ValueError(f"Progress({name!r}): total must be known and >= 0, got {total!r}")
        self.name = name
        self.total = int(total)
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.interval = float(interval)
        self.clock = clock
        self.log = logger or logging.getLogger(LOGGER)
        self.done = 0
        self.postfix: dict[str, Any] = {}
        self.summary: str | None = None  # set inside the `with` block; used by close() if none is given
        self.start = clock()
        self._last_line = self.start  # time of the last plain line (the first comes after one interval)
        self._closed = False
        self._bar: Any = None
        if live and _isatty(self.stream):
            self._bar = self._make_bar()

    # -- public API ---------------------------------------------------------------------------------

    def update(self, n: int = 1, **postfix: Any) -> None:
        """`n` more units done; keyword arguments are shown after the counts as key=value."""
        self._advance(self.done + n, postfix)

    def set(self, done: int, **postfix: Any) -> None:
        """Set the absolute number of units done (e.g. from a worker's cumulative counter)."""
        self._advance(done, postfix)

    def close(self, summary: str | None = None, failed: bool = False) -> str:
        """End the phase: log (and return) one summary line. A second call does nothing."""
        if self._closed:
            return ""
        self._closed = True
        if self._bar is not None:
            self._bar.n = self.done
            self._bar.refresh()
            self._bar.close()
        summary = summary if summary is not None else self.summary
        elapsed = self.elapsed()
        verb = "failed at" if failed else "done"
        line = f"{self.name}: {verb} {self.done}/{self.total} {self.unit} in {format_duration(elapsed)}"
        if summary:
            line += f" — {summary}"
        self.log.info("%s", line)
        return line

    def elapsed(self) -> float:
        return max(self.clock() - self.start, 0.0)

    def rate(self) -> float | None:
        """Units per second so far; None before the first unit."""
        elapsed = self.elapsed()
        if self.done <= 0 or elapsed <= 0:
            return None
        return self.done / elapsed

    def eta(self) -> float | None:
        """Seconds left at the rate so far; None before the first unit."""
        rate = self.rate()
        if rate is None:
            return None
        return max(self.total - self.done, 0) / rate

    def line(self) -> str:
        """The plain progress line (what the non-terminal path logs)."""
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        rate = self.rate()
        eta = self.eta()
        rate_text = "? " + self.unit + "/s" if rate is None else f"{_format_rate(rate)} {self.unit}/s"
        eta_text = "?" if eta is None else format_duration(eta)
        text = (
            f"{self.name}: {self.done}/{self.total} {self.unit}{pct} {rate_text}, "
            f"elapsed {format_duration(self.elapsed())}, ETA {eta_text}"
        )
        if self.postfix:
            text += ", " + ", ".join(f"{k}={_format_value(v)}" for k, v in self.postfix.items())
        return text

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)

    # -- internals ----------------------------------------------------------------------------------

    def _advance(self, done: int, postfix: dict[str, Any]) -> None:
        if self._closed:
            return
        self.done = max(int(done), 0)
        if postfix:
            self.postfix.update(postfix)
        if self._bar is not None:
            self._bar.n = self.done
            if postfix:
                self._bar.set_postfix({k: _format_value(v) for k, v in self.postfix.items()}, refresh=False)
            self._bar.refresh()
            return
        now = self.clock()
        if now - self._last_line >= self.interval:
            self._last_line = now
            self.log.info("%s", self.line())

    def _make_bar(self) -> Any:
        try:
            from tqdm import tqdm
        except ImportError:  # tqdm comes with transformers; without it, fall back to plain lines
            return None
        return tqdm(
            total=self.total,
            desc=self.name,
            unit=self.unit or "it",
            file=self.stream,
            dynamic_ncols=True,
            leave=True,
            mininterval=0.5,
        )


def _format_rate(rate: float) -> str:
    if rate >= 100:
        return f"{rate:.0f}"
    if rate >= 1:
        return f"{rate:.1f}"
    if rate >= 0.1:
        return f"{rate:.2f}"
    # minutes per unit (compare's runs): two significant digits, fixed point (0.017, 0.0012, not 0.00)
    return f"{rate:.{1 - math.floor(math.log10(rate))}f}"


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


# -- quiet libraries --------------------------------------------------------------------------------

# Set (unless the user set them) while quiet: read by huggingface_hub/transformers at import, so they
# reach the processes started afterwards (local Ray workers and actors inherit the driver's environment).
QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1"}
# (logger, message start): records hidden while quiet. A filter on a logger sees the records logged on
# that logger itself (DeepSpeed logs everything on its "DeepSpeed" logger, which does not propagate).
NOISE: tuple[tuple[str, str], ...] = (
    # every process without a GPU, when transformers first imports deepspeed (model build or load)
    ("DeepSpeed", "Setting accelerator to CPU"),
    # WarmupLR/WarmupDecayLR ask for the lr once before the first step, on every rank
    ("DeepSpeed", "Attempting to get learning rate from scheduler before it has started"),
)

_state = {"quiet": False}
_env_set: set[str] = set()  # variables quiet_logs set itself (taken back at DEBUG)


class _NoiseFilter(logging.Filter):
    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        if not _state["quiet"]:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to hide
            return True
        return not message.startswith(self.starts)


def log_level(level: str | int | None) -> int:
    """A logging level from a name ("INFO", "debug") or number; None and unknown names are INFO."""
    if isinstance(level, int):
        return level
    value = logging.getLevelName(str(level or "INFO").upper())
    return value if isinstance(value, int) else logging.INFO


def is_quiet() -> bool:
    """True after `quiet_logs` at a level above DEBUG."""
    return _state["quiet"]


def quiet_logs(level: str | int | None = "INFO") -> bool:
    """Hide the libraries' noise (see NOISE, QUIET_ENV) at `level` above DEBUG, show it at DEBUG.

    Idempotent; returns whether the noise is hidden. Environment variables the user set are kept.
    """
    quiet = log_level(level) > logging.DEBUG
    _state["quiet"] = quiet
    if quiet:
        for key, value in QUIET_ENV.items():
            if key not in os.environ:
                os.environ[key] = value
                _env_set.add(key)
    else:
        for key in list(_env_set):
            os.environ.pop(key, None)
            _env_set.discard(key)
    by_logger: dict[str, tuple[str, ...]] = {}
    for name, start in NOISE:
        by_logger[name] = (*by_logger.get(name, ()), start)
    for name, starts in by_logger.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoiseFilter) for f in logger.filters):
            logger.addFilter(_NoiseFilter(starts))
    return quiet
