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

from loop.compare_report import _fresh, _load, build_report
from loop.methods import METHODS
from loop.progress import Progress
from pipeline.rundir import RunDir, atomic_write_json, atomic_write_jsonl

log = logging.getLogger(__name__)

SEARCH_EVAL_METHODS = ("cot", "sc", "bon", "mcts", "tot_bfs", "tot_dfs")
_OWN_KEYS = ("mode", "method", "run.name", "baselines.budget_run")


def run_dirs(root: str | Path, name: str) -> dict[str, Path]:
    return {m: Path(root) / f"{name}-{m}" for m in METHODS}


def compare_main(cfg: Any, argv: Sequence[str]) -> int:
    """Train (or resume) the three runs, analyse the final rest_mcts models, write the report.

    Progress: one plain line per finished part (the three runs, then the analysis) with done/total,
    rate and ETA; each run's phases print their own progress lines in between."""
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
    with Progress("compare", len(METHODS) + 1, "parts", interval=0.0, logger=log, live=False) as bar:
        for i, m in enumerate(METHODS, start=1):
            log.info("compare: run %d/%d: method=%s in %s", i, len(METHODS), m, dirs[m])
            own = ["mode=train", f"method={m}", f"run.name={cfg.run.name}-{m}"]
            rc = train_main(
                compose(train_base + own + [f"baselines.budget_run={dirs['rest_mcts']}"]), train, heldout
            )
            if rc != 0:
                bar.close(summary=f"run {m} exited with {rc}", failed=True)
                return rc
            bar.update(1, last=m)
        log.info("compare: analysis of the final rest_mcts models in %s", out)
        methods = "[" + ",".join(SEARCH_EVAL_METHODS) + "]"
        own = ["mode=train", "method=rest_mcts", f"run.name={cfg.run.name}-rest_mcts"]
        analyse(compose(base + own + [f"eval.methods={methods}"]), dirs, train, heldout, out)
        report = build_report(out, dirs, cfg.iteration)
        bar.update(1, last="analysis")
        bar.summary = f"report {report}"
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


def analyse(cfg: Any, dirs: dict[str, Path], train: list, heldout: list, out: Path) -> None:
    """search_eval.json, the ORM and verifier.json (see the module docstring); Ray starts and stops here."""
    from loop.session import Pools, ray_session

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
    with ray_session(cfg), Pools(cfg) as pools:
        if todo[0]:
            train_orm(cfg, orm_source, train, models["prm_dir0"], out, orm_key)
        if todo[1]:
            from loop.evaluate import evaluate_methods

            pool = pools.get(models["policy_dir"], models["prm_dir"])
            results = evaluate_methods(pool, heldout, cfg, k, out / "search_eval")
            atomic_write_json(out / "search_eval.json", {**results, "inputs": search_key})
        if todo[2]:
            verify(cfg, pools.get(models["policy_dir"], models["prm_dir"]), heldout, out, verifier_key)


def train_orm(cfg: Any, samples_path: Path, train: list, prm_dir0: str, out: Path, key: dict) -> None:
    """Outcome reward model: the round-0 PRM regressed on 1/0 outcome labels of whole solutions."""
    from loop.methods.samples import load_samples
    from pipeline.baselines import orm_examples
    from pipeline.prompting import PromptFormat
    from pipeline.verify import solution_check
    from trainers.prm_train import train_prm

    fmt = PromptFormat.from_backbone(cfg.backbone)
    by_question = load_samples(samples_path)
    examples = []
    for q in sorted(train, key=lambda q: q.id):
        rows = by_question.get(q.id, [])
        check = solution_check(q, fmt.answer_prefix, fallbacks=cfg.backbone.answer_fallbacks)
        examples += orm_examples(q, [(r.steps, r.tokens) for r in rows], check, fmt)
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
    atomic_write_json(out / "orm.json", info)


def verify(cfg: Any, pool: Any, heldout: list, out: Path, key: dict) -> None:
    """eval.n samples per held-out question from the final policy, scored by the final PRM and the ORM."""
    from loop.sampling import sample_scored, score_requests
    from pipeline.baselines import Candidate, verifier_accuracy
    from pipeline.grading import extract_answer
    from pipeline.search.seeding import derive_seed
    from pipeline.verify import solution_check

    n = int(cfg.eval.n)
    seed = derive_seed(cfg.seed, int(cfg.iteration), "verifier-samples")
    groups = sample_scored(pool, heldout, cfg, n, seed)
    prm = [s.value for g in groups for s in g]
    orm_info = _load(out / "orm.json") if _fresh(out / "orm.json", key["orm"]) else None
    orm: list[float | None] = [None] * len(prm)
    if orm_info and orm_info.get("orm_dir"):
        pool.reload(prm_dir=orm_info["orm_dir"])
        orm = pool.score(score_requests(heldout, groups), chunk=int(cfg.prm.max_batch_size))
    rows, cands, i = [], [], 0
    prefix = cfg.backbone.answer_prefix
    for q, group in zip(heldout, groups, strict=True):
        mine = []
        for j, s in enumerate(group):
            answer = extract_answer(list(s.steps), prefix) if s.steps else None
            check = solution_check(q, prefix, fallbacks=cfg.backbone.answer_fallbacks)
            correct = check(s.steps, answer) if check is not None else None
            mine.append(Candidate(answer, correct, prm[i], orm[i]))
            row = {"question_id": q.id, "sample": j, "steps": list(s.steps), "tokens": s.tokens}
            rows.append({**row, "answer": answer, "correct": correct, "prm": prm[i], "orm": orm[i]})
            i += 1
        cands.append(mine)
    atomic_write_jsonl(out / "verifier_samples.jsonl", rows)
    result = verifier_accuracy(cands, seed=int(cfg.seed))
    atomic_write_json(out / "verifier.json", {"inputs": key, "n": n, "accuracy": result})
