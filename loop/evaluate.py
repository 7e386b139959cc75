"""Evaluation modes, each reporting accuracy, ungradable answers and generated tokens per question.

- `cot`: one greedy solution per question.
- `sc`: self-consistency, the majority answer over `eval.n` sampled solutions.
- `bon`: best-of-n, the sampled solution the PRM values highest (same samples as `sc` when both run).
- `mcts`: MCTS* with `eval.search`; `mcts_const`: the same search with a constant value instead of the PRM
  (what the PRM adds); `tot_bfs` / `tot_dfs`: Tree-of-Thought with `eval.tot`. All run on the search
  workers, exactly like a training round's search.

Verification at test time (`eval.verify_at_test_time`, on by default): on a task whose verifier needs no
gold answer (countdown) the searches play by the task's rules and stop at the first verified solution,
and `sc` / `bon` become verified best-of-n (samples drawn `eval.verify_batch` at a time until one
verifies or `eval.n` are drawn; every drawn sample's tokens count). Off, or on other tasks: the PRM's
(or the vote's) pick alone, as in the paper. Each method's `selection` names the rule it used.

`evaluate_methods(pool, questions, cfg, round)` is what the driver calls per round; `evaluate_main` is
`python run.py mode=evaluate ...`. Results (`eval.json`):

    {"round": k, "questions": N, "methods": {method: {"accuracy": float in [0, 1], "correct": int,
     "total": int, "ungradable": int (no answer extracted, or the grader could not decide),
     "tokens_per_question": float, "seconds": float, "by_difficulty": {"2": accuracy, ...},
     "answer_rules": {rule: count}, "selection": str, "verified": int (questions answered by a
     solution the verifier accepted during the method), "samples_per_question": float (sc, bon),
     "proposals", "illegal", "merged": int (searches: step texts proposed, rejected by the task's
     rules, merged into a sibling's state; totals over the questions)}}}

`answer_rules` counts how each question's answer was found: `prefix` (the backbone's answer line), a
fallback of `backbone.answer_fallbacks` (boxed, hash, answer_line, math_verify, last_number), `vote`
(self-consistency's majority) or `none`.

`seconds` is the method's wall time; samples shared by `sc` and `bon` count in both.

Equal-budget sweep: with `eval.budgets` set (multipliers such as [0.25, 0.5, 1, 2]) every method except
`cot` also runs with its budget knob (`BUDGET_KNOBS`) scaled by each multiplier, on the same questions,
and the results gain

    "sweep": {"budgets": [...], "knobs": {method: "eval.n" | ...},
              "methods": {method: [{"scale": s, "value": knob value, <the method fields above>}, ...]}}

(`cot` is one point with scale and value null). A (method, knob value) computed once is reused, so the
multiplier 1 costs nothing extra. `eval_budget.png` plots accuracy against tokens per question.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any

from loop.progress import Progress
from loop.sampling import Scored, sample_scored, sample_verified, verifiable
from pipeline.grading import extract_answer, extract_answer_rule
from pipeline.records import Question
from pipeline.search.seeding import derive_seed
from pipeline.verify import solution_check

log = logging.getLogger(__name__)

SEARCH_METHODS = ("mcts", "mcts_const", "tot_bfs", "tot_dfs")
SEARCH_KIND = {"mcts": "mcts", "mcts_const": "mcts", "tot_bfs": "tot_bfs", "tot_dfs": "tot_dfs"}
# The field under `eval` that sets each method's token budget; `eval.budgets` multiplies it. Tokens grow
# about linearly in each: samples (sc, bon), search iterations (mcts), beam width (tot_bfs: kept partial
# solutions per depth, each expanded with `branch` proposals), expansions (tot_dfs). cot has none.
BUDGET_KNOBS = {
    "sc": "n",
    "bon": "n",
    "mcts": "search.iteration_limit",
    "mcts_const": "search.iteration_limit",
    "tot_bfs": "tot.beam",
    "tot_dfs": "tot.budget",
}


def budget_value(eval_cfg: Any, method: str, scale: float) -> int | None:
    """`method`'s knob at budget multiplier `scale`: the configured value times `scale`, rounded half
    up, at least 1; None for `cot` (one greedy solution, no budget)."""
    knob = BUDGET_KNOBS.get(method)
    if knob is None:
        return None
    base = reduce(getattr, knob.split("."), eval_cfg)
    return max(1, math.floor(float(base) * float(scale) + 0.5))


def selection_rule(method: str, verify: bool) -> str:
    """How `method` picks the answer it is graded on (eval.json's `selection`)."""
    plain = {
        "cot": "greedy",
        "sc": "majority vote",
        "bon": "PRM max",
        "mcts": "end leaf with the highest V (PRM)",
        "mcts_const": "end leaf with the highest V (constant value)",
        "tot_bfs": "finished node with the highest PRM value",
        "tot_dfs": "first finished node over the PRM gate, else the highest PRM value",
    }[method]
    if not verify or method == "cot":
        return plain
    if method in ("sc", "bon"):
        return f"first verified sample, else {plain}"
    return f"rules; stop at the first verified solution, else {plain}"


def evaluate_methods(
    pool: Any, questions: Sequence[Question], cfg: Any, round: int, out_dir: str | Path | None = None
) -> dict[str, Any]:
    """Run every method of `cfg.eval.methods` on `questions` through the pool, then the budget sweep of
    `cfg.eval.budgets` when set. Search trees are written under `out_dir/<method>/` (sweep points under
    `out_dir/sweep/<method>-<value>/`) when given, else to a temporary directory."""
    ev = _Evaluator(pool, questions, cfg, round, out_dir)
    results: dict[str, Any] = {"round": round, "questions": len(questions), "methods": {}}
    for method in cfg.eval.methods:
        results["methods"][method] = r = ev.run(method, budget_value(cfg.eval, method, 1.0), configured=True)
        log.info("round %d eval %s: %s", round, method, _line(r))
    budgets = [float(b) for b in (getattr(cfg.eval, "budgets", None) or [])]
    if budgets:
        sweep: dict[str, Any] = {"budgets": budgets, "knobs": {}, "methods": {}}
        for method in cfg.eval.methods:
            if method not in BUDGET_KNOBS:  # cot: a single greedy point
                point = {"scale": None, "value": None, **results["methods"][method]}
                sweep["methods"][method] = [point]
                continue
            sweep["knobs"][method] = f"eval.{BUDGET_KNOBS[method]}"
            sweep["methods"][method] = []
            for scale in budgets:
                value = budget_value(cfg.eval, method, scale)
                r = ev.run(method, value)
                sweep["methods"][method].append({"scale": scale, "value": value, **r})
                knob = f"eval.{BUDGET_KNOBS[method]}={value}"
                log.info("round %d eval %s x%g (%s): %s", round, method, scale, knob, _line(r))
        results["sweep"] = sweep
    return results


def _with(obj: Any, field: str, value: Any) -> Any:
    """A copy of the dataclass or OmegaConf node `obj` with `field` set to `value`."""
    if dataclasses.is_dataclass(obj):
        return dataclasses.replace(obj, **{field: value})
    from omegaconf import OmegaConf

    return OmegaConf.merge(obj, {field: value})


class _Evaluator:
    """Runs (method, knob value) pairs once each; `sc` and `bon` share the samples of one `n`."""

    def __init__(self, pool: Any, questions: Sequence[Question], cfg: Any, round: int, out_dir: Any):
        self.pool, self.questions, self.cfg, self.round = pool, questions, cfg, round
        self.out_dir = Path(out_dir) if out_dir else None
        self.samples: dict[int, tuple[list[list[Any]], float]] = {}
        self.done: dict[tuple[str, int | None], dict[str, Any]] = {}
        prefix = cfg.backbone.answer_prefix
        self.verify = bool(cfg.eval.verify_at_test_time) and all(verifiable(q, prefix) for q in questions)

    def run(self, method: str, value: int | None, configured: bool = False) -> dict[str, Any]:
        key = (method, value)
        if key in self.done:
            return self.done[key]
        cfg, t0, extra = self.cfg, time.monotonic(), 0.0
        prefix, rules = cfg.backbone.answer_prefix, tuple(cfg.backbone.answer_fallbacks)
        name = f"round {self.round} eval {method}" + ("" if configured else f" ({value})")
        if method == "cot":
            rows = [Answered.of(s.steps, s.tokens, prefix, rules) for s in self._greedy(name)]
        elif method in ("sc", "bon"):
            assert value is not None
            if value in self.samples:
                extra = self.samples[value][1]  # sampled for the other method: count that time here too
            else:
                self.samples[value] = (self._sample(name, value), time.monotonic() - t0)
            groups = self.samples[value][0]
            pick = _majority if method == "sc" else _best
            rows = [pick(g, prefix, rules) for g in groups]
        elif method in SEARCH_METHODS:
            search_cfg = self._search_cfg(method, value)
            sub = method if configured else f"sweep/{method}-{value}"
            out = self.out_dir / sub if self.out_dir else None
            rows = _search(self.pool, self.questions, cfg, self.round, method, search_cfg, out, name)
        else:
            raise ValueError(f"unknown eval method {method!r}")
        seconds = time.monotonic() - t0 + extra
        self.done[key] = _score(self.questions, rows, seconds, prefix, rules)
        self.done[key]["selection"] = selection_rule(method, self.verify)
        return self.done[key]

    def _greedy(self, name: str) -> list[Any]:
        """One greedy solution per question, in pieces of one policy batch per replica (progress)."""
        cfg, contents = self.cfg, [q.content for q in self.questions]
        chunk = int(cfg.policy.max_batch_size)
        piece = chunk * max(1, len(getattr(self.pool, "policy", [])) or 1)
        out: list[Any] = []
        with Progress(name, len(contents), "questions", logger=log) as bar:
            for i in range(0, len(contents), piece):
                part = contents[i : i + piece]
                out.extend(self.pool.greedy(part, max_steps=cfg.eval.search.max_depth, chunk=chunk))
                bar.update(len(part))
        return out

    def _sample(self, name: str, n: int) -> list[list[Scored]]:
        """`n` samples per question, valued by the PRM; with verification, verified best-of-n draws."""
        cfg = self.cfg
        seed = derive_seed(cfg.seed, self.round, "eval-samples")
        with Progress(name, len(self.questions), "questions", logger=log) as bar:
            if self.verify:
                groups = sample_verified(self.pool, self.questions, cfg, n, seed, on_round=bar.set)
            else:
                groups = sample_scored(self.pool, self.questions, cfg, n, seed)
            bar.set(len(self.questions))
        return groups

    def _search_cfg(self, method: str, value: int | None) -> Any:
        """The method's search config at knob `value`, with the constant value for `mcts_const` and the
        rules and verified stop only when verification is on."""
        section, field = BUDGET_KNOBS[method].split(".")
        node = getattr(self.cfg.eval, section)
        # verify_at_test_time=false measures the PRM alone: no rules (a rule that rejects a wrong answer
        # line is a verifier); on tasks without rules the flag changes nothing
        changes = {field: value, "rules": bool(node.rules) and bool(self.cfg.eval.verify_at_test_time)}
        if self.verify:
            changes["verified_stop"] = True
        if method == "mcts_const":
            changes["value"] = "constant"
        for key, new in changes.items():
            if getattr(node, key) != new:
                node = _with(node, key, new)
        return node


@dataclass(frozen=True)
class Answered:
    """One question's result under one method: the chosen solution's steps (empty for self-consistency,
    which answers by vote), the tokens generated for the question, and the answer that is graded;
    `verified`: the method's own verifier accepted it; the counts of samples drawn (sc, bon) and of
    proposals / illegal / merged step texts (searches)."""

    steps: tuple[str, ...]
    tokens: int
    answer: str | None  # None: no answer found
    rule: str = "none"  # how the answer was found: prefix, a fallback rule (pipeline.grading), vote, none
    verified: bool = False
    samples: int = 0
    proposals: int = 0
    illegal: int = 0
    merged: int = 0

    @classmethod
    def of(
        cls,
        steps: Sequence[str],
        tokens: int,
        answer_prefix: str,
        fallbacks: Sequence[str] = (),
        **counts: Any,
    ) -> Answered:
        answer, rule = extract_answer_rule(list(steps), answer_prefix, fallbacks)
        return cls(tuple(steps), int(tokens), answer, rule, **counts)


def _first_verified(group: list[Scored]) -> Scored | None:
    return next((s for s in group if s.verified), None)


def _majority(group: list[Scored], answer_prefix: str, fallbacks: Sequence[str] = ()) -> Answered:
    """The first verified sample when there is one; else the most frequent extracted answer (ties: the
    first sample's order) with the first sample stating it (what a task verifier checks). Tokens of all
    samples."""
    tokens = sum(s.tokens for s in group)
    verified = _first_verified(group)
    if verified is not None:
        return Answered.of(
            verified.steps, tokens, answer_prefix, fallbacks, verified=True, samples=len(group)
        )
    answers = [extract_answer(list(s.steps), answer_prefix, fallbacks) for s in group]
    counts = Counter(a for a in answers if a is not None)
    winner = counts.most_common(1)[0][0] if counts else None
    steps = next((s.steps for s, a in zip(group, answers, strict=True) if a == winner), ())
    steps = tuple(steps) if winner is not None else ()
    rule = "vote" if winner is not None else "none"
    return Answered(steps, tokens, winner, rule, samples=len(group))


def _best(group: list[Scored], answer_prefix: str, fallbacks: Sequence[str] = ()) -> Answered:
    """The first verified sample when there is one; else the sample the PRM values highest (ties: the
    first). Tokens of all samples."""
    tokens = sum(s.tokens for s in group)
    verified = _first_verified(group)
    best = verified if verified is not None else max(group, key=lambda s: s.value)
    return Answered.of(
        best.steps, tokens, answer_prefix, fallbacks, verified=verified is not None, samples=len(group)
    )


def _search(pool, questions, cfg, round, method, search_cfg, out_dir, name="search") -> list[Answered]:
    """`method` on every question with `search_cfg`; shard files under `out_dir` (else a temporary one).
    Progress: trees finished by the workers, polled every ~15 s."""
    from pipeline.shards import Shard, load_shard

    size = max(1, -(-len(questions) // max(1, len(pool.workers))))  # one shard per worker
    with tempfile.TemporaryDirectory(prefix="eval-") as tmp:
        base = Path(out_dir) if out_dir else Path(tmp)
        shards = [
            Shard(
                i,
                round,
                tuple(questions[s : s + size]),
                str(base / f"shard-{i:05d}.jsonl"),
                kind=SEARCH_KIND[method],
                seed=cfg.seed,
            )
            for i, s in enumerate(range(0, len(questions), size))
        ]
        with Progress(name, len(questions), "questions", logger=log) as bar:
            start = _trees_done(pool)
            paths = pool.run_shards(
                shards,
                search_cfg,
                progress=lambda p: bar.set(min(len(questions), int(p.get("trees_done", 0)) - start)),
                progress_every=15.0,
            )
            bar.set(len(questions))
        trees = {t.question_id: t.result for p in paths for t in load_shard(p)}
    prefix, rules = cfg.backbone.answer_prefix, tuple(cfg.backbone.answer_fallbacks)
    return [_searched(trees[q.id], prefix, rules) for q in questions]


def _trees_done(pool: Any) -> int:
    """Trees the pool's workers have finished so far (their counters are cumulative)."""
    try:
        return int(pool.progress().get("trees_done", 0))
    except AttributeError:  # a pool without counters (test doubles)
        return 0


def _searched(result: Any, prefix: str, rules: Sequence[str]) -> Answered:
    return Answered.of(
        result.solution,
        result.generated_tokens,
        prefix,
        rules,
        verified=bool(result.verified),
        proposals=int(result.proposals),
        illegal=int(result.illegal),
        merged=int(result.merged),
    )


def _score(
    questions: Sequence[Question], rows: list[Answered], seconds: float, prefix: str, rules: Sequence[str]
) -> dict[str, Any]:
    correct, ungradable, tokens = 0, 0, 0
    by_diff: dict[str, list[int]] = {}
    for q, row in zip(questions, rows, strict=True):
        check = solution_check(q, prefix, fallbacks=rules)
        verdict = check(row.steps, row.answer) if check is not None else None  # no gold, no verifier
        ungradable += row.answer is None or verdict is None
        correct += bool(verdict)
        tokens += row.tokens
        if q.difficulty:
            by_diff.setdefault(str(q.difficulty), []).append(int(bool(verdict)))
    n = max(1, len(questions))
    return {
        "accuracy": correct / n,
        "correct": correct,
        "total": len(questions),
        "ungradable": ungradable,
        "tokens_per_question": tokens / n,
        "seconds": round(seconds, 2),
        "by_difficulty": {d: sum(v) / len(v) for d, v in sorted(by_diff.items(), key=lambda kv: int(kv[0]))},
        "answer_rules": dict(sorted(Counter(row.rule for row in rows).items())),
        "verified": sum(row.verified for row in rows),
        "samples_per_question": sum(row.samples for row in rows) / n,
        "proposals": sum(row.proposals for row in rows),
        "illegal": sum(row.illegal for row in rows),
        "merged": sum(row.merged for row in rows),
    }


def _line(r: dict[str, Any]) -> str:
    rules = ", ".join(f"{k} {v}" for k, v in r.get("answer_rules", {}).items())
    return (
        f"accuracy {100 * r['accuracy']:.1f}% ({r['correct']}/{r['total']}), ungradable {r['ungradable']}, "
        f"{r['tokens_per_question']:.0f} tokens/question, answers by {rules or '-'}"
    )


def table(results: dict[str, Any]) -> str:
    lines = [
        "| method | accuracy (%) | correct | ungradable | tokens/question | verified | illegal | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m, r in results["methods"].items():
        illegal = f"{r['illegal']}/{r['proposals']}" if r.get("proposals") else "-"
        lines.append(
            f"| {m} | {100 * r['accuracy']:.1f} | {r['correct']}/{r['total']} | {r['ungradable']} | "
            f"{r['tokens_per_question']:.0f} | {r.get('verified', 0)} | {illegal} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def sweep_table(results: dict[str, Any]) -> str:
    """The budget sweep, one row per (method, multiplier); empty when `results` has no sweep."""
    sweep = results.get("sweep")
    if not sweep:
        return ""
    lines = [
        "| method | budget scale | knob | accuracy (%) | correct | tokens/question | by difficulty (%) | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m, points in sweep["methods"].items():
        for p in points:
            scale = "-" if p["scale"] is None else f"{p['scale']:g}"
            knob = "greedy" if p["value"] is None else f"{sweep['knobs'][m]}={p['value']}"
            by_d = " ".join(f"{d}: {100 * a:.1f}" for d, a in p.get("by_difficulty", {}).items()) or "-"
            lines.append(
                f"| {m} | {scale} | {knob} | {100 * p['accuracy']:.1f} | {p['correct']}/{p['total']} | "
                f"{p['tokens_per_question']:.0f} | {by_d} | {p['seconds']:.1f} |"
            )
    return "\n".join(lines)


_SHORT = {"iteration_limit": "iters"}  # plot legends


def budget_points(results: dict[str, Any]) -> dict[str, list[tuple[float, float, str]]]:
    """The lines to plot (methods in `EVAL_METHODS` order): the sweep when the results have one, named
    "method (knob)" with each point labelled by its knob value; else one point per method."""
    from conf.schema import EVAL_METHODS

    sweep = results.get("sweep")
    found = sweep["methods"] if sweep else results["methods"]
    order = sorted(
        found, key=lambda m: (EVAL_METHODS.index(m) if m in EVAL_METHODS else len(EVAL_METHODS), m)
    )
    if not sweep:
        return {m: [(found[m]["tokens_per_question"], found[m]["accuracy"], "")] for m in order}
    out = {}
    for m in order:
        knob = sweep["knobs"].get(m, "").rsplit(".", 1)[-1]
        name = f"{m} ({_SHORT.get(knob, knob)})" if knob else m
        out[name] = [
            (p["tokens_per_question"], p["accuracy"], "" if p["value"] is None else str(p["value"]))
            for p in found[m]
        ]
    return out


def evaluate_main(cfg: Any, train: list[Question], heldout: list[Question]) -> int:
    """`python run.py mode=evaluate ...`: evaluate the round-0 models (`loop.round0`: the configured
    directories, or the built-in backbone's); a question file is evaluated whole, a generated task on its
    held-out split. Writes runs/<run.name>/eval.json and eval_budget.png (accuracy vs tokens per
    question), prints the table (and the sweep's, with `eval.budgets`)."""
    from loop.plots import plot_budget
    from loop.round0 import round0_models
    from loop.session import Pools, ray_session
    from pipeline.rundir import atomic_write_json

    questions = train + heldout if cfg.task.name in ("file", "gsm8k") else (heldout or train)
    policy_dir, prm_dir = round0_models(cfg)
    out = Path(cfg.run.root) / cfg.run.name
    with ray_session(cfg) as url, Pools(cfg) as pools:
        budgets = f", budgets x{list(cfg.eval.budgets)}" if cfg.eval.budgets else ""
        methods = ", ".join(cfg.eval.methods)
        print(
            f"restmcts: evaluating {len(questions)} questions with {methods}{budgets}  |  Ray dashboard {url}"
        )
        results = evaluate_methods(pools.get(policy_dir, prm_dir), questions, cfg, 0, out_dir=out / "eval")
    results["models"] = {"policy_dir": policy_dir, "prm_dir": prm_dir}
    atomic_write_json(out / "eval.json", results)
    png = plot_budget(
        budget_points(results),
        out / "eval_budget.png",
        title=f"{cfg.run.name}: {len(questions)} questions, accuracy vs generated tokens",
    )
    print(table(results))
    if results.get("sweep"):
        print()
        print(sweep_table(results))
    print(f"restmcts: results in {out / 'eval.json'}, plot {png}")
    return 0
