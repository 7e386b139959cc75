"""D_V0 for countdown: gold prefixes k/K, dead ends (the solver says the target is gone) below their
parent, detours (still reachable) valued like an unfinished correct path; all targets re-derivable."""

from __future__ import annotations

from pipeline.tasks import countdown
from pipeline.tasks.countdown_dv0 import build_dv0
from pipeline.values import recompute_target


def test_dv0_targets_follow_the_solver_and_the_value_formula():
    questions = countdown.generate(40, [3, 4], seed=3)
    examples = build_dv0(questions, seed=0, corruptions=2)
    assert examples == build_dv0(questions, seed=0, corruptions=2)  # deterministic
    by_id = {q.id: q for q in questions}
    kinds = {"gold": 0, "dead": 0, "detour": 0, "error": 0}
    for e in examples:
        q = by_id[e.question_id]
        assert 0.0 <= e.target <= 1.0 and abs(recompute_target(e) - e.target) < 1e-12
        gold = tuple(q.solution)
        if e.steps == gold[: len(e.steps)]:
            kinds["gold"] += 1
            assert e.r == 0 and abs(e.target - len(e.steps) / len(gold)) < 1e-9
            continue
        numbers, target = countdown.parse_question(q.content)
        state = countdown.apply_steps(numbers, [s for s in e.steps if not s.startswith("The answer")])
        if e.r == 0:  # a detour: every line legal and the target still reachable
            kinds["detour"] += 1
            assert state is not None and countdown.reachable(state, target) and e.target > e.parent_target
        elif state is None:
            kinds["error"] += 1  # an illegal line somewhere on the branch
            assert e.target <= e.parent_target
        else:
            kinds["dead"] += 1
            assert e.target <= e.parent_target
            assert not countdown.reachable(state, target)  # a dead end stays dead down its run-out
    assert all(kinds[k] > 0 for k in kinds), kinds


def test_the_policys_own_samples_are_valued_by_the_solver():
    from pipeline.tasks.countdown_dv0 import label_sample, label_samples

    q = countdown.generate(1, [4], seed=5)[0]  # "16 7 12 15 to 36"
    gold = label_sample(q, q.solution)
    assert [round(e.target, 3) for e in gold] == [0.25, 0.5, 0.75, 1.0] and all(e.r == 0 for e in gold)
    detour = ["16+7=23 (left: 23 12 15)"]  # legal; 36 still reachable? the solver decides
    numbers, target = countdown.parse_question(q.content)
    reachable = countdown.reachable((23, 12, 15), target)
    assert (label_sample(q, detour)[0].r == 0) == reachable
    illegal = ["1+1=2 (left: 2 20 3)", "The answer is 36"]
    values = label_sample(q, illegal)
    assert [e.r for e in values] == [1, 1] and values[0].target == 0.0
    early = ["16+12=28 (left: 28 7 15)", "The answer is 36"]  # answer before the target is made
    assert label_sample(q, early)[-1].r == 1
    for e in label_sample(q, q.solution) + values:
        assert abs(recompute_target(e) - e.target) < 1e-12
    both = label_samples([q], [[q.solution, q.solution, illegal]])
    assert len(both) == len({e.steps for e in both}) == 6  # distinct prefixes only


def test_walks_are_legal_states_valued_by_the_solver():
    from pipeline.tasks.countdown_dv0 import walk_dv0
    from pipeline.tasks.countdown_solver import reachable

    qs = countdown.generate(40, [3, 4], seed=5)
    examples = walk_dv0(qs, seed=0, walks=3, illegal_share=0.5)
    assert examples == walk_dv0(qs, seed=0, walks=3, illegal_share=0.5)  # deterministic
    assert len({(e.question_id, e.steps) for e in examples}) == len(examples)  # distinct prefixes
    by_id = {q.id: q for q in qs}
    live = dead = illegal = solved = 0
    for e in examples:
        q = by_id[e.question_id]
        assert 0.0 <= e.target <= 1.0
        assert abs(recompute_target(e) - e.target) < 1e-9
        numbers, target = countdown.parse_question(q.content)
        if e.steps[-1].startswith("The answer is"):
            solved += e.r == 0
            assert (e.r == 0) == countdown.verify(q, e.steps) and (e.target == 1.0) == (e.r == 0)
            continue
        state = countdown.apply_steps(numbers, e.steps)
        if state is None:  # the illegal line
            illegal += 1
            assert e.r == 1
            continue
        ok = state[0] == target or (len(state) > 1 and reachable(state, target))
        assert e.r == (0 if ok else 1), e
        live, dead = live + ok, dead + (not ok)
    assert live > 40 and dead > 40 and solved > 10 and illegal > 5
    assert len(walk_dv0(qs, seed=1, walks=6)) > len(walk_dv0(qs, seed=1, walks=2))
