"""Per-step values inferred from a finished tree (docs/ALGORITHM.md section 3), and SFT trace selection.

Quantities, per node n of a tree whose end leaves were graded against the gold answer:
- m(n), reasoning distance (int >= 0): fewest further steps from n to a correct end leaf; 0 at one.
  A node with no correct leaf below takes m of its nearest ancestor that has one.
- r(n), step reward (0 or 1): 0 when n's subtree holds a correct end leaf, else 1.
- v(n), quality value in [0, 1]: v_root = 0, v(n) = clip(v(parent) + w(n), 0, 1) with the weighted
  reward w(n) = (1 - v(parent)) / (m(n) + 1) * (1 - 2 r(n)) in [-1, 1].
Only nodes on a path to some end leaf are valued, and only trees with a correct end leaf give examples.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.grading import DEFAULT_TIMEOUT, extract_answer
from pipeline.prompting import PromptFormat
from pipeline.records import NodeRecord, PRMExample, SFTExample
from pipeline.verify import Check, as_check


@dataclass(frozen=True)
class NodeValue:
    node_id: int
    m: int  # reasoning distance, >= 0
    r: int  # step reward, 0 or 1
    v: float  # quality value in [0, 1]
    parent_v: float  # v of the parent (0 for first steps)


def quality_value(parent_v: float, m: int, r: int) -> float:
    """v_k = clip(v_{k-1} + (1 - v_{k-1}) / (m_k + 1) * (1 - 2 r_k), 0, 1)."""
    return min(max(parent_v + (1.0 - parent_v) / (m + 1) * (1 - 2 * r), 0.0), 1.0)


def recompute_target(example: PRMExample) -> float:
    """The target of a PRMExample from its own m, r and parent_target (equals `example.target`)."""
    return quality_value(example.parent_target, example.m, example.r)


def grade_leaves(
    tree: Sequence[NodeRecord],
    gold: str | Check,
    answer_prefix: str = "The answer is",
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[int, bool]:
    """Correctness of every end leaf by the gold answer or the question's Check (pipeline.verify): True
    only when judged correct (no answer, a wrong one, or an ungradable one all count as incorrect)."""
    check = as_check(gold, timeout)
    correct = {}
    for node in tree:
        if node.is_end:
            answer = node.answer if node.answer is not None else extract_answer(node.steps, answer_prefix)
            correct[node.node_id] = check(node.steps, answer) is True
    return correct


def _children(tree: Sequence[NodeRecord]) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {node.node_id: [] for node in tree}
    for node in tree:
        if node.parent_id >= 0:
            children[node.parent_id].append(node.node_id)
    return children


def infer_values(tree: Sequence[NodeRecord], correct: Mapping[int, bool]) -> dict[int, NodeValue]:
    """m, r, v of every valued node (not the root), given end-leaf correctness; {} without a correct leaf.

    A node is valued when its subtree holds an end leaf. Two passes over the nodes sorted by depth:
    leaves-up for m and "has an end leaf below", root-down for the inherited m and v.
    """
    if not any(correct.values()):
        return {}
    children = _children(tree)
    by_id = {node.node_id: node for node in tree}
    order = sorted(by_id, key=lambda i: (by_id[i].depth, i))
    distance: dict[int, int] = {}  # only nodes with a correct leaf below
    has_end: dict[int, bool] = {}
    for i in reversed(order):  # children before parents
        below = [distance[c] + 1 for c in children[i] if c in distance]
        if correct.get(i):
            distance[i] = 0
        elif below:
            distance[i] = min(below)
        has_end[i] = by_id[i].is_end or any(has_end[c] for c in children[i])
    values: dict[int, NodeValue] = {}
    inherited: dict[int, int] = {}  # m of each node, own or from the nearest ancestor
    v_of: dict[int, float] = {}
    for i in order:
        node = by_id[i]
        parent = node.parent_id
        inherited[i] = distance.get(i, inherited.get(parent, 0))
        if parent < 0 or not has_end[i]:
            v_of[i] = 0.0
            continue
        r = 0 if i in distance else 1
        parent_v = v_of[parent]
        v_of[i] = quality_value(parent_v, inherited[i], r)
        values[i] = NodeValue(i, inherited[i], r, v_of[i], parent_v)
    return values


def prm_examples(
    tree: Sequence[NodeRecord],
    question: str,
    gold: str | Check,
    answer_prefix: str = "The answer is",
    timeout: float = DEFAULT_TIMEOUT,
) -> list[PRMExample]:
    """One PRM regression example per valued node, in node id order; [] when no end leaf is correct."""
    values = infer_values(tree, grade_leaves(tree, gold, answer_prefix, timeout))
    by_id = {node.node_id: node for node in tree}
    return [
        PRMExample(
            question_id=by_id[i].question_id,
            question=question,
            steps=by_id[i].steps,
            target=value.v,
            m=value.m,
            r=value.r,
            parent_target=value.parent_v,
        )
        for i, value in sorted(values.items())
    ]


def select_sft(
    tree: Sequence[NodeRecord],
    question: str,
    values_cfg: Any,
    prompt_format: PromptFormat,
    gold: str | Check | None = None,
    trace_ok: Callable[[tuple[str, ...]], bool] | None = None,
    tokenizer: Any = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[SFTExample]:
    """Policy traces of one tree: end leaves passing `values_cfg.sft_filter`, best V first, distinct by
    step text, at most `sft_top_k`.

    Filters: "correct" (graded correct against `gold`; none without gold), "oracle" (correct and
    `trace_ok(steps)` when given), "authors" (the authors' released filter: PRM score of the whole trace
    >= authors_min_value and solution text >= authors_min_chars characters, correctness not checked).
    """
    leaves = [node for node in tree if node.is_end and node.steps]
    mode = values_cfg.sft_filter
    if mode == "authors":
        keep = [
            n
            for n in leaves
            if n.prm_value >= values_cfg.authors_min_value
            and len(prompt_format.solution(n.steps).strip()) >= values_cfg.authors_min_chars
        ]
    elif mode in ("correct", "oracle"):
        correct = grade_leaves(tree, gold, prompt_format.answer_prefix, timeout) if gold is not None else {}
        keep = [n for n in leaves if correct.get(n.node_id)]
        if mode == "oracle" and trace_ok is not None:
            keep = [n for n in keep if trace_ok(n.steps)]
    else:
        raise ValueError(f"selection.sft_filter must be correct, authors or oracle, not {mode!r}")
    keep.sort(key=lambda n: (-n.value, n.node_id))
    prompt = prompt_format.prompt(question, tokenizer)
    chosen: list[SFTExample] = []
    seen: set[tuple[str, ...]] = set()
    for node in keep:
        key = tuple(step.strip() for step in node.steps)
        if key in seen:
            continue
        seen.add(key)
        chosen.append(
            SFTExample(
                question_id=node.question_id,
                prompt=prompt,
                solution=prompt_format.solution(node.steps),
                steps=node.steps,
                value=node.value,
            )
        )
        if len(chosen) >= values_cfg.sft_top_k:
            break
    return chosen
