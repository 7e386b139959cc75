"""A chat-format backbone through one whole self-training iteration (the Llama-3 / GLM / SmolLM2 prompt
path): the tiny backbone built with a chat template, warm start, search, values, SFT, PRM, evaluation.

Every loop test before this one used the plain format, and the values phase of every chat backbone
crashed after a whole search phase (`select_sft` rendered the chat prompt without a tokenizer)."""

from __future__ import annotations

import json

import pytest

from conf.load import compose

pytestmark = pytest.mark.ray

SYSTEM = "Solve it step by step."
ARGS = [
    "backbone.prompt_format=chat",
    f"backbone.system_prompt={SYSTEM}",
    "iteration=1",
    "task.train_size=8",
    "task.heldout_size=4",
    "task.warm_size=64",
    "task.dv0_size=8",
    "backbone.warm_start.max_steps=3",
    "backbone.initial_prm.max_steps=3",
    "search.iteration_limit=3",
    "search.branch=2",
    "backbone.max_step_tokens=12",
    "eval.search.iteration_limit=2",
    "eval.methods=[cot,mcts]",
    "selection.sft_replay=8",
    "backbone.sft.num_workers=0",
    "backbone.sft.max_steps=2",
    "backbone.prm_train.num_workers=0",
    "backbone.prm_train.max_steps=2",
    "pool.search_workers=1",
    "pool.shard_size=4",
]


def test_chat_backbone_runs_one_full_iteration(ray_session, tmp_path):
    from loop.driver import Driver
    from loop.methods import common as phases
    from loop.methods.rest_mcts import train_prm
    from pipeline.data import load_questions
    from pipeline.prompting import PromptFormat
    from pipeline.records import NodeRecord, Question, to_dict
    from pipeline.rundir import RunDir, atomic_write_jsonl
    from pipeline.values import prm_examples, select_sft

    cfg = compose([*ARGS, f"cache_dir={tmp_path / 'cache'}", f"run.root={tmp_path / 'runs'}"])
    train, heldout = load_questions(cfg.task, cfg.data, seed=cfg.seed)
    run = RunDir(tmp_path / "runs" / "chat")
    run.check_or_save_config(cfg)
    evals = Driver(cfg, train, heldout, run).fit()

    assert sorted(evals) == [0, 1]
    for name in ("search", "values", "sft", "prm", "eval"):
        assert run.phase_done(1, name), name

    # Every prompt the loop writes is the chat rendering, the text the policy actor generates from.
    tokenizer = phases.prompt_tokenizer(cfg)
    chat = f"<system>{SYSTEM}\n<user>"
    replay = phases.replay_examples(cfg, 4)
    assert replay and all(e.prompt.startswith(chat) for e in replay)
    for line in (run.round_dir(1) / "sft.jsonl").read_text().splitlines():
        assert json.loads(line)["prompt"].startswith(chat)

    # The untrained tiny policy rarely reaches an answer, so the training phases get a hand-made tree
    # with a correct and a wrong end leaf: SFT and PRM regression on chat-rendered text, then reload.
    models = json.loads((run.round_dir(0) / "models.json").read_text())
    trained = RunDir(tmp_path / "runs" / "chat-train")
    q = Question("q1", "2+3", "5")
    tree = [
        NodeRecord("q1", 0, -1, (), 0, 0.5, 0.5, 3, False),
        NodeRecord("q1", 1, 0, ("2+3=5",), 1, 0.6, 0.6, 2, False),
        NodeRecord("q1", 2, 1, ("2+3=5", "The answer is 5"), 2, 0.9, 0.9, 1, True),
        NodeRecord("q1", 3, 0, ("2+3=6",), 1, 0.4, 0.4, 1, False),
        NodeRecord("q1", 4, 3, ("2+3=6", "The answer is 6"), 2, 0.3, 0.3, 1, True),
    ]
    fmt = PromptFormat.from_backbone(cfg.backbone)
    sft = select_sft(tree, q.content, cfg.selection, fmt, gold="5", tokenizer=tokenizer)
    assert [e.prompt for e in sft] == [f"{chat}2+3\n<assistant>\n"]
    atomic_write_jsonl(trained.round_dir(1) / "sft.jsonl", [to_dict(e) for e in sft])
    prm = prm_examples(tree, q.content, "5")
    atomic_write_jsonl(trained.round_dir(1) / "prm.jsonl", [to_dict(e) for e in prm])
    _, policy = phases.train_policy(cfg, trained, models, 1)
    _, value = train_prm(cfg, trained, models, 1)
    assert policy["replay"] == 8 and policy["policy_dir"].endswith("round_1/policy")
    assert value["examples"] == len(prm) > 0 and value["prm_dir"].endswith("round_1/prm")

    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(policy["policy_dir"])
    assert AutoTokenizer.from_pretrained(policy["policy_dir"]).chat_template  # kept for the next round
