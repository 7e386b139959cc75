"""PolicyActor: one policy replica (HF transformers) serving batched next-step proposals.

A plain class: `ray.remote` is applied where the pool builds it, so tests and `loop.api` run the
same class in-process. With `policy.engine` vllm or endpoint, every call goes to that engine
(actors/engines, same semantics); what follows describes the default HF engine. Every text goes
through `PromptFormat` (one rendering for generation, SFT and the PRM).

Batching: requests are grouped by temperature; identical prefixes are tokenized and prefilled once and
their KV cache repeated once per wanted sample (HF `generate` with `num_return_sequences` repeats the
input before prefill instead, computing the shared prefix n times); requests with different `n` share
one call. Rows are
sorted by length and cut into chunks of at most `policy.max_batch_size` sequences and of similar prefix
lengths (`length_chunks`), LEFT-padded, and
decoded by `_decode`: a KV-cache sampling loop that prefills each distinct prefix once (a request's `n`
samples share its cache) and drops stopped rows from the batch (at EOS, at the delimiter: its token id
when it is one token, else found in the decoded text).

KV reuse across calls (`PrefixStore`): the cache of every prefilled prefix is kept (LRU, `KV_STORE_BYTES`
per replica, cleared on reload), and a later prefix that starts with a kept one's tokens prefills only its
own remaining tokens. Search asks for a node's children after the node itself, and a child's prefix is
its parent's plus one step: the prefill shrinks from the whole prefix to that step.

Seeding: every row (one sample of one request) draws its uniforms from its own generator, seeded by
(request seed, sample index), and samples by inverse CDF. A sample therefore depends on its prefix and
seed, not on which other requests share the call, so the same tree comes out however the search worker
batches (and a resumed run repeats an uninterrupted one), up to float rounding of padded batches.
"""

from __future__ import annotations

import gc
import hashlib
import inspect
import logging
import time
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Sequence
from typing import Any

import torch

from actors.engines.text import CRITIC_TEMPERATURE, critic_ask, hint, parse_verdict
from models.device import pick_dtype
from pipeline.prompting import PromptFormat
from pipeline.records import SolutionSample
from pipeline.search.protocol import Critique, Proposal, Propose, Verdict

log = logging.getLogger(__name__)

TAIL_TOKENS = 4  # tokens decoded per row and step to find a multi-token delimiter
COMPACT_SHARE = 0.25  # finished rows leave the batch (and its cache) once they are this share of it
MIN_CHUNK_ROWS = 128  # rows a generate chunk holds before prefix length may cut it (`length_chunks`)
KV_STORE_BYTES = 1 << 30  # prefix KV caches kept across calls per replica (`PrefixStore`); 0: no reuse
MIN_REUSE_TOKENS = 4  # the shortest kept prefix worth reading back


def row_seed(seed: int, sample: int) -> int:
    """The seed of sample `sample` of a request seeded `seed` (63 bits, stable across runs)."""
    digest = hashlib.sha256(f"{seed}:{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def row_uniforms(seeds: Sequence[int], steps: int) -> torch.Tensor:
    """(rows x steps) uniforms in [0, 1), row i from its own generator seeded `seeds[i]`."""
    return torch.stack([torch.rand(steps, generator=torch.Generator().manual_seed(s)) for s in seeds])


class _StopTracker:
    """Per-row stop rule; also records how many tokens each row generated up to and including its stop.

    mode "step": a row stops at EOS or once its text contains the delimiter.
    mode "solution": a row stops at EOS, after a finished line starting with `answer_prefix`, or after
    `max_steps` finished lines.
    """

    def __init__(
        self,
        tokenizer: Any,
        prompt_len: int,
        stop_ids: set[int],
        delimiter: str,
        mode: str,
        answer_prefix: str = "",
        max_steps: int = 0,
    ):
        self.tok = tokenizer
        self.prompt_len = prompt_len
        self.stop_ids = torch.tensor(sorted(stop_ids), dtype=torch.long)
        self.delimiter = delimiter
        self.delim_id = _single_token(tokenizer, delimiter)
        self.mode = mode
        self.answer_prefix = answer_prefix
        self.max_steps = max_steps
        self.done_at: torch.Tensor | None = None  # generated tokens at the stop; 0 = not stopped

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **kwargs: Any) -> torch.Tensor:
        gen = input_ids[:, self.prompt_len :]
        n = gen.shape[1]
        if self.done_at is None:
            self.done_at = torch.zeros(gen.shape[0], dtype=torch.long)
        done = self.done_at > 0
        last = gen[:, -1].cpu()
        stop = torch.isin(last, self.stop_ids) & ~done
        if self.mode == "step" and self.delim_id is None:
            # A delimiter that appeared with the newest token lies within the last few tokens' text.
            for i in torch.nonzero(~done & ~stop).flatten().tolist():
                stop[i] = self.delimiter in self.tok.decode(gen[i, -TAIL_TOKENS:], skip_special_tokens=True)
        if self.mode == "solution":
            line_end = (last == self.delim_id) if self.delim_id is not None else torch.ones_like(stop)
            for i in torch.nonzero(~done & ~stop & line_end).flatten().tolist():
                stop[i] = self._solution_finished(self.tok.decode(gen[i], skip_special_tokens=True))
        self.done_at[stop] = n
        return (self.done_at > 0).to(input_ids.device)

    def _solution_finished(self, text: str) -> bool:
        if not text.endswith(self.delimiter):
            return False
        lines = text.split(self.delimiter)[:-1]
        return lines[-1].strip().startswith(self.answer_prefix) or (
            self.max_steps > 0 and len([x for x in lines if x.strip()]) >= self.max_steps
        )

    def lengths(self, total: int) -> list[int]:
        if self.done_at is None:
            return []
        return [int(d) if d > 0 else total for d in self.done_at.tolist()]


def length_chunks(
    rows: Sequence[int], length: Any, max_rows: int, min_rows: int = MIN_CHUNK_ROWS, ratio: float = 0.75
) -> list[list[int]]:
    """`rows` (sorted longest prefix first) cut into chunks of at most `max_rows`; a chunk of at least
    `min_rows` also ends before a row whose prefix is shorter than `ratio` x the chunk's longest. The
    prefill pads every prefix of a chunk to its longest and costs about as much per position as a
    decoded token, while decoding gains little past a few dozen rows: similar lengths pay."""
    chunks: list[list[int]] = []
    for i in rows:
        if chunks and len(chunks[-1]) < max_rows:
            cur = chunks[-1]
            if len(cur) < min_rows or length(i) >= ratio * length(cur[0]):
                cur.append(i)
                continue
        chunks.append([i])
    return chunks


class PrefixStore:
    """KV caches of prefixes prefilled by earlier calls, by their token ids; least recently used ones
    leave past `budget` bytes.

    The key and value at position p depend only on tokens 0..p (causal attention; rotary positions count
    from a row's first real token, not from the padding), so a kept prefix of a new prefix's ids is a valid
    cache for that part of it: the same numbers a full prefill computes, up to float rounding of other
    batch shapes (as padding already does). An entry is (layers, 2 [key, value], heads, tokens, head dim).
    """

    def __init__(self, budget: int):
        self.budget = int(budget)
        self.entries: OrderedDict[tuple[int, ...], torch.Tensor] = OrderedDict()
        self.lengths: Counter[int] = Counter()
        self.bytes = 0

    def __contains__(self, ids: tuple[int, ...]) -> bool:
        return ids in self.entries

    def longest(self, ids: tuple[int, ...]) -> torch.Tensor | None:
        """The cache of the longest kept prefix of `ids` (at least MIN_REUSE_TOKENS tokens), or None; of
        `ids` itself only all but its last token (whose logits the caller computes)."""
        for n in sorted((n for n in self.lengths if MIN_REUSE_TOKENS <= n <= len(ids)), reverse=True):
            kv = self.entries.get(ids[:n])
            if kv is not None:
                self.entries.move_to_end(ids[:n])
                return kv if n < len(ids) else kv[:, :, :, : n - 1]
        return None

    def put(self, ids: tuple[int, ...], kv: torch.Tensor) -> None:
        size = kv.numel() * kv.element_size()
        if ids in self.entries or size > self.budget:
            return
        self.entries[ids] = kv
        self.lengths[len(ids)] += 1
        self.bytes += size
        while self.bytes > self.budget:
            old, old_kv = self.entries.popitem(last=False)
            self.bytes -= old_kv.numel() * old_kv.element_size()
            self.lengths[len(old)] -= 1
            if not self.lengths[len(old)]:
                del self.lengths[len(old)]

    def clear(self) -> None:
        self.entries.clear()
        self.lengths.clear()
        self.bytes = 0


def _single_token(tokenizer: Any, text: str) -> int | None:
    """The id of `text` when the tokenizer encodes it as exactly one token that decodes back to it."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) == 1 and tokenizer.decode(ids) == text:
        return ids[0]
    return None


class HFEngine:
    """One HF policy replica's generation. `backbone` is a BackboneConfig, `policy` a PolicyConfig."""

    def __init__(self, model_dir: str, backbone: Any, policy: Any, device: str):
        self.backbone = backbone
        self.max_batch_size = int(policy.max_batch_size)
        self.fmt = PromptFormat.from_backbone(backbone)
        self.device = device
        self.model: Any = None
        self.tokenizer: Any = None
        self.model_dir = ""
        self.store = PrefixStore(KV_STORE_BYTES)
        self.counters = {
            "calls": 0,
            "rows": 0,
            "tokens": 0,
            "busy_seconds": 0.0,
            "cpu_seconds": 0.0,
            "slots": 0,
            "prefill_tokens": 0,  # prefix tokens run through the model
            "reused_tokens": 0,  # prefix tokens read from the PrefixStore instead
        }
        self.reload(model_dir)

    # ------------------------------------------------------------------------------ lifecycle

    def reload(self, model_dir: str) -> None:
        """Load (new) weights from an HF directory, e.g. after SFT."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.release()
        trust = bool(self.backbone.trust_remote_code)
        tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust)
        tok.padding_side = "left"
        tok.truncation_side = "left"  # keep the end of an over-long prefix (the step being continued)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=pick_dtype(self.backbone.dtype, self.device), trust_remote_code=trust
        )
        self.model, self.tokenizer, self.model_dir = model.to(self.device).eval(), tok, model_dir
        self.delim_id = _single_token(tok, self.fmt.delimiter)
        log.info("policy loaded from %s on %s (delimiter token %s)", model_dir, self.device, self.delim_id)

    def release(self) -> None:
        """Drop the model and free its device memory (before training); `reload` brings it back."""
        self.model = None
        self.store.clear()  # caches of the old weights
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def close(self) -> None:
        self.release()

    def info(self) -> dict[str, Any]:
        """Where the replica runs and what it has done: generate calls, rows, tokens, busy seconds."""
        return {**self.counters, "engine": "hf"}

    # ------------------------------------------------------------------------------ serving

    def propose(self, requests: Sequence[Propose]) -> list[Proposal]:
        """`n` next steps per request (delimiter cut, stripped; "" for an empty sample) and token counts."""
        prefixes = [self._policy_text(r.question, r.steps, r.reflection) for r in requests]
        rows = [
            ((prefixes[i], r.temperature), row_seed(r.seed, j))
            for i, r in enumerate(requests)
            for j in range(r.n)
        ]
        outputs = self._generate_rows(rows, mode="step", max_new=self.backbone.max_step_tokens)
        results, k = [], 0
        for r in requests:
            outs = outputs[k : k + r.n]
            k += r.n
            steps = tuple(text.split(self.fmt.delimiter, 1)[0].strip() for text, _ in outs)
            results.append(Proposal(steps=steps, tokens=sum(t for _, t in outs)))
        return results

    def critique(self, requests: Sequence[Critique]) -> list[Verdict]:
        """Ask the policy whether `steps` solve the question. Reply "solved"/"unsolved" (+ hint text)."""
        rows = [
            (
                (self._policy_text(r.question, r.steps) + critic_ask(r.want_reflection), CRITIC_TEMPERATURE),
                r.seed,
            )
            for r in requests
        ]
        outputs = self._generate_rows(rows, mode="step", max_new=self.backbone.max_step_tokens)
        return [parse_verdict(text, self.fmt.delimiter, tokens) for text, tokens in outputs]

    def greedy_solve(self, questions: Sequence[str], max_steps: int, seed: int = 0) -> list[SolutionSample]:
        """Whole greedy solutions (CoT), generated in one go up to `max_solution_tokens`."""
        rows = [((self._policy_text(q, ()), 0.0), seed) for q in questions]
        return self._solutions(rows, max_steps)

    def sample_solutions(
        self, questions: Sequence[str], n: int, temperature: float, seed: int = 0, max_steps: int = 0
    ) -> list[list[SolutionSample]]:
        """`n` sampled whole solutions per question (self-consistency, best-of-n)."""
        rows = [
            ((self._policy_text(q, ()), temperature), row_seed(seed, i * n + j))
            for i, q in enumerate(questions)
            for j in range(n)
        ]
        flat = self._solutions(rows, max_steps)
        return [flat[i * n : (i + 1) * n] for i in range(len(questions))]

    @torch.inference_mode()
    def throughput_curve(
        self, prompts: Sequence[Any], batch_sizes: Sequence[int], new_tokens: int, repeats: int = 1
    ) -> list[dict[str, float]]:
        """The model's raw batched sampling speed: per batch size B, HF `generate` on B prompts (cycled;
        each a question, or (question, steps) for a partial solution), exactly `new_tokens` sampled tokens
        per row (no early stop), after a warm-up. Returns [{"rows", "tokens_per_s", "seconds",
        "cpu_seconds", "tokens_per_cpu_s"}] in `batch_sizes` order (cpu_seconds: all threads of this
        process; per CPU-second the curve does not move with other processes' load)."""
        texts = [self._policy_text(*((p, ()) if isinstance(p, str) else p)) for p in prompts]
        out = []
        for b in batch_sizes:
            enc = self._encode([texts[i % len(texts)] for i in range(int(b))])
            enc = {k: v.to(self.device) for k, v in enc.items()}
            kw = {"do_sample": True, "temperature": 0.7, "top_k": 0, "top_p": 1.0}
            kw["pad_token_id"] = self.tokenizer.pad_token_id
            self.model.generate(**enc, max_new_tokens=2, min_new_tokens=2, **kw)  # warm-up at this shape
            t0, cpu0 = time.monotonic(), time.process_time()
            for _ in range(repeats):
                self.model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kw)
            seconds, cpu = time.monotonic() - t0, time.process_time() - cpu0
            tokens = int(b) * new_tokens * repeats
            point = {"rows": int(b), "tokens_per_s": tokens / seconds, "seconds": seconds, "cpu_seconds": cpu}
            out.append(point | {"tokens_per_cpu_s": tokens / max(cpu, 1e-9)})
        return out

    # ------------------------------------------------------------------------------ internals

    def _policy_text(self, question: str, steps: Sequence[str], reflection: str = "") -> str:
        # "common" reflection mode: the critic's hint precedes the next step
        return self.fmt.prefix(question, tuple(steps), self.tokenizer) + hint(reflection, self.fmt)

    def _solutions(self, rows: list[tuple[tuple[str, float], int]], max_steps: int) -> list[SolutionSample]:
        outputs = self._generate_rows(
            rows, mode="solution", max_new=self.backbone.max_solution_tokens, max_steps=max_steps
        )
        samples = []
        for text, tokens in outputs:
            steps: list[str] = []
            for line in text.split(self.fmt.delimiter):
                if line.strip():
                    steps.append(line.strip())
                if steps and steps[-1].startswith(self.fmt.answer_prefix):
                    break
            samples.append(SolutionSample(tuple(steps[:max_steps] if max_steps else steps), tokens))
        return samples

    def _generate_rows(
        self, rows: list[tuple[tuple[str, float], int]], mode: str, max_new: int, max_steps: int = 0
    ) -> list[tuple[str, int]]:
        """Generate one sample per row ((text, temperature), seed); returns (text, tokens) in row order."""
        if self.model is None:
            raise RuntimeError("policy weights were released; call reload(model_dir) first")
        out: list[tuple[str, int] | None] = [None] * len(rows)
        by_temp: dict[float, list[int]] = defaultdict(list)
        for i, ((_, temp), _) in enumerate(rows):
            by_temp[temp].append(i)
        for temp, idx in by_temp.items():
            texts = sorted({rows[i][0][0] for i in idx})
            enc = self._encode(texts)
            lengths = enc["attention_mask"].sum(1).tolist()
            row_of = {t: j for j, t in enumerate(texts)}
            # Longest first, so a chunk's rows have similar lengths (less left padding).
            row_len = {i: lengths[row_of[rows[i][0][0]]] for i in idx}
            idx = sorted(idx, key=lambda i: -row_len[i])
            for chunk in length_chunks(idx, row_len.__getitem__, self.max_batch_size):
                which = torch.tensor([row_of[rows[i][0][0]] for i in chunk])
                results = self._generate_chunk(
                    enc, which, temp, [rows[i][1] for i in chunk], mode, max_new, max_steps
                )
                for i, res in zip(chunk, results, strict=True):
                    out[i] = res
        return out  # type: ignore[return-value]

    def _encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        limit = int(self.backbone.max_prompt_tokens + self.backbone.max_solution_tokens)
        return self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=limit,
            return_tensors="pt",
            add_special_tokens=self.fmt.style == "plain",
        )

    @torch.inference_mode()
    def _generate_chunk(self, enc, which, temp, seeds, mode, max_new, max_steps) -> list[tuple[str, int]]:
        # each distinct prefix is encoded (prefilled) once; its rows share that KV cache (`_decode`)
        unique, expand = torch.unique(which, return_inverse=True)
        mask = enc["attention_mask"][unique]
        width = int(mask.sum(1).max())  # drop columns that are padding for every row of this chunk
        ids = enc["input_ids"][unique][:, -width:].to(self.device)
        mask = mask[:, -width:].to(self.device)
        tok = self.tokenizer
        stop_ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
        if mode == "step" and self.delim_id is not None:
            stop_ids.add(self.delim_id)  # a one-token delimiter stops a row like EOS does
        tracker = _StopTracker(tok, 0, stop_ids, self.fmt.delimiter, mode, self.fmt.answer_prefix, max_steps)
        t0, cpu0 = time.monotonic(), time.process_time()
        uniforms = row_uniforms(seeds, int(max_new)).to(self.device)
        gen, slots = self._decode(ids, mask, expand.to(self.device), temp, int(max_new), tracker, uniforms)
        counts = tracker.lengths(gen.shape[1]) or [0] * gen.shape[0]
        texts = tok.batch_decode([g[:c] for g, c in zip(gen, counts, strict=True)], skip_special_tokens=True)
        c = self.counters
        c["calls"], c["rows"], c["tokens"] = (
            c["calls"] + 1,
            c["rows"] + len(counts),
            c["tokens"] + sum(counts),
        )
        c["busy_seconds"] += time.monotonic() - t0
        c["cpu_seconds"] += time.process_time() - cpu0  # all threads of this process
        c["slots"] += slots  # row-steps computed; tokens / slots = the useful share
        return list(zip(texts, counts, strict=True))

    def _decode(
        self, ids, mask, expand, temp: float, max_new: int, tracker: _StopTracker, uniforms: torch.Tensor
    ) -> tuple[torch.Tensor, int]:
        """Sample up to `max_new` tokens per row with a KV cache. `ids`/`mask` hold the distinct prefixes,
        prefilled once; row i continues prefix `expand[i]` (the cache is copied per row after the
        prefill: a request's samples share their prefix). Finished rows leave the batch (and the cache)
        once a quarter of it has finished: HF `generate` keeps computing finished rows until the last row
        ends (half its work on the tiny backbone), while dropping rows at every step copies the whole
        cache at every step. Sampling is plain temperature sampling (no top-k/top-p, none of the model's
        generation_config) by inverse CDF with each row's own `uniforms[row, step]`; temperature 0 =
        greedy. Returns the generated tokens (rows x steps; a row's tokens after its stop are ignored)
        and the row-steps computed."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        gen = torch.full((len(expand), max_new), pad, dtype=torch.long)
        rows = torch.arange(len(expand), device=ids.device)  # original row of each batch position
        # transformers >= 5.2x names the argument `cache` (`past_key_values` warns, then goes in 5.40)
        cache_kw = (
            "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        )
        logits, cache, mask, pos, real = self._prefill(ids, mask, cache_kw)
        real = [real[int(u)] for u in expand.tolist()]  # each row's prefix ids
        logits, mask, pos = logits[expand], mask[expand], pos[expand]
        if not torch.equal(expand, torch.arange(ids.shape[0], device=expand.device)):
            cache.batch_select_indices(expand)  # also when rows merely permute the prefixes
        slots, step = 0, 0
        for step in range(max_new):
            nxt = _sample(logits.float(), temp, uniforms[rows, step])
            gen[rows.cpu(), step] = nxt.cpu()
            slots += len(rows)
            alive = ~tracker(gen[:, : step + 1]).to(ids.device)[rows]
            if step + 1 == max_new or not bool(alive.any()):
                self._keep_rows(range(len(rows)), rows, real, gen, step, tracker, cache, mask)
                break
            if int((~alive).sum()) >= COMPACT_SHARE * len(rows):
                self._keep_rows(
                    torch.nonzero(~alive).flatten().tolist(), rows, real, gen, step, tracker, cache, mask
                )
                keep = torch.nonzero(alive).flatten()
                rows, nxt, mask, pos = rows[keep], nxt[keep], mask[keep], pos[keep]
                cache.batch_select_indices(keep)
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            pos = pos + 1
            out = self.model(
                input_ids=nxt[:, None],
                attention_mask=mask,
                position_ids=pos,
                use_cache=True,
                **{cache_kw: cache},
            )
            logits = out.logits[:, -1, :]
        return gen[:, : step + 1], slots

    def _prefill(
        self, ids, mask, cache_kw: str
    ) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor, list]:
        """Run the distinct prefixes (`ids`/`mask`: rows left-padded) through the model, each from the
        longest prefix of it the PrefixStore keeps (that part of the cache is copied in, the rest is
        computed; a row keeps at least its last token to compute), and keep every prefix's cache there.
        Returns the last position's logits (rows x vocab), the cache, its attention mask (rows x cache
        positions; kept and new parts may be separated by padding), each row's last position (rows x 1) and
        each row's token ids."""
        from transformers import DynamicCache

        real = [tuple(r[m.bool()].tolist()) for r, m in zip(ids.cpu(), mask.cpu(), strict=True)]
        kept = [self.store.longest(t) if self.store.budget else None for t in real]
        have = [0 if kv is None else int(kv.shape[3]) for kv in kept]
        self.counters["reused_tokens"] += sum(have)
        self.counters["prefill_tokens"] += sum(len(t) for t in real) - sum(have)
        if not any(have):
            cache, pos = DynamicCache(), (mask.long().cumsum(-1) - 1).clamp(min=0)
        else:  # new tokens left-padded after the kept caches right-aligned: [pad kept | pad new]
            ref = next(kv for kv in kept if kv is not None)
            width, new = max(have), max(len(t) - h for t, h in zip(real, have, strict=True))
            past = ref.new_zeros((ref.shape[0], 2, len(real), ref.shape[2], width, ref.shape[4]))
            ids = ids.new_full((len(real), new), self.tokenizer.pad_token_id or 0)
            mask, pos = mask.new_zeros((len(real), width + new)), ids.new_zeros((len(real), new))
            for u, (t, h, kv) in enumerate(zip(real, have, kept, strict=True)):
                if kv is not None:
                    past[:, :, u, :, width - h :] = kv
                    mask[u, width - h : width] = 1
                ids[u, new - (len(t) - h) :] = torch.tensor(t[h:], device=ids.device)
                mask[u, width + new - (len(t) - h) :] = 1
                pos[u, new - (len(t) - h) :] = torch.arange(h, len(t), device=ids.device)
            cache = DynamicCache(ddp_cache_data=[(layer[0], layer[1]) for layer in past])
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            use_cache=True,
            logits_to_keep=1,
            **{cache_kw: cache},
        )
        self._keep(real, cache, mask)
        return out.logits[:, -1, :], cache, mask, pos[:, -1:], real

    def _keep(self, real: list[tuple[int, ...]], cache: Any, mask: torch.Tensor) -> None:
        """Copy each row's cache (its first len(real[row]) real positions) into the PrefixStore under
        `real[row]` (rows listed in `real`, by batch position)."""
        layers = getattr(cache, "layers", None)
        if not self.store.budget or layers is None:
            return
        for b, t in enumerate(real):
            if len(t) >= MIN_REUSE_TOKENS and t not in self.store:
                at = torch.nonzero(mask[b]).flatten()[: len(t)]
                kv = [torch.stack((c.keys[b][:, at], c.values[b][:, at])) for c in layers]
                self.store.put(t, torch.stack(kv))

    def _keep_rows(self, batch, rows, real, gen, step: int, tracker: _StopTracker, cache, mask) -> None:
        """Keep the caches of the rows at batch positions `batch` before they leave: a row's prefix plus
        the tokens it has fed back by `step` (up to its stop), the cache its children's prefixes start with."""
        if not self.store.budget:
            return
        done = tracker.done_at.tolist() if tracker.done_at is not None else []
        ids: list[tuple[int, ...]] = [()] * mask.shape[0]
        original = rows.tolist()
        for b in batch:
            r = original[b]
            fed = min(step, done[r]) if done and done[r] > 0 else step
            ids[b] = real[r] + tuple(gen[r, :fed].tolist())
        self._keep(ids, cache, mask)


def _sample(logits: torch.Tensor, temp: float, u: torch.Tensor) -> torch.Tensor:
    """One token per row: inverse CDF of softmax(logits / temp) at the row's uniform `u`; argmax at 0."""
    if temp <= 0:
        return logits.argmax(dim=-1)
    cdf = torch.softmax(logits / temp, dim=-1).cumsum(dim=-1)
    u = u.unsqueeze(1) * cdf[:, -1:]  # scale: cdf may end just below 1
    return torch.searchsorted(cdf, u).squeeze(1).clamp(max=cdf.shape[1] - 1)
