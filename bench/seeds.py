"""The default job over several seeds: mean and spread of every headline figure.

    python bench/seeds.py                      # python run.py seed=S run.name=seeds-sS for S in 0 1 2
    python bench/seeds.py --seeds 0 1 2 3 -- iteration=1 task.train_size=120
    python bench/seeds.py --report-only        # only read the runs already there

Each seed is an ordinary run directory (`runs/<prefix>-s<S>`), so a killed sweep resumes where it
stopped and a finished seed costs nothing the second time. The runs' round 0 (warm start, D_V0 PRM) is
cached per seed under `.cache/restmcts/round0`. Wall time per seed is the sum of the run's phase times
from `metrics.jsonl` (round-0 building included only when it happened inside that run).

Printed per seed and as mean +- standard deviation over seeds: held-out greedy (cot) accuracy per
difficulty for round 0 and the last round and the gain of their mean over difficulties; MCTS*
accuracy; per round the trace precision of the selected SFT traces and the PRM step AUC.

The table is also written to `<root>/<prefix>-seeds.md`, next to `<root>/<prefix>-seeds.png`: held-out
accuracy per iteration for every eval method, the mean over seeds as a line and the lowest-to-highest
seed as a shaded band (y axis fixed 0-100 %, tokens/question in the legend).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run_seed(seed: int, prefix: str, root: str, overrides: list[str]) -> float:
    cmd = [
        sys.executable,
        "run.py",
        f"seed={seed}",
        f"run.name={prefix}-s{seed}",
        f"run.root={root}",
        *overrides,
    ]
    print("$", " ".join(cmd[1:]), flush=True)
    t0 = time.monotonic()
    done = subprocess.run(cmd, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"seeds: seed {seed} failed with exit code {done.returncode}")
    return time.monotonic() - t0


def load_run(run_dir: Path) -> dict[str, Any]:
    """Per round: eval.json, the values phase info; plus the summed phase seconds."""
    rounds: dict[int, dict[str, Any]] = {}
    for path in sorted(run_dir.glob("round_*/eval.json")):
        k = int(path.parent.name.split("_")[1])
        rounds.setdefault(k, {})["eval"] = json.loads(path.read_text())
    seconds = 0.0
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            row = json.loads(line)
            if row.get("event") == "phase_end":
                seconds += float(row.get("seconds", 0.0))
            if row.get("event") == "phase_end" and row.get("phase") == "values":
                rounds.setdefault(int(row["round"]), {})["values"] = row
    return {"rounds": rounds, "seconds": seconds}


def figures(run: dict[str, Any]) -> dict[str, float | None]:
    """Flat {figure name: value} for one seed."""
    rounds = run["rounds"]
    evald = sorted(k for k in rounds if "eval" in rounds[k])
    out: dict[str, float | None] = {"wall_minutes": run["seconds"] / 60}
    if not evald:
        return out
    first, last = evald[0], evald[-1]
    means = {}
    for k in (first, last):
        methods = rounds[k]["eval"]["methods"]
        for m in methods:
            out[f"r{k} {m} acc"] = 100 * methods[m]["accuracy"]
        by = methods.get("cot", {}).get("by_difficulty", {})
        for d, v in sorted(by.items(), key=lambda kv: int(kv[0])):
            out[f"r{k} cot d{d}"] = 100 * v
        means[k] = 100 * statistics.fmean(by.values()) if by else None
        out[f"r{k} cot mean over difficulties"] = means[k]
        quality = rounds[k]["eval"].get("prm_step_auc") or {}
        out[f"r{k} PRM step AUC"] = quality.get("auc")
        out[f"r{k} PRM sibling AUC"] = quality.get("sibling_auc")
    if means.get(first) is not None and means.get(last) is not None and last != first:
        out["gain (mean over difficulties, points)"] = means[last] - means[first]
    for k in sorted(rounds):
        if "values" in rounds[k]:
            tp = rounds[k]["values"].get("trace_precision")
            out[f"r{k} trace precision"] = None if tp is None else 100 * tp
        if k not in (first, last) and "eval" in rounds[k]:
            quality = rounds[k]["eval"].get("prm_step_auc") or {}
            out[f"r{k} PRM step AUC"] = quality.get("auc")
            out[f"r{k} PRM sibling AUC"] = quality.get("sibling_auc")
    return out


def fmt(x: float | None, name: str = "") -> str:
    return "-" if x is None else f"{x:.3f}" if "AUC" in name else f"{x:.1f}"


def summary(per_seed: dict[int, dict[str, float | None]]) -> str:
    names: list[str] = []
    for f in per_seed.values():
        names += [n for n in f if n not in names]
    seeds = sorted(per_seed)
    lines = ["| figure | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | spread (sd) |"]
    lines.append("|---" * (len(seeds) + 3) + "|")
    for n in names:
        vals = [per_seed[s].get(n) for s in seeds]
        known = [v for v in vals if v is not None]
        mean = statistics.fmean(known) if known else None
        sd = statistics.stdev(known) if len(known) > 1 else None
        lines.append(
            f"| {n} | " + " | ".join(fmt(v, n) for v in vals) + f" | {fmt(mean, n)} | {fmt(sd, n)} |"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--prefix", default="seeds", help="run names are <prefix>-s<seed>")
    p.add_argument("--root", default="runs")
    p.add_argument("--report-only", action="store_true", help="summarise the run directories already there")
    p.add_argument("overrides", nargs="*", help="run.py overrides shared by every seed (after --)")
    args = p.parse_args()
    walls = {}
    if not args.report_only:
        for s in args.seeds:
            walls[s] = run_seed(s, args.prefix, args.root, args.overrides)
    per_seed = {}
    curves = {}
    for s in args.seeds:
        run_dir = Path(args.root) / f"{args.prefix}-s{s}"
        if not (ROOT / run_dir).exists() and not run_dir.exists():
            print(f"seeds: {run_dir} does not exist (run without --report-only first)", file=sys.stderr)
            return 2
        run = load_run(run_dir if run_dir.is_absolute() else ROOT / run_dir)
        per_seed[s] = figures(run)
        curves[s] = accuracy_curves(run)
        if s in walls:
            per_seed[s]["command wall minutes"] = walls[s] / 60
    report = [summary(per_seed)]
    gains = [f.get("gain (mean over difficulties, points)") for f in per_seed.values()]
    if all(g is not None for g in gains):
        report.append(
            f"\ngain in every seed: {all(g > 0 for g in gains)}; mean gain {statistics.fmean(gains):.1f} points"
        )
    print("\n".join(report))
    root = Path(args.root) if Path(args.root).is_absolute() else ROOT / args.root
    png = plot_seeds(curves, root / f"{args.prefix}-seeds.png", args.seeds)
    md = root / f"{args.prefix}-seeds.md"
    image = f"\n\n![accuracy per iteration over seeds]({png.name})\n" if png else "\n"
    md.write_text(f"# {args.prefix}: seeds {' '.join(map(str, args.seeds))}\n\n" + "\n".join(report) + image)
    print(f"\nseeds: wrote {md}" + (f" and {png}" if png else ""))
    return 0


def accuracy_curves(run: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """`{round: eval.json "methods"}` of one seed's run (what loop.plots takes)."""
    return {k: r["eval"]["methods"] for k, r in sorted(run["rounds"].items()) if "eval" in r}


def plot_seeds(curves: dict[int, dict[int, dict[str, Any]]], path: Path, seeds: list[int]) -> Path | None:
    """Mean-over-seeds accuracy PNG with a min-max band; None when no seed has an eval.json yet."""
    if not any(curves.values()):
        return None
    if str(ROOT) not in sys.path:  # `python bench/seeds.py` puts bench/, not the repo root, on the path
        sys.path.insert(0, str(ROOT))
    from loop.plots import plot_accuracy_seeds

    title = f"held-out accuracy per iteration, seeds {', '.join(map(str, seeds))}"
    return plot_accuracy_seeds(curves, path, title=title, band="minmax")


if __name__ == "__main__":
    raise SystemExit(main())
