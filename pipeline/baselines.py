"""The paper's baselines, pure side (docs/ALGORITHM.md section 5): ReST-EM trace selection,
Self-Rewarding preference pairs and judge parsing, ORM training data, best-of-n verifier comparison, and
token-budget accounting for equal-budget comparisons. No torch, no ray: the driver calls these on samples
that the policy actors produced and feeds the results to the trainers.

A *sample* is `(steps, tokens)`: the solution's steps (one per line, the last one stating the answer)
and the number of tokens the policy generated for it (an int >= 0, counted by the actor, never estimated).
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.grading import DEFAULT_TIMEOUT, extract_answer, normalize_answer
from pipeline.prompting import PromptFormat
from pipeline.records import PRMExample, Question, SFTExample
from pipeline.verify import Check, as_check

Sample = tuple[tuple[str, ...], int]  # (steps, generated tokens)


@dataclass(frozen=True)
class PreferencePair:
    """A DPO example: `prompt + chosen` is preferred over `prompt + rejected`.

    `chosen`/`rejected` are solution texts (steps joined by the step delimiter); the scores are the
    judge's, in the judge's own units (PRM value in [0, 1], or an LLM judge's 1-10 mapped by `judge_unit`).
    """

    question_id: str
    prompt: str
    chosen: str
    rejected: str
    chosen_score: float
    rejected_score: float


@dataclass(frozen=True)
class Candidate:
    """One of a question's n candidate solutions, as the verifier comparison sees it."""

    answer: str | None  # extracted final answer (None: none stated)
    correct: bool | None  # graded against gold; None (ungradable) counts as wrong
    prm_score: float | None  # PRM value of the whole solution (None: not scored)
    orm_score: float | None  # ORM value of the whole solution (None: not scored)


def _key(steps: Sequence[str]) -> tuple[str, ...]:
    return tuple(step.strip() for step in steps)


def _is_correct(steps: Sequence[str], gold: str | Check | None, fmt: PromptFormat, timeout: float) -> bool:
    """True only when judged correct by the gold answer or Check (pipeline.verify); no answer, a wrong
    one or an ungradable one are all False."""
    check = as_check(gold, timeout)
    return check is not None and check(steps, extract_answer(list(steps), fmt.answer_prefix)) is True


# --------------------------------------------------------------------------------------------- ReST-EM


def select_rest_em(
    question: Question,
    samples: Sequence[Sample],
    gold: str | Check | None,
    fmt: PromptFormat,
    top_k: int,
    tokenizer: object = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[SFTExample]:
    """ReST-EM's E-step for one question: samples whose final answer is graded correct, distinct by step
    text, in sample order, at most `top_k` (value 1.0, source "rest_em"). [] without a gold answer."""
    if gold is None or top_k <= 0:
        return []
    prompt = fmt.prompt(question.content, tokenizer)
    chosen: list[SFTExample] = []
    seen: set[tuple[str, ...]] = set()
    for steps, _tokens in samples:
        key = _key(steps)
        if not steps or key in seen or not _is_correct(steps, gold, fmt, timeout):
            continue
        seen.add(key)
        chosen.append(SFTExample(question.id, prompt, fmt.solution(steps), tuple(steps), 1.0, "rest_em"))
        if len(chosen) == top_k:
            break
    return chosen


# ------------------------------------------------------------------------------------- Self-Rewarding


def preference_pairs(
    question: Question,
    samples: Sequence[Sample],
    judge_scores: Sequence[float | None],
    fmt: PromptFormat,
    min_margin: float,
    tokenizer: object = None,
) -> list[PreferencePair]:
    """Self-Rewarding's pair for one question: the best- against the worst-judged distinct solution.

    Samples with no steps or no judge score (None: an unparsable judge reply) are left out. Identical
    solution texts are merged and their scores averaged, so chosen and rejected always differ. Returns
    [] when fewer than two distinct texts remain or when best - worst < `min_margin` (the paper drops
    pairs with equal scores: use a small positive margin). Ties go to the earlier sample.
    """
    if len(judge_scores) != len(samples):
        raise ValueError(f"{len(samples)} samples but {len(judge_scores)} judge scores")
    totals: dict[tuple[str, ...], list[float]] = {}
    texts: dict[tuple[str, ...], str] = {}
    for (steps, _tokens), score in zip(samples, judge_scores, strict=True):
        if not steps or score is None or not math.isfinite(score):
            continue
        key = _key(steps)
        totals.setdefault(key, []).append(float(score))
        texts.setdefault(key, fmt.solution(steps))
    if len(totals) < 2:
        return []
    means = [(sum(s) / len(s), key) for key, s in totals.items()]  # insertion order = sample order
    best = max(means, key=lambda item: item[0])
    worst = min(means, key=lambda item: item[0])
    if best[0] - worst[0] < min_margin or best[1] == worst[1]:
        return []
    prompt = fmt.prompt(question.content, tokenizer)
    return [PreferencePair(question.id, prompt, texts[best[1]], texts[worst[1]], best[0], worst[0])]


LLM_JUDGE_PROMPT = (
    "Review the user's question and the solution below. Check every step: is each computation and "
    "deduction correct, and does the final answer follow from them?\n"
    "Award 1 point for a solution that is wrong from the first step, up to 10 points for a solution "
    "whose every step and final answer are correct.\n\n"
    "Question: {question}\n"
    "Solution:\n{solution}\n\n"
    "Briefly justify your judgement, then end with a line of the form 'Score: <points>'."
)

# "Score: 7", "score = 7.5", "Score: **8**", "Score: 8/10"; the number may not run on into more digits
# Written so that no two unbounded repeats can trade characters: linear time on any reply.
_SCORE = re.compile(r"\bscore(?:\s*[:=])?\s*(?:\*+\s*)?(\d{1,2}(?:\.\d{1,3})?)(?![\d.]*\d)", re.I)
MAX_JUDGE_REPLY_CHARS = 20_000  # longer replies are read from their last this-many characters


def parse_judge_reply(text: str | None) -> float | None:
    """The 1-10 score an LLM judge gave, from its last 'Score: N' line; None when there is none or it is
    out of range. Parsed with one bounded regex (the text is never evaluated)."""
    if not text:
        return None
    matches = _SCORE.findall(text[-MAX_JUDGE_REPLY_CHARS:])
    if not matches:
        return None
    score = float(matches[-1])
    return score if 1.0 <= score <= 10.0 else None


def judge_unit(score: float) -> float:
    """An LLM judge's 1-10 score on the PRM's [0, 1] scale, so one `min_margin` serves both judges."""
    return (score - 1.0) / 9.0


# ------------------------------------------------------------------------------------------------ ORM


def orm_examples(
    question: Question,
    samples: Sequence[Sample],
    gold: str | Check | None,
    fmt: PromptFormat,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[PRMExample]:
    """Outcome-reward data for one question: one example per distinct non-empty solution, the whole
    solution as `steps`, target 1.0 when its final answer is graded correct, else 0.0. [] without gold.

    m/r are set so that `pipeline.values.recompute_target` gives the same target from v_0 = 0: a correct
    solution is a correct end leaf (m = 0, r = 0: 0 + 1/1 = 1), an incorrect one has r = 1 with m = 0
    (0 - 1/1, clipped to 0). The ORM is then trained by the PRM trainer unchanged.
    """
    if gold is None:
        return []
    out: list[PRMExample] = []
    seen: set[tuple[str, ...]] = set()
    for steps, _tokens in samples:
        key = _key(steps)
        if not steps or key in seen:
            continue
        seen.add(key)
        ok = _is_correct(steps, gold, fmt, timeout)
        out.append(
            PRMExample(
                question.id, question.content, tuple(steps), 1.0 if ok else 0.0, 0, 0 if ok else 1, 0.0
            )
        )
    return out


# --------------------------------------------------------------------------------- verifier comparison


def _pick(indices: list[int], rng: random.Random) -> int:
    return indices[0] if len(indices) == 1 else rng.choice(indices)


def _best_by(group: Sequence[Candidate], field: str, rng: random.Random) -> bool | None:
    """Correctness of the top-scored candidate (seeded tie-break); None when a score is missing."""
    scores = [getattr(c, field) for c in group]
    if any(s is None for s in scores):
        return None
    top = max(scores)
    return group[_pick([i for i, s in enumerate(scores) if s == top], rng)].correct is True


def _majority(group: Sequence[Candidate], rng: random.Random) -> bool:
    """Self-consistency: the most frequent normalised answer (seeded tie-break); a random candidate
    when no candidate states an answer."""
    keys = [normalize_answer(c.answer) if c.answer is not None else None for c in group]
    votes = Counter(k for k in keys if k is not None)
    if not votes:
        return group[rng.randrange(len(group))].correct is True
    top = max(votes.values())
    winners = sorted(k for k, v in votes.items() if v == top)
    winner = winners[_pick(list(range(len(winners))), rng)]
    return group[keys.index(winner)].correct is True


def verifier_accuracy(groups: Sequence[Sequence[Candidate]], seed: int = 0) -> dict[str, float | int | None]:
    """Best-of-n selection accuracy over questions, each group one question's candidates.

    Keys: `prm`, `orm` (pick the highest score; None when any candidate lacks that score),
    `self_consistency` (majority answer), `random` (a uniformly chosen candidate), `pass_at_n` (oracle:
    any candidate correct), all in [0, 1]; `questions` and `candidates` (counts). A question with no
    candidates counts as wrong for every method. Ties are broken by an rng seeded from (seed, question
    index, method), so the result is deterministic and one method's ties do not shift another's.
    """
    methods = ("prm", "orm", "self_consistency", "random", "pass_at_n")
    wins: dict[str, int | None] = dict.fromkeys(methods, 0)
    for q, group in enumerate(groups):
        if not group:
            continue

        def rng(method: str, q: int = q) -> random.Random:
            return random.Random(f"{seed}:{q}:{method}")  # str seeds hash stably across runs

        outcome = {
            "prm": _best_by(group, "prm_score", rng("prm")),
            "orm": _best_by(group, "orm_score", rng("orm")),
            "self_consistency": _majority(group, rng("self_consistency")),
            "random": group[rng("random").randrange(len(group))].correct is True,
            "pass_at_n": any(c.correct is True for c in group),
        }
        for method, ok in outcome.items():
            if ok is None:
                wins[method] = None
            elif wins[method] is not None:
                wins[method] += int(ok)
    n = len(groups)
    result: dict[str, float | int | None] = {
        m: (None if w is None else (w / n if n else 0.0)) for m, w in wins.items()
    }
    result["questions"] = n
    result["candidates"] = sum(len(g) for g in groups)
    return result


# ------------------------------------------------------------------------------------------ budgets


def samples_for_budget(tokens_budget: int, tokens_per_sample_estimate: float, n_questions: int) -> int:
    """Samples per question for the next sampling round: enough, by the current estimate, to spend
    `tokens_budget` over `n_questions`; at least 1 while budget remains, 0 when none does.

    Only a planning figure: what counts is `take_until_budget` on the counted tokens. The driver loops:
    n = samples_for_budget(remaining, estimate, questions) -> sample n per question -> take_until_budget
    -> remaining -= used, estimate = counted tokens / samples -> until remaining <= 0.
    """
    if tokens_budget <= 0 or n_questions <= 0:
        return 0
    per_sample = max(float(tokens_per_sample_estimate), 1.0)
    return max(1, math.ceil(tokens_budget / (per_sample * n_questions)))


def take_until_budget(samples_in_order: Sequence[Sample], budget: int) -> tuple[list[Sample], int]:
    """Keep whole samples, in order, while the counted tokens are below `budget`: (kept, used_tokens).

    The last kept sample may carry the total past the budget (by less than its own tokens), so the
    baseline spends at least the budget, never a sample less. Order the samples round-major (one per
    question, then the next round) so a cut leaves every question within one sample of the others.
    """
    kept: list[Sample] = []
    used = 0
    for sample in samples_in_order:
        if used >= budget:
            break
        tokens = sample[1]
        if tokens < 0:
            raise ValueError(f"a sample's generated token count must be >= 0, got {tokens}")
        kept.append(sample)
        used += tokens
    return kept, used
