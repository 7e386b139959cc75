"""The exact Countdown solver (standard library only): the legal steps from a multiset and, memoised on
the sorted multiset, whether and in how few steps a target can be made. Rules: pipeline.tasks.countdown.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache

OPS = ("+", "-", "*", "/")


def apply_op(op: str, a: int, b: int) -> int | None:
    """Exact value of `a op b`; None for a division that is not exact."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return a // b if b and a % b == 0 else None


def remove_pair(state: Sequence[int], a: int, b: int) -> tuple[int, ...] | None:
    """`state` without the first copy of a and then of b (order kept); None if either is missing."""
    rest = list(state)
    for x in (a, b):
        if x not in rest:
            return None
        rest.remove(x)
    return tuple(rest)


def moves(state: tuple[int, ...]) -> Iterator[tuple[int, str, int, int, tuple[int, ...]]]:
    """Every legal step from `state` once per value pair: (a, op, b, result, canonical next state)."""
    seen = set()
    for i in range(len(state)):
        for j in range(i + 1, len(state)):
            a, b = max(state[i], state[j]), min(state[i], state[j])
            if (a, b) in seen:
                continue
            seen.add((a, b))
            rest = remove_pair(state, a, b)
            for op in OPS:
                r = apply_op(op, a, b)
                if r is not None and r > 0:
                    yield a, op, b, r, (r, *rest)  # type: ignore[misc]


@lru_cache(maxsize=1 << 16)  # ~1 kB an entry
def _children(key: tuple[int, ...]) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """(result, sorted next multiset) of every legal step from the sorted multiset `key`, deduplicated."""
    return tuple(dict.fromkeys((r, tuple(sorted(nxt))) for *_, r, nxt in moves(key)))


@lru_cache(maxsize=1 << 18)  # ~0.25 kB an entry: the caches stay under ~150 MB
def within_steps(key: tuple[int, ...], target: int, k: int) -> bool:
    """Can the sorted multiset `key` hold the target after at most k steps?"""
    if target in key:
        return True
    children = _children(key) if k > 0 else ()
    return any(r == target for r, _ in children) or (
        k > 1 and any(within_steps(nxt, target, k - 1) for _, nxt in children if len(nxt) > 1)
    )


@lru_cache(maxsize=1 << 16)
def can_finish(key: tuple[int, ...], target: int) -> bool:
    """Is there a sequence of >= 1 steps from `key` whose last result is the target?"""
    return any(r == target or (len(nxt) > 1 and can_finish(nxt, target)) for r, nxt in _children(key))


def clear_cache() -> None:
    """Free the solver's memo tables (they are bounded, so this is optional)."""
    for f in (_children, within_steps, can_finish):
        f.cache_clear()


def reachable(numbers: Sequence[int], target: int) -> bool:
    """Can the target be made from this multiset (a number equal to the target counts as made)?
    Memoised on the sorted multiset: cheap to call on many states of one question."""
    key = tuple(sorted(numbers))
    return within_steps(key, target, len(key) - 1)


def shortest_length(numbers: Sequence[int], target: int) -> int | None:
    """Fewest steps to make the target (0 if it is given); None when unsolvable."""
    key = tuple(sorted(numbers))
    return next((k for k in range(len(key)) if within_steps(key, target, k)), None)
