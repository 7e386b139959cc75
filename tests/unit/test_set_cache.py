"""pipeline.tasks.set_cache: a drawn set is kept and read back identical, without calling build();
a draw with other parameters (ranges hidden in the sample function, exclusions, streams) is not served
from another draw's file; a torn file is drawn again."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from pipeline.tasks import countdown, set_cache, sets


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(set_cache, "WORTH_KEEPING_S", 0.0)  # these small sets draw in milliseconds
    previous = set_cache.keep_sets_in(tmp_path / "sets")
    yield tmp_path / "sets"
    set_cache.keep_sets_in(previous)


def _task(**over):
    cfg = dict(
        train_size=24,
        heldout_size=18,
        train_difficulties=[3, 4, 4],
        heldout_difficulties=[3, 4],
        warm_difficulties=[3, 4],
        warm_size=300,
        warm_long_fraction=0.0,
        max_number=20,
        min_target=10,
        max_target=100,
        dv0_size=60,
        dv0_difficulties=[],
    )
    return SimpleNamespace(**{**cfg, **over})


def _no_solver(monkeypatch):
    """From here on the solver fails the test: a set read from the cache never builds a question."""

    def boom(*args, **kwargs):
        raise AssertionError("the solver ran: the set was drawn, not read")

    monkeypatch.setattr(countdown, "reachable", boom)
    monkeypatch.setattr(countdown, "shortest_solution", boom)


def test_off_by_default_writes_nothing(tmp_path):
    assert set_cache.keep_sets_in(None) is None
    countdown.make_task_split(_task(), seed=0)
    assert set_cache.STATS == {"read": 0, "drawn": 0}


def test_second_split_is_read_identical_without_the_solver(cache, monkeypatch):
    plain_split = _uncached(lambda: countdown.make_task_split(_task(), seed=0))
    plain_warm = _uncached(lambda: countdown.warm_start_set(_task(), seed=0))
    first = countdown.make_task_split(_task(), seed=0)
    assert first == plain_split
    assert set_cache.STATS == {"read": 0, "drawn": 4}  # warm, dv0, heldout, train
    assert len(list(cache.glob("countdown-0-*.json"))) == 4
    _no_solver(monkeypatch)
    set_cache.STATS.update(read=0, drawn=0)
    assert countdown.make_task_split(_task(), seed=0) == first
    assert countdown.warm_start_set(_task(), seed=0) == plain_warm
    assert set_cache.STATS == {"read": 5, "drawn": 0}


def test_other_range_or_seed_is_not_served_from_the_file(cache, monkeypatch):
    countdown.warm_start_set(_task(), seed=0)
    # the ranges name the file (through the set's description); the probe checks the sampler too
    wider = countdown.warm_start_set(_task(max_target=101), seed=0)
    assert wider == _uncached(lambda: countdown.warm_start_set(_task(max_target=101), seed=0))
    assert set_cache.STATS == {"read": 0, "drawn": 2}
    assert len(list(cache.glob("*.json"))) == 2  # both kept, side by side
    countdown.warm_start_set(_task(), seed=1)
    assert set_cache.STATS["drawn"] == 3


def test_exclusions_name_the_file(cache):
    a = countdown.generate(10, [3], seed=0)
    b = countdown.generate(10, [3], seed=0, exclude={a[0].content})
    assert a[0] not in b and a[1:] == b[:9]
    assert set_cache.STATS == {"read": 0, "drawn": 2}


def test_torn_or_foreign_file_is_drawn_again(cache):
    fresh = countdown.generate(12, [3, 4], seed=0)
    (path,) = cache.glob("*.json")
    path.write_text(path.read_text()[:100])  # torn by a kill during a write by an older version
    assert countdown.generate(12, [3, 4], seed=0) == fresh
    data = json.loads(path.read_text())
    data["questions"][0][0]["content"] = "tampered"
    data["probes"][0] = "0" * 64  # another draw's file under this name
    path.write_text(json.dumps(data))
    assert countdown.generate(12, [3, 4], seed=0) == fresh
    assert set_cache.STATS == {"read": 0, "drawn": 3}


def test_a_changed_generator_source_is_a_new_file(cache, monkeypatch):
    countdown.generate(5, [3], seed=0)
    monkeypatch.setitem(set_cache._state, "fingerprint", "another version of pipeline/tasks")
    countdown.generate(5, [3], seed=0)
    assert set_cache.STATS == {"read": 0, "drawn": 2} and len(list(cache.glob("*.json"))) == 2


def test_sets_module_draws_the_same_with_and_without_a_cache(cache):
    def sample(rng, d):
        x = rng.randint(1, 50)
        return (x, lambda: None if x % 7 == 0 else _question(x, d)) if x % 3 else None

    args = ({1: 5, 2: 4}, lambda d: f"t/{d}", sample, {5}, lambda c: 1000, "toy")
    kept = sets.draw_distinct(*args)
    assert sets.draw_distinct(*args) == kept == _uncached(lambda: sets.draw_distinct(*args))
    assert set_cache.STATS == {"read": 1, "drawn": 1}


def _question(x, d):
    from pipeline.records import Question

    return Question(id=f"{d}-{x}", content=str(x), difficulty=d, solution=(f"{x}",))


def _uncached(fn):
    """fn() with no cache directory (and the counters untouched)."""
    previous, set_cache._state["dir"] = set_cache._state["dir"], None
    try:
        return fn()
    finally:
        set_cache._state["dir"] = previous


def test_a_set_that_draws_fast_is_not_kept(tmp_path, monkeypatch):
    previous = set_cache.keep_sets_in(tmp_path / "sets")
    try:
        monkeypatch.setattr(set_cache, "WORTH_KEEPING_S", 3600.0)
        countdown.generate(5, [3], seed=0)
        assert set_cache.STATS == {"read": 0, "drawn": 0} and not (tmp_path / "sets").exists()
        monkeypatch.setattr(set_cache, "probe", None)  # no file to check: the probe is not drawn
        countdown.generate(5, [3], seed=0)
    finally:
        set_cache.keep_sets_in(previous)
