"""PRMActor: one process reward model replica serving batched value scoring.

A plain class (`ray.remote` applied by the pool). The model is loaded with `models.prm.load_prm`
(a plain LM directory loads as an untrained PRM with a fixed-seed head); texts are rendered with
`PromptFormat.prefix`, or as the task's state when the PRM directory says it reads the state
(`models.value.PRMReader`): exactly what the PRM is trained on.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import torch

from models.device import pick_device, pick_dtype
from pipeline.prompting import PromptFormat
from pipeline.search.protocol import Score

log = logging.getLogger(__name__)


class PRMActor:
    """One PRM replica. `backbone` is a BackboneConfig, `prm` a PRMConfig (or OmegaConf nodes)."""

    def __init__(self, model_dir: str, backbone: Any, prm: Any, device: str | None = None):
        self.backbone = backbone
        self.max_batch_size = int(prm.max_batch_size)
        self.max_length = int(backbone.max_prompt_tokens + backbone.max_solution_tokens)
        self.fmt = PromptFormat.from_backbone(backbone)
        self.device = device or pick_device(backbone.prm_resources.num_gpus)
        self.model: Any = None
        self.tokenizer: Any = None
        self.model_dir = ""
        self.counters = {"calls": 0, "rows": 0, "busy_seconds": 0.0}
        self.reload(model_dir)

    def reload(self, model_dir: str) -> None:
        """Load (new) PRM weights from an HF directory (with or without a trained value head)."""
        from models.prm import load_prm
        from models.value import reader_of

        self.release()
        dtype = pick_dtype(self.backbone.dtype, self.device)
        self.model, self.tokenizer = load_prm(
            model_dir,
            dtype=dtype,
            device=self.device,
            trust_remote_code=bool(self.backbone.trust_remote_code),
            head=self.backbone.prm_head,
        )
        self.reader = reader_of(model_dir, self.fmt)
        self.model_dir = model_dir
        log.info("PRM loaded from %s on %s", model_dir, self.device)

    def release(self) -> None:
        """Drop the model and free its device memory (before training); `reload` brings it back."""
        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def info(self) -> dict[str, Any]:
        """Where the replica runs and what it has done: score calls, texts scored, busy seconds."""
        return {"model_dir": self.model_dir, "device": self.device, "pid": os.getpid(), **self.counters}

    def score(self, requests: Sequence[Score]) -> list[float]:
        """V(question, steps) in [0, 1] per request, in order; one forward pass per chunk of
        `prm.max_batch_size` texts, each chunk padded to its longest input. Duplicates are scored once."""
        from models.prm import score_texts

        if self.model is None:
            raise RuntimeError("PRM weights were released; call reload(model_dir) first")
        t0 = time.monotonic()
        texts = [self.reader.text(r.question, tuple(r.steps), self.tokenizer) for r in requests]
        unique = sorted(set(texts), key=lambda t: (t.text, t.last_step_start))
        values = score_texts(self.model, self.tokenizer, unique, self.max_length, self.max_batch_size)
        by_text = dict(zip(unique, values, strict=True))
        c = self.counters
        c["calls"], c["rows"] = c["calls"] + 1, c["rows"] + len(unique)
        c["busy_seconds"] += time.monotonic() - t0
        return [by_text[t] for t in texts]
