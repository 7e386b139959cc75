"""PolicyActor: one policy replica serving batched next-step proposals, critiques and whole solutions.

A thin facade over its engine (`policy.engine`: hf, vllm or endpoint; actors/engines), all with the same
semantics. A plain class: `ray.remote` is applied where the pool builds it, so tests and `loop.api` run
the same class in-process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from actors.engines import make_engine
from models.device import pick_device
from pipeline.records import SolutionSample
from pipeline.search.protocol import Critique, Proposal, Propose, Verdict


class PolicyActor:
    """One policy replica. `backbone` is a BackboneConfig, `policy` a PolicyConfig (or OmegaConf nodes)."""

    def __init__(self, model_dir: str, backbone: Any, policy: Any, device: str | None = None):
        self.device = device or pick_device(backbone.policy_resources.num_gpus)
        self.engine = make_engine(model_dir, backbone, policy, device=self.device)
        self.model_dir = model_dir

    def reload(self, model_dir: str) -> None:
        """Load (new) weights from an HF directory, e.g. after SFT."""
        self.engine.reload(model_dir)
        self.model_dir = model_dir

    def release(self) -> None:
        """Drop the weights and free their device memory (before training); `reload` brings them back."""
        self.engine.release()

    def info(self) -> dict[str, Any]:
        """Where the replica runs and what it has done: calls, rows, tokens, busy seconds, engine."""
        return {"model_dir": self.model_dir, "device": self.device, "pid": os.getpid(), **self.engine.info()}

    def propose(self, requests: Sequence[Propose]) -> list[Proposal]:
        """`n` next steps per request (delimiter cut, stripped; "" for an empty sample) and token counts."""
        return self.engine.propose(requests)

    def critique(self, requests: Sequence[Critique]) -> list[Verdict]:
        """Ask the policy whether `steps` solve the question. Reply "solved"/"unsolved" (+ hint text)."""
        return self.engine.critique(requests)

    def greedy_solve(self, questions: Sequence[str], max_steps: int, seed: int = 0) -> list[SolutionSample]:
        """Whole greedy solutions (CoT), up to `max_solution_tokens` tokens each."""
        return self.engine.greedy_solve(questions, max_steps, seed)

    def sample_solutions(
        self, questions: Sequence[str], n: int, temperature: float, seed: int = 0, max_steps: int = 0
    ) -> list[list[SolutionSample]]:
        """`n` sampled whole solutions per question (self-consistency, best-of-n)."""
        return self.engine.sample_solutions(questions, n, temperature, seed, max_steps)

    def throughput_curve(
        self, prompts: Sequence[Any], batch_sizes: Sequence[int], new_tokens: int, repeats: int = 1
    ) -> list[dict[str, float]]:
        """The engine's raw batched sampling speed per batch size ([{"rows", "tokens_per_s", ...}]) on
        `prompts` (questions, or (question, steps) pairs); [] for an engine that does not measure one
        (vllm, endpoint: they batch by themselves)."""
        curve = getattr(self.engine, "throughput_curve", None)
        return curve(prompts, batch_sizes, new_tokens, repeats) if curve else []
