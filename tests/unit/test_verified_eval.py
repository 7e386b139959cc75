"""Evaluation with a verifier at test time (issue 25) on countdown questions and a scripted pool: verified
best-of-n's draws and token accounting, the PRM-only fallback, eval.json's counters and selection rules,
mcts_const, progress lines; and countdown's rules (step_rule, state_key, state_text)."""

from __future__ import annotations

import logging
from collections import namedtuple

import loop.evaluate as evaluate
from actors.search_worker import LocalBackend, SearchWorker
from conf.load import compose
from pipeline.records import Question
from pipeline.tasks import countdown
from pipeline.tasks.rules import ILLEGAL, LEGAL, SOLVED, rules_for
from tests.fakes import FakeProposer, FakeScorer

Sample = namedtuple("Sample", "steps tokens")
RIGHT = ("8*3=24 (left: 24 5 2)", "The answer is 24")
WRONG = ("8*3=25 (left: 25 5 2)", "The answer is 25")
QUESTIONS = [
    Question(f"c{i}", "8 3 5 2 to 24", answer="24", source=countdown.SOURCE, difficulty=4) for i in range(4)
]


class ScriptedPool:
    """Question i's sample j (counted over all draws) is right only when j == i < 3 (question 3: never).
    Each sample costs 10 tokens. The PRM values WRONG 0.7 (it prefers a wrong answer)."""

    def __init__(self, questions):
        self.index = {id(q): i for i, q in enumerate(questions)}
        self.drawn = [0] * len(questions)
        self.calls: list[tuple[int, int]] = []  # (questions asked, n)
        self.scored = 0
        proposer = FakeProposer(self._propose)
        backend = LocalBackend(proposer, FakeScorer(lambda steps: 0.5))
        self.workers = [SearchWorker(backend, 4, "The answer is", worker_id=0)]

    @staticmethod
    def _propose(request):
        return [RIGHT[len(request.steps)]] if len(request.steps) < 2 else []

    def greedy(self, questions, max_steps, seed=0, chunk=256):
        return [Sample(WRONG, 10) for _ in questions]

    def sample(self, questions, n, temperature, seed=0, max_steps=0, chunk=32):
        self.calls.append((len(questions), n))
        out = []
        open_ = [i for i in range(len(self.drawn)) if self._open(i)]
        for i in open_[: len(questions)]:
            group = []
            for _ in range(n):
                group.append(Sample(RIGHT if self.drawn[i] == i < 3 else WRONG, 10))
                self.drawn[i] += 1
            out.append(group)
        return out

    def _open(self, i):  # mirrors sample_verified with n = 4: no verified sample yet, fewer than 4 drawn
        return self.drawn[i] <= i if i < 3 else self.drawn[i] < 4

    def score(self, requests, chunk=256):
        self.scored += len(requests)
        return [0.7 if r.steps == WRONG else 0.2 for r in requests]

    def run_shards(self, shards, search_cfg, progress=None, progress_every=30.0, on_shard=None):
        self.search_cfg = search_cfg
        return [self.workers[0].run_shard(s, search_cfg)["path"] for s in shards]


def test_verified_best_of_n_draws_until_one_verifies_and_counts_every_draw(tmp_path):
    cfg = compose(["task=countdown", "eval.methods=[bon,sc]", "eval.n=4", "eval.verify_batch=1"])
    pool = ScriptedPool(QUESTIONS)
    results = evaluate.evaluate_methods(pool, QUESTIONS, cfg, 0, tmp_path)
    assert pool.calls == [(4, 1), (3, 1), (2, 1), (1, 1)]  # one draw a round for the questions still open
    bon, sc = results["methods"]["bon"], results["methods"]["sc"]
    # question i verifies at draw i (i + 1 samples); question 3 never: 4 samples, then the PRM's pick
    assert bon["tokens_per_question"] == 10 * (1 + 2 + 3 + 4) / 4
    assert bon["samples_per_question"] == (1 + 2 + 3 + 4) / 4
    assert (bon["correct"], bon["verified"]) == (3, 3) and (sc["correct"], sc["verified"]) == (3, 3)
    assert pool.scored == 4  # only the unverified question's samples were valued by the PRM
    assert bon["selection"] == "first verified sample, else PRM max"


def test_without_verification_the_prm_picks_from_all_n(tmp_path):
    cfg = compose(["task=countdown", "eval.methods=[bon]", "eval.n=4", "eval.verify_at_test_time=false"])
    pool = ScriptedPool(QUESTIONS)
    bon = evaluate.evaluate_methods(pool, QUESTIONS, cfg, 0, tmp_path)["methods"]["bon"]
    assert pool.calls == [(4, 4)] and bon["tokens_per_question"] == 40
    assert bon["correct"] == 0 and bon["verified"] == 0  # the PRM prefers the wrong line
    assert bon["selection"] == "PRM max"


def test_search_methods_report_rules_counters_and_progress(tmp_path, caplog):
    cfg = compose(["task=countdown", "eval.methods=[mcts,mcts_const]", "eval.search.iteration_limit=5"])
    pool = ScriptedPool(QUESTIONS)
    with caplog.at_level(logging.INFO):
        results = evaluate.evaluate_methods(pool, QUESTIONS, cfg, 0, tmp_path)
    for method in ("mcts", "mcts_const"):
        r = results["methods"][method]
        assert r["correct"] == r["verified"] == 4 and r["proposals"] == 8 and r["illegal"] == 0
        assert r["selection"].startswith("rules; stop at the first verified solution")
        assert f"round 0 eval {method}: done 4/4 questions" in caplog.text
    assert pool.search_cfg.value == "constant" and pool.search_cfg.rules  # the last run: mcts_const


# ------------------------------------------------------------------------------------ countdown rules

Q = Question("c", "8 3 5 2 to 24", answer="24", source=countdown.SOURCE)


def test_countdown_step_rule_judges_the_last_step():
    rule = rules_for(Q).step
    assert rule(()) == LEGAL
    assert rule(("8*3=24 (left: 24 5 2)",)) == LEGAL
    assert rule(RIGHT) == SOLVED
    assert rule(WRONG[:1]) == ILLEGAL  # wrong arithmetic
    assert rule(("8*7=56 (left: 56 3 5 2)",)) == ILLEGAL  # 7 is not on the board
    assert rule(("8*3=24 (left: 24 5)",)) == ILLEGAL  # wrong left list
    assert rule(("The answer is 24",)) == ILLEGAL  # answer too early
    assert rule(("5-2=3 (left: 3 8 3)", "The answer is 24")) == ILLEGAL
    assert rule(("hello",)) == ILLEGAL
    assert rules_for(Q).verifiable


def test_countdown_state_key_merges_equal_states_and_state_text_renders_them():
    key = rules_for(Q).key
    assert key(("8*3=24 (left: 24 5 2)",)) == key(("3*8=24 (left: 5 24 2)",))
    assert key(("8*3=24 (left: 24 5 2)",)) != key(("5*2=10 (left: 10 8 3)",))
    assert key(RIGHT) != key(RIGHT[:1])  # the answer line is a different state
    assert countdown.state_text(Q, ("8*3=24 (left: 24 5 2)",)) == "24 5 2 to 24"
    assert countdown.state_text(Q, ()) == "8 5 3 2 to 24"


def test_countdown_dead_ends_have_no_moves():
    rules, q3 = rules_for(Q), Question("c3", "5 3 2 to 13", answer="13", source=countdown.SOURCE)
    assert not rules.stuck(()) and not rules.stuck(("8*3=24 (left: 24 5 2)",))
    assert not rules_for(q3).stuck(
        ("5*2=10 (left: 10 3)", "10+3=13 (left: 13)")
    )  # the answer line may follow
    assert rules_for(q3).stuck(
        ("5*2=10 (left: 10 3)", "10-3=7 (left: 7)")
    )  # 7 alone, target 13: nothing legal
    assert rules.stuck(RIGHT)  # nothing after the answer line
    assert not rules_for(Question("f", "2+2?", answer="4", source="questions.jsonl")).stuck(("x",))


def test_a_file_question_has_no_rules():
    rules = rules_for(Question("f", "What is 2+2?", answer="4", source="questions.jsonl"))
    assert rules.step is None and rules.key is None and not rules.verifiable
