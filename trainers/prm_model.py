"""The process reward model: an LM backbone plus a scalar value head, read at the last real token.

Project choice (docs/ALGORITHM.md section 4): `Linear(hidden_size, 1)` on the final hidden state of the
last non-padding token, then a sigmoid, so a value is in [0, 1] by construction and does not depend on
the padding side. A PRM directory is a plain HF backbone directory (safetensors) plus
`value_head.safetensors` and `prm_config.json`; a directory without the head (a base LM) loads as an
untrained PRM whose head is initialised from a fixed seed.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

HEAD_FILE = "value_head.safetensors"
CONFIG_FILE = "prm_config.json"
HEAD_INIT_SEED = 1234  # fixed: a fresh head is the same on every worker and every run


class ValueHeadModel(nn.Module):
    """`forward(input_ids, attention_mask) -> values (B,)` in [0, 1]."""

    def __init__(self, backbone: nn.Module, hidden_size: int):
        super().__init__()
        self.backbone = backbone
        self.value_head = nn.Linear(hidden_size, 1)
        # A base model (no LM head) returns `last_hidden_state`; a *ForCausalLM one only `hidden_states`.
        self._has_lm_head = backbone.get_output_embeddings() is not None
        self.reset_head()

    @property
    def config(self) -> Any:
        return self.backbone.config

    def reset_head(self, seed: int = HEAD_INIT_SEED) -> None:
        """Small deterministic weights and zero bias: an untrained PRM says about 0.5 everywhere."""
        gen = torch.Generator().manual_seed(seed)
        weight = torch.randn(self.value_head.weight.shape, generator=gen) * 0.02
        with torch.no_grad():
            self.value_head.weight.copy_(weight.to(self.value_head.weight))
            self.value_head.bias.zero_()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            use_cache=False,
            output_hidden_states=self._has_lm_head,
        )
        hidden = out.hidden_states[-1] if self._has_lm_head else out.last_hidden_state
        last = last_real_index(attention_mask)
        picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        logits = self.value_head(picked.to(self.value_head.weight.dtype)).squeeze(-1)
        return torch.sigmoid(logits.float())


def last_real_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of the last 1 in each row of the mask: right padding, left padding, or none."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.long() * (positions + 1)).argmax(dim=1)


def _torch_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return torch.float32
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def load_prm(
    path: str, dtype: str | torch.dtype | None = None, device: str = "cpu", trust_remote_code: bool = False
) -> tuple[ValueHeadModel, Any]:
    """Load a PRM (or a base LM as an untrained PRM) from an HF directory. dtype None/"auto" = float32."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    backbone = AutoModel.from_pretrained(
        path, dtype=_torch_dtype(dtype), trust_remote_code=trust_remote_code, use_safetensors=True
    )
    model = ValueHeadModel(backbone, backbone.config.hidden_size)
    head_path = os.path.join(path, HEAD_FILE)
    if os.path.exists(head_path):
        state = load_file(head_path)
        model.value_head.load_state_dict({"weight": state["weight"], "bias": state["bias"]})
    model.value_head.to(torch.float32)
    model.to(device)
    model.eval()
    return model, tokenizer


def save_prm(model: ValueHeadModel, tokenizer: Any, path: str, extra: dict | None = None) -> None:
    """Write `path` as an HF directory (safetensors) + `value_head.safetensors` + `prm_config.json`."""
    os.makedirs(path, exist_ok=True)
    model.backbone.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    head = {
        k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.value_head.state_dict().items()
    }
    save_file(head, os.path.join(path, HEAD_FILE))
    meta = {
        "head": "linear_sigmoid",
        "read_at": "last_real_token",
        "hidden_size": int(model.value_head.in_features),
        "value_range": [0.0, 1.0],
        **(extra or {}),
    }
    with open(os.path.join(path, CONFIG_FILE), "w") as f:
        json.dump(meta, f, indent=2)


@torch.inference_mode()
def score_texts(
    model: ValueHeadModel, tokenizer: Any, texts: list[str], max_length: int, batch_size: int
) -> list[float]:
    """PRM values in [0, 1] for `texts`, in input order.

    Texts are batched by length (less padding) and each batch is padded to its own longest input,
    truncated to `max_length` tokens.
    """
    if not texts:
        return []
    device = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    values = [0.0] * len(texts)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer(
            [texts[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        out = model(enc["input_ids"].to(device), enc["attention_mask"].to(device))
        for i, v in zip(idx, out.tolist(), strict=True):
            values[i] = float(v)
    return values
