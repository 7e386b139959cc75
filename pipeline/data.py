"""Question sets: the built-in arith generator, or a JSON/JSONL file of questions, validated up front.

File format: a JSON list, or JSONL (one object per line), of `{"content": ..., "answer": ...}` with an
optional `"id"`; other fields are ignored. `task=gsm8k` also accepts `"question"` for `"content"` and
takes the gold answer after the last `####` (`"... #### 18"` -> `"18"`, thousands separators removed);
the worked lines before it become `Question.solution`.

Values: `content` must be a non-empty string. `answer` may be a string, an integer or a float (numbers
are converted: `18` and `18.0` -> `"18"`, `0.5` -> `"0.5"`), or null/absent (unknown gold). `id` may be a
string or an integer; without one the id is `q-` + 12 hex digits of the SHA-256 of the content, so ids are
stable across runs and machines. Duplicate ids (or duplicate contents without ids) are errors.

Every problem raises `DataError` with one line naming the file, the line (JSONL, 1-based) or the item
(JSON list, 0-based) and the field; the whole file is checked before anything is returned. `datasets`
is imported only inside `from_hf_dataset`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.records import Question
from pipeline.tasks import BUILTIN, arith, builtin

_FORMAT_HINT = 'expected a JSON list or JSONL of {"content": ..., "answer": ...}'
_CALCULATOR = re.compile(r"<<[^>]*>>")  # GSM8K calculator annotations: "48/2 = <<48/2=24>>24"


class DataError(ValueError):
    """Bad question data the user can fix; the message is one line naming file, line/item and field."""


def load_questions(task_cfg: Any, data_cfg: Any, seed: int) -> tuple[list[Question], list[Question]]:
    """(train, heldout) for the configured task.

    arith: generated (`data.*` unused). file/gsm8k: read `data.path`, keep the first `data.limit` (> 0),
    then split deterministically by hashing (seed, id): a share `heldout_fraction` goes to held-out.
    """
    task = builtin(task_cfg.name)
    if task is not None:
        return task.make_task_split(task_cfg, seed)
    if task_cfg.name not in ("file", "gsm8k"):
        raise DataError(f"unknown task '{task_cfg.name}'; allowed: {', '.join(BUILTIN)}, file, gsm8k")
    if not data_cfg.path:
        raise DataError(f"task={task_cfg.name} needs data.path=FILE ({_FORMAT_HINT})")
    questions = read_question_file(data_cfg.path, gsm8k=task_cfg.name == "gsm8k")
    if data_cfg.limit > 0:
        questions = questions[: data_cfg.limit]
    return split_by_id(questions, data_cfg.heldout_fraction, seed)


def split_by_id(
    questions: list[Question], heldout_fraction: float, seed: int
) -> tuple[list[Question], list[Question]]:
    """Deterministic split: a question is held out iff hash(seed, id) falls below `heldout_fraction`.

    A question's side depends only on its id and the seed, not on the rest of the file; order is kept.
    """
    train: list[Question] = []
    heldout: list[Question] = []
    for q in questions:
        digest = hashlib.sha256(f"{seed}:{q.id}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2.0**64  # uniform in [0, 1)
        (heldout if u < heldout_fraction else train).append(q)
    return train, heldout


def content_id(content: str) -> str:
    return "q-" + hashlib.sha256(content.encode("utf-8")).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------- files


def read_question_file(path: str | Path, gsm8k: bool = False) -> list[Question]:
    """All questions of a JSON-list or JSONL file, or DataError. `.jsonl` is always JSONL, `.json` always
    a JSON list; any other name is a JSON list if its first non-blank character is `[`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{raw[e.start]:02x}); save it as UTF-8"
        ) from e
    if not text.strip():
        raise DataError(f"{path}: empty file; {_FORMAT_HINT}")
    as_list = path.suffix == ".json" or (path.suffix != ".jsonl" and text.lstrip().startswith("["))
    rows = _json_list_rows(path, text) if as_list else _jsonl_rows(path, text)
    return _build(rows, source=str(path), gsm8k=gsm8k)


def _json_list_rows(path: Path, text: str) -> list[tuple[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: line {e.lineno}: not JSON ({e.msg}); {_FORMAT_HINT}") from e
    if not isinstance(data, list):
        raise DataError(f"{path}: top level is {_type_name(data)}, not a list; {_FORMAT_HINT}")
    if not data:
        raise DataError(f"{path}: the list is empty; no questions")
    return [(f"item {i} (0-based)", item) for i, item in enumerate(data)]


def _jsonl_rows(path: Path, text: str) -> list[tuple[str, Any]]:
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((f"line {n}", json.loads(line)))
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path}: line {n}: not JSON ({e.msg} at column {e.colno}); {_FORMAT_HINT}"
            ) from e
    return rows


# ----------------------------------------------------------------------------------- HF `datasets`


def from_hf_dataset(
    ds: Any,
    content_field: str = "content",
    answer_field: str | None = "answer",
    *,
    id_field: str | None = "id",
    gsm8k: bool = False,
    source: str = "hf",
) -> list[Question]:
    """Questions from a `datasets.Dataset` (already loaded: nothing is downloaded here).

    Rows are validated like file items ("row N", 0-based); `answer_field=None` means no gold answers.
    `id_field` is used when the dataset has that column.
    """
    import datasets  # noqa: F401  (only to fail clearly when the package is missing)

    columns = set(ds.column_names)
    if content_field not in columns:
        raise DataError(f"{source}: no column '{content_field}'; columns: {', '.join(sorted(columns))}")
    if answer_field is not None and answer_field not in columns:
        raise DataError(f"{source}: no column '{answer_field}'; columns: {', '.join(sorted(columns))}")
    keep = {content_field: "content"}
    if answer_field is not None:
        keep[answer_field] = "answer"
    if id_field is not None and id_field in columns:
        keep[id_field] = "id"
    rows = [(f"row {i}", {name: row[col] for col, name in keep.items()}) for i, row in enumerate(ds)]
    if not rows:
        raise DataError(f"{source}: the dataset is empty; no questions")
    return _build(rows, source=source, gsm8k=gsm8k, fields=keep)


# ------------------------------------------------------------------------------------------ validation


def _type_name(value: Any) -> str:
    """With its article, for messages: "an object", "a number", ..."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _build(
    rows: Iterable[tuple[str, Any]], source: str, gsm8k: bool, fields: dict[str, str] | None = None
) -> list[Question]:
    """Validate every (location, item); raise the first error (with a count of the others) or return all."""
    field_name = {v: k for k, v in (fields or {}).items()}  # our name -> the user's column name
    questions: list[Question] = []
    errors: list[str] = []
    first_seen: dict[str, str] = {}
    for where, item in rows:
        try:
            q = _question(item, source, gsm8k, lambda f: field_name.get(f, f))
        except DataError as e:
            errors.append(f"{source}: {where}: {e}")
            continue
        if q.id in first_seen:
            what = "duplicate id" if _has_id(item) else "duplicate question (same content, no 'id')"
            errors.append(f"{source}: {where}: field 'id': {what} {q.id!r}, first at {first_seen[q.id]}")
            continue
        first_seen[q.id] = where
        questions.append(q)
    if errors:
        more = f" (and {len(errors) - 1} more bad entries)" if len(errors) > 1 else ""
        raise DataError(errors[0] + more)
    return questions


def _has_id(item: Any) -> bool:
    return isinstance(item, dict) and item.get("id") is not None


def _question(item: Any, source: str, gsm8k: bool, name) -> Question:
    if not isinstance(item, dict):
        raise DataError(f'expected an object {{"content": ..., "answer": ...}}, got {_type_name(item)}')
    key = "content"
    if gsm8k and "content" not in item and "question" in item:
        key = "question"
    if key not in item or item[key] is None:
        also = " (or 'question')" if gsm8k else ""
        raise DataError(f"field '{name(key)}'{also} is missing")
    content = item[key]
    if not isinstance(content, str):
        raise DataError(f"field '{name(key)}' must be a string, got {_type_name(content)}")
    if not content.strip():
        raise DataError(f"field '{name(key)}' is empty")
    answer, solution = _answer(item.get("answer"), gsm8k, name("answer"))
    qid = item.get("id")
    if qid is None:
        qid = content_id(content)
    elif isinstance(qid, int) and not isinstance(qid, bool):
        qid = str(qid)
    elif not isinstance(qid, str) or not qid.strip():
        raise DataError(f"field '{name('id')}' must be a non-empty string or an integer, got {qid!r}")
    return Question(id=qid, content=content, answer=answer, source=source, solution=solution)


def _answer(value: Any, gsm8k: bool, field: str) -> tuple[str | None, tuple[str, ...]]:
    if value is None:
        return None, ()
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(f"field '{field}' must be a string or a number, got {_type_name(value)}")
    if isinstance(value, float):
        text = str(int(value)) if value.is_integer() else repr(value)
    else:
        text = str(value).strip()
    if not text:
        raise DataError(f"field '{field}' is empty (leave it out or use null for unknown)")
    if not (gsm8k and isinstance(value, str) and "####" in text):
        return text, ()
    reasoning, _, final = text.rpartition("####")
    final = final.strip().replace(",", "")
    if not final:
        raise DataError(f"field '{field}': nothing after '####'")
    steps = [_CALCULATOR.sub("", line).strip() for line in reasoning.splitlines()]
    return final, (*[s for s in steps if s], f"{arith.ANSWER_PREFIX} {final}")
