"""Tables of a run's results: held-out accuracy per round and method, and per difficulty."""

from __future__ import annotations

import json
from typing import Any

from pipeline.rundir import RunDir


def load_eval(run: RunDir, k: int) -> dict[str, Any] | None:
    path = run.round_dir(k) / "eval.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def final_table(evals: dict[int, dict[str, Any]]) -> str:
    """Markdown table: one row per round, accuracy (%) per method, then per difficulty for each method."""
    rounds = sorted(k for k, r in evals.items() if r and "methods" in r)
    if not rounds:
        return "(no evaluation results)"
    methods = sorted({m for k in rounds for m in evals[k]["methods"]})
    lines = ["held-out accuracy (%) per round", ""]
    lines.append("| round | " + " | ".join(methods) + " | tokens/question (" + ", ".join(methods) + ") |")
    lines.append("|---" * (len(methods) + 2) + "|")
    for k in rounds:
        ms = evals[k]["methods"]
        accs = " | ".join(_pct(ms.get(m, {}).get("accuracy")) for m in methods)
        toks = ", ".join(f"{ms[m].get('tokens_per_question', 0):.0f}" if m in ms else "-" for m in methods)
        lines.append(f"| {k} | {accs} | {toks} |")
    for m in methods:
        diffs = sorted(
            {d for k in rounds for d in evals[k]["methods"].get(m, {}).get("by_difficulty", {})}, key=int
        )
        if not diffs:
            continue
        lines += ["", f"{m}: accuracy (%) per difficulty", ""]
        lines.append("| round | " + " | ".join(f"d{d}" for d in diffs) + " | mean |")
        lines.append("|---" * (len(diffs) + 2) + "|")
        for k in rounds:
            by = evals[k]["methods"].get(m, {}).get("by_difficulty", {})
            vals = [by.get(d) for d in diffs]
            known = [v for v in vals if v is not None]
            mean = sum(known) / len(known) if known else None
            lines.append(f"| {k} | " + " | ".join(_pct(v) for v in vals) + f" | {_pct(mean)} |")
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"
