"""PNG plots (matplotlib, Agg backend): a run's held-out accuracy per round (regenerated every round),
the same over several seeds (mean line, shaded spread band; `bench/seeds.py`), and accuracy against
generated tokens per question for evaluation methods (`eval_budget.png`, the compare report's
`search_budget.png`).

Every accuracy axis is fixed at 0-100 % so that a 45.5 -> 47.5 change looks like the two points it is;
the value of each line's last point is written beside it. Legends carry each method's generated
tokens per question when the data has them.

Accuracy data per round: `per_round[k][method]` is either a float in [0, 1] or an eval.json "methods"
entry (a mapping with "accuracy" and "tokens_per_question"), so callers can pass
`{k: eval_json["methods"] for k, eval_json in ...}` as they are.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ACC_YLIM = (0.0, 100.0)  # percent; every accuracy plot uses this fixed range
BANDS = ("minmax", "std")

AccuracyEntry = float | Mapping[str, Any]  # accuracy in [0, 1], or an eval.json "methods" entry


def plot_accuracy(
    per_round: Mapping[int, Mapping[str, AccuracyEntry]],
    path: str | Path,
    title: str = "",
    tokens: Mapping[str, float] | None = None,
) -> Path:
    """Held-out accuracy per iteration, one line per eval method, y axis fixed 0-100 %.

    `per_round[k][method]`: accuracy in [0, 1] or an eval.json "methods" entry (its
    `tokens_per_question` goes into the legend). `tokens[method]` (optional) gives tokens per question
    for entries that are plain floats.
    """
    fig, _ = accuracy_figure(per_round, title=title, tokens=tokens)
    return _save(fig, Path(path))


def accuracy_figure(
    per_round: Mapping[int, Mapping[str, AccuracyEntry]],
    title: str = "",
    tokens: Mapping[str, float] | None = None,
) -> tuple[Any, Any]:
    """The (Figure, Axes) `plot_accuracy` saves; the caller owns the figure (close it)."""
    plt = _pyplot()
    rounds = sorted(per_round)
    methods = sorted({m for k in rounds for m in per_round[k]})
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ends: list[tuple[float, float, Any]] = []
    for method in methods:
        xs = [k for k in rounds if method in per_round[k]]
        ys = [100 * _accuracy(per_round[k][method]) for k in xs]
        toks = [t for k in xs if (t := _tokens(per_round[k][method])) is not None]
        if not toks and tokens and tokens.get(method) is not None:
            toks = [float(tokens[method])]
        (line,) = ax.plot(xs, ys, marker="o", label=_label(method, toks))
        ends.append((xs[-1], ys[-1], line.get_color()))
    _label_ends(ax, ends)
    _accuracy_axes(ax, rounds)
    ax.set_title(title or "held-out accuracy per iteration")
    return fig, ax


def plot_accuracy_seeds(
    per_seed: Mapping[Any, Mapping[int, Mapping[str, AccuracyEntry]]],
    path: str | Path,
    title: str = "",
    band: str = "minmax",
) -> Path:
    """Accuracy per iteration over several seeds: per method the mean over seeds as a line, a shaded
    band for the spread (`band="minmax"`: lowest to highest seed; `"std"`: mean +- one sample standard
    deviation) and each seed's value as a faint dot; y axis fixed 0-100 %.

    `per_seed[seed][k][method]` as in `plot_accuracy`. A round a seed lacks is averaged over the
    seeds that have it.
    """
    fig, _ = seeds_figure(per_seed, title=title, band=band)
    return _save(fig, Path(path))


def seeds_figure(
    per_seed: Mapping[Any, Mapping[int, Mapping[str, AccuracyEntry]]],
    title: str = "",
    band: str = "minmax",
) -> tuple[Any, Any]:
    """The (Figure, Axes) `plot_accuracy_seeds` saves; the caller owns the figure (close it)."""
    if band not in BANDS:
        raise ValueError(f"band must be one of {BANDS}, got {band!r}")
    plt = _pyplot()
    seeds = list(per_seed)
    rounds = sorted({k for s in seeds for k in per_seed[s]})
    methods = sorted({m for s in seeds for k in per_seed[s] for m in per_seed[s][k]})
    band_text = "min-max over seeds" if band == "minmax" else "mean ± 1 sd over seeds"
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ends: list[tuple[float, float, Any]] = []
    for method in methods:
        xs, means, lows, highs, toks = [], [], [], [], []
        dots_x, dots_y = [], []
        for k in rounds:
            vals = []
            for s in seeds:
                entry = per_seed[s].get(k, {}).get(method)
                if entry is None:
                    continue
                vals.append(100 * _accuracy(entry))
                if (t := _tokens(entry)) is not None:
                    toks.append(t)
            if not vals:
                continue
            mean = statistics.fmean(vals)
            if band == "minmax":
                lo, hi = min(vals), max(vals)
            else:
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                lo, hi = mean - sd, mean + sd
            xs.append(k)
            means.append(mean)
            lows.append(lo)
            highs.append(hi)
            dots_x += [k] * len(vals)
            dots_y += vals
        if not xs:
            continue
        (line,) = ax.plot(xs, means, marker="o", label=_label(method, toks))
        color = line.get_color()
        ax.fill_between(xs, lows, highs, color=color, alpha=0.18, linewidth=0)
        ax.scatter(dots_x, dots_y, color=color, s=10, alpha=0.45, zorder=3)
        ends.append((xs[-1], means[-1], color))
    _label_ends(ax, ends)
    _accuracy_axes(ax, rounds)
    n = len(seeds)
    ax.set_title(
        (title or "held-out accuracy per iteration")
        + f"\nmean of {n} seed{'s' if n != 1 else ''} (line); band: {band_text}; dots: single seeds",
        fontsize=10,
    )
    return fig, ax


def plot_budget(lines: Mapping[str, Sequence[tuple[Any, ...]]], path: str | Path, title: str = "") -> Path:
    """Accuracy (%, y axis fixed 0-100) against generated tokens per question (log x), one line with
    markers per method.

    `lines[method]` is a list of points `(tokens_per_question, accuracy in [0, 1])` or
    `(tokens, accuracy, label)`, drawn in the given order, methods in the mapping's order; a label (a
    budget knob's value) is written beside its point, the labels of points that coincide joined by "/". A method with one point (greedy CoT) is a single marker.
    """
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    markers = "osD^vP*Xh<>"
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, (method, points) in enumerate(lines.items()):
        if not points:
            continue
        xs = [max(float(p[0]), 1.0) for p in points]  # log axis: a method that generated nothing sits at 1
        ys = [100 * float(p[1]) for p in points]
        ax.plot(xs, ys, marker=markers[i % len(markers)], label=method, linewidth=1.5, markersize=6)
        labels: dict[tuple[float, float], list[str]] = {}
        for x, y, p in zip(xs, ys, points, strict=True):
            if len(p) > 2 and p[2]:
                labels.setdefault((round(x, 1), round(y, 2)), []).append(str(p[2]))
        for j, ((x, y), texts) in enumerate(labels.items()):  # alternate above/below: neighbours overlap less
            offset = (4, 4) if j % 2 == 0 else (4, -11)
            ax.annotate("/".join(texts), (x, y), textcoords="offset points", xytext=offset, fontsize=7)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("generated tokens per question (log)")
    ax.set_ylim(*ACC_YLIM)
    ax.set_ylabel("accuracy (%, axis fixed 0-100)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(title or "accuracy vs generated tokens per question")
    return _save(fig, path)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _accuracy(entry: AccuracyEntry) -> float:
    return float(entry["accuracy"] if isinstance(entry, Mapping) else entry)


def _tokens(entry: AccuracyEntry) -> float | None:
    if isinstance(entry, Mapping) and entry.get("tokens_per_question") is not None:
        return float(entry["tokens_per_question"])
    return None


def _label(method: str, tokens: Sequence[float]) -> str:
    """`cot (42 tok/q)`, or a range when the rounds/seeds differ: `mcts (310-355 tok/q)`."""
    if not tokens:
        return method
    lo, hi = min(tokens), max(tokens)
    text = f"{lo:.0f}" if round(lo) == round(hi) else f"{lo:.0f}-{hi:.0f}"
    return f"{method} ({text} tok/q)"


def _label_ends(ax: Any, ends: Sequence[tuple[float, float, Any]], gap: float = 3.5) -> None:
    """Write each line's last value beside it (with a 0-100 axis small changes are hard to read off),
    nudging the texts apart vertically by at least `gap` points so close lines stay legible."""
    placed: list[float] = []
    for x, y, color in sorted(ends, key=lambda e: e[1]):
        text_y = max(y, placed[-1] + gap) if placed else y
        placed.append(text_y)
        ax.annotate(
            f"{y:.1f}",
            (x, y),
            xytext=(x + 0.08, text_y),
            textcoords="data",
            fontsize=7,
            color=color,
            va="center",
        )


def _accuracy_axes(ax: Any, rounds: Sequence[int]) -> None:
    ax.set_xlabel("self-training iteration (0 = before self-training)")
    ax.set_ylabel("held-out accuracy (%, axis fixed 0-100)")
    ax.set_ylim(*ACC_YLIM)
    ax.set_yticks(range(0, 101, 10))
    if rounds:
        ax.set_xticks(list(rounds))
        ax.set_xlim(min(rounds) - 0.25, max(rounds) + 0.6)  # room for the last point's value
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")


def _save(fig: Any, path: Path) -> Path:
    """Write `fig` to `path` atomically (a reader never sees half a PNG) and close it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
