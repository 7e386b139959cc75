"""Question files (JSON list, JSONL, GSM8K form, HF datasets): loading, one-line errors, ids, splits."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from pipeline.data import (
    DataError,
    content_id,
    from_hf_dataset,
    load_questions,
    read_question_file,
    split_by_id,
)


def write_jsonl(path, rows):
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def data_cfg(path=None, heldout_fraction=0.2, limit=0):
    return SimpleNamespace(path=str(path) if path else None, heldout_fraction=heldout_fraction, limit=limit)


def one_line_error(path, **kw) -> str:
    with pytest.raises(DataError) as e:
        read_question_file(path, **kw)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    return msg


# -------------------------------------------------------------------------------------------- loading


def test_jsonl_and_json_list_load_the_same(tmp_path):
    rows = [
        {"content": "What is 2+2?", "answer": "4"},
        {"content": "What is 3*3?", "answer": 9, "id": "sq3"},
        {"content": "Half of 1?", "answer": 0.5, "extra": [1, 2]},
        {"content": "Unknown gold", "id": 17},
        {"content": "Float integral", "answer": 18.0, "answer_note": None},
    ]
    a = read_question_file(write_jsonl(tmp_path / "q.jsonl", rows))
    (tmp_path / "q.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    b = read_question_file(tmp_path / "q.json")
    assert [(q.id, q.content, q.answer) for q in a] == [(q.id, q.content, q.answer) for q in b]
    assert [q.answer for q in a] == ["4", "9", "0.5", None, "18"]
    assert a[0].id == content_id("What is 2+2?") and a[1].id == "sq3" and a[3].id == "17"
    assert a[0].source == str(tmp_path / "q.jsonl")


def test_extension_sniffing_blank_lines_and_bom(tmp_path):
    p = tmp_path / "q.txt"
    p.write_text('\n  [{"content": "a"}]', encoding="utf-8")
    assert [q.content for q in read_question_file(p)] == ["a"]
    p.write_bytes(b'\xef\xbb\xbf{"content": "a"}\n\n{"content": "b"}\n')
    assert [q.content for q in read_question_file(p)] == ["a", "b"]


def test_ids_are_stable_across_reads_and_files(tmp_path):
    a = read_question_file(write_jsonl(tmp_path / "a.jsonl", [{"content": "x"}, {"content": "y"}]))
    b = read_question_file(write_jsonl(tmp_path / "b.jsonl", [{"content": "y"}, {"content": "x"}]))
    assert {q.content: q.id for q in a} == {q.content: q.id for q in b}
    assert content_id("x") == "q-" + "2d711642b726"  # sha256("x")[:12]: fixed forever


def test_gsm8k_answers_and_question_alias(tmp_path):
    rows = [
        {
            "question": "Natalia sold 48 clips...",
            "answer": "She sold 48/2 = <<48/2=24>>24.\n48+24 = <<48+24=72>>72\n#### 72",
        },
        {"content": "Big", "answer": "So... #### 1,200"},
        {"question": "Plain", "answer": "5"},
    ]
    qs = read_question_file(write_jsonl(tmp_path / "g.jsonl", rows), gsm8k=True)
    assert [q.answer for q in qs] == ["72", "1200", "5"]
    assert qs[0].content == "Natalia sold 48 clips..."
    assert qs[0].solution == ("She sold 48/2 = 24.", "48+24 = 72", "The answer is 72")
    assert qs[2].solution == ()
    # without gsm8k the alias is not accepted
    msg = one_line_error(tmp_path / "g.jsonl")
    assert "line 1" in msg and "'content'" in msg and "missing" in msg


def test_gsm8k_errors(tmp_path):
    msg = one_line_error(
        write_jsonl(tmp_path / "g.jsonl", [{"question": "q", "answer": "x ####  "}]), gsm8k=True
    )
    assert "line 1" in msg and "'answer'" in msg and "####" in msg
    msg = one_line_error(write_jsonl(tmp_path / "h.jsonl", [{"answer": "#### 3"}]), gsm8k=True)
    assert "'content' (or 'question') is missing" in msg


def test_load_questions_split_and_limit(tmp_path):
    path = write_jsonl(
        tmp_path / "q.jsonl", [{"content": f"question {i}", "answer": str(i)} for i in range(200)]
    )
    task = SimpleNamespace(name="file")
    train, heldout = load_questions(task, data_cfg(path), seed=0)
    assert len(train) + len(heldout) == 200 and 20 <= len(heldout) <= 60
    assert not {q.id for q in train} & {q.id for q in heldout}
    assert (train, heldout) == load_questions(task, data_cfg(path), seed=0)
    assert heldout != load_questions(task, data_cfg(path), seed=1)[1]
    limited = load_questions(task, data_cfg(path, limit=50), seed=0)
    assert {q.content for q in limited[0] + limited[1]} == {f"question {i}" for i in range(50)}
    # a question's side depends only on (seed, id), not on the rest of the file
    side = {q.id: "h" for q in heldout} | {q.id: "t" for q in train}
    assert all(side[q.id] == "h" for q in limited[1]) and all(side[q.id] == "t" for q in limited[0])
    all_train, none = load_questions(task, data_cfg(path, heldout_fraction=0.0), seed=0)
    assert len(all_train) == 200 and none == []


def test_load_questions_dispatch(tmp_path):
    arith_task = SimpleNamespace(
        name="arith",
        train_size=8,
        heldout_size=4,
        train_difficulties=[2, 3],
        heldout_difficulties=[4],
        warm_difficulties=[2],
        warm_size=10,
        warm_long_fraction=0.0,
        dv0_size=50,
        dv0_difficulties=[],
        max_operand=20,
    )
    train, heldout = load_questions(arith_task, data_cfg(), seed=0)
    assert len(train) == 8 and {q.difficulty for q in heldout} == {4}
    path = write_jsonl(tmp_path / "g.jsonl", [{"question": "q", "answer": "#### 3"}])
    train, heldout = load_questions(SimpleNamespace(name="gsm8k"), data_cfg(path, 0.0), seed=0)
    assert train[0].answer == "3"
    with pytest.raises(DataError, match="data.path"):
        load_questions(SimpleNamespace(name="file"), data_cfg(), seed=0)
    with pytest.raises(DataError, match="unknown task"):
        load_questions(SimpleNamespace(name="nope"), data_cfg(path), seed=0)


def test_split_by_id_is_order_preserving():
    qs = [SimpleNamespace(id=str(i)) for i in range(100)]
    train, heldout = split_by_id(qs, 0.3, seed=5)
    assert [q.id for q in train] == [q.id for q in qs if q in train]
    assert [q.id for q in heldout] == [q.id for q in qs if q in heldout]
    assert len(train) + len(heldout) == 100 and 15 <= len(heldout) <= 45


def test_from_hf_dataset():
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict(
        {"problem": ["1+1?", "2+2?"], "solution": ["2", "x #### 4"], "id": ["a", "b"]}
    )
    qs = from_hf_dataset(ds, "problem", "solution", gsm8k=True)
    assert [(q.id, q.content, q.answer) for q in qs] == [("a", "1+1?", "2"), ("b", "2+2?", "4")]
    qs = from_hf_dataset(ds, "problem", None, id_field=None)
    assert qs[0].answer is None and qs[0].id == content_id("1+1?")
    with pytest.raises(DataError, match="no column 'question'"):
        from_hf_dataset(ds, "question", "solution")
    bad = datasets.Dataset.from_dict({"problem": ["ok", ""], "solution": ["1", "2"]})
    with pytest.raises(DataError, match=r"row 1: field 'problem' is empty"):
        from_hf_dataset(bad, "problem", "solution")


# --------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (['{"content": "a"}', '{"content": "b"}', "{not json}"], ["line 3", "not JSON"]),
        (['{"content": "a"}', '{"answer": "4"}'], ["line 2", "field 'content' is missing"]),
        (['{"content": "   ", "answer": "4"}'], ["line 1", "field 'content' is empty"]),
        (['{"content": null}'], ["line 1", "field 'content' is missing"]),
        (['{"content": 12}'], ["line 1", "field 'content' must be a string, got a number"]),
        (
            ['{"content": "a", "answer": [4]}'],
            ["line 1", "field 'answer' must be a string or a number, got an array"],
        ),
        (['{"content": "a", "answer": true}'], ["line 1", "field 'answer'", "got a boolean"]),
        (['{"content": "a", "answer": ""}'], ["line 1", "field 'answer' is empty"]),
        (['{"content": "a", "id": {"x": 1}}'], ["line 1", "field 'id'"]),
        (
            ['{"content": "a", "id": "x"}', "", '{"content": "b", "id": "x"}'],
            ["line 3", "duplicate id 'x'", "first at line 1"],
        ),
        (['{"content": "a"}', '{"content": "a"}'], ["line 2", "duplicate question", "first at line 1"]),
        (["[1, 2]"], ["line 1", "expected an object"]),
        (['"just a string"'], ["line 1", "got a string"]),
    ],
)
def test_jsonl_errors_name_file_line_and_field(tmp_path, lines, expected):
    msg = one_line_error(write_jsonl(tmp_path / "bad.jsonl", lines))
    for part in expected:
        assert part in msg, (part, msg)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[{"content": "a"}, {"answer": "2"}]', ["item 1 (0-based)", "field 'content' is missing"]),
        ('[{"content": "a"}, "b"]', ["item 1 (0-based)", "expected an object"]),
        ('{"content": "a"}', ["top level is an object, not a list"]),
        ("[]", ["list is empty"]),
        ('[{"content": "a"},\n {"content": }]', ["line 2", "not JSON"]),
        (
            '[{"content": "a", "id": 1}, {"content": "b", "id": "1"}]',
            ["item 1", "duplicate id '1'", "first at item 0"],
        ),
    ],
)
def test_json_list_errors_name_item_and_field(tmp_path, text, expected):
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    msg = one_line_error(path)
    for part in expected:
        assert part in msg, (part, msg)


def test_empty_unreadable_and_non_utf8_files(tmp_path):
    for name, content in (("empty.jsonl", b""), ("blank.json", b"\n  \n")):
        (tmp_path / name).write_bytes(content)
        assert "empty file" in one_line_error(tmp_path / name)
    p = tmp_path / "latin1.jsonl"
    p.write_bytes(b'{"content": "a"}\n{"content": "caf\xe9"}\n')
    msg = one_line_error(p)
    assert "line 2" in msg and "not UTF-8" in msg
    msg = one_line_error(tmp_path / "missing.jsonl")
    assert "cannot read" in msg
    assert "cannot read" in one_line_error(tmp_path)  # a directory


def test_all_entries_checked_before_returning(tmp_path):
    msg = one_line_error(
        write_jsonl(tmp_path / "bad.jsonl", ['{"content": "ok"}', "{}", "{}", '{"content": 1}'])
    )
    assert msg.endswith("line 2: field 'content' is missing (and 2 more bad entries)")
