"""How a built-in task draws its question sets, for arith and countdown alike.

Round 0's sets (the warm-start set and D_V0) are drawn first and never depend on the train/held-out
sizes, so one cached round 0 serves runs of any size; the held-out set avoids them, the train set avoids
both and the held-out set, and the held-out set does not depend on `train_size`. Every set is drawn per
difficulty from its own random stream, named by the task, the set and the difficulty (string seeds are
hashed with sha512: stable across runs and machines), and interleaved by difficulty so that any prefix
or shard of a set mixes them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from pipeline.records import Question
from pipeline.tasks import set_cache

# sample(rng, difficulty) -> None (rejected) or (key, build): `key` says which questions are the same;
# build() -> the Question, or None when it turns out unusable (e.g. unsolvable).
Sample = Callable[[random.Random, int], "tuple[Hashable, Callable[[], Question | None]] | None"]


def even_counts(n: int, difficulties: Sequence[int]) -> dict[int, int]:
    """`n` spread evenly over `difficulties`, earlier ones getting the remainder (repeats add up)."""
    k, counts = len(difficulties), {}
    for i, d in enumerate(difficulties):
        counts[d] = counts.get(d, 0) + n // k + (1 if i < n % k else 0)
    return counts


def draw_distinct(
    counts: dict[int, int],
    stream: Callable[[int], str],
    sample: Sample,
    exclude: set,
    max_tries: Callable[[int], int],
    what: str,
) -> list[Question]:
    """`counts[d]` questions of each difficulty d, distinct by key and none keyed in `exclude`, drawn
    from `random.Random(stream(d))`; interleaved by difficulty. ValueError naming `what` when
    `max_tries(count)` draws do not find enough.

    After `set_cache.keep_sets_in(dir)`, a set an identical earlier draw kept there is read instead
    (the expensive part is `build()`: countdown's solver); see pipeline/tasks/set_cache.py."""
    names = [stream(d) for d in counts]
    path = set_cache.set_file(names, counts, exclude, what)

    def probes() -> list[str]:
        return [set_cache.probe(sample, n, d) for n, d in zip(names, counts, strict=True)]

    per_d = set_cache.load(path, probes)
    if per_d is None:
        t0 = time.monotonic()
        per_d = _draw(counts, names, sample, exclude, max_tries, what)
        if path is not None and time.monotonic() - t0 >= set_cache.WORTH_KEEPING_S:
            set_cache.save(path, what, probes(), per_d)
    mixed: list[Question] = []
    for i in range(max(map(len, per_d), default=0)):
        mixed.extend(qs[i] for qs in per_d if i < len(qs))
    return mixed


def _draw(counts, names, sample, exclude, max_tries, what) -> list[list[Question]]:
    """The questions of each difficulty, in the order of `counts` (see draw_distinct)."""
    seen = set(exclude)
    per_d: list[list[Question]] = []
    for (d, count), name in zip(counts.items(), names, strict=True):
        rng = random.Random(name)
        out: list[Question] = []
        tries = 0
        while len(out) < count:
            tries += 1
            if tries > max_tries(count):
                raise ValueError(f"cannot find {count} distinct {what} of difficulty {d}")
            drawn = sample(rng, d)
            if drawn is None or drawn[0] in seen:
                continue
            question = drawn[1]()
            if question is None:
                continue
            seen.add(drawn[0])
            out.append(question)
        per_d.append(out)
    return per_d


def warm_counts(task_cfg: Any, max_difficulty: int) -> dict[int, int]:
    """Difficulty counts of the warm-start set: `warm_size` over `warm_difficulties`, of which a share
    `warm_long_fraction` (rounded) is longer: difficulties above max(warm_difficulties) up to the largest
    train/held-out difficulty, each next one getting half the share of the previous (2:1 as in the
    calibration of docs/MEASURED). This share decides how far round 0 sits from the frontier."""
    warm = list(task_cfg.warm_difficulties)
    top = max([*task_cfg.train_difficulties, *task_cfg.heldout_difficulties, max(warm) + 1])
    longer = list(range(max(warm) + 1, min(top, max_difficulty) + 1))
    n_long = round(task_cfg.warm_size * task_cfg.warm_long_fraction) if longer else 0
    weights = [2.0**-i for i in range(len(longer))]
    counts = {d: int(n_long * w / sum(weights)) for d, w in zip(longer, weights, strict=True)}
    if longer:
        counts[longer[0]] += n_long - sum(counts.values())
    counts = {d: c for d, c in counts.items() if c > 0}
    for d, c in even_counts(task_cfg.warm_size - n_long, warm).items():
        counts[d] = counts.get(d, 0) + c
    return counts


def dv0_counts(task_cfg: Any) -> dict[int, int]:
    """D_V0's `dv0_size` questions over `dv0_difficulties` (empty: the train difficulties)."""
    difficulties = list(task_cfg.dv0_difficulties) or list(task_cfg.train_difficulties)
    return even_counts(task_cfg.dv0_size, difficulties)


def task_split(
    task_cfg: Any,
    seed: int,
    draw: Callable[[dict[int, int], str, set], list[Question]],
    key: Callable[[Question], Hashable],
    max_difficulty: int,
) -> tuple[list[Question], list[Question]]:
    """(train, heldout): `train_size` questions over `train_difficulties` and `heldout_size` over
    `heldout_difficulties`, disjoint from each other and from round 0's data (see the module docstring).
    `draw(counts, set_name, exclude_keys)` is the task's drawing function."""
    reserved = {key(q) for q in draw(warm_counts(task_cfg, max_difficulty), f"{seed}/warm", set())}
    reserved |= {key(q) for q in draw(dv0_counts(task_cfg), f"{seed}/dv0", set())}
    heldout_counts = even_counts(task_cfg.heldout_size, list(task_cfg.heldout_difficulties))
    heldout = draw(heldout_counts, f"{seed}/heldout", reserved)
    train_counts = even_counts(task_cfg.train_size, list(task_cfg.train_difficulties))
    train = draw(train_counts, f"{seed}/train", reserved | {key(q) for q in heldout})
    return train, heldout
