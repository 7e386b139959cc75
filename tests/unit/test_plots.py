"""loop.plots: accuracy axes fixed at 0-100 %, tokens/question in the legends, a seeds band; the old
call shapes (floats per method) still work."""

from __future__ import annotations

import json

import pytest

from loop.plots import accuracy_figure, plot_accuracy, plot_accuracy_seeds, plot_budget, seeds_figure


def _methods(cot: float, mcts: float, tok_cot: float = 42.0, tok_mcts: float = 330.0) -> dict:
    return {
        "cot": {"accuracy": cot, "tokens_per_question": tok_cot, "correct": 1, "total": 2},
        "mcts": {"accuracy": mcts, "tokens_per_question": tok_mcts, "correct": 1, "total": 2},
    }


def _close(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_accuracy_axis_fixed_and_tokens_in_legend(tmp_path):
    per_round = {0: _methods(0.455, 0.44), 1: _methods(0.465, 0.45, tok_mcts=350.0), 2: _methods(0.475, 0.46)}
    fig, ax = accuracy_figure(per_round, title="run x")
    try:
        assert ax.get_ylim() == (0.0, 100.0)
        assert "%" in ax.get_ylabel()
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == ["cot (42 tok/q)", "mcts (330-350 tok/q)"]
        ys = [list(line.get_ydata()) for line in ax.get_lines()]
        assert ys[0] == pytest.approx([45.5, 46.5, 47.5])
    finally:
        _close(fig)
    path = plot_accuracy(per_round, tmp_path / "plots" / "accuracy.png", title="run x")
    assert path.stat().st_size > 1000


def test_old_float_shape_still_works_and_tokens_kwarg(tmp_path):
    per_round = {0: {"cot": 0.25, "mcts": 0.3}, 1: {"cot": 0.4}}
    assert plot_accuracy(per_round, tmp_path / "a.png", title="t").exists()
    fig, ax = accuracy_figure(per_round, tokens={"cot": 40.4})
    try:
        assert ax.get_ylim() == (0.0, 100.0)
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["cot (40 tok/q)", "mcts"]
    finally:
        _close(fig)


def test_budget_axis_fixed(tmp_path, monkeypatch):
    import loop.plots as plots

    seen = {}
    real_save = plots._save

    def spy(fig, path):
        seen["ylim"] = fig.axes[0].get_ylim()
        seen["xscale"] = fig.axes[0].get_xscale()
        return real_save(fig, path)

    monkeypatch.setattr(plots, "_save", spy)
    plot_budget({"cot": [(40, 0.45)], "sc": [(160, 0.46, "n=4"), (320, 0.47, "n=8")]}, tmp_path / "b.png")
    assert seen == {"ylim": (0.0, 100.0), "xscale": "log"}


@pytest.mark.parametrize("band", ["minmax", "std"])
def test_seeds_mean_and_band(tmp_path, band):
    per_seed = {
        0: {0: _methods(0.43, 0.42), 1: _methods(0.46, 0.45)},
        1: {0: _methods(0.44, 0.41), 1: _methods(0.45, 0.44, tok_cot=44.0)},
        2: {0: _methods(0.45, 0.43)},  # seed 2 has no round 1 yet
    }
    fig, ax = seeds_figure(per_seed, title="seeds", band=band)
    try:
        assert ax.get_ylim() == (0.0, 100.0)
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == ["cot (42-44 tok/q)", "mcts (330 tok/q)"]
        cot = list(ax.get_lines()[0].get_ydata())
        assert cot == pytest.approx([44.0, 45.5])
        assert ("min-max" if band == "minmax" else "1 sd") in ax.get_title()
        assert len(ax.collections) == 4  # per method: one band, one set of seed dots
    finally:
        _close(fig)
    assert plot_accuracy_seeds(per_seed, tmp_path / "s.png", band=band).exists()


def test_bench_seeds_writes_png_next_to_report(tmp_path, monkeypatch, capsys):
    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("bench_seeds", root / "bench" / "seeds.py")
    seeds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seeds)
    for s, base in ((0, 0.43), (1, 0.44)):
        for k in range(3):
            d = tmp_path / f"sw-s{s}" / f"round_{k}"
            d.mkdir(parents=True)
            methods = _methods(base + 0.01 * k, base)
            methods["cot"]["by_difficulty"] = {"2": 0.9, "3": 0.5}
            (d / "eval.json").write_text(json.dumps({"round": k, "methods": methods}))
    argv = ["seeds.py", "--report-only", "--seeds", "0", "1", "--prefix", "sw", "--root", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    assert seeds.main() == 0
    assert (tmp_path / "sw-seeds.png").stat().st_size > 1000
    report = (tmp_path / "sw-seeds.md").read_text()
    assert "![accuracy per iteration over seeds](sw-seeds.png)" in report and "| figure |" in report
