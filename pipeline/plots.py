"""PNG plots of a run's held-out accuracy, regenerated every round (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path


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
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
