"""Self-training methods as round phases (docs/ALGORITHM.md sections 4-5).

    rest_mcts:       MCTS* on the training questions -> per-step values, best correct traces -> SFT and
                     PRM regression from round 0 on the data of rounds 1..k (the paper's method)
    rest_em:         sample CoT solutions -> keep correct ones -> SFT from round 0 (baseline)
    self_rewarding:  sample CoT solutions, judge each -> preference pairs -> DPO from round 0 (baseline)

A phase reads its inputs from the run directory, writes its files atomically and returns
`(files, info)`: the files go into the manifest with their checksums, `info` is a small JSON dict. So a
resumed run computes exactly what an uninterrupted one does.
"""

from __future__ import annotations

from loop.methods.phases import MethodPhases

METHODS = ("rest_mcts", "rest_em", "self_rewarding")


def method_phases(method: str) -> MethodPhases:
    """The phases of `method` (one of METHODS)."""
    if method == "rest_mcts":
        from loop.methods import rest_mcts

        return rest_mcts.PHASES
    if method == "rest_em":
        from loop.methods import rest_em

        return rest_em.PHASES
    if method == "self_rewarding":
        from loop.methods import self_rewarding

        return self_rewarding.PHASES
    raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
