"""`python run.py mode=compare ...`: ReST-MCTS* against its baselines, one report.

Three self-training runs with the same config (each resumes by itself when run again):

    runs/<name>-rest_mcts        method=rest_mcts
    runs/<name>-rest_em          method=rest_em         baselines.budget_run=runs/<name>-rest_mcts
    runs/<name>-self_rewarding   method=self_rewarding  baselines.budget_run=runs/<name>-rest_mcts

then, with the final rest_mcts models, under `runs/<name>-compare/`:

    search_eval.json     evaluate_methods with cot, sc, bon, mcts, tot_bfs, tot_dfs on the held-out questions
                         (with `eval.budgets=[...]` on the command line, its equal-budget sweep too; the
                         three training runs evaluate without it)
    orm/, orm.json       an ORM: the round-0 PRM regressed on outcome labels of the rest_em run's round-1 samples
    verifier_samples.jsonl, verifier.json
                         eval.n sampled solutions per held-out question, scored by the PRM and the ORM;
                         best-of-n accuracy of PRM, ORM, self-consistency, random and pass@n
    report.md, accuracy.png, search_budget.png
                         built by `build_report` from the files alone; every number names its file

Each analysis file records the model directories it was computed with and is recomputed only when they
change (or with resume=false).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.rundir import RunDir, atomic_write_jsonl, atomic_write_text

log = logging.getLogger(__name__)

METHODS = ("rest_mcts", "rest_em", "self_rewarding")
SEARCH_EVAL_METHODS = ("cot", "sc", "bon", "mcts", "tot_bfs", "tot_dfs")
_OWN_KEYS = ("mode", "method", "run.name", "baselines.budget_run")


def run_dirs(root: str | Path, name: str) -> dict[str, Path]:
    return {m: Path(root) / f"{name}-{m}" for m in METHODS}


def compare_main(cfg: Any, argv: Sequence[str]) -> int:
    """Train (or resume) the three runs, analyse the final rest_mcts models, write the report."""
    from conf.load import compose
    from loop.driver import train_main
    from pipeline.data import load_questions

    base = [a for a in argv if a.split("=", 1)[0] not in _OWN_KEYS]
    dirs = run_dirs(cfg.run.root, cfg.run.name)
    out = Path(cfg.run.root) / f"{cfg.run.name}-compare"
    if not cfg.resume and out.exists():
        shutil.rmtree(out)
    train, heldout = load_questions(cfg.task, cfg.data, seed=cfg.seed)
    train_base = [a for a in base if a.split("=", 1)[0] != "eval.budgets"]  # the sweep is analysis only
    for m in METHODS:
        own = ["mode=train", f"method={m}", f"run.name={cfg.run.name}-{m}"]
        rc = train_main(
            compose(train_base + own + [f"baselines.budget_run={dirs['rest_mcts']}"]), train, heldout
        )
        if rc != 0:
            return rc
    methods = "[" + ",".join(SEARCH_EVAL_METHODS) + "]"
    mcts_cfg = compose(
        base
        + ["mode=train", "method=rest_mcts", f"run.name={cfg.run.name}-rest_mcts", f"eval.methods={methods}"]
    )
    analyse(mcts_cfg, dirs, train, heldout, out)
    report = build_report(out, dirs, cfg.iteration)
    print(report.read_text(encoding="utf-8"))
    print(f"restmcts: comparison report {report}")
    return 0


# ------------------------------------------------------------------------------------------ analysis


def final_models(run_dir: Path, iteration: int) -> dict[str, str]:
    """policy_dir, prm_dir after round `iteration` of a finished run, and the round-0 prm_dir0."""
    run = RunDir(run_dir)
    models = json.loads((run.round_dir(0) / "models.json").read_text(encoding="utf-8"))
    if iteration > 0:
        models["policy_dir"] = run.phase_info(iteration, "sft")["policy_dir"]
        models["prm_dir"] = run.phase_info(iteration, "prm")["prm_dir"]
    return {k: models[k] for k in ("policy_dir", "prm_dir", "prm_dir0")}


def _fresh(path: Path, key: dict[str, Any]) -> bool:
    """True when `path` exists and was computed from the same inputs (`key` under "inputs")."""
    return path.exists() and json.loads(path.read_text(encoding="utf-8")).get("inputs") == key


def analyse(cfg: Any, dirs: dict[str, Path], train: list, heldout: list, out: Path) -> None:
    """search_eval.json, the ORM and verifier.json (see the module docstring); Ray starts and stops here."""
    from actors.cluster import init_ray, shutdown_ray

    k = int(cfg.iteration)
    models = final_models(dirs["rest_mcts"], k)
    orm_source = dirs["rest_em"] / "round_1" / "samples.jsonl"
    orm_key = {"prm_dir0": models["prm_dir0"], "samples": str(orm_source)}
    search_key = {**models, "methods": list(cfg.eval.methods), "questions": len(heldout)}
    if cfg.eval.budgets:
        search_key["budgets"] = list(cfg.eval.budgets)
    verifier_key = {**models, "orm": orm_key, "n": int(cfg.eval.n), "questions": len(heldout)}
    todo = [
        not _fresh(out / "orm.json", orm_key) and orm_source.exists(),
        not _fresh(out / "search_eval.json", search_key),
        not _fresh(out / "verifier.json", verifier_key),
    ]
    if not any(todo):
        log.info("compare: analysis files are up to date")
        return
    init_ray(cfg.ray)
    pool = None
    try:
        if todo[0]:
            train_orm(cfg, orm_source, train, models["prm_dir0"], out, orm_key)
        if todo[1] or todo[2]:
            from actors.pool import Pool

            pool = Pool.from_config(cfg, models["policy_dir"], models["prm_dir"])
        if todo[1]:
            from loop.evaluate import evaluate_methods

            results = evaluate_methods(pool, heldout, cfg, k, out / "search_eval")
            _write_json(out / "search_eval.json", {**results, "inputs": search_key})
        if todo[2]:
            verify(cfg, pool, heldout, out, verifier_key)
    finally:
        if pool is not None:
            pool.shutdown()
        shutdown_ray()


def train_orm(cfg: Any, samples_path: Path, train: list, prm_dir0: str, out: Path, key: dict) -> None:
    """Outcome reward model: the round-0 PRM regressed on 1/0 outcome labels of whole solutions."""
    from loop.methods import load_samples
    from pipeline.baselines import orm_examples
    from pipeline.prompting import PromptFormat
    from trainers.prm_train import train_prm

    fmt = PromptFormat.from_backbone(cfg.backbone)
    by_question = load_samples(samples_path)
    examples = []
    for q in sorted(train, key=lambda q: q.id):
        rows = by_question.get(q.id, [])
        examples += orm_examples(q, [(tuple(r["steps"]), int(r["tokens"])) for r in rows], q.answer, fmt)
    info: dict[str, Any] = {"inputs": key, "examples": len(examples)}
    info["positives"] = sum(1 for e in examples if e.target == 1.0)
    if examples:
        metrics = train_prm(
            prm_dir0,
            examples,
            str(out / "orm"),
            cfg.backbone.prm_train,
            fmt,
            storage_dir=str((out / "ray_train").resolve()),
            name="orm",
            trust_remote_code=cfg.backbone.trust_remote_code,
            head=cfg.backbone.prm_head,
        )
        info["orm_dir"] = str(out / "orm")
        info.update({k: v for k, v in metrics.items() if isinstance(v, int | float) and k != "steps"})
    _write_json(out / "orm.json", info)


def verify(cfg: Any, pool: Any, heldout: list, out: Path, key: dict) -> None:
    """eval.n samples per held-out question from the final policy, scored by the final PRM and the ORM."""
    from pipeline.baselines import Candidate, verifier_accuracy
    from pipeline.grading import extract_answer, grade
    from pipeline.search.protocol import Score
    from pipeline.search.seeding import derive_seed

    n = int(cfg.eval.n)
    groups = pool.map_policy(
        "sample_solutions",
        [q.content for q in heldout],
        max(1, int(cfg.policy.max_batch_size) // n),
        n=n,
        temperature=cfg.eval.search.temperature,
        seed=derive_seed(cfg.seed, int(cfg.iteration), "verifier-samples"),
        max_steps=cfg.eval.search.max_depth,
    )
    requests = [Score(q.content, s.steps) for q, g in zip(heldout, groups, strict=True) for s in g]
    chunk = int(cfg.prm.max_batch_size)
    prm = pool.map_prm("score", requests, chunk)
    orm_info = _load(out / "orm.json") if _fresh(out / "orm.json", key["orm"]) else None
    orm: list[float | None] = [None] * len(requests)
    if orm_info and orm_info.get("orm_dir"):
        pool.reload(prm_dir=orm_info["orm_dir"])
        orm = pool.map_prm("score", requests, chunk)
    rows, cands, i = [], [], 0
    prefix = cfg.backbone.answer_prefix
    for q, group in zip(heldout, groups, strict=True):
        mine = []
        for j, s in enumerate(group):
            answer = extract_answer(list(s.steps), prefix) if s.steps else None
            correct = grade(answer, q.answer).correct
            mine.append(Candidate(answer, correct, prm[i], orm[i]))
            row = {"question_id": q.id, "sample": j, "steps": list(s.steps), "tokens": s.tokens}
            rows.append({**row, "answer": answer, "correct": correct, "prm": prm[i], "orm": orm[i]})
            i += 1
        cands.append(mine)
    atomic_write_jsonl(out / "verifier_samples.jsonl", rows)
    result = verifier_accuracy(cands, seed=int(cfg.seed))
    _write_json(out / "verifier.json", {"inputs": key, "n": n, "accuracy": result})


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True, default=str))


# -------------------------------------------------------------------------------------------- report


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
    per_round: dict[int, dict[str, float]] = {}
    for r in rows:
        accs = [_pct(r["results"].get(e, {}).get("accuracy")) for e in evals]
        lines.append(f"| {r['method']} | {r['round']} | " + " | ".join(accs) + f" | `{r['source']}` |")
        for e, res in r["results"].items():
            per_round.setdefault(r["round"], {})[f"{r['method']}/{e}"] = res["accuracy"]
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
