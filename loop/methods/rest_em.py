"""ReST-EM (docs/ALGORITHM.md section 5), a baseline: sample CoT solutions on the training questions,
keep the correct ones (at most `baselines.rest_em_top_k` per question), SFT from round 0 on rounds 1..k.
The round-0 PRM is kept."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from loop.methods import samples
from loop.methods.common import keep_prm, prompt_tokenizer, trace_checker, train_policy
from loop.methods.phases import MethodPhases
from pipeline.baselines import select_rest_em
from pipeline.prompting import PromptFormat
from pipeline.records import Question, SFTExample, to_dict
from pipeline.rundir import RunDir, atomic_write_jsonl
from pipeline.verify import solution_check


def generate(cfg: DictConfig, run: RunDir, get_pool: Any, train: list[Question], k: int):
    """Round k's CoT samples -> `round_<k>/samples.jsonl` (loop.methods.samples)."""
    rows, info, _pool = samples.collect(cfg, get_pool, train, k)
    return samples.write(run, k, cfg.method, rows, info)


def select_rest_em_traces(cfg: DictConfig, run: RunDir, train: list[Question], k: int):
    """ReST-EM's E-step: correct samples, distinct, at most `baselines.rest_em_top_k` per question ->
    `round_<k>/sft.jsonl` (the SFT phase accumulates rounds 1..k). For built-in tasks, `trace_precision` is the
    share of selected traces whose every step is right (an instrument, not a filter)."""
    fmt = PromptFormat.from_backbone(cfg.backbone)
    tokenizer = prompt_tokenizer(cfg)
    by_question = samples.load_samples(run.round_dir(k) / samples.SAMPLES_FILE)
    sft: list[SFTExample] = []
    for q in sorted(train, key=lambda q: q.id):
        drawn = [(r.steps, r.tokens) for r in by_question.get(q.id, [])]
        sft += select_rest_em(
            q,
            drawn,
            solution_check(q, fmt.answer_prefix, fallbacks=cfg.backbone.answer_fallbacks),
            fmt,
            int(cfg.baselines.rest_em_top_k),
            tokenizer,
        )
    sft = [
        SFTExample(e.question_id, e.prompt, e.solution, e.steps, e.value, f"rest_em_round_{k}") for e in sft
    ]
    path = run.round_dir(k) / "sft.jsonl"
    atomic_write_jsonl(path, [to_dict(e) for e in sft])
    info: dict[str, Any] = {"sft_examples": len(sft), "sft_questions": len({e.question_id for e in sft})}
    check = trace_checker(cfg)
    if check is not None and sft:
        by_id = {q.id: q for q in train}
        ok = [check(by_id[e.question_id], e.steps) for e in sft]
        info["trace_precision"] = sum(ok) / len(ok)
    return [path], info


PHASES = MethodPhases(generate, select_rest_em_traces, train_policy, keep_prm)
