"""Typed records that cross every process and file boundary.

Frozen dataclasses of plain values (str, int, float, bool, tuples, None), so they pickle through Ray
and round-trip through JSON with `to_dict` / `from_dict`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

T = TypeVar("T")


def to_dict(record: Any) -> dict[str, Any]:
    """JSON-ready dict of a record (tuples become lists)."""
    return asdict(record)


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a record from `to_dict` output; list fields come back as tuples."""
    kwargs = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            value = data[f.name]
            kwargs[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)


@dataclass(frozen=True)
class Question:
    """One problem. `answer` is the gold final answer (None when unknown: search/eval only)."""

    id: str  # stable: given in the file, or derived from the content (see pipeline.data)
    content: str
    answer: str | None = None
    source: str = ""  # file path or generator name
    difficulty: int = 0  # arith: number of operations; 0 when unknown
    solution: tuple[str, ...] = ()  # worked steps when known (gold traces, D_V0, warm start)


@dataclass(frozen=True)
class NodeRecord:
    """One node of a finished search tree, as written to shard files (one JSON object per line).

    Steps are the full partial solution from the root; `value` is the search's V in [0, 1] after
    backup; `prm_value` the PRM's own score when the node was created.
    """

    question_id: str
    node_id: int  # 0 = root (empty partial solution)
    parent_id: int  # -1 for the root
    steps: tuple[str, ...]
    depth: int  # number of steps
    value: float  # V in [0, 1]
    prm_value: float  # V_theta(q, steps) at creation, in [0, 1]
    visits: int
    is_end: bool  # end leaf: reflected finished, or V >= end_gate
    answer: str | None = None  # extracted final answer of an end leaf
    correct: bool | None = None  # graded against the gold answer (None: unknown gold or not an end leaf)
    reflection: str = ""  # critic text ("common" reflection mode)
    illegal: bool = False  # the task's rules rejected its last step (an end leaf, never expanded)


@dataclass(frozen=True)
class SearchResult:
    """Outcome of one search over one question (the tree itself is a list of NodeRecord)."""

    question_id: str
    solution: tuple[str, ...]  # steps of the chosen solution
    answer: str | None  # extracted final answer of the solution (None: none found)
    value: float  # V of the chosen node
    correct: bool | None  # None when no gold answer
    iterations: int  # search rounds run
    expansions: int
    generated_tokens: int  # policy tokens spent (proposals, roll-outs, critic)
    scored: int  # PRM evaluations
    fallback: bool  # True when no end leaf existed and the highest-V node was used
    early_stop: bool
    empty_proposals: int
    seconds: float = 0.0
    proposals: int = 0  # step texts the policy returned (empty ones included)
    illegal: int = 0  # proposals the task's rules rejected (kept in the tree, never expanded)
    merged: int = 0  # proposals whose state equalled a sibling's (merged into it, not a new node)
    verified: bool = False  # the solution was accepted by the task's verifier during the search


@dataclass(frozen=True)
class SFTExample:
    """A selected policy training trace: loss on `solution` only, never on `prompt`."""

    question_id: str
    prompt: str  # the question as the backbone's prompt format renders it
    solution: str  # steps joined by the step delimiter, ending with the answer step
    steps: tuple[str, ...]
    value: float  # trace value in [0, 1] (V of its end leaf)
    source: str = "mcts"  # mcts | rest_em | warm_start | gold


@dataclass(frozen=True)
class PRMExample:
    """A value-regression target: V(question, prefix) should be `target`.

    `target` = v_k from the weighted-reward recursion; `m` is the reasoning distance (steps left to a
    correct end leaf, 0 at one), `r` the step reward (0 on a path to a correct leaf, 1 otherwise),
    `parent_target` the previous v_{k-1}, so target = clip(v_{k-1} + (1 - v_{k-1}) / (m + 1) * (1 - 2 r)).
    """

    question_id: str
    question: str
    steps: tuple[str, ...]
    target: float  # in [0, 1]
    m: int
    r: int  # 0 or 1
    parent_target: float  # v_{k-1}; 0 for the first step


@dataclass(frozen=True)
class SolutionSample:
    """A whole generated solution: steps (delimiter removed, stripped, cut after the answer step)."""

    steps: tuple[str, ...]
    tokens: int  # generated tokens up to and including the stop (EOS or the answer line's delimiter)


@dataclass(frozen=True)
class SampleRecord:
    """One sampled whole solution of a baseline round (a line of `round_<k>/samples.jsonl`)."""

    question_id: str
    sample: int  # the question's sample index, 0, 1, ...
    steps: tuple[str, ...]
    tokens: int  # generated tokens, >= 0, counted by the actor
    answer: str | None  # extracted final answer (None: none stated)
    correct: bool | None  # graded against gold (None: no gold, or ungradable)
    judge: float | None = None  # self_rewarding only: the judge's score in [0, 1] (None: no verdict)
