"""What round 0 of the tiny backbone is built from: the task's question sets, their digest, and the
warm-started policy's own sampled solutions (shared by trainers.warm_start and trainers.state_prm)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from models.backbones import prompt_tokenizer
from pipeline.progress import Progress
from pipeline.prompting import PromptFormat
from pipeline.tasks import BUILTIN, builtin


def _task(task_cfg: Any) -> Any:
    """The built-in task module whose warm-start and D_V0 sets round 0 is built from."""
    task = builtin(task_cfg.name)
    if task is None:
        raise ValueError(
            f"the tiny backbone's round 0 (warm start, D_V0 PRM) is built from a built-in task "
            f"({', '.join(BUILTIN)}), not task={task_cfg.name}; use one of those, or a pretrained backbone "
            "(backbone=smollm2|llama|mistral|glm) for other tasks"
        )
    return task


def _digest(questions: list) -> str:
    """Hash of a question set's contents and gold solutions: what a round-0 model is trained on."""
    h = hashlib.sha256()
    for q in questions:
        h.update(json.dumps([q.content, list(q.solution or ())]).encode())
    return h.hexdigest()


def dv0_questions(task_cfg: Any, seed: int) -> list:
    """`dv0_size` questions of the task with gold solutions (the train and held-out sets avoid them)."""
    return _task(task_cfg).dv0_set(task_cfg, seed)


def sample_solutions(
    policy_dir: str,
    questions: list,
    n: int,
    seed: int,
    fmt: PromptFormat,
    backbone_cfg: Any,
    batch: int = 256,
) -> list[list[tuple[str, ...]]]:
    """`n` sampled whole solutions per question from the policy in `policy_dir` (temperature 0.7, the
    search's), each cut into steps after its answer line: what the round-0 policy really writes."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32).eval()
    render = prompt_tokenizer(backbone_cfg, policy_dir)
    prompts = [fmt.prompt(q.content, render) for q in questions for _ in range(n)]
    torch.manual_seed(seed)
    texts: list[str] = []
    bar = Progress("initial PRM: own samples for D_V0", total=len(prompts), unit="solutions")
    for i in range(0, len(prompts), batch):
        enc = tokenizer(
            prompts[i : i + batch], return_tensors="pt", padding=True, add_special_tokens=fmt.style == "plain"
        )
        with torch.inference_mode():
            out = model.generate(
                **enc,
                do_sample=True,
                temperature=0.7,
                top_k=0,
                max_new_tokens=int(backbone_cfg.max_solution_tokens),
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        texts += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        bar.update(len(prompts[i : i + batch]))
    bar.close()
    solutions = []
    for text in texts:
        steps: list[str] = []
        for line in text.split(fmt.delimiter):
            if line.strip():
                steps.append(line.strip())
            if steps and steps[-1].startswith(fmt.answer_prefix):
                break
        solutions.append(tuple(steps))
    return [solutions[i * n : (i + 1) * n] for i in range(len(questions))]
