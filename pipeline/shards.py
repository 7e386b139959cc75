"""The search shard file format (docs/FORMATS.md): one JSON line per tree, in the shard's question order.

A `Shard` is a unit of search work (these questions, searched with `kind`, written to `out_path`); a
`TreeRecord` is one line of its file, typed. Pure: the search workers produce the rows (`tree_row`) and
return them through Ray; the driver writes the file (`write_shard`, atomic) into the run directory; the
values phase and evaluation read them back (`load_shard`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.records import NodeRecord, Question, SearchResult, from_dict, to_dict
from pipeline.rundir import atomic_write_jsonl, read_jsonl
from pipeline.search.seeding import derive_seed

SEARCH_KINDS = ("mcts", "tot_bfs", "tot_dfs")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Shard:
    """A unit of search work: these questions, searched with `kind`, written to `out_path`."""

    shard_id: int
    round: int
    questions: tuple[Question, ...]
    out_path: str
    kind: str = "mcts"  # mcts | tot_bfs | tot_dfs
    seed: int = 0  # the run's `seed`: each tree is seeded by (seed, round, question id)

    def tree_seed(self, question_id: str) -> int:
        return derive_seed(self.seed, self.round, question_id)


@dataclass(frozen=True)
class TreeRecord:
    """One line of a shard file, typed (docs/FORMATS.md)."""

    question_id: str
    round: int
    shard_id: int
    kind: str
    seed: int
    gold: str | None
    result: SearchResult
    nodes: tuple[NodeRecord, ...]


def write_shard(shard: Shard, rows: list[dict[str, Any]]) -> str:
    """Write a shard's rows (one `tree_row` per question, in the shard's question order) to its
    `out_path`, atomically (a temp name then a rename: the file exists only when complete)."""
    atomic_write_jsonl(Path(shard.out_path), rows)
    return shard.out_path


def load_shard(path: str | Path) -> list[TreeRecord]:
    """Read a shard file written by `write_shard`, in the shard's question order."""
    out = []
    for row in read_jsonl(Path(path)):
        if row.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path}: shard format {row.get('format')!r}, expected {FORMAT_VERSION}")
        out.append(
            TreeRecord(
                question_id=row["question_id"],
                round=row["round"],
                shard_id=row["shard_id"],
                kind=row["kind"],
                seed=row["seed"],
                gold=row["gold"],
                result=from_dict(SearchResult, row["result"]),
                nodes=tuple(from_dict(NodeRecord, n) for n in row["nodes"]),
            )
        )
    return out


def tree_row(
    shard: Shard, question: Question, result: SearchResult, nodes: Any, seconds: float
) -> dict[str, Any]:
    """The shard-file line of one finished tree (`seconds`: wall time when the result has none)."""
    row = to_dict(result)
    row["seconds"] = row.get("seconds") or round(seconds, 4)
    return {
        "format": FORMAT_VERSION,
        "question_id": question.id,
        "round": shard.round,
        "shard_id": shard.shard_id,
        "kind": shard.kind,
        "seed": shard.tree_seed(question.id),
        "gold": question.answer,
        "result": row,
        "nodes": [to_dict(n) for n in nodes],
    }
