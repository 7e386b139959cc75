"""Progress lines of the loop's phases: `pipeline.progress` (pure, so the training workers use it too).

Re-exported here so the loop's code reads `from loop.progress import Progress`; see pipeline/progress.py.
"""

from __future__ import annotations

from pipeline.progress import LOGGER, Progress, format_duration

__all__ = ["LOGGER", "Progress", "format_duration"]
