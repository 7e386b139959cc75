"""Step-level quality of a value model, measured on search trees with a task's step checker.

An *evaluation instrument* (built-in tasks, where steps can be checked): ReST-MCTS* itself only ever sees
final answers. `step_auc` asks how well the PRM values of a tree's nodes separate right partial solutions
from wrong ones (`task_node_label`: arith, every step right; countdown, the target still reachable by the
exact solver, legal nodes only): the ROC AUC of `prm_value` (the PRM's own score at node
creation, not the backed-up V) against that label, over every non-root node of the given trees.
0.5 = no better than chance, 1.0 = every right prefix scored above every wrong one.

The all-node AUC mixes depths: a value that rises with progress (as D_V0's targets k/K do) ranks deep
nodes high, and deep nodes are wrong more often, so it can fall below 0.5 for a PRM that still orders
siblings well. `sibling_auc` is what UCT selection actually uses: over pairs of children of one parent
with one right and one wrong, the share where the right one has the higher PRM value (ties half).

Pure: standard library only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pipeline.records import NodeRecord, Question

# check(question, steps) -> index of the first wrong step, or None when every step is right
FirstError = Callable[[Question, Sequence[str]], "int | None"]
# label(question, node) -> is the node's partial solution right (None: leave the node out)
NodeLabel = Callable[[Question, NodeRecord], "bool | None"]


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """ROC AUC (Mann-Whitney U / (n_pos * n_neg)), ties counted half. None without both classes."""
    if len(scores) != len(labels):
        raise ValueError("scores and labels differ in length")
    ranked = sorted(zip(scores, labels, strict=True), key=lambda p: p[0])
    n_pos = sum(1 for _, y in ranked if y)
    n_neg = len(ranked) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    # average rank (1-based) of each tie group, summed over the positives
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        avg = (i + 1 + j) / 2
        rank_sum += avg * sum(1 for k in range(i, j) if ranked[k][1])
        i = j
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def prefix_right(first_error: int | None, depth: int) -> bool:
    """A partial solution of `depth` steps is right when its first wrong step (if any) comes later."""
    return first_error is None or first_error >= depth


def steps_label(first_error: FirstError) -> NodeLabel:
    """A node is right while no step within it is wrong (`prefix_right` of its first error)."""

    def label(question: Question, node: NodeRecord) -> bool | None:
        return prefix_right(first_error(question, node.steps), node.depth)

    return label


def step_auc(
    trees: Iterable[Sequence[NodeRecord]],
    questions: dict[str, Question],
    first_error: FirstError | None = None,
    *,
    label: NodeLabel | None = None,
) -> dict[str, Any]:
    """{"auc", "nodes", "right", "sibling_auc", "sibling_pairs"} over the non-root nodes of `trees`
    whose question is in `questions` (by id); an AUC is None when a class is missing. A node is right
    by `label` when given (a node it labels None is left out), else when `first_error` finds no wrong
    step within it (`prefix_right`)."""
    if label is None:
        if first_error is None:
            raise ValueError("step_auc needs first_error or label")
        label = steps_label(first_error)
    scores: list[float] = []
    labels: list[bool] = []
    wins, pairs = 0.0, 0
    for nodes in trees:
        children: dict[tuple[str, int], list[tuple[float, bool]]] = {}
        for node in nodes:
            q = questions.get(node.question_id)
            if q is None or node.depth == 0:
                continue
            right = label(q, node)
            if right is None:
                continue
            scores.append(float(node.prm_value))
            labels.append(right)
            children.setdefault((node.question_id, node.parent_id), []).append((float(node.prm_value), right))
        for group in children.values():
            for v_right, r in group:
                for v_wrong, w in group:
                    if r and not w:
                        pairs += 1
                        wins += 1.0 if v_right > v_wrong else 0.5 if v_right == v_wrong else 0.0
    return {
        "auc": auc(scores, labels),
        "nodes": len(scores),
        "right": sum(labels),
        "sibling_auc": wins / pairs if pairs else None,
        "sibling_pairs": pairs,
    }


def task_first_error(task: Any, answer_prefix: str) -> FirstError:
    """A built-in task's step checker (pipeline.tasks: arith, countdown) as a `FirstError`."""

    def first_error(question: Question, steps: Sequence[str]) -> int | None:
        return task.check_trace(question, steps, answer_prefix).first_error

    return first_error


def task_node_label(task: Any, answer_prefix: str) -> NodeLabel:
    """How a built-in task labels a tree's nodes for `step_auc`. A task with an exact value of a partial
    solution (countdown's solver, `value_of_state`) labels a node right when the target can still be
    made from it (an end leaf: when it is correct), and leaves out the nodes its rules rejected: the
    search values those low without asking the PRM, and a legal-vs-illegal pair is no test of whether
    the PRM sees reachability (with illegal nodes counted, every countdown AUC read 1.0). Other tasks
    (arith): right while no step is wrong (`task_first_error`)."""
    value_of_state = getattr(task, "value_of_state", None)
    if value_of_state is None:
        return steps_label(task_first_error(task, answer_prefix))

    def reachable(question: Question, node: NodeRecord) -> bool | None:
        if node.illegal:
            return None
        return value_of_state(question, node.steps, answer_prefix) > 0.5

    return reachable


def arith_first_error(answer_prefix: str) -> FirstError:
    """The arith task's step checker as a `FirstError`."""
    from pipeline.tasks import arith

    return task_first_error(arith, answer_prefix)
