"""Generation engines behind the policy: the seam between `PolicyActor` and what produces tokens.

An engine is a `StepProposer` (`propose`, `critique`, same semantics as the HF PolicyActor) with a
lifecycle (`reload(model_dir)`, `release()`, `close()`, `info()`):

- `hf`: `HFEngine`, transformers with its own KV-cache decode loop (the default);
- `vllm`: `VllmEngine`, an in-process `vllm.LLM` (optional dependency, imported when built);
- `endpoint`: `EndpointEngine`, an OpenAI-compatible server over HTTP (optional `openai` package).

Nothing heavy is imported here; see docs/ENGINES.md for installing each engine.
"""

from __future__ import annotations

import os
from typing import Any


def make_engine(model_dir: str, backbone_cfg: Any, policy_cfg: Any, device: str | None = None):
    """The engine for `policy_cfg.engine`: an object with propose/critique/greedy_solve/sample_solutions
    and reload/release/close/info. `model_dir` is the policy's local HF directory
    (vllm: the weights; endpoint: only its tokenizer, for chat templates; may be absent there).
    `device` (vllm): "cpu" | "cuda"; None picks from `backbone_cfg.policy_resources.num_gpus`."""
    kind = str(policy_cfg.engine)
    if kind == "hf":
        from actors.engines.hf import HFEngine
        from models.device import pick_device

        return HFEngine(
            model_dir, backbone_cfg, policy_cfg, device or pick_device(backbone_cfg.policy_resources.num_gpus)
        )
    if kind == "vllm":
        from actors.engines.vllm_engine import VllmEngine

        return VllmEngine(model_dir, backbone_cfg, device=device)
    if kind == "endpoint":
        from actors.engines.endpoint import EndpointEngine

        tokenizer_dir = model_dir if model_dir and os.path.isdir(model_dir) else None
        return EndpointEngine(backbone_cfg, policy_cfg.endpoint, tokenizer_dir=tokenizer_dir)
    raise ValueError(f"unknown policy.engine {kind!r}; allowed: hf, vllm, endpoint")
