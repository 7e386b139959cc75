"""Baselines, pure side: ReST-EM selection, Self-Rewarding pairs and judge parsing, ORM data, verifier
comparison, token budgets."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.baselines import (
    LLM_JUDGE_PROMPT,
    Candidate,
    PreferencePair,
    judge_unit,
    orm_examples,
    parse_judge_reply,
    preference_pairs,
    samples_for_budget,
    select_rest_em,
    take_until_budget,
    verifier_accuracy,
)
from pipeline.prompting import PromptFormat
from pipeline.records import Question, from_dict, to_dict
from pipeline.values import recompute_target

FMT = PromptFormat()
Q = Question(id="q1", content="(2+3)*4", answer="20")
RIGHT = ("2+3=5", "5*4=20", "The answer is 20")
RIGHT_2 = ("2+3=5", "4*5=20", "The answer is 20")
LUCKY = ("2+3=6", "6*4=20", "The answer is 20")  # wrong steps, right number: ReST-EM keeps it
WRONG = ("2+3=5", "5*4=21", "The answer is 21")
NO_ANSWER = ("2+3=5",)


def test_rest_em_keeps_distinct_correct_samples_in_order_up_to_top_k():
    samples = [(WRONG, 9), (RIGHT, 10), (NO_ANSWER, 3), (RIGHT, 10), (LUCKY, 10), (RIGHT_2, 11), ((), 0)]
    kept = select_rest_em(Q, samples, Q.answer, FMT, top_k=5)
    assert [e.steps for e in kept] == [RIGHT, LUCKY, RIGHT_2]
    first = kept[0]
    assert first.source == "rest_em" and first.value == 1.0 and first.question_id == "q1"
    assert first.prompt == FMT.prompt(Q.content) and first.solution == FMT.solution(RIGHT)
    assert [e.steps for e in select_rest_em(Q, samples, Q.answer, FMT, top_k=2)] == [RIGHT, LUCKY]
    # whitespace-only differences are the same trace
    assert len(select_rest_em(Q, [(RIGHT, 1), (tuple(s + " " for s in RIGHT), 1)], "20", FMT, 5)) == 1
    assert select_rest_em(Q, samples, None, FMT, top_k=5) == []
    assert select_rest_em(Q, samples, "20", FMT, top_k=0) == []


def test_preference_pair_is_best_against_worst_distinct_text():
    samples = [(RIGHT, 1), (WRONG, 1), (RIGHT_2, 1), (NO_ANSWER, 1)]
    (pair,) = preference_pairs(Q, samples, [0.9, 0.1, 0.7, 0.3], FMT, min_margin=0.1)
    assert pair == PreferencePair(
        "q1", FMT.prompt(Q.content), FMT.solution(RIGHT), FMT.solution(WRONG), 0.9, 0.1
    )
    assert from_dict(PreferencePair, to_dict(pair)) == pair


def test_preference_pairs_merge_duplicates_skip_unscored_and_respect_margin():
    # the same text twice: its scores are averaged, so chosen and rejected never coincide
    samples = [(RIGHT, 1), (RIGHT, 1), (WRONG, 1)]
    (pair,) = preference_pairs(Q, samples, [1.0, 0.5, 0.2], FMT, min_margin=0.0)
    assert pair.chosen_score == pytest.approx(0.75) and pair.rejected == FMT.solution(WRONG)
    assert preference_pairs(Q, [(RIGHT, 1), (RIGHT, 1)], [0.9, 0.1], FMT, 0.0) == []
    # unparsable judge replies (None), NaN and empty samples are left out
    samples = [(RIGHT, 1), (WRONG, 1), ((), 1), (RIGHT_2, 1)]
    assert preference_pairs(Q, samples, [0.8, None, 0.0, float("nan")], FMT, 0.0) == []
    (pair,) = preference_pairs(Q, samples, [0.8, 0.1, 0.0, None], FMT, 0.0)
    assert (pair.chosen, pair.rejected) == (FMT.solution(RIGHT), FMT.solution(WRONG))
    # equal scores: no pair with a positive margin; ties in the max go to the earlier sample
    assert preference_pairs(Q, [(RIGHT, 1), (WRONG, 1)], [0.5, 0.5], FMT, 0.01) == []
    (pair,) = preference_pairs(Q, [(RIGHT_2, 1), (RIGHT, 1), (WRONG, 1)], [0.9, 0.9, 0.2], FMT, 0.5)
    assert pair.chosen == FMT.solution(RIGHT_2)
    assert preference_pairs(Q, [(RIGHT, 1), (WRONG, 1)], [0.6, 0.3], FMT, 0.31) == []
    with pytest.raises(ValueError, match="judge scores"):
        preference_pairs(Q, [(RIGHT, 1)], [], FMT, 0.0)


def test_orm_examples_targets_match_the_value_recursion():
    samples = [(RIGHT, 1), (WRONG, 1), (RIGHT, 1), (NO_ANSWER, 1), ((), 1), (LUCKY, 1)]
    out = orm_examples(Q, samples, Q.answer, FMT)
    assert [(e.steps, e.target, e.m, e.r) for e in out] == [
        (RIGHT, 1.0, 0, 0),
        (WRONG, 0.0, 0, 1),
        (NO_ANSWER, 0.0, 0, 1),
        (LUCKY, 1.0, 0, 0),
    ]
    assert all(recompute_target(e) == e.target and e.parent_target == 0.0 for e in out)
    assert all(e.question == Q.content and e.question_id == "q1" for e in out)
    assert orm_examples(Q, samples, None, FMT) == []


def C(answer, correct, prm=None, orm=None):
    return Candidate(answer, correct, prm, orm)


def test_verifier_accuracy_on_hand_made_groups():
    groups = [
        # PRM right, ORM wrong, majority wrong
        [C("5", True, 0.9, 0.2), C("6", False, 0.1, 0.8), C("6", False, 0.2, 0.3)],
        # all right
        [C("7", True, 0.5, 0.5), C("7", True, 0.4, 0.6)],
        # none right
        [C("1", False, 0.3, 0.3), C(None, False, 0.9, 0.1)],
        # majority right (answers normalised: "1,000" == "1000"), PRM and ORM wrong
        [C("1,000", True, 0.1, 0.1), C("1000", True, 0.2, 0.2), C("3", False, 0.8, 0.9)],
    ]
    acc = verifier_accuracy(groups, seed=0)
    assert acc["questions"] == 4 and acc["candidates"] == 10
    assert acc["prm"] == 0.5 and acc["orm"] == 0.25
    assert acc["self_consistency"] == 0.5 and acc["pass_at_n"] == 0.75
    assert 0.0 <= acc["random"] <= acc["pass_at_n"]
    assert verifier_accuracy(groups, seed=0) == acc


def test_verifier_ties_are_seeded_and_missing_scores_give_none():
    tie = [[C("1", True, 0.5, None), C("2", False, 0.5, None)] for _ in range(200)]
    a = verifier_accuracy(tie, seed=1)
    assert a == verifier_accuracy(tie, seed=1)
    assert a["orm"] is None and a["pass_at_n"] == 1.0
    assert 0.3 < a["prm"] < 0.7 and 0.3 < a["self_consistency"] < 0.7 and 0.3 < a["random"] < 0.7
    assert (
        verifier_accuracy(tie, seed=2)["prm"] != a["prm"] or verifier_accuracy(tie, seed=3)["prm"] != a["prm"]
    )
    # no candidate answers: self-consistency falls back to a random pick; empty groups count as wrong
    odd = verifier_accuracy([[C(None, True, 0.1, 0.1)], []])
    assert odd["self_consistency"] == 0.5 and odd["pass_at_n"] == 0.5 and odd["questions"] == 2
    assert verifier_accuracy([])["prm"] == 0.0


def test_take_until_budget_counts_whole_samples():
    samples = [(RIGHT, 10), (WRONG, 7), (RIGHT_2, 5), (LUCKY, 8)]
    assert take_until_budget(samples, 0) == ([], 0)
    assert take_until_budget(samples, 10) == (samples[:1], 10)
    assert take_until_budget(samples, 11) == (samples[:2], 17)  # passes the budget by less than a sample
    assert take_until_budget(samples, 22) == (samples[:3], 22)
    assert take_until_budget(samples, 1000) == (samples, 30)
    with pytest.raises(ValueError, match=">= 0"):
        take_until_budget([(RIGHT, -1)], 5)


def test_sampling_rounds_spend_the_budget():
    """The driver's loop: plan with the estimate, keep by the counted tokens, until the budget is spent."""
    budget, questions, estimate = 1000, 4, 20.0
    assert samples_for_budget(budget, estimate, questions) == 13
    assert samples_for_budget(0, estimate, questions) == 0 and samples_for_budget(5, 0.0, questions) == 2
    assert samples_for_budget(1, 50.0, questions) == 1 and samples_for_budget(100, 5.0, 0) == 0
    remaining, spent, rounds, kept_total = budget, 0, 0, 0
    while remaining > 0:
        n = samples_for_budget(remaining, estimate, questions)
        drawn = [(RIGHT, 30 + (i % 3)) for i in range(n * questions)]  # real lengths exceed the estimate
        kept, used = take_until_budget(drawn, remaining)
        remaining, spent, rounds, kept_total = (
            remaining - used,
            spent + used,
            rounds + 1,
            kept_total + len(kept),
        )
        estimate = used / len(kept)
    assert budget <= spent < budget + 32 and rounds <= 3 and kept_total > 0


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("The steps are right.\nScore: 9", 9.0),
        ("score=7.5", 7.5),
        ("Score: **8**", 8.0),
        ("Score: 8/10", 8.0),
        ("SCORE : 10.", 10.0),
        ("Score: 3 ... on reflection, Score: 6", 6.0),  # the last one counts
        ("Score: 0", None),
        ("Score: 11", None),
        ("Score: 100", None),  # never read as 10
        ("Score: 99999999999999999999999", None),
        ("Score: -5", None),
        ("Score: 7.5.3", None),
        ("I would give it ten points", None),
        ("underscore 5", None),
        ("Score: __import__('os').system('echo hi')", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_judge_reply(reply, score):
    assert parse_judge_reply(reply) == score


def test_parse_judge_reply_is_fast_on_adversarial_text():
    hostile = ["score" + " " * 50_000 + "x", ("score: " * 20_000), "Score: 5" + "9" * 100_000, "*" * 100_000]
    start = time.perf_counter()
    results = [parse_judge_reply(text) for text in hostile]
    assert time.perf_counter() - start < 2.0
    assert results == [None, None, None, None]
    assert parse_judge_reply("x" * 1_000_000 + "\nScore: 4") == 4.0  # the tail is read
    assert judge_unit(1.0) == 0.0 and judge_unit(10.0) == 1.0


def test_judge_prompt_renders():
    text = LLM_JUDGE_PROMPT.format(question=Q.content, solution=FMT.solution(RIGHT))
    assert Q.content in text and "Score: <points>" in text


def test_baselines_import_no_torch_or_ray():
    code = (
        "import pipeline.baselines, sys; "
        "heavy = [m for m in ('torch', 'ray', 'transformers', 'deepspeed') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    root = Path(__file__).parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
