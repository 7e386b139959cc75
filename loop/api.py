"""Single-question API, the authors' `MCTS_Task(question, ...).run()` in this project's terms.

    >>> from loop.api import solve
    >>> sol = solve("(3+4)*2", iteration_limit=20)      # MCTS* on the configured backbone (tiny default)
    >>> sol.answer, sol.steps, sol.stats["expansions"]

Runs in-process on CPU or GPU (no Ray): the same PolicyActor/PRMActor classes the pool uses, served
with `serve_sync`. Keyword overrides are `eval.search` fields (branch, iteration_limit, ...). Models:
`policy_dir`/`prm_dir` if given, else round 0 by the driver's own rule (`loop.round0.round0_models`: the
configured directories, or for tiny the cached warm start and D_V0 PRM; `round0=False` for the untrained
backbone). Loaded models are kept for the next call with the same directories.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

_loaded: dict[tuple[str, str], tuple[Any, Any]] = {}


@dataclass(frozen=True)
class Solution:
    text: str  # the steps as model text (each followed by the step delimiter)
    answer: str | None  # extracted final answer (None: the search found no finished solution)
    steps: tuple[str, ...]
    stats: dict[str, Any]  # the SearchResult fields (value, iterations, expansions, tokens, ...) + tree size


def solve(
    question: str,
    cfg: Any = None,
    policy_dir: str | None = None,
    prm_dir: str | None = None,
    seed: int = 0,
    round0: bool = True,
    **overrides: Any,
) -> Solution:
    """MCTS* (the `eval.search` preset, with `overrides`) over one question; returns the chosen solution."""
    from actors.policy import PolicyActor
    from actors.prm import PRMActor
    from conf.load import compose
    from loop.round0 import round0_models
    from pipeline.prompting import PromptFormat
    from pipeline.records import to_dict
    from pipeline.search.mcts import search
    from pipeline.search.protocol import serve_sync

    cfg = cfg if cfg is not None else compose([])
    if policy_dir is None or prm_dir is None:
        default_policy, default_prm = round0_models(cfg, trained=round0)
        policy_dir, prm_dir = policy_dir or default_policy, prm_dir or default_prm
    key = (str(policy_dir), str(prm_dir))
    if key not in _loaded:
        _loaded.clear()  # one pair of models in memory at a time
        _loaded[key] = (
            PolicyActor(key[0], cfg.backbone, cfg.policy),
            PRMActor(key[1], cfg.backbone, cfg.prm),
        )
    policy, prm = _loaded[key]
    search_cfg = OmegaConf.merge(cfg.eval.search, overrides)
    fmt = PromptFormat.from_backbone(cfg.backbone)
    gen = search(question, search_cfg, seed, question_id="api", answer_prefix=fmt.answer_prefix)
    outcome = serve_sync(gen, policy, prm)
    r = outcome.result
    stats = {**to_dict(r), "nodes": len(outcome.tree)}
    return Solution(fmt.solution(r.solution), r.answer, tuple(r.solution), stats)
