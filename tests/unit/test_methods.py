"""Baseline phases (loop.methods): budget loop and the (files, info) contract, with a fake pool."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass

import pytest

from conf.load import compose
from loop.methods import method_phases, rest_em, self_rewarding
from loop.methods.common import keep_prm, train_policy
from loop.methods.rest_em import select_rest_em_traces
from loop.methods.samples import SAMPLES_FILE, reference_budget, sample_round_major
from loop.methods.self_rewarding import select_pairs, train_policy_dpo
from pipeline.records import Question
from pipeline.rundir import RunDir, read_jsonl


def generate(cfg, run, get_pool, train, k):
    """The method's own generate phase (rest_em: samples; self_rewarding: samples + judge)."""
    return method_phases(cfg.method).generate(cfg, run, get_pool, train, k)


# arith questions: one solvable two ways (a right trace and a wrong step with the right answer)
Q1 = Question("q1", "(2+3)*4", "20", difficulty=2)
Q2 = Question("q2", "(1+1)*3", "6", difficulty=2)
RIGHT = ("2+3=5", "5*4=20", "The answer is 20")
LUCKY = ("2+3=6", "5*4=20", "The answer is 20")  # a wrong step, right answer
WRONG = ("2+3=5", "5*4=21", "The answer is 21")


@dataclass(frozen=True)
class Sol:
    steps: tuple[str, ...]
    tokens: int


class FakePool:
    """Answers `sample_solutions` from a per-question script, cycling by sample index across calls."""

    def __init__(self, script: dict[str, list[tuple[str, ...]]], tokens: int = 10, judge_reply: str = ""):
        self.script, self.tokens, self.judge_reply = script, tokens, judge_reply
        self.calls: list[tuple[str, int]] = []
        self.drawn: dict[str, int] = {}

    def map_policy(self, method, items, chunk, **kw):
        self.calls.append((method, kw.get("n", 0)))
        if method == "greedy_solve":
            return [Sol((self.judge_reply,), 5) for _ in items]
        out = []
        for content in items:
            options = self.script[content]
            group = []
            for _ in range(kw["n"]):
                i = self.drawn.get(content, 0)
                self.drawn[content] = i + 1
                group.append(Sol(options[i % len(options)], self.tokens))
            out.append(group)
        return out

    def greedy(self, questions, max_steps, seed=0, chunk=256):
        return self.map_policy("greedy_solve", questions, chunk, max_steps=max_steps, seed=seed)

    def sample(self, questions, n, temperature, seed=0, max_steps=0, chunk=32):
        return self.map_policy("sample_solutions", questions, chunk, n=n, temperature=temperature, seed=seed)

    def score(self, requests, chunk=256):
        return self.map_prm("score", requests, chunk)

    def map_prm(self, method, requests, chunk):
        # a judge that prefers right traces: 0.9 for RIGHT, 0.5 for LUCKY, 0.1 otherwise
        return [0.9 if r.steps == RIGHT else 0.5 if r.steps == LUCKY else 0.1 for r in requests]


def _reference(tmp_path, tokens: int) -> str:
    ref = RunDir(tmp_path / "ref")
    ref.mark_done(1, "search", [], {"tokens": tokens})
    return str(ref.root)


# ------------------------------------------------------------------------------------ budget loop


def test_budget_loop_counts_tokens_and_cuts_round_major():
    calls = []

    def sample_fn(n, call):
        calls.append(n)
        return [[Sol(("x",), 10) for _ in range(n)] for _ in range(4)]

    kept, counts = sample_round_major(sample_fn, 4, budget=95, cap=8)
    assert calls == [1, 2]  # one measuring round, then ceil(55 / (10 * 4)) = 2 rounds
    assert [len(g) for g in kept] == [3, 3, 2, 2]  # within one sample of each other
    assert counts == {"tokens": 100, "tokens_generated": 120, "calls": 2}


def test_budget_loop_without_budget_takes_the_cap_and_stops_on_silence():
    kept, counts = sample_round_major(lambda n, c: [[Sol(("x",), 3)] * n] * 2, 2, budget=None, cap=3)
    assert [len(g) for g in kept] == [3, 3] and counts["tokens"] == 18
    kept, counts = sample_round_major(lambda n, c: [[Sol((), 0)] * n] * 2, 2, budget=50, cap=3)
    assert counts == {"tokens": 0, "tokens_generated": 0, "calls": 1}


def test_reference_budget(tmp_path):
    cfg = compose([f"baselines.budget_run={_reference(tmp_path, 1234)}"])
    assert reference_budget(cfg.baselines, 1) == 1234
    with pytest.raises(ValueError, match="no finished round-2 search"):
        reference_budget(cfg.baselines, 2)
    assert reference_budget(compose(["baselines.match_budget=false"]).baselines, 1) is None
    assert reference_budget(compose([]).baselines, 1) is None  # no reference run configured


# ------------------------------------------------------------------------------------ phases


def test_baseline_phases_table():
    with pytest.raises(ValueError, match="rest_mcts, rest_em, self_rewarding"):
        method_phases("ppo")
    assert method_phases("rest_em").train_policy is train_policy
    assert method_phases("rest_em") is rest_em.PHASES
    assert method_phases("self_rewarding").train_policy is train_policy_dpo
    assert method_phases("self_rewarding") is self_rewarding.PHASES
    assert method_phases("rest_mcts").train_policy is train_policy


def test_rest_em_generate_at_budget_then_select(tmp_path):
    cfg = compose(["method=rest_em", f"baselines.budget_run={_reference(tmp_path, 55)}"])
    run = RunDir(tmp_path / "run")
    pool = FakePool({Q1.content: [WRONG, LUCKY, RIGHT, RIGHT], Q2.content: [("The answer is 6",)]})
    files, info = generate(cfg, run, lambda: pool, [Q2, Q1], 1)
    assert files == [run.round_dir(1) / SAMPLES_FILE]
    assert info["budget"] == 55 and info["tokens"] == 60 and info["tokens"] >= info["budget"]
    rows = read_jsonl(files[0])
    assert [(r["question_id"], r["sample"]) for r in rows] == [(f"q{i}", j) for j in range(3) for i in (1, 2)]
    assert rows[0] == {
        "question_id": "q1",
        "sample": 0,
        "steps": list(WRONG),
        "tokens": 10,
        "answer": "21",
        "correct": False,
    }
    files, info = select_rest_em_traces(cfg, run, [Q1, Q2], 1)
    sft = read_jsonl(files[0])
    assert [(e["question_id"], tuple(e["steps"])) for e in sft] == [
        ("q1", LUCKY),
        ("q1", RIGHT),
        ("q2", ("The answer is 6",)),
    ]
    assert {e["source"] for e in sft} == {"rest_em_round_1"}
    assert info["sft_examples"] == 3 and info["sft_questions"] == 2
    assert info["trace_precision"] == pytest.approx(1 / 3)  # LUCKY and the bare answer skip steps


def test_no_pool_without_work(tmp_path):
    cfg = compose(["method=rest_em", f"baselines.budget_run={_reference(tmp_path, 0)}"])

    def no_pool():
        raise AssertionError("the pool must not start when there is nothing to sample")

    files, info = generate(cfg, RunDir(tmp_path / "run"), no_pool, [Q1], 1)
    assert info["samples"] == 0 and info["tokens"] == 0 and read_jsonl(files[0]) == []


def test_self_rewarding_prm_judge_pairs_and_dpo(tmp_path, monkeypatch):
    cfg = compose(["method=self_rewarding", "baselines.match_budget=false", "baselines.rest_em_samples=3"])
    run = RunDir(tmp_path / "run")
    pool = FakePool({Q1.content: [WRONG, LUCKY, RIGHT], Q2.content: [("The answer is 6",)]})
    files, info = generate(cfg, run, lambda: pool, [Q1, Q2], 1)
    assert info["budget"] == -1 and info["samples"] == 6 and info["judged"] == 6
    assert pool.calls == [("sample_solutions", 3)]
    assert [r["judge"] for r in read_jsonl(files[0]) if r["question_id"] == "q1"] == [0.1, 0.5, 0.9]
    files, info = select_pairs(cfg, run, [Q1, Q2], 1)
    pairs = read_jsonl(files[0])  # q2's samples are all the same text: no pair
    assert len(pairs) == 1 and pairs[0]["chosen"] == "2+3=5\n5*4=20\nThe answer is 20\n"
    assert pairs[0]["rejected"].endswith("The answer is 21\n")
    assert info == {"pairs": 1, "chosen_correct": 1.0}

    seen = {}

    def fake_dpo(base_dir, pairs, out_dir, train_cfg, storage_dir, name, beta, trust_remote_code):
        seen.update(base=base_dir, pairs=len(pairs), beta=beta, name=name)
        return {"final_loss": 0.5, "loss_curve": [0.7, 0.5], "out_dir": out_dir}

    monkeypatch.setitem(sys.modules, "trainers.dpo", types.SimpleNamespace(train_dpo=fake_dpo))
    models = {"policy_dir": "p1", "policy_dir0": "p0", "prm_dir": "v0"}
    files, info = train_policy_dpo(cfg, run, models, 2)  # round 2 accumulates round 1's pair
    assert seen == {"base": "p0", "pairs": 1, "beta": cfg.baselines.dpo_beta, "name": "dpo-round-2"}
    assert info == {"policy_dir": str(run.round_dir(2) / "policy"), "examples": 1, "final_loss": 0.5}
    assert keep_prm(cfg, run, models, 2) == ([], {"prm_dir": "v0", "examples": 0})
    empty = RunDir(tmp_path / "empty")
    assert train_policy_dpo(cfg, empty, models, 1) == ([], {"policy_dir": "p1", "examples": 0})


def test_llm_judge_scores_are_parsed_and_mapped(tmp_path):
    cfg = compose(
        ["method=self_rewarding", "baselines.match_budget=false", "baselines.rest_em_samples=1"]
        + ["baselines.judge=llm"]
    )
    pool = FakePool({Q1.content: [RIGHT]}, judge_reply="All steps check out. Score: 10")
    files, info = generate(cfg, RunDir(tmp_path / "run"), lambda: pool, [Q1], 1)
    assert [r["judge"] for r in read_jsonl(files[0])] == [1.0]
    assert info["judge_tokens"] == 5 and ("greedy_solve", 0) in pool.calls
    assert json.dumps(info)  # info is JSON for state.json
