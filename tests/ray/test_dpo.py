"""Self-Rewarding's DPO on the tiny backbone: as a Ray Train job (2 CPU workers, DDP over gloo, ~45 s
here) and in-process with LoRA (~15 s). Pairs are built by `preference_pairs` from judged samples."""

from __future__ import annotations

import pytest

from conf.schema import LoraConfig, TrainConfig
from pipeline.baselines import PreferencePair, preference_pairs
from pipeline.prompting import PromptFormat
from pipeline.records import Question
from trainers.dpo import train_dpo

FMT = PromptFormat()


def judged_pairs(n: int = 16) -> list[PreferencePair]:
    """One pair per small product: the right trace judged 0.9, one with a wrong result judged 0.2."""
    pairs = []
    for i in range(n):
        a, b = i % 9 + 1, (i * 7) % 9 + 1
        question = Question(id=str(i), content=f"{a}*{b}", answer=str(a * b))
        right = (f"{a}*{b}={a * b}", f"The answer is {a * b}")
        wrong = (f"{a}*{b}={a * b + 1}", f"The answer is {a * b + 1}")
        pairs += preference_pairs(question, [(wrong, 9), (right, 8)], [0.2, 0.9], FMT, min_margin=0.1)
    return pairs


def _check(metrics: dict, out_dir: str, steps: int) -> None:
    from transformers import AutoModelForCausalLM

    assert metrics["steps"] == steps == len(metrics["loss_curve"])
    assert metrics["final_loss"] < metrics["first_loss"]
    assert metrics["final_reward_accuracy"] > metrics["first_reward_accuracy"]
    assert metrics["final_reward_margin"] > 0
    model = AutoModelForCausalLM.from_pretrained(out_dir)
    assert model.num_parameters() > 0 and not any("lora" in k for k in model.state_dict())


def test_pairs_are_chosen_right_rejected_wrong():
    pairs = judged_pairs(4)
    assert len(pairs) == 4 and all(p.chosen_score > p.rejected_score for p in pairs)
    assert pairs[1].prompt == "Q:2*8\n" and pairs[1].chosen == "2*8=16\nThe answer is 16\n"


def test_dpo_needs_pairs(tiny_dirs, tmp_path):
    with pytest.raises(ValueError, match="no preference pairs"):
        train_dpo(tiny_dirs.policy_dir, [], str(tmp_path / "p"), TrainConfig(num_workers=0), str(tmp_path))


def test_in_process_dpo_with_lora(tiny_dirs, tmp_path):
    cfg = TrainConfig(
        num_workers=0, micro_batch_size=8, lr=3e-3, max_steps=6, lora=LoraConfig(enabled=True, r=4)
    )
    out = str(tmp_path / "policy")
    metrics = train_dpo(tiny_dirs.policy_dir, judged_pairs(), out, cfg, str(tmp_path / "jobs"), beta=0.1)
    assert metrics["engine"] == "torch" and metrics["world_size"] == 1 and metrics["pairs"] == 16
    _check(metrics, out, steps=6)


@pytest.mark.ray
def test_ray_train_dpo(ray_session, tiny_dirs, tmp_path):
    cfg = TrainConfig(num_workers=2, micro_batch_size=8, lr=1e-3, max_steps=6)
    out = str(tmp_path / "policy")
    metrics = train_dpo(
        tiny_dirs.policy_dir, judged_pairs(), out, cfg, str(tmp_path / "jobs"), name="dpo-ray"
    )
    assert metrics["engine"] == "ddp" and metrics["world_size"] == 2
    _check(metrics, out, steps=6)
