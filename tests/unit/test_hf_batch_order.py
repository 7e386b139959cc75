"""The HF engine's batched decode gives every row what it gives that row alone, whatever order the rows'
prefixes come in (a row whose prefix sorts after another's must still read its own KV cache)."""

from __future__ import annotations

import pytest
import torch

from conf.schema import BackboneConfig, PolicyConfig
from tests.unit.test_actors_local import build_tiny

TEXTS = {"1+2": "Q:1+2\n1+2=3\nThe answer is 3\n", "7*8": "Q:7*8\n7*8=56\nThe answer is 56\n"}


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    """A tiny model over-fitted on two worked solutions: what it writes depends on the question."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from actors.policy import PolicyActor

    path = build_tiny(tmp_path_factory.mktemp("policy"))
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    batch = [torch.tensor([tok.encode(t) + [tok.eos_token_id]]) for t in TEXTS.values()]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        for ids in batch:
            loss = model(input_ids=ids, labels=ids).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.save_pretrained(path)
    backbone = BackboneConfig(max_prompt_tokens=32, max_step_tokens=24, max_solution_tokens=64)
    return PolicyActor(path, backbone, PolicyConfig(max_batch_size=8))


# prompts of one length in an order that is not their sorted order: the prefill's rows permute
@pytest.mark.parametrize("questions", [["7*8", "1+2"], ["1+2", "7*8"], ["7*8", "7*8", "1+2"]])
def test_batched_greedy_equals_each_row_alone(policy, questions):
    alone = [policy.greedy_solve([q], max_steps=3)[0].steps for q in questions]
    together = [s.steps for s in policy.greedy_solve(questions, max_steps=3)]
    assert [a[0] for a in alone] == [TEXTS[q].splitlines()[1] for q in questions]  # it reads the question
    assert together == alone
