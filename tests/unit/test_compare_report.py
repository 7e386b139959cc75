"""mode=compare: the report is built from run directories alone and cites a file for every number."""

from __future__ import annotations

import json
from pathlib import Path

import loop.compare as compare
from conf.load import compose
from pipeline.rundir import RunDir


def _eval(path: Path, accs: dict[str, float], tokens: float = 40.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    methods = {
        m: {"accuracy": a, "correct": round(32 * a), "total": 32, "ungradable": 0}
        | {"tokens_per_question": tokens, "seconds": 1.0, "by_difficulty": {}}
        for m, a in accs.items()
    }
    path.write_text(json.dumps({"round": 0, "questions": 32, "methods": methods}))


def _fake_runs(root: Path) -> dict[str, Path]:
    dirs = compare.run_dirs(root, "cmp")
    accs = {"rest_mcts": (0.25, 0.40625), "rest_em": (0.25, 0.34375), "self_rewarding": (0.25, 0.28125)}
    for m, d in dirs.items():
        run = RunDir(d)
        for k, a in enumerate(accs[m]):
            _eval(run.round_dir(k) / "eval.json", {"cot": a, "mcts": a + 0.0625})
        search = {"tokens": 5000, "nodes": 321} if m == "rest_mcts" else {"tokens": 5012, "budget": 5000}
        run.mark_done(1, "search", [], search | ({"samples": 120} if m != "rest_mcts" else {}))
    RunDir(dirs["rest_mcts"]).mark_done(1, "values", [], {"trace_precision": 0.875})
    RunDir(dirs["rest_em"]).mark_done(1, "values", [], {"trace_precision": 0.6875})
    prm = {"heldout_before_pairwise_accuracy": 0.5625, "heldout_after_pairwise_accuracy": 0.8125}
    RunDir(dirs["rest_mcts"]).mark_done(1, "prm", [], {"prm_dir": "x"} | prm)
    path = dirs["rest_mcts"] / "round_1" / "eval.json"
    data = json.loads(path.read_text())
    data["prm_step_auc"] = {"auc": 0.4375, "nodes": 90, "right": 30, "sibling_auc": 0.625, "sibling_pairs": 8}
    path.write_text(json.dumps(data))
    return dirs


def _fake_analysis(out: Path) -> None:
    out.mkdir(parents=True)
    _eval(out / "search_eval.json", {"cot": 0.3125, "sc": 0.46875, "bon": 0.5, "mcts": 0.53125}, 80.0)
    acc = {"prm": 0.59375, "orm": 0.4375, "self_consistency": 0.46875, "random": 0.21875}
    acc |= {"pass_at_n": 0.78125, "questions": 32, "candidates": 256}
    (out / "verifier.json").write_text(json.dumps({"n": 8, "accuracy": acc}))
    orm = {"examples": 77, "positives": 30, "inputs": {"samples": "runs/cmp-rest_em/round_1/samples.jsonl"}}
    (out / "orm.json").write_text(json.dumps(orm))


def _row(text: str, *needles: str) -> str:
    rows = [line for line in text.splitlines() if all(n in line for n in needles)]
    assert len(rows) == 1, (needles, rows)
    return rows[0]


def test_report_tables_cite_their_files(tmp_path):
    dirs = _fake_runs(tmp_path)
    out = tmp_path / "cmp-compare"
    _fake_analysis(out)
    text = compare.build_report(out, dirs, iteration=1).read_text()

    # (a) every (method, round) row holds that eval.json's numbers and names it
    row = _row(text, "| rest_em | 1 |")
    assert "| 34.4 | 40.6 |" in row and f"`{dirs['rest_em'] / 'round_1' / 'eval.json'}`" in row
    assert "| 40.6 | 46.9 |" in _row(text, "| rest_mcts | 1 |")
    # equal budget: counted tokens per method and the budget they matched
    assert "| 5012 | 5000 | 120 |" in _row(text, "| 1 | rest_em |", "state.json")
    # (b) search methods with tokens, cited to search_eval.json
    row = _row(text, "| bon |")
    assert "| 50.0 | 16/32 | 80 |" in row and f"`{out / 'search_eval.json'}` methods.bon" in row
    # (c) verifiers
    assert "| 59.4 |" in _row(text, "PRM (ReST-MCTS*", "accuracy.prm")
    assert "| 43.8 |" in _row(text, "ORM", "accuracy.orm")
    assert "| 78.1 |" in _row(text, "pass@n", "verifier.json")
    assert "77 solutions (30 correct)" in text
    # (d) trace precision and PRM ranking, cited to the state.json key
    assert "| 87.5 |" in _row(text, "trace precision, rest_mcts", "rounds.1.values.info.trace_precision")
    assert "| 68.8 |" in _row(text, "trace precision, rest_em")
    assert "| 81.2 |" in _row(text, "after training", "heldout_after_pairwise_accuracy")
    assert "| 0.438 |" in _row(
        text, "| 1 | PRM step AUC, all nodes (90 nodes)", "round_1/eval.json` prm_step_auc.auc"
    )
    assert "| 0.625 |" in _row(text, "| 1 | PRM step AUC, siblings", "prm_step_auc.sibling_auc")
    assert "| 0 | PRM step AUC" not in text  # round 0's eval.json has no trees checked: no row
    assert (out / "accuracy.png").stat().st_size > 0 and (out / "search_budget.png").stat().st_size > 0


def test_report_says_what_is_missing(tmp_path):
    dirs = compare.run_dirs(tmp_path, "cmp")
    text = compare.build_report(tmp_path / "out", dirs, iteration=1).read_text()
    assert "No eval.json found" in text
    assert f"`{tmp_path / 'out' / 'search_eval.json'}` is missing" in text
    assert f"`{tmp_path / 'out' / 'verifier.json'}` is missing" in text


def test_final_models_follow_the_manifest(tmp_path):
    run = RunDir(tmp_path / "r")
    models = {"policy_dir": "p0", "prm_dir": "v0", "policy_dir0": "p0", "prm_dir0": "v0"}
    (run.round_dir(0)).mkdir(parents=True)
    (run.round_dir(0) / "models.json").write_text(json.dumps(models))
    run.mark_done(1, "sft", [], {"policy_dir": "p1"})
    run.mark_done(1, "prm", [], {"prm_dir": "v1"})
    assert compare.final_models(run.root, 0) == {"policy_dir": "p0", "prm_dir": "v0", "prm_dir0": "v0"}
    assert compare.final_models(run.root, 1) == {"policy_dir": "p1", "prm_dir": "v1", "prm_dir0": "v0"}


def _stub_compare(monkeypatch) -> tuple[list, dict]:
    """compare_main without training or analysis: returns (configs of the three runs, the analysis cfg)."""
    import loop.driver
    import pipeline.data

    seen: list = []
    analysed: dict = {}
    monkeypatch.setattr(loop.driver, "train_main", lambda cfg, train, heldout: seen.append(cfg) or 0)
    monkeypatch.setattr(pipeline.data, "load_questions", lambda *a, **k: ([], []))
    monkeypatch.setattr(compare, "analyse", lambda cfg, *a: analysed.update(cfg=cfg))
    return seen, analysed


def test_compare_main_composes_three_runs(tmp_path, monkeypatch):
    seen, analysed = _stub_compare(monkeypatch)
    argv = ["mode=compare", f"run.root={tmp_path}", "run.name=cmp", "iteration=1", "method=rest_em"]
    assert compare.compare_main(compose(argv), argv) == 0
    assert [(c.method, c.run.name, c.mode) for c in seen] == [
        ("rest_mcts", "cmp-rest_mcts", "train"),
        ("rest_em", "cmp-rest_em", "train"),
        ("self_rewarding", "cmp-self_rewarding", "train"),
    ]
    assert {c.baselines.budget_run for c in seen} == {str(tmp_path / "cmp-rest_mcts")}
    assert list(analysed["cfg"].eval.methods) == list(compare.SEARCH_EVAL_METHODS)
    assert (tmp_path / "cmp-compare" / "report.md").exists()


def test_report_draws_the_budget_sweep(tmp_path):
    dirs = compare.run_dirs(tmp_path, "cmp")
    out = tmp_path / "out"
    _fake_analysis(out)
    data = json.loads((out / "search_eval.json").read_text())
    point = {"correct": 8, "total": 32, "ungradable": 0, "seconds": 1.0, "by_difficulty": {}}
    data["sweep"] = {
        "budgets": [0.5, 1.0],
        "knobs": {"mcts": "eval.search.iteration_limit"},
        "methods": {
            "cot": [{"scale": None, "value": None, "accuracy": 0.3125, "tokens_per_question": 80.0} | point],
            "mcts": [
                {"scale": 0.5, "value": 6, "accuracy": 0.25, "tokens_per_question": 300.0} | point,
                {"scale": 1.0, "value": 12, "accuracy": 0.53125, "tokens_per_question": 610.0} | point,
            ],
        },
    }
    (out / "search_eval.json").write_text(json.dumps(data))
    text = compare.build_report(out, dirs, iteration=1).read_text()
    assert "| 25.0 | 8/32 | 300 |" in _row(text, "| mcts | 0.5 | eval.search.iteration_limit=6 |")
    assert f"`{out / 'search_eval.json'}` sweep.methods.mcts[1]" in _row(text, "| mcts | 1 |")
    assert "| cot | - | greedy |" in text and "| bon |" in text  # the configured table stays
    assert (out / "search_budget.png").stat().st_size > 0


def test_compare_sweeps_in_the_analysis_only(tmp_path, monkeypatch):
    seen, analysed = _stub_compare(monkeypatch)
    argv = ["mode=compare", f"run.root={tmp_path}", "run.name=cmp", "iteration=1", "eval.budgets=[0.5,2]"]
    assert compare.compare_main(compose(argv), argv) == 0
    assert [list(c.eval.budgets) for c in seen] == [[], [], []]
    assert list(analysed["cfg"].eval.budgets) == [0.5, 2.0]
