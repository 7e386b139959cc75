"""Run metrics: one JSON line per event in metrics.jsonl, mirrored to Ray's metrics when Ray is up.

Events carry `event` (what happened), `round`, `time` (unix seconds) and free numeric/string fields.
Ray gauges (visible on the dashboard's metrics page / Prometheus) are created lazily and only when
`ray.is_initialized()`, so this module imports no Ray at import time.

An optional experiment tracker (`loop.tracker.make_tracker(cfg.tracker, run_dir, config)`) passed as
`MetricsLog(path, tracker=...)` receives every row written, as the same dict; `close()` closes it (also
at interpreter exit, for a run that stops before closing it); events after `close()` go to the file only.
"""

from __future__ import annotations

import atexit
import json
import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_GAUGES = ("round", "phase_index", "questions_searched", "expansions_per_s", "prm_batch_size", "accuracy")
RESERVED = ("event", "round", "time", "phase", "seconds")  # keys every event sets itself
PHASES = ("start", "search", "values", "sft", "prm", "reload", "eval")


class MetricsLog:
    def __init__(self, path: str | Path, tracker: Any = None):
        """`tracker`: anything with `log(row: dict)` and `close()` (see loop/tracker.py), or None."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tracker = tracker
        self._ray_gauges: dict[str, Any] | None = None
        if tracker is not None:  # a run that dies before its close() still finishes the tracker
            atexit.register(self._close_at_exit)

    def event(self, event: str, round: int | None = None, **fields: Any) -> dict[str, Any]:
        row = {"event": event, "round": round, "time": round_time(), **fields}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        self._to_ray(row)
        if self.tracker is not None:
            self.tracker.log(row)
        return row

    def close(self) -> None:
        """Close the tracker, if any (flush TensorBoard files, finish the wandb run). Safe twice."""
        if self.tracker is not None:
            tracker, self.tracker = self.tracker, None
            atexit.unregister(self._close_at_exit)
            tracker.close()

    def _close_at_exit(self) -> None:
        try:
            self.close()
        except Exception as e:  # at exit, a tracker that cannot finish must not hide the run's own error
            log.warning("closing the experiment tracker failed: %s: %s", type(e).__name__, e)

    @contextmanager
    def phase(self, name: str, round: int):
        """Time a phase; logs `phase_start` and `phase_end` (with seconds) events."""
        self.event("phase_start", round, phase=name)
        self._gauge("phase_index", PHASES.index(name) if name in PHASES else -1, round)
        t0 = time.monotonic()
        info: dict[str, Any] = {}
        yield info
        seconds = time.monotonic() - t0
        fields = {k: v for k, v in info.items() if k not in RESERVED}
        self.event("phase_end", round, phase=name, seconds=round_float(seconds), **fields)
        log.info("round %d: %s done in %.1f s", round, name, seconds)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        rows = []
        with open(self.path, encoding="utf-8") as f:
            lines = [line for line in f if line.strip()]
        for i, line in enumerate(lines):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                if i < len(lines) - 1:  # only the last line may be torn (a kill mid-append)
                    raise
        return rows

    def _to_ray(self, row: dict[str, Any]) -> None:
        for key in _GAUGES:
            if isinstance(row.get(key), int | float) and key != "round":
                self._gauge(key, row[key], row.get("round"))
        if row.get("round") is not None:
            self._gauge("round", row["round"], row["round"])

    def _gauge(self, name: str, value: float, round: int | None) -> None:
        try:
            import ray
        except ImportError:
            return
        if not ray.is_initialized():
            return
        if self._ray_gauges is None:
            from ray.util.metrics import Gauge

            self._ray_gauges = {g: Gauge(f"restmcts_{g}", description=f"restmcts {g}") for g in _GAUGES}
        self._ray_gauges[name].set(float(value))


def round_time() -> float:
    return round_float(time.time(), 3)


def round_float(x: float, digits: int = 3) -> float:
    return float(f"{x:.{digits}f}")
