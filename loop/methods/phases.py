"""The contract of a self-training method: four round phases the driver calls in order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MethodPhases:
    """The four per-round phases of a self-training method; the driver calls them in this order.

    generate(cfg, run, get_pool, train, k) -> (files, info)   search / sampling on the training questions
    select(cfg, run, train, k) -> (files, info)               training data from what was generated
    train_policy(cfg, run, models, k) -> (files, info)        info must hold "policy_dir"
    train_prm(cfg, run, models, k) -> (files, info)           info must hold "prm_dir"
    """

    generate: Callable[..., Any]
    select: Callable[..., Any]
    train_policy: Callable[..., Any]
    train_prm: Callable[..., Any]
