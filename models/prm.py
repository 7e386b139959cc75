"""The process reward model: an LM backbone plus a scalar value head, read at the last real token.

Project choice (docs/ALGORITHM.md, "The PRM"). Two heads, named in `prm_config.json` ("head"):
- `linear`: `Linear(hidden_size, 1)` on the final hidden state of the last non-padding token, then a
  sigmoid: a value in [0, 1] by construction, independent of the padding side. The backbone is loaded
  without its LM head (`AutoModel`).
- `likelihood`: the backbone keeps its LM head (`AutoModelForCausalLM`), and the value head, a small MLP,
  sees the last hidden state together with how likely the model itself finds the solution so far:
  the minimum and mean token log-probability over all solution tokens and over the last step's tokens
  (`LIKELIHOOD_FEATURES`). A wrong step is an unlikely one to a model that can do the step: on the tiny
  arith backbone these four numbers rank right above wrong sibling steps 92-96% of the time, where the
  hidden state alone gave a linear probe 57-59% (docs/CALIBRATION.md). The log-probabilities stay in
  the graph, so value regression also sharpens the LM towards telling right steps from wrong ones.
  The log-probabilities are computed without a full-vocabulary tensor for the whole batch: the backbone
  runs without its LM head (`logits_to_keep`), and the LM head is applied to the final hidden states of
  the positions that predict a solution token only, a chunk of at most `LOGPROB_CHUNK_ELEMENTS // vocab`
  rows at a time, keeping one number per position (`chunked_token_logprobs`).
- `logprob`: the same MLP on the four log-probability features alone (no hidden state). On countdown the
  policy's own mean log-probability of a solution ranks the search tree's real siblings (solver value)
  79% and its end leaves (correct vs not) at AUC 0.83, while a head that also sees the hidden state,
  trained on D_V0, learned to lean on the hidden state and fell to 0.62 / 0.61 (docs/CALIBRATION.md):
  four numbers leave it no feature that fails to generalise from D_V0 to the policy's own trees.
A PRM directory is a plain HF model directory (safetensors) plus `value_head.safetensors` and
`prm_config.json`; a directory without the head (a base LM) loads as an untrained PRM whose head kind
is the caller's (`head=`) and whose weights come from a fixed seed.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.prompting import PRMText

HEAD_FILE = "value_head.safetensors"
CONFIG_FILE = "prm_config.json"
HEAD_INIT_SEED = 1234  # fixed: a fresh head is the same on every worker and every run
HEADS = ("linear", "likelihood", "logprob")
LOGPROB_HEADS = ("likelihood", "logprob")  # heads that read the LM's token log-probabilities
LIKELIHOOD_FEATURES = ("solution_min", "solution_mean", "last_step_min", "last_step_mean")
LOGPROB_FLOOR = -20.0  # token log-probabilities are clamped here,
LOGPROB_SCALE = 10.0  # then divided by this: features in [-2, 0]
MLP_WIDTH = 64
# Logits alive at once when the likelihood head reads log-probabilities: rows per chunk =
# this // vocabulary size (2**24: 512 rows of a 32k vocabulary, 110 of a 152k one; about 3 such tensors
# exist at the peak: the LM head's output, its float copy, logsumexp's temporary).
LOGPROB_CHUNK_ELEMENTS = 1 << 24
SAVED_NAMES = {
    "linear": "linear_sigmoid",
    "likelihood": "likelihood_mlp",
    "logprob": "logprob_mlp",
}  # head kind -> prm_config "head"


class ValueHeadModel(nn.Module):
    """`forward(input_ids, attention_mask, solution_mask=None, last_mask=None) -> values (B,)` in [0, 1].

    The masks (same shape as `input_ids`, 1 on the tokens of the solution / of its last step) are used
    by the `likelihood` head only; without them every real token counts as solution and last step.
    """

    def __init__(self, backbone: nn.Module, hidden_size: int, head: str = "linear"):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown PRM head {head!r}; expected one of {', '.join(HEADS)}")
        self.head_kind = head
        self.backbone = backbone
        # A base model (no LM head) returns `last_hidden_state`; a *ForCausalLM one only `hidden_states`.
        self._has_lm_head = backbone.get_output_embeddings() is not None
        if head in LOGPROB_HEADS:
            if not self._has_lm_head:
                raise ValueError(f"the {head} PRM head needs a backbone with its LM head")
            # Models whose forward takes `logits_to_keep` skip their own full-vocabulary LM head call;
            # others (remote code) still compute logits, which are then read chunk by chunk.
            params = inspect.signature(backbone.forward).parameters
            self._skip_logits = "logits_to_keep" in params
            width = (hidden_size if head == "likelihood" else 0) + len(LIKELIHOOD_FEATURES)
            self.value_head: nn.Module = nn.Sequential(
                nn.Linear(width, MLP_WIDTH), nn.GELU(), nn.Linear(MLP_WIDTH, 1)
            )
        else:
            self.value_head = nn.Linear(hidden_size, 1)
        self.reset_head()

    @property
    def config(self) -> Any:
        return self.backbone.config

    def _out_layer(self) -> nn.Linear:
        return self.value_head if isinstance(self.value_head, nn.Linear) else self.value_head[-1]

    def reset_head(self, seed: int = HEAD_INIT_SEED) -> None:
        """Small deterministic weights and zero output bias: an untrained PRM says about 0.5 everywhere."""
        gen = torch.Generator().manual_seed(seed)
        layers = [m for m in self.value_head.modules() if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for layer in layers:
                std = 0.02 if layer is self._out_layer() else layer.in_features**-0.5
                layer.weight.copy_((torch.randn(layer.weight.shape, generator=gen) * std).to(layer.weight))
                layer.bias.zero_()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        solution_mask: torch.Tensor | None = None,
        last_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        likelihood = self.head_kind in LOGPROB_HEADS
        extra = {}
        if likelihood and self._skip_logits:  # an empty position index: the LM head sees (B, 0, H)
            extra["logits_to_keep"] = torch.zeros(0, dtype=torch.long, device=input_ids.device)
        out = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            use_cache=False,
            output_hidden_states=self._has_lm_head,
            **extra,
        )
        # For a *ForCausalLM, hidden_states[-1] is the final (normed) hidden state, the LM head's input.
        hidden = out.hidden_states[-1] if self._has_lm_head else out.last_hidden_state
        last = last_real_index(attention_mask)
        picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        head_dtype = self._out_layer().weight.dtype
        features = picked.to(head_dtype)
        if likelihood:
            sol, tail = feature_masks(attention_mask, solution_mask, last_mask)
            if self._skip_logits:
                stats = hidden_likelihood_features(
                    hidden, self.backbone.get_output_embeddings(), input_ids, sol, tail
                )
            else:
                stats = likelihood_features(out.logits, input_ids, sol, tail)
            stats = stats.to(head_dtype)
            features = torch.cat([features, stats], dim=-1) if self.head_kind == "likelihood" else stats
        logits = self.value_head(features).squeeze(-1)
        return torch.sigmoid(logits.float())


def feature_masks(
    attention_mask: torch.Tensor,
    solution_mask: torch.Tensor | None = None,
    last_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(solution, last step) boolean masks of the tokens whose log-probabilities the features pool.

    Without masks every real token counts as solution and last step. A token counts only after a real
    token: without masks and left padding, the first real token would otherwise be read from a padding
    position (then the padding side mattered)."""
    real = attention_mask.bool()
    sol = real if solution_mask is None else real & solution_mask.bool()
    sol = sol & torch.nn.functional.pad(real[:, :-1], (1, 0), value=False)
    return sol, (sol if last_mask is None else sol & last_mask.bool())


def likelihood_features(
    logits: torch.Tensor, input_ids: torch.Tensor, solution: torch.Tensor, last_step: torch.Tensor
) -> torch.Tensor:
    """(B, 4): min and mean scaled log-probability of the solution's tokens and of the last step's.

    Token t's log-probability is read from position t - 1's logits (the first token has none); a
    row without such tokens gets 0 (certain) for that pair of features. `logits` (B, T, V) are read
    (and upcast to float) a chunk of positions at a time, at the solution's positions only (in one
    piece when gradients flow into `logits`: each chunk's backward would allocate all of them).
    """
    needed = (solution | last_step)[:, 1:]
    rows, cols = needed.nonzero(as_tuple=True)
    whole = torch.is_grad_enabled() and logits.requires_grad
    lp = chunked_token_logprobs(
        lambda lo, hi: logits[rows[lo:hi], cols[lo:hi]],
        input_ids[:, 1:][needed],
        logits.shape[-1],
        chunk_elements=max(1, int(rows.numel())) * logits.shape[-1] if whole else None,
    )
    return pool_token_logprobs(scatter_positions(lp, needed), solution, last_step)


def hidden_likelihood_features(
    hidden: torch.Tensor,
    lm_head: nn.Module,
    input_ids: torch.Tensor,
    solution: torch.Tensor,
    last_step: torch.Tensor,
    chunk_elements: int | None = None,
) -> torch.Tensor:
    """`likelihood_features` of `lm_head(hidden)` without the (B, T, V) logits: the LM head runs on the
    final hidden states (B, T, H) of the positions that predict a solution token, at most
    `chunk_elements // V` rows per call (default `LOGPROB_CHUNK_ELEMENTS`).

    With gradients on, each chunk is checkpointed: its logits are recomputed in the backward pass
    rather than kept, so training holds one chunk's logits at a time too. Under ZeRO-3 (a partitioned
    LM head, several ranks) the number of LM head calls is made equal across ranks (empty chunks),
    since every call gathers the head's weights collectively.
    """
    needed = (solution | last_step)[:, 1:]
    states = hidden[:, :-1][needed]  # (N, H)
    vocab = int(getattr(lm_head, "out_features", 0) or lm_head.weight.shape[0])
    track = torch.is_grad_enabled() and (
        states.requires_grad or any(p.requires_grad for p in lm_head.parameters())
    )
    lp = chunked_token_logprobs(
        lambda lo, hi: lm_head(states[lo:hi]),
        input_ids[:, 1:][needed],
        vocab,
        chunk_elements=chunk_elements,
        checkpoint=track,
        min_chunks=_zero3_chunks(lm_head, states),
    )
    return pool_token_logprobs(scatter_positions(lp, needed), solution, last_step)


def chunked_token_logprobs(
    logits_of: Callable[[int, int], torch.Tensor],
    targets: torch.Tensor,
    vocab: int,
    chunk_elements: int | None = None,
    checkpoint: bool = False,
    min_chunks: Callable[[int], int] | None = None,
) -> torch.Tensor:
    """(N,) float log-probabilities `logit[target] - logsumexp(logits)` of N rows, where
    `logits_of(lo, hi)` gives rows lo..hi-1 as (hi - lo, V) logits (any float dtype; upcast per chunk).
    Chunks hold at most `max(1, chunk_elements // V)` rows."""
    n = int(targets.shape[0])
    rows = max(1, int(chunk_elements or LOGPROB_CHUNK_ELEMENTS) // max(1, vocab))
    chunks = -(-n // rows)
    if min_chunks is not None:
        chunks = min_chunks(chunks)
    parts = []
    for k in range(chunks):
        lo, hi = min(k * rows, n), min((k + 1) * rows, n)

        def one(tgt: torch.Tensor, lo: int = lo, hi: int = hi) -> torch.Tensor:
            logits = logits_of(lo, hi).float()
            return logits.gather(-1, tgt[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)

        if checkpoint:
            from torch.utils.checkpoint import checkpoint as ckpt

            parts.append(ckpt(one, targets[lo:hi], use_reentrant=False))
        else:
            parts.append(one(targets[lo:hi]))
    if not parts:
        return torch.zeros(0, dtype=torch.float32, device=targets.device)
    return torch.cat(parts)


def scatter_positions(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A float tensor shaped like `mask` holding `values` (row-major order) where `mask` is True, else 0."""
    out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    return out.masked_scatter(mask, values.float())


def pool_token_logprobs(
    token_lp: torch.Tensor, solution: torch.Tensor, last_step: torch.Tensor
) -> torch.Tensor:
    """(B, 4) features from (B, T - 1) token log-probabilities (token t + 1's at column t)."""
    token_lp = token_lp.clamp(min=LOGPROB_FLOOR) / LOGPROB_SCALE  # in [-2, 0]
    cols = []
    for mask in (solution[:, 1:], last_step[:, 1:]):
        masked = torch.where(mask, token_lp, torch.zeros_like(token_lp))  # values <= 0: 0 is neutral
        cols += [masked.amin(dim=1), masked.sum(dim=1) / mask.sum(dim=1).clamp(min=1)]
    return torch.stack(cols, dim=1)


def _zero3_chunks(lm_head: nn.Module, like: torch.Tensor) -> Callable[[int], int] | None:
    """Under ZeRO-3 with several ranks: the largest chunk count over the ranks (None otherwise)."""
    if not any(hasattr(p, "ds_id") for p in lm_head.parameters()):
        return None
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return None

    def synced(chunks: int) -> int:
        count = torch.tensor([chunks], dtype=torch.long, device=like.device)
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
        return int(count.item())

    return synced


def last_real_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of the last 1 in each row of the mask: right padding, left padding, or none."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.long() * (positions + 1)).argmax(dim=1)


def encode(tokenizer: Any, items: list[PRMText | str], max_length: int) -> dict[str, torch.Tensor]:
    """Token ids, attention mask and the solution / last-step masks of `items` (padded to the longest).

    The masks come from the fast tokenizer's character offsets: a token belongs to the solution when it
    starts at or after `solution_start` (so a prompt's tokens never count, whatever the padding side).
    """
    rows = [PRMText.of(x) for x in items]
    enc = tokenizer(
        [r.text for r in rows],
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
        return_offsets_mapping=True,
    )
    offsets = enc.pop("offset_mapping")  # (B, T, 2); special and padding tokens are (0, 0)
    starts, ends = offsets[..., 0], offsets[..., 1]
    real = enc["attention_mask"].bool() & (ends > starts)
    sol_at = torch.tensor([r.solution_start for r in rows])[:, None]
    last_at = torch.tensor([r.last_step_start for r in rows])[:, None]
    return {
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "solution_mask": (real & (starts >= sol_at)).long(),
        "last_mask": (real & (starts >= last_at)).long(),
    }


def _torch_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return torch.float32
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def saved_head(path: str) -> str | None:
    """The head kind of a trained PRM directory; None for a directory without a value head."""
    if not os.path.exists(os.path.join(path, HEAD_FILE)):
        return None
    meta_path = Path(path, CONFIG_FILE)
    saved = json.loads(meta_path.read_text()).get("head") if meta_path.exists() else None
    return next((kind for kind, name in SAVED_NAMES.items() if name == saved), "linear")


def load_prm(
    path: str,
    dtype: str | torch.dtype | None = None,
    device: str = "cpu",
    trust_remote_code: bool = False,
    head: str = "linear",
) -> tuple[ValueHeadModel, Any]:
    """Load a PRM (or a base LM as an untrained PRM) from an HF directory. dtype None/"auto" = float32.

    A trained PRM keeps the head kind it was saved with; `head` applies to a base LM only.
    """
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    kind = saved_head(path) or head
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    auto = AutoModelForCausalLM if kind in LOGPROB_HEADS else AutoModel
    backbone = auto.from_pretrained(
        path, dtype=_torch_dtype(dtype), trust_remote_code=trust_remote_code, use_safetensors=True
    )
    model = ValueHeadModel(backbone, backbone.config.hidden_size, head=kind)
    head_path = os.path.join(path, HEAD_FILE)
    if os.path.exists(head_path):
        model.value_head.load_state_dict(load_file(head_path))
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
    likelihood = model.head_kind in LOGPROB_HEADS
    meta = {
        "head": SAVED_NAMES[model.head_kind],
        "read_at": "last_real_token",
        "hidden_size": int(model.config.hidden_size),
        "value_range": [0.0, 1.0],
        **({"likelihood_features": list(LIKELIHOOD_FEATURES)} if likelihood else {}),
        **(extra or {}),
    }
    with open(os.path.join(path, CONFIG_FILE), "w") as f:
        json.dump(meta, f, indent=2)


@torch.inference_mode()
def score_texts(
    model: ValueHeadModel, tokenizer: Any, texts: list[PRMText | str], max_length: int, batch_size: int
) -> list[float]:
    """PRM values in [0, 1] for `texts`, in input order.

    Texts are batched by length (less padding) and each batch is padded to its own longest input,
    truncated to `max_length` tokens.
    """
    if not texts:
        return []
    items = [PRMText.of(t) for t in texts]
    device = next(model.parameters()).device
    order = sorted(range(len(items)), key=lambda i: len(items[i].text))
    values = [0.0] * len(items)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = encode(tokenizer, [items[i] for i in idx], max_length)
        out = model(**{k: v.to(device) for k, v in enc.items()})
        for i, v in zip(idx, out.tolist(), strict=True):
            values[i] = float(v)
    return values
