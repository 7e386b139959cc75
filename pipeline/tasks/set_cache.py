"""Drawn question sets kept on disk, so a second start on the same seed does not draw them again.

Countdown's four sets (warm start, D_V0, held-out, train) cost 8.4 s on a quiet 2-core machine, mostly
the solver: ~146,000 reachability checks and ~22,700 gold solutions. A start drew the warm-start set
(5.5 s) three times (the train/held-out split avoids round 0's sets, then the warm start and the initial
PRM hash theirs): ~20 s at every start, also with round 0 cached. `sets.draw_distinct` asks this module first when a directory is set
(`keep_sets_in`, called by run.py with `<cache_dir>/sets`); without one nothing is read or written, and
a set that draws in under WORTH_KEEPING_S (all of arith's) is not kept.

Why a kept set can be trusted:
- its file is named by the hash of everything `draw_distinct` is given that can be written down (the
  random streams' names, the counts, the excluded keys, `what`) and of the source of
  `pipeline/tasks/*.py`, so an edited generator, solver or set rule never reads an old file;
- what cannot be written down, the sample function's own parameters (countdown's number and target
  ranges live in its closure), is checked by a probe: the hash of the keys of the first `PROBE` samples
  of each difficulty's stream, drawn without building anything (~25 ms). A changed range changes those
  keys: a shifted bound at once, the subtlest change (one more possible target, taken by 1 draw in 128)
  within 2,048 samples but for a chance of 1e-7. A file whose probe differs is drawn again.

File `<dir>/<first stream>-<hash>.json`: {"version", "what", "probes": [hex digest per difficulty],
"questions": [[Question dict, ...] per difficulty]}, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.records import Question, from_dict, to_dict

log = logging.getLogger(__name__)

VERSION = 1  # bump when the file layout changes
PROBE = 2048  # samples per difficulty whose keys must match the kept file's (see the docstring)
# A set drawn faster than this is not kept: reading and probing it would cost about as much (arith's
# sets draw in ~0.05 s; countdown's warm-start set in ~5.5 s, its held-out set in ~1 s on 2 cores).
WORTH_KEEPING_S = 0.25
_state: dict[str, Any] = {"dir": None, "fingerprint": None}
STATS = {"read": 0, "drawn": 0}  # sets read from files / drawn and written, since keep_sets_in


def keep_sets_in(directory: str | Path | None) -> Path | None:
    """Read and write drawn sets under `directory` (None: off, the default). Returns the previous one."""
    previous = _state["dir"]
    _state["dir"] = Path(directory) if directory is not None else None
    STATS.update(read=0, drawn=0)
    return previous


def set_file(streams: list[str], counts: dict[int, int], exclude: set, what: str) -> Path | None:
    """Where the draw with these inputs is kept, or None when no directory is set."""
    if _state["dir"] is None:
        return None
    h = hashlib.sha256()
    h.update(json.dumps([VERSION, _fingerprint(), streams, list(counts.items()), what]).encode())
    for key in sorted(repr(k) for k in exclude):  # tuples of ints or strings: repr is stable
        h.update(key.encode() + b"\0")
    first = (streams[0] if streams else "set").replace("/", "-")
    return _state["dir"] / f"{first}-{h.hexdigest()[:16]}.json"


def probe(sample: Callable[[random.Random, int], Any], stream: str, difficulty: int) -> str:
    """Hash of the keys of the first PROBE samples of a stream (None for a rejected sample); nothing
    is built, so this costs only the random draws."""
    rng = random.Random(stream)
    h = hashlib.sha256()
    for _ in range(PROBE):
        drawn = sample(rng, difficulty)
        h.update(repr(None if drawn is None else drawn[0]).encode() + b"\0")
    return h.hexdigest()


def load(path: Path | None, probes: Callable[[], list[str]]) -> list[list[Question]] | None:
    """The kept questions per difficulty, or None: no directory or file, an unreadable or older file,
    or a probe that differs (the sample function's parameters changed). `probes()` gives this draw's
    probes; it runs only when there is a file to check."""
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != VERSION:
            return None
        if data["probes"] != probes():
            log.info("question set %s was drawn with other parameters; drawing it again", path.name)
            return None
        per_d = [[from_dict(Question, q) for q in qs] for qs in data["questions"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:  # torn or foreign: redraw
        log.warning("question set cache %s unreadable (%s); drawing the set again", path, e)
        return None
    STATS["read"] += 1
    return per_d


def save(path: Path, what: str, probes: list[str], per_d: list[list[Question]]) -> None:
    data = {
        "version": VERSION,
        "what": what,
        "probes": probes,
        "questions": [[to_dict(q) for q in qs] for qs in per_d],
    }
    _atomic_write(path, data)
    STATS["drawn"] += 1


def _fingerprint() -> str:
    """Hash of the task generators' source (pipeline/tasks/*.py), once per process."""
    if _state["fingerprint"] is None:
        h = hashlib.sha256()
        for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
            h.update(path.name.encode() + b"\0" + path.read_bytes())
        _state["fingerprint"] = h.hexdigest()
    return _state["fingerprint"]


def _atomic_write(path: Path, data: Any) -> None:
    """JSON to a temp file beside `path`, renamed into place: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, separators=(",", ":"))
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is shared like round 0's
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
