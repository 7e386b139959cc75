"""Experiment trackers (`tracker=none|tensorboard|wandb`): every metrics.jsonl event, as scalars.

    tracker = make_tracker(cfg.tracker, run.root, config=OmegaConf.to_container(cfg, resolve=True))
    metrics = MetricsLog(run.metrics_file, tracker=tracker)   # every event now also goes to the tracker
    ...
    metrics.close()                                           # or tracker.close(): flush and finish

An event is one metrics.jsonl row: `{"event": ..., "round": k, "time": ..., "phase": ..., <fields>}`.
Each numeric field becomes a scalar tagged `<event>/<field>`, or `<event>/<phase>/<field>` when the
event names a phase (`phase_end/search/seconds`); nested dicts are flattened with "/"; strings, lists,
None and the bookkeeping keys (`event`, `round`, `time`, `phase`) are not logged. The x axis is the
round (so `eval/acc_cot` is held-out greedy accuracy per self-training iteration). An event carrying an
integer `step` (a training job's progress report: `{"event": "train", "phase": "sft", "step": 40,
"loss": 0.7}`) is a loss curve instead: its x axis is a running step per tag prefix that keeps growing
when a later job starts again from step 0, so the rounds' curves sit end to end.

TensorBoard event files go under `<run_dir>/tensorboard/` (`tensorboard --logdir runs/<name>/tensorboard`);
wandb runs offline unless `WANDB_MODE` is set (`wandb sync runs/<name>/wandb/offline-run-*` uploads one
later), project `restmcts` unless `WANDB_PROJECT` is set, files under `<run_dir>/wandb/`. Neither
package is a hard dependency: a missing one raises `TrackerError` naming the pip extra.

Resume: a run started again on its directory continues its tracker. The wandb run id is kept in
`<run_dir>/wandb/run_id` and passed with `resume="allow"`, so online the same wandb run goes on; offline,
each start writes a fragment `offline-run-<time>-<id>` under the same id, and `wandb sync` uploads the
fragments of one id as one run, in start order. (wandb never appends to an offline directory it has
finished: given the first start's time again it writes `offline-run-<time>-<id>-1` beside it, measured
with wandb 0.23; so one wandb run directory per resume is what offline resuming can be.) Both trackers first read the run's `metrics.jsonl`, so
the x axes continue where the interrupted start left them (a loss curve does not restart at step 0).
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import string
from pathlib import Path
from typing import Any

from conf.load import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "KINDS",
    "NoTracker",
    "TensorBoardTracker",
    "Tracker",
    "TrackerError",
    "WandbTracker",
    "make_tracker",
]

KINDS = ("none", "tensorboard", "wandb")
SKIP = ("event", "round", "time", "phase")  # bookkeeping keys, never scalars
RUN_ID_FILE = "run_id"  # under <run_dir>/wandb/: the wandb run a resumed run continues


class TrackerError(ConfigError):
    """The chosen tracker cannot start (its package is missing); the message is one line."""


class Tracker:
    """Base tracker: turns events into `(tag, value)` scalars with a step; subclasses write them."""

    kind = "none"

    def __init__(self) -> None:
        self._calls: dict[str, int] = {}  # events without a round: their own running count per prefix
        self._last_step: dict[str, int] = {}  # training curves: last raw step seen per prefix
        self._step_offset: dict[str, int] = {}

    def log(self, event: dict[str, Any]) -> None:
        """Send one metrics.jsonl row (see the module docstring for tags and steps)."""
        prefix = _prefix(event)
        scalars = scalars_of(event)
        if not scalars:
            return
        step, axis = self._step(prefix, event)
        try:
            self._write(prefix, scalars, step, axis, event)
        except Exception as e:  # a tracker must never kill a run; the jsonl still has everything
            log.warning("tracker %s: could not log %s (%s: %s)", self.kind, prefix, type(e).__name__, e)

    def close(self) -> None:
        """Flush and finish. Safe to call twice."""

    def catch_up(self, events: list[dict[str, Any]]) -> None:
        """Advance the x axes over events an earlier start already sent (nothing is written), so a
        resumed run's points land after them."""
        for event in events:
            if scalars_of(event):
                self._step(_prefix(event), event)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------------

    def _step(self, prefix: str, event: dict[str, Any]) -> tuple[int, str]:
        """(step, axis name): "step" for training curves, else "round"."""
        raw = event.get("step")
        if isinstance(raw, int) and not isinstance(raw, bool):
            last = self._last_step.get(prefix)
            if last is not None and raw < last:  # a new job restarted at 0: continue after the last one
                self._step_offset[prefix] = self._step_offset.get(prefix, 0) + last
            self._last_step[prefix] = raw
            return self._step_offset.get(prefix, 0) + raw, "step"
        k = event.get("round")
        if isinstance(k, int) and not isinstance(k, bool):
            return k, "round"
        n = self._calls.get(prefix, 0)
        self._calls[prefix] = n + 1
        return n, "round"

    def _write(self, prefix: str, scalars: dict[str, float], step: int, axis: str, event: dict) -> None:
        pass


class NoTracker(Tracker):
    """`tracker=none`: logs nothing."""

    def log(self, event: dict[str, Any]) -> None:
        return None


class TensorBoardTracker(Tracker):
    kind = "tensorboard"

    def __init__(self, run_dir: Path, config: dict[str, Any] | None = None):
        super().__init__()
        try:
            import tensorboard  # noqa: F401  (torch's writer needs it; check first for a clear error)
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise TrackerError(_missing("tensorboard")) from e
        self.logdir = Path(run_dir) / "tensorboard"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(self.logdir), flush_secs=30)
        if config:
            self.writer.add_text("config", _config_markdown(config), 0)
        self._closed = False

    def _write(self, prefix: str, scalars: dict[str, float], step: int, axis: str, event: dict) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(f"{prefix}/{name}", value, step)
        self.writer.flush()  # events are few (tens per round): flush so a live `tensorboard` sees them

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.writer.close()


class WandbTracker(Tracker):
    kind = "wandb"

    def __init__(self, run_dir: Path, config: dict[str, Any] | None = None):
        super().__init__()
        try:
            import wandb
        except ImportError as e:
            raise TrackerError(_missing("wandb")) from e
        self.wandb = wandb
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.run_id = _wandb_run_id(run_dir)
        self.run = wandb.init(
            mode=os.environ.get("WANDB_MODE", "offline"),
            id=self.run_id,
            resume="allow",  # the same id again continues that run (offline: a fragment of it)
            dir=str(run_dir),
            project=os.environ.get("WANDB_PROJECT", "restmcts"),
            name=run_dir.name,
            group=run_dir.name,
            config=config or {},
        )
        self._defined: set[str] = set()
        self._closed = False

    def _write(self, prefix: str, scalars: dict[str, float], step: int, axis: str, event: dict) -> None:
        # wandb's own step must only grow, and rounds and training steps interleave: each tag gets its
        # own x axis ("round" or "<prefix>/step") via define_metric instead.
        axis_key = "round" if axis == "round" else f"{prefix}/step"
        row: dict[str, Any] = {axis_key: step}
        for name, value in scalars.items():
            tag = f"{prefix}/{name}"
            if tag not in self._defined:
                if axis_key not in self._defined:
                    self.run.define_metric(axis_key, hidden=True)
                    self._defined.add(axis_key)
                self.run.define_metric(tag, step_metric=axis_key)
                self._defined.add(tag)
            row[tag] = value
        self.run.log(row)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.run.finish()


def make_tracker(kind: str, run_dir: str | Path, config: Any = None) -> Tracker:
    """The tracker for `tracker=<kind>` writing under `run_dir`; `config` (a dict or OmegaConf node,
    optional) is recorded with the run. Raises TrackerError when the package of `kind` is missing."""
    kind = str(kind or "none").lower()
    if config is not None and not isinstance(config, dict):
        from omegaconf import OmegaConf

        config = OmegaConf.to_container(config, resolve=True)
    if kind == "none":
        return NoTracker()
    if kind == "tensorboard":
        tracker: Tracker = TensorBoardTracker(Path(run_dir), config)
    elif kind == "wandb":
        tracker = WandbTracker(Path(run_dir), config)
    else:
        raise TrackerError(f"bad value for 'tracker': {kind!r}; allowed: {', '.join(KINDS)}")
    tracker.catch_up(_earlier_events(Path(run_dir) / "metrics.jsonl"))
    return tracker


def _wandb_run_id(run_dir: Path) -> str:
    """The run's wandb id: read from `<run_dir>/wandb/run_id`, or made (8 characters, as wandb's own
    ids) and kept there on the first start."""
    path = run_dir / "wandb" / RUN_ID_FILE
    if path.is_file():
        kept = path.read_text(encoding="utf-8").strip()
        if kept:
            return kept
    alphabet = string.ascii_lowercase + string.digits
    run_id = "".join(secrets.choice(alphabet) for _ in range(8))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n", encoding="utf-8")
    return run_id


def _earlier_events(path: Path) -> list[dict[str, Any]]:
    """The rows of an existing metrics.jsonl (a torn last line, from a killed run, is skipped)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def scalars_of(event: dict[str, Any]) -> dict[str, float]:
    """The event's numeric fields, nested dicts flattened with "/"; bookkeeping keys and NaN dropped."""
    out: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}/{k}" if prefix else str(k), v)
        elif isinstance(value, int | float):  # bools are ints: logged as 0/1
            x = float(value)
            if not math.isnan(x):
                out[prefix] = x

    for key, value in event.items():
        if key in SKIP or (key == "step" and isinstance(value, int)):
            continue
        walk(str(key), value)
    return out


def _prefix(event: dict[str, Any]) -> str:
    name = str(event.get("event") or "event")
    phase = event.get("phase")
    return f"{name}/{phase}" if phase else name


def _missing(extra: str) -> str:
    return f'tracker={extra} needs: pip install -e ".[{extra}]"  (or: pip install {extra})'


def _config_markdown(config: dict[str, Any]) -> str:
    return "```\n" + json.dumps(config, indent=2, default=str, sort_keys=True) + "\n```"
