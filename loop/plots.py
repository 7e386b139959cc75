"""PNG plots (matplotlib, Agg backend): a run's held-out accuracy per round (regenerated every round),
and accuracy against generated tokens per question for evaluation methods (`eval_budget.png`, the
compare report's `search_budget.png`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def plot_accuracy(per_round: dict[int, dict[str, float]], path: str | Path, title: str = "") -> Path:
    """Held-out accuracy per iteration, one line per eval method. `per_round[k][method]` in [0, 1]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rounds = sorted(per_round)
    methods = sorted({m for k in rounds for m in per_round[k]})
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in methods:
        xs = [k for k in rounds if method in per_round[k]]
        ax.plot(xs, [100 * per_round[k][method] for k in xs], marker="o", label=method)
    ax.set_xlabel("self-training iteration")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_xticks(rounds)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title or "held-out accuracy per iteration")
    return _save(fig, path)


def plot_budget(lines: Mapping[str, Sequence[tuple[Any, ...]]], path: str | Path, title: str = "") -> Path:
    """Accuracy (%) against generated tokens per question (log x), one line with markers per method.

    `lines[method]` is a list of points `(tokens_per_question, accuracy in [0, 1])` or
    `(tokens, accuracy, label)`, drawn in the given order, methods in the mapping's order; a label (a
    budget knob's value) is written beside its point, the labels of points that coincide joined by "/". A method with one point (greedy CoT) is a single marker.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(title or "accuracy vs generated tokens per question")
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    """Write `fig` to `path` atomically (a reader never sees half a PNG) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
