"""loop.tracker: every metrics.jsonl event reaches the tracker; TensorBoard files read back with the
eval accuracies per round; wandb offline writes a run directory; a missing extra is a one-line error."""

from __future__ import annotations

import json
import sys

import pytest

import loop.metrics as metrics
from loop.metrics import MetricsLog
from loop.tracker import NoTracker, Tracker, TrackerError, make_tracker, scalars_of

ACC = {0: (0.435, 0.422), 1: (0.457, 0.448), 2: (0.465, 0.46)}


def _run_events(m: MetricsLog) -> None:
    for k, (cot, mcts) in ACC.items():
        with m.phase("search", k) as info:
            info.update(shards=13, traces=120 + k, note="text is not a scalar")
        for step in (10, 20, 30):  # a training job's loss curve; each round's job starts again at 0
            m.event("train", k, phase="sft", step=step, loss=1.0 / (k + 1) / step)
        m.event("eval", k, acc_cot=cot, acc_mcts=mcts, prm_step_auc=0.8)


class Recorder(Tracker):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, dict, int, str]] = []
        self.closed = False

    def _write(self, prefix, scalars, step, axis, event):
        self.rows.append((prefix, scalars, step, axis))

    def close(self):
        self.closed = True


def test_scalars_and_steps(tmp_path):
    assert scalars_of({"event": "eval", "round": 1, "time": 5.0, "acc_cot": 0.5, "name": "x"}) == {
        "acc_cot": 0.5
    }
    assert scalars_of({"event": "e", "info": {"a": 1, "b": {"c": 2.5}}, "xs": [1, 2]}) == {
        "info/a": 1.0,
        "info/b/c": 2.5,
    }
    rec = Recorder()
    m = MetricsLog(tmp_path / "metrics.jsonl", tracker=rec)
    _run_events(m)
    m.close()
    assert rec.closed
    evals = [(r[1]["acc_cot"], r[2]) for r in rec.rows if r[0] == "eval"]
    assert evals == [(0.435, 0), (0.457, 1), (0.465, 2)]
    train = [r[2] for r in rec.rows if r[0] == "train/sft"]
    assert train == [10, 20, 30, 40, 50, 60, 70, 80, 90]  # running step across the rounds' jobs
    search = [r for r in rec.rows if r[0] == "phase_end/search"]
    assert [r[2] for r in search] == [0, 1, 2] and set(search[0][1]) == {"seconds", "shards", "traces"}
    assert not [r for r in rec.rows if r[0].startswith("phase_start")]  # no numeric fields: nothing logged


def test_jsonl_unchanged_by_a_tracker(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "round_time", lambda: 1700000000.0)
    monkeypatch.setattr(metrics.time, "monotonic", lambda: 5.0)
    _run_events(MetricsLog(tmp_path / "a.jsonl"))
    _run_events(MetricsLog(tmp_path / "b.jsonl", tracker=Recorder()))
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_none_tracker(tmp_path):
    t = make_tracker("none", tmp_path, {"seed": 0})
    assert isinstance(t, NoTracker)
    t.log({"event": "eval", "round": 0, "acc_cot": 0.5})
    t.close()
    assert list(tmp_path.iterdir()) == []


def test_tensorboard_event_files_read_back(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    m = MetricsLog(tmp_path / "metrics.jsonl", tracker=make_tracker("tensorboard", tmp_path, {"seed": 0}))
    _run_events(m)
    m.close()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"eval/acc_cot", "eval/acc_mcts", "train/sft/loss", "phase_end/search/seconds"} <= set(tags)
    cot = [(e.step, round(e.value, 4)) for e in acc.Scalars("eval/acc_cot")]
    assert cot == [(k, v[0]) for k, v in ACC.items()]
    assert [e.step for e in acc.Scalars("train/sft/loss")] == [10, 20, 30, 40, 50, 60, 70, 80, 90]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["acc_cot"] for r in rows if r["event"] == "eval"] == [v[0] for v in ACC.values()]


def test_wandb_offline_writes_a_run_directory(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # default: offline
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    tracker = make_tracker("wandb", tmp_path, {"seed": 0, "tracker": "wandb"})
    m = MetricsLog(tmp_path / "metrics.jsonl", tracker=tracker)
    _run_events(m)
    m.close()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("*.wandb"))


@pytest.mark.parametrize("kind", ["tensorboard", "wandb"])
def test_missing_extra_is_a_one_line_error(tmp_path, monkeypatch, kind):
    monkeypatch.setitem(sys.modules, kind, None)  # `import <kind>` now raises ImportError
    with pytest.raises(TrackerError) as e:
        make_tracker(kind, tmp_path, None)
    msg = str(e.value)
    assert "\n" not in msg and f'pip install -e ".[{kind}]"' in msg and msg.startswith(f"tracker={kind}")


def test_bad_kind(tmp_path):
    with pytest.raises(TrackerError, match="allowed: none, tensorboard, wandb"):
        make_tracker("mlflow", tmp_path, None)


class FakeWandbRun:
    def __init__(self, kwargs):
        self.kwargs, self.rows, self.finished = kwargs, [], False

    def define_metric(self, *args, **kwargs):
        pass

    def log(self, row):
        self.rows.append(row)

    def finish(self):
        self.finished = True


def _fake_wandb(monkeypatch):
    import types

    runs: list[FakeWandbRun] = []

    def init(**kwargs):
        runs.append(FakeWandbRun(kwargs))
        return runs[-1]

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    return runs


def test_a_resumed_run_continues_its_wandb_run_and_axes(tmp_path, monkeypatch):
    """Start, stop, start again on the same run directory: one wandb id (kept in the run directory),
    resume allowed, and the second start's loss curve continues after the first's."""
    runs = _fake_wandb(monkeypatch)
    first = MetricsLog(tmp_path / "metrics.jsonl", tracker=make_tracker("wandb", tmp_path, {"seed": 0}))
    for step in (10, 20):
        first.event("train", 1, phase="sft", step=step, loss=0.5)
    first.event("eval", 0, acc_cot=0.4)
    first.close()
    second = MetricsLog(tmp_path / "metrics.jsonl", tracker=make_tracker("wandb", tmp_path, {"seed": 0}))
    second.event("train", 2, phase="sft", step=10, loss=0.3)  # the next round's job starts at 0 again
    second.event("note", None, value=1.0)
    second.close()
    kept = (tmp_path / "wandb" / "run_id").read_text().strip()
    assert len(kept) == 8 and [r.kwargs["id"] for r in runs] == [kept, kept]
    assert all(r.kwargs["resume"] == "allow" and r.finished for r in runs)
    assert runs[1].rows[0] == {"train/sft/step": 30, "train/sft/loss": 0.3}  # after 20, not at 10
    other = tmp_path / "other"
    make_tracker("wandb", other, None).close()
    assert runs[2].kwargs["id"] != kept  # another run directory, another wandb run


def test_resumed_tensorboard_steps_continue(tmp_path):
    rec = Recorder()
    m = MetricsLog(tmp_path / "metrics.jsonl", tracker=rec)
    for step in (10, 20):
        m.event("train", 1, phase="sft", step=step, loss=1.0)
    m.close()
    (tmp_path / "metrics.jsonl").open("a").write('{"event": "train", "ro')  # torn by a kill
    again = Recorder()
    again.catch_up([json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()[:2]])
    again.log({"event": "train", "round": 2, "phase": "sft", "step": 5, "loss": 0.5})
    assert again.rows == [("train/sft", {"loss": 0.5}, 25, "step")]
    from loop.tracker import _earlier_events

    assert len(_earlier_events(tmp_path / "metrics.jsonl")) == 2  # the torn line is skipped


def test_wandb_offline_resume_keeps_one_run_id(tmp_path, monkeypatch):
    """Real wandb, offline: each start writes a fragment directory under the same run id, which
    `wandb sync` uploads as one run."""
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    for _ in range(2):
        m = MetricsLog(tmp_path / "metrics.jsonl", tracker=make_tracker("wandb", tmp_path, {"seed": 0}))
        _run_events(m)
        m.close()
    kept = (tmp_path / "wandb" / "run_id").read_text().strip()
    fragments = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(fragments) == 2
    assert all(f.name.startswith("offline-run-") and f"-{kept}" in f.name for f in fragments)
    assert all(list(f.glob(f"run-{kept}.wandb")) for f in fragments)
