"""KV reuse across generate calls (actors/engines/hf.py PrefixStore): a prefix that extends one an earlier
call prefilled reads that cache back and prefills only its own new tokens, and gives the same tokens as a
full prefill, greedy and sampled under fixed seeds, whatever else shares the call."""

from __future__ import annotations

import pytest
import torch

from actors.engines.hf import PrefixStore
from conf.schema import BackboneConfig, PolicyConfig
from pipeline.search.protocol import Propose
from tests.unit.test_actors_local import SOLUTION, build_tiny

BACKBONE = BackboneConfig(max_prompt_tokens=32, max_step_tokens=12, max_solution_tokens=64, dtype="float32")


@pytest.fixture(scope="module", params=["trained", "untrained"])
def model_dir(request, tmp_path_factory):
    """The over-fitted tiny policy (peaked: greedy text known) and an untrained one (flat: a sample
    flips on small differences in its logits)."""
    return build_tiny(
        tmp_path_factory.mktemp(request.param), SOLUTION if request.param == "trained" else None
    )


def _engines(model_dir):
    from actors.policy import PolicyActor

    plain, reuse = (PolicyActor(model_dir, BACKBONE, PolicyConfig(max_batch_size=6)) for _ in range(2))
    plain.engine.store = PrefixStore(0)
    return plain.engine, reuse.engine


def _grow(engine, temperature: float, rounds: int = 3) -> list[list[tuple[str, ...]]]:
    """A toy search: each round proposes 2 children for every node of the last round (one call per round,
    nodes of several questions and depths together), then continues each child: every prefix after the
    first round extends one the previous call prefilled."""
    nodes = [(q, ()) for q in ("1+2", "3+4", "1+2=")]
    seen = []
    for r in range(rounds):
        reqs = [Propose(q, steps, 2, temperature, seed=17 * r + i) for i, (q, steps) in enumerate(nodes)]
        out = engine.propose(reqs)
        seen.append([p.steps for p in out])
        grown = [(q, (*steps, s or "x")) for (q, steps), p in zip(nodes, out, strict=True) for s in p.steps]
        nodes = grown[:8]
    return seen


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_reuse_gives_the_tokens_of_a_full_prefill(model_dir, temperature):
    plain, reuse = _engines(model_dir)
    assert _grow(reuse, temperature) == _grow(plain, temperature)
    assert plain.counters["reused_tokens"] == 0
    assert reuse.counters["reused_tokens"] > 0
    total = reuse.counters["reused_tokens"] + reuse.counters["prefill_tokens"]
    assert total == plain.counters["prefill_tokens"]


def test_reused_prefix_in_a_batch_of_unsorted_rows_reads_its_own_cache(model_dir):
    """Rows of one call with kept prefixes of different lengths (and none), in an order that is not the
    sorted one, decode what each decodes alone without reuse."""
    plain, reuse = _engines(model_dir)
    reqs = [
        Propose("1+2", ("1+2=3",), 1, 0.0, 0),
        Propose("3+4", (), 1, 0.0, 0),
        Propose("1+2", (), 1, 0.0, 0),
        Propose("3+4", ("3+4=7", "x"), 1, 0.0, 0),
    ]
    reuse.propose([reqs[2], reqs[1]])  # keep two of the prefixes' starts
    alone = [plain.propose([r])[0] for r in reqs]
    assert reuse.propose(reqs) == alone and reuse.counters["reused_tokens"] > 0


def test_store_keeps_the_longest_prefix_and_drops_the_least_recently_used():
    kv = torch.zeros((1, 2, 1, 5, 2))  # 5 tokens, 80 bytes
    store = PrefixStore(budget=2 * kv.numel() * kv.element_size())
    store.put((1, 2, 3, 4, 5), kv)
    store.put((1, 2, 3, 4, 6), kv)
    assert store.longest((1, 2, 3, 4, 5)).shape[3] == 4  # itself: its last token is left to compute
    assert store.longest((1, 2, 3, 4, 5, 9)) is kv
    assert store.longest((1, 2, 3, 9, 9)) is None  # (1,2,3,4,5) used last
    store.put((7, 7, 7, 7, 7), kv)  # over budget: (1,2,3,4,6) leaves
    assert (1, 2, 3, 4, 6) not in store and (1, 2, 3, 4, 5) in store and store.bytes == 160
    store.clear()
    assert store.longest((1, 2, 3, 4, 5, 9)) is None and not store.lengths


def test_reload_forgets_the_kept_caches(model_dir):
    _, reuse = _engines(model_dir)
    reuse.propose([Propose("1+2", (), 1, 0.0, 0)])
    assert reuse.store.entries
    reuse.reload(model_dir)
    assert not reuse.store.entries
