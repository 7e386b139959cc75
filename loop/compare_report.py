"""The `mode=compare` report (report.md, accuracy.png, search_budget.png), built from the run and analysis
directories alone: every number names the file it came from (see loop.compare)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.rundir import atomic_write_text


def _fresh(path: Path, key: dict[str, Any]) -> bool:
    """True when `path` exists and was computed from the same inputs (`key` under "inputs")."""
    return path.exists() and json.loads(path.read_text(encoding="utf-8")).get("inputs") == key


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _pct(x: Any) -> str:
    return "-" if not isinstance(x, int | float) else f"{100 * x:.1f}"


def _num(x: Any, fmt: str = "{:.0f}") -> str:
    return "-" if not isinstance(x, int | float) else fmt.format(x)


def _state_info(run_dir: Path, k: int, phase: str) -> dict[str, Any]:
    state = _load(run_dir / "state.json") or {"rounds": {}}
    return ((state["rounds"].get(str(k)) or {}).get(phase) or {}).get("info") or {}


def iteration_rows(dirs: dict[str, Path], iteration: int) -> list[dict[str, Any]]:
    """One row per (training method, round) with an eval.json: its accuracies and the file."""
    rows = []
    for m, d in dirs.items():
        for k in range(iteration + 1):
            path = d / f"round_{k}" / "eval.json"
            results = _load(path)
            if results:
                rows.append({"method": m, "round": k, "results": results["methods"], "source": str(path)})
    return rows


def build_report(out: Path, dirs: dict[str, Path], iteration: int) -> Path:
    """report.md and its PNGs under `out`, from the run directories and the analysis files only."""
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# ReST-MCTS* vs baselines", ""]
    lines += ["Runs: " + ", ".join(f"{m} `{d}`" for m, d in dirs.items()), ""]
    lines += _iteration_section(out, dirs, iteration)
    lines += _budget_section(dirs, iteration)
    lines += _search_section(out)
    lines += _verifier_section(out)
    lines += _trace_section(dirs, iteration)
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _iteration_section(out: Path, dirs: dict[str, Path], iteration: int) -> list[str]:
    rows = iteration_rows(dirs, iteration)
    lines = ["## (a) Held-out accuracy (%) per self-training iteration", ""]
    if not rows:
        return lines + ["No eval.json found under the run directories.", ""]
    evals = sorted({e for r in rows for e in r["results"]})
    lines.append("| method | round | " + " | ".join(evals) + " | source |")
    lines.append("|---" * (len(evals) + 3) + "|")
    per_round: dict[int, dict[str, dict[str, Any]]] = {}  # eval.json method entries: tokens in the legend
    for r in rows:
        accs = [_pct(r["results"].get(e, {}).get("accuracy")) for e in evals]
        lines.append(f"| {r['method']} | {r['round']} | " + " | ".join(accs) + f" | `{r['source']}` |")
        for e, res in r["results"].items():
            per_round.setdefault(r["round"], {})[f"{r['method']}/{e}"] = res
    from loop.plots import plot_accuracy

    plot_accuracy(per_round, out / "accuracy.png", title="held-out accuracy: training method / eval method")
    return lines + ["", "![accuracy per iteration](accuracy.png)", ""]


def _budget_section(dirs: dict[str, Path], iteration: int) -> list[str]:
    lines = ["## Generated tokens of the data-collection phase per round (equal budget)", ""]
    lines += ["| round | method | tokens | budget | samples | source |", "|---|---|---|---|---|---|"]
    for k in range(1, iteration + 1):
        for m, d in dirs.items():
            info = _state_info(d, k, "search")
            if info:
                budget = info.get("budget")
                budget_text = "-" if budget is None else ("unmatched" if budget < 0 else str(budget))
                lines.append(
                    f"| {k} | {m} | {_num(info.get('tokens'))} | {budget_text} | "
                    f"{_num(info.get('samples', info.get('nodes')))} | "
                    f"`{d / 'state.json'}` rounds.{k}.search.info |"
                )
    return lines + ["", "rest_mcts's samples column counts tree nodes.", ""]


def _search_section(out: Path) -> list[str]:
    from loop.evaluate import budget_points
    from loop.plots import plot_budget

    path = out / "search_eval.json"
    data = _load(path)
    lines = ["## (b) Search methods at their token budgets (final rest_mcts models)", ""]
    if not data:
        return lines + [f"Not available: `{path}` is missing.", ""]
    lines += ["| method | accuracy (%) | correct | tokens/question | source |", "|---|---|---|---|---|"]
    for m, r in data["methods"].items():
        lines.append(
            f"| {m} | {_pct(r['accuracy'])} | {r['correct']}/{r['total']} | "
            f"{r['tokens_per_question']:.0f} | `{path}` methods.{m} |"
        )
    sweep = data.get("sweep")
    if sweep:
        lines += [
            "",
            f"Equal-budget sweep: each method's budget knob times {sweep['budgets']} (cot: one greedy point).",
            "",
            "| method | budget scale | knob | accuracy (%) | correct | tokens/question | source |",
            "|---|---|---|---|---|---|---|",
        ]
        for m, points in sweep["methods"].items():
            for i, p in enumerate(points):
                scale = "-" if p["scale"] is None else f"{p['scale']:g}"
                knob = "greedy" if p["value"] is None else f"{sweep['knobs'][m]}={p['value']}"
                lines.append(
                    f"| {m} | {scale} | {knob} | {_pct(p['accuracy'])} | {p['correct']}/{p['total']} | "
                    f"{p['tokens_per_question']:.0f} | `{path}` sweep.methods.{m}[{i}] |"
                )
    title = "search methods: accuracy vs tokens" + (" (budget sweep)" if sweep else " at their budgets")
    plot_budget(budget_points(data), out / "search_budget.png", title=title)
    return lines + ["", "![accuracy vs tokens](search_budget.png)", ""]


def _verifier_section(out: Path) -> list[str]:
    path, orm_path = out / "verifier.json", out / "orm.json"
    data = _load(path)
    lines = ["## (c) Verifiers: best-of-n selection on held-out questions", ""]
    if not data:
        return lines + [f"Not available: `{path}` is missing.", ""]
    acc = data["accuracy"]
    lines += [
        f"{acc['questions']} questions, n = {data['n']} samples each ({acc['candidates']} candidates) "
        f"from the final rest_mcts policy.",
        "",
        "| selector | accuracy (%) | source |",
        "|---|---|---|",
    ]
    labels = {
        "prm": "PRM (ReST-MCTS*, final round)",
        "orm": "ORM (outcome labels)",
        "self_consistency": "self-consistency",
        "random": "random",
        "pass_at_n": "pass@n (oracle)",
    }
    for key, label in labels.items():
        lines.append(f"| {label} | {_pct(acc.get(key))} | `{path}` accuracy.{key} |")
    orm = _load(orm_path)
    if orm:
        lines += [
            "",
            f"ORM training data: {orm['examples']} solutions ({orm['positives']} correct) from "
            f"`{orm['inputs']['samples']}` (`{orm_path}`).",
        ]
    return lines + [""]


def _trace_section(dirs: dict[str, Path], iteration: int) -> list[str]:
    lines = ["## (d) Trace precision and PRM ranking per round", ""]
    lines.append(
        "Trace precision: share of selected SFT traces whose every step is right (arith only). "
        "PRM pairwise: on held-out value examples, share of sibling pairs (r=0 vs r=1) ranked right. "
        "PRM step AUC: on the held-out MCTS* trees of the evaluation, how well the PRM's values separate "
        "prefixes whose every step is right from the others (all nodes; siblings only, as UCT compares)."
    )
    lines += ["", "| round | quantity | value | source |", "|---|---|---|---|"]
    for k in range(1, iteration + 1):
        for m in ("rest_mcts", "rest_em"):
            if m in dirs:
                tp = _state_info(dirs[m], k, "values").get("trace_precision")
                src = f"`{dirs[m] / 'state.json'}` rounds.{k}.values.info.trace_precision"
                lines.append(f"| {k} | trace precision, {m} (%) | {_pct(tp)} | {src} |")
        if "rest_mcts" in dirs:
            prm = _state_info(dirs["rest_mcts"], k, "prm")
            for when in ("before", "after"):
                key = f"heldout_{when}_pairwise_accuracy"
                src = f"`{dirs['rest_mcts'] / 'state.json'}` rounds.{k}.prm.info.{key}"
                lines.append(
                    f"| {k} | PRM pairwise accuracy {when} training (%) | {_pct(prm.get(key))} | {src} |"
                )
    if "rest_mcts" in dirs:
        lines += _step_auc_rows(dirs["rest_mcts"], iteration)
    return lines + [""]


def _step_auc_rows(run_dir: Path, iteration: int) -> list[str]:
    """PRM step AUC / sibling AUC per round (incl. round 0), from the run's eval.json files: how well the
    round's PRM separates right from wrong steps on the held-out MCTS* trees (`pipeline.quality`)."""
    rows = []
    for k in range(iteration + 1):
        path = run_dir / f"round_{k}" / "eval.json"
        quality = (_load(path) or {}).get("prm_step_auc")
        if not quality:
            continue
        counts = {
            "auc": f"{quality.get('nodes')} nodes",
            "sibling_auc": f"{quality.get('sibling_pairs')} pairs",
        }
        for key, label in (("auc", "PRM step AUC, all nodes"), ("sibling_auc", "PRM step AUC, siblings")):
            value = quality.get(key)
            text = "-" if value is None else f"{value:.3f}"
            rows.append(f"| {k} | {label} ({counts[key]}) | {text} | `{path}` prm_step_auc.{key} |")
    return rows
