"""Item sources: batch items read lazily from files, globs and standard input."""

from __future__ import annotations

import io
import json
import os
import pty
import random
import re
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from plait.runtime.sources import (
    BadItem,
    SourceError,
    _count_json_array,
    _count_lines,
    open_source,
    validate_source,
)


def read(spec: dict[str, Any], base: Path, **kw: Any) -> tuple[int | None, list[tuple[int, Any]]]:
    with open_source(spec, base_dir=str(base), **kw) as src:
        return src.total, list(src)


def messages(items: list[tuple[int, Any]]) -> list[tuple[int, str]]:
    return [(i, x.message) for i, x in items if isinstance(x, BadItem)]


ROWS = [{"id": "1", "title": "first, with a comma"}, {"id": "2", "title": 'a "quoted" word'}]


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("issues.jsonl", '{"id": 1}\n{"id": 2, "tags": ["a"]}\n', [{"id": 1}, {"id": 2, "tags": ["a"]}]),
        ("issues.ndjson", '{"id": 1}\r\n\r\n  \n{"id": 2}', [{"id": 1}, {"id": 2}]),
        ("rows.csv", 'id,title\n1,"first, with a comma"\n2,"a ""quoted"" word"\n', ROWS),
        ("rows.tsv", 'id\ttitle\n1\tfirst, with a comma\n2\ta "quoted" word\n', ROWS),
        ("names.txt", "alpha\n\n  beta  \r\ngamma", ["alpha", "  beta  ", "gamma"]),
        ("list.json", ' [ {"id": 1}, 2, "three", [4], null ] \n', [{"id": 1}, 2, "three", [4], None]),
        ("empty.json", "[]", []),
        ("empty.jsonl", "", []),
    ],
)
def test_every_format_reads_its_items_with_the_total_counted_first(tmp_path, name, text, expected):
    (tmp_path / name).write_text(text, encoding="utf-8")
    total, items = read({"from": name}, tmp_path)
    assert items == list(enumerate(expected))
    assert total == len(expected)


def test_the_format_field_overrides_the_extension_and_a_bom_is_ignored(tmp_path):
    (tmp_path / "export.dat").write_bytes(b'\xef\xbb\xbfid,name\n7,seven\n')
    assert read({"from": "export.dat", "format": "csv"}, tmp_path) == (1, [(0, {"id": "7", "name": "seven"})])
    (tmp_path / "x.dat").write_bytes(b'\xef\xbb\xbf{"a": 1}\n')
    assert read({"from": "x.dat", "format": "jsonl"}, tmp_path) == (1, [(0, {"a": 1})])
    assert read({"from": "x.dat"}, tmp_path) == (1, [(0, '{"a": 1}')])  # unknown extension: lines


def test_skip_and_limit_apply_to_items_and_to_the_total(tmp_path):
    (tmp_path / "n.jsonl").write_text("".join(f'{{"n": {i}}}\n\n' for i in range(10)))
    total, items = read({"from": "n.jsonl", "skip": 3, "limit": 4}, tmp_path)
    assert total == 4
    assert items == [(0, {"n": 3}), (1, {"n": 4}), (2, {"n": 5}), (3, {"n": 6})]
    assert read({"from": "n.jsonl", "skip": 20}, tmp_path) == (0, [])
    assert read({"from": "n.jsonl", "limit": 0}, tmp_path) == (0, [])
    (tmp_path / "n.json").write_text(json.dumps(list(range(10))))
    assert read({"from": "n.json", "skip": 8}, tmp_path) == (2, [(0, 8), (1, 9)])
    (tmp_path / "n.csv").write_text("n\n" + "".join(f"{i}\n" for i in range(10)))
    assert read({"from": "n.csv", "skip": 1, "limit": 2}, tmp_path) == (2, [(0, {"n": "1"}), (1, {"n": "2"})])


def test_start_at_resumes_with_the_same_indexes_and_total(tmp_path):
    (tmp_path / "n.jsonl").write_text("".join(f"{i}\n" for i in range(10)))
    total, items = read({"from": "n.jsonl", "skip": 2, "limit": 6}, tmp_path, start_at=4)
    assert total == 6
    assert items == [(4, 6), (5, 7)]


def _tree(base: Path) -> None:
    (base / "data" / "sub").mkdir(parents=True)
    (base / "data" / "b.jsonl").write_text('{"f": "b", "n": 1}\n{"f": "b", "n": 2}\n')
    (base / "data" / "a.jsonl").write_text('{"f": "a", "n": 1}\nnot json\n')
    (base / "data" / "c.csv").write_text("f,n\nc,1\n")
    (base / "data" / "sub" / "d.jsonl").write_text('{"f": "d"}\n')
    (base / "data" / "dir.jsonl").mkdir()  # a folder that matches: never an item


def test_a_glob_yields_sorted_file_paths_that_work_from_the_working_directory(tmp_path, monkeypatch):
    _tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    total, items = read({"from": "data/*.jsonl"}, tmp_path)
    assert items == [(0, "data/a.jsonl"), (1, "data/b.jsonl")]
    assert total == 2
    _, items = read({"from": "data/**/*.jsonl", "skip": 1}, tmp_path)
    assert [p for _, p in items] == ["data/b.jsonl", "data/sub/d.jsonl"]
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)  # not under the working directory: the path says where
    _, items = read({"from": "data/*.csv"}, tmp_path)
    assert items == [(0, str(tmp_path / "data" / "c.csv"))]


def test_a_glob_of_contents_gives_each_file_as_path_and_text(tmp_path, monkeypatch):
    _tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "bad.txt").write_bytes(b"ok\nbad \xff here\n")
    total, items = read({"from": "data/*", "items": "contents"}, tmp_path)
    assert total == 4  # a.jsonl, b.jsonl, bad.txt, c.csv: folders are not items
    assert items[0] == (0, {"path": "data/a.jsonl", "content": '{"f": "a", "n": 1}\nnot json\n'})
    assert messages(items) == [(2, "data/bad.txt:2:5: invalid UTF-8 (byte 0xff)")]


def test_a_glob_of_records_reads_every_file_by_its_own_format_with_one_index(tmp_path):
    _tree(tmp_path)
    total, items = read({"from": "data/*", "items": "records"}, tmp_path)
    assert total == 5
    assert items[0] == (0, {"f": "a", "n": 1})
    assert messages(items) == [(1, "data/a.jsonl:2:1: invalid JSON: Expecting value")]
    assert items[2:] == [(2, {"f": "b", "n": 1}), (3, {"f": "b", "n": 2}), (4, {"f": "c", "n": "1"})]
    total, items = read({"from": "data/*.jsonl", "items": "records", "skip": 3, "limit": 5}, tmp_path)
    assert (total, items) == (1, [(0, {"f": "b", "n": 2})])  # skip runs across files


def test_a_glob_that_matches_nothing_is_empty_but_a_missing_folder_is_an_error(tmp_path):
    (tmp_path / "inbox").mkdir()
    assert read({"from": "inbox/*.json", "items": "records"}, tmp_path) == (0, [])
    empty = open_source({"from": "inbox/*.json"}, base_dir=str(tmp_path))
    assert empty.warning == (
        f"batch.items: the glob 'inbox/*.json' matched no files (in {tmp_path}), so the batch has no items"
    )
    (tmp_path / "inbox" / "a.json").write_text("[]")
    assert open_source({"from": "inbox/*.json"}, base_dir=str(tmp_path)).warning is None
    with pytest.raises(SourceError) as exc:
        open_source({"from": "nowhere/*.json"}, base_dir=str(tmp_path))
    assert "folder not found: nowhere" in exc.value.message


def _pipe(data: bytes) -> int:
    r, w = os.pipe()

    def feed() -> None:
        with os.fdopen(w, "wb") as f:
            for i in range(0, len(data), 7):  # in small pieces, as a producer writes
                f.write(data[i : i + 7])
                f.flush()

    threading.Thread(target=feed, daemon=True).start()
    return r


def test_standard_input_through_a_real_pipe_in_every_format(tmp_path):
    cases = [
        ("jsonl", b'{"a": 1}\n\n{"a": 2}\n', [{"a": 1}, {"a": 2}]),
        ("lines", b"x\ny\n", ["x", "y"]),
        ("csv", b"a,b\n1,2\n", [{"a": "1", "b": "2"}]),
        ("json", b'[{"a": 1}, "\xc3\xa9t\xc3\xa9", 3]', [{"a": 1}, "été", 3]),
    ]
    for fmt, data, expected in cases:
        with os.fdopen(_pipe(data), "rb") as stdin:
            total, items = read({"from": "-", "format": fmt}, tmp_path, stdin=stdin)
        assert total is None
        assert items == list(enumerate(expected)), fmt
    # handed over as the text stream sys.stdin is: its bytes are read
    with io.TextIOWrapper(os.fdopen(_pipe(b"p\nq\n"), "rb")) as stdin:
        assert read({"from": "-"}, tmp_path, stdin=stdin) == (None, [(0, "p"), (1, "q")])
    # a text stream without bytes underneath
    assert read({"from": "-", "format": "jsonl"}, tmp_path, stdin=io.StringIO("1\n[2]\n"))[1] == [(0, 1), (1, [2])]
    assert read({"from": "-", "format": "json"}, tmp_path, stdin=io.StringIO("[1, 2]"))[1] == [(0, 1), (1, 2)]


def _live(fmt: str, first: bytes, rest: bytes) -> tuple[bool, list[tuple[int, Any]]]:
    """Read from a pipe whose producer writes ``rest`` only once the first item is out."""
    r, w = os.pipe()
    consumed = threading.Event()
    waited: list[bool] = []

    def produce() -> None:
        with os.fdopen(w, "wb") as f:
            f.write(first)
            f.flush()
            waited.append(consumed.wait(10))
            f.write(rest)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    with os.fdopen(r, "rb") as stdin, open_source({"from": "-", "format": fmt}, stdin=stdin) as src:
        it = iter(src)
        items = [next(it)]
        consumed.set()
        items += list(it)
    producer.join(10)
    return waited == [True], items


def test_items_from_a_live_pipe_arrive_before_the_producer_is_done():
    assert _live("jsonl", b'{"a": 1}\n', b'{"a": 2}\n') == (True, [(0, {"a": 1}), (1, {"a": 2})])
    assert _live("csv", b"a\n1\n", b"2\n") == (True, [(0, {"a": "1"}), (1, {"a": "2"})])
    assert _live("json", b'[{"a": 1}, ', b"2]") == (True, [(0, {"a": 1}), (1, 2)])
    assert _live("json", b"[10, ", b"2]") == (True, [(0, 10), (1, 2)])


def test_standard_input_that_is_a_terminal_or_missing_is_a_clear_error(tmp_path):
    master, slave = pty.openpty()
    try:
        with open(slave, "rb", closefd=False) as tty, pytest.raises(SourceError) as exc:
            open_source({"from": "-"}, stdin=tty)
        assert "terminal" in exc.value.message and "pipe" in exc.value.hint
    finally:
        os.close(master)
        os.close(slave)
    with pytest.raises(SourceError, match="standard input"):
        open_source({"from": "-"}, stdin=None)


def test_a_fifo_is_read_once_without_counting(tmp_path):
    fifo = tmp_path / "items.fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as f:
            f.write(b"1\n2\n3\n")

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    total, items = read({"from": "items.fifo", "format": "jsonl"}, tmp_path)
    t.join(10)
    assert (total, items) == (None, [(0, 1), (1, 2), (2, 3)])


def test_malformed_jsonl_lines_are_bad_items_naming_file_line_and_column(tmp_path):
    lines = ['{"id": 1}'] * 16 + ['{"id" 17}', '{"id": 18', "[1, 2] x", "", '{"id": 19}']
    data = ("\n".join(lines) + "\n").encode() + b'{"id": "\xff"}\n' + b"1" * 5000 + b"\n"
    (tmp_path / "issues.jsonl").write_bytes(data)
    total, items = read({"from": "issues.jsonl"}, tmp_path)
    assert total == len(items) == 22
    assert messages(items) == [
        (16, "issues.jsonl:17:7: invalid JSON: Expecting ':' delimiter"),
        (17, "issues.jsonl:18:10: invalid JSON: Expecting ',' delimiter"),
        (18, "issues.jsonl:19:8: invalid JSON: Extra data"),
        (20, "issues.jsonl:22:9: invalid UTF-8 (byte 0xff)"),
        (21, messages(items)[-1][1]),
    ]
    assert messages(items)[-1][1].startswith("issues.jsonl:23:1: invalid JSON: Exceeds the limit")
    assert items[19] == (19, {"id": 19})
    assert isinstance(items[16][1], BadItem) and items[16][1].raw == '{"id" 17}'


def test_malformed_csv_rows_name_line_and_column_and_short_rows_get_nulls(tmp_path):
    text = 'id,name,note\n1,a,x\n2,b\n3,"multi\nline",y\n4,d,z,extra\n5,"bad"quote,z\n6,f,g\n'
    (tmp_path / "t.csv").write_text(text)
    total, items = read({"from": "t.csv"}, tmp_path)
    assert total == 6 == len(items)
    assert items[1] == (1, {"id": "2", "name": "b", "note": None})
    assert items[2] == (2, {"id": "3", "name": "multi\nline", "note": "y"})
    assert messages(items) == [
        (3, "t.csv:6:7: row has 4 fields but the header has 3; field 4 is 'extra'"),
        (4, "t.csv:7:8: invalid CSV: ',' expected after '\"'"),
    ]
    assert items[5] == (5, {"id": "6", "name": "f", "note": "g"})


def test_a_csv_header_with_a_name_twice_is_a_source_error(tmp_path):
    (tmp_path / "dup.csv").write_text("id,name,id\n1,2,3\n")
    with open_source({"from": "dup.csv"}, base_dir=str(tmp_path)) as src, pytest.raises(SourceError) as exc:
        list(src)
    assert exc.value.message == "dup.csv:1: the header row names column 'id' twice (columns 1 and 3)"


def test_malformed_json_arrays_report_where_and_stop(tmp_path):
    # The error sits beyond the first read of the buffer, so line and column
    # are counted across the text already dropped.
    head = ",\n".join(json.dumps({"n": i, "pad": "x" * 50}) for i in range(3000))
    (tmp_path / "a.json").write_text("[\n" + head + ',\n  {"n": 3000 "oops": 1},\n{"n": 3001}]')
    total, items = read({"from": "a.json"}, tmp_path)
    assert total == 3002
    assert len(items) == 3001
    assert items[2999] == (2999, {"n": 2999, "pad": "x" * 50})
    assert messages(items) == [(3000, "a.json:3002:14: invalid JSON: Expecting ',' delimiter")]
    (tmp_path / "b.json").write_text('[1, 2]\n  oops')
    assert messages(read({"from": "b.json"}, tmp_path)[1]) == [(2, "b.json:2:3: invalid JSON: Extra data after the array")]
    (tmp_path / "c.json").write_text('[1, 2,]')
    assert messages(read({"from": "c.json"}, tmp_path)[1]) == [(2, "c.json:1:7: invalid JSON: Expecting value")]
    (tmp_path / "d.json").write_text('[1, 2')
    assert messages(read({"from": "d.json"}, tmp_path)[1]) == [(2, "d.json:1:6: invalid JSON: Expecting ',' delimiter")]
    (tmp_path / "e.json").write_bytes(b'["ok", "\xff"]')
    assert messages(read({"from": "e.json"}, tmp_path)[1]) == [(1, "e.json:1:8: invalid JSON: invalid UTF-8")]
    (tmp_path / "obj.json").write_text('\n  {"items": []}')
    with open_source({"from": "obj.json"}, base_dir=str(tmp_path)) as src, pytest.raises(SourceError) as exc:
        list(src)
    assert exc.value.message.startswith("obj.json:2:3: expected a JSON array ('[')")
    assert "jsonl" in exc.value.hint
    (tmp_path / "blank.json").write_text("  \n")
    assert read({"from": "blank.json"}, tmp_path) == (0, [])


def test_a_json_array_is_read_exactly_across_every_buffer_boundary(tmp_path):
    rnd = random.Random(3)
    values: list[Any] = []
    for i in range(20_000):
        kind = i % 5
        if kind == 0:
            values.append(rnd.randint(-(10**12), 10**12))  # numbers cut by a buffer end must not be cut short
        elif kind == 1:
            values.append(rnd.random() * 10 ** rnd.randint(-5, 5))
        elif kind == 2:
            values.append({"s": "é\\\"],[" * rnd.randint(0, 5), "t": [True, False, None]})
        elif kind == 3:
            values.append("x" * rnd.randint(0, 300))
        else:
            values.append([[rnd.randint(0, 9)] * 3, {}])
    values.insert(7000, "y" * 300_000)  # one element far larger than a read
    values.insert(8000, {"deep": [[[[{"k": list(range(50_000))}]]]]})
    text = json.dumps(values, indent=rnd.choice([None, 2]), ensure_ascii=False)
    (tmp_path / "big.json").write_text(text, encoding="utf-8")
    total, items = read({"from": "big.json"}, tmp_path)
    assert total == len(values)
    assert [v for _, v in items] == values


def test_a_large_json_array_and_jsonl_are_counted_and_read_in_flat_memory(tmp_path):
    n = 8_000
    record = {"id": 0, "title": "a title of some length", "tags": ["one", "two"], "body": "z" * 500}
    with open(tmp_path / "big.json", "w") as f:
        f.write("[\n" + ",\n".join(json.dumps({**record, "id": i}) for i in range(n)) + "\n]\n")
    with open(tmp_path / "big.jsonl", "w") as f:
        f.write("".join(json.dumps({**record, "id": i}) + "\n" for i in range(n)))
    size = os.path.getsize(tmp_path / "big.json")
    assert size > 4_000_000
    for name in ("big.json", "big.jsonl"):
        tracemalloc.start()
        try:
            count = 0
            with open_source({"from": name}, base_dir=str(tmp_path)) as src:
                assert src.total == n
                _, count_peak = tracemalloc.get_traced_memory()
                tracemalloc.reset_peak()
                for _index, item in src:
                    assert item["id"] == count
                    count += 1
            _, read_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert count == n
        # Counting holds one read of the file and its reductions; reading holds
        # a few reads of text: neither grows with the file (a parse of the whole
        # file would need several times its size).
        assert count_peak < 1_500_000, (name, count_peak)
        assert read_peak < 1_000_000, (name, read_peak)


def test_counting_is_exact_around_blank_lines_at_every_chunk_boundary():
    rnd = random.Random(11)
    pieces = []
    expected = 0
    for _ in range(400):
        r = rnd.random()
        if r < 0.25:
            pieces.append(rnd.choice(["", " ", "\t", "\r", " \r"]) + "\n")
        else:
            pieces.append(rnd.choice(["1", ' {"a": 1}', "x y", "\tz"]) + rnd.choice(["\n", "\r\n"]))
            expected += 1
    data = "".join(pieces).encode() + b"  "  # a blank last line without a newline
    for chunk in (1, 2, 3, 8, 64, 1 << 20):
        assert _count_lines(io.BytesIO(data), b" \t\r", chunk=chunk) == expected, chunk


def test_counting_a_json_array_follows_strings_and_nesting_at_every_chunk_boundary():
    rnd = random.Random(7)
    texts = ["", "a,b", "]", "[{", "\\", '"', 'q\\"x', "é€", "\\\\]", '\\",[', "}"]

    def value(depth: int) -> Any:
        r = rnd.random()
        if depth > 3 or r < 0.3:
            return rnd.choice([1, -2.5e3, None, True, *texts])
        if r < 0.65:
            return [value(depth + 1) for _ in range(rnd.randint(0, 4))]
        return {rnd.choice(texts) + str(i): value(depth + 1) for i in range(rnd.randint(0, 4))}

    for _ in range(300):
        array = [value(1) for _ in range(rnd.randint(0, 6))]
        data = json.dumps(array, ensure_ascii=rnd.random() < 0.5, indent=rnd.choice([None, 1])).encode()
        for chunk in (1, 2, 3, 5, 64):
            assert _count_json_array(io.BytesIO(data), chunk) == len(array), (chunk, data)
    assert _count_json_array(io.BytesIO(b'{"a": [1, 2]}')) is None


def test_a_missing_file_a_folder_and_an_unreadable_file_are_source_errors(tmp_path):
    with pytest.raises(SourceError) as exc:
        open_source({"from": "issues.jsonl"}, base_dir=str(tmp_path))
    assert exc.value.message == f"items file not found: issues.jsonl (looked in {tmp_path})"
    assert exc.value.retryable is False
    (tmp_path / "data").mkdir()
    with pytest.raises(SourceError) as exc:
        open_source({"from": "data"}, base_dir=str(tmp_path))
    assert "is a folder" in exc.value.message and "data/*.jsonl" in exc.value.hint
    if os.geteuid() == 0:
        return  # root reads a file whatever its mode
    secret = tmp_path / "secret.jsonl"
    secret.write_text("1\n")
    secret.chmod(0)
    with pytest.raises(SourceError, match=re.escape("cannot read items file secret.jsonl: Permission denied")):
        open_source({"from": "secret.jsonl"}, base_dir=str(tmp_path))


def test_a_results_reference_from_an_earlier_batch_is_a_source(tmp_path):
    (tmp_path / "out.data").write_text('{"index": 0, "item": "a"}\n{"index": 1, "item": "b"}\n')
    ref = {"path": str(tmp_path / "out.data"), "format": "jsonl", "count": 2}
    total, items = read({"from": ref}, tmp_path)
    assert total == 2 and items[1] == (1, {"index": 1, "item": "b"})


def test_closing_mid_way_releases_the_file_and_a_source_reads_once(tmp_path):
    _tree(tmp_path)
    before = len(os.listdir("/proc/self/fd"))
    src = open_source({"from": "data/*.jsonl", "items": "records"}, base_dir=str(tmp_path))
    it = iter(src)
    assert next(it) == (0, {"f": "a", "n": 1})
    assert len(os.listdir("/proc/self/fd")) == before + 1
    src.close()
    assert len(os.listdir("/proc/self/fd")) == before
    with pytest.raises(RuntimeError, match="only once"):
        iter(src)


def test_validation_names_every_problem_with_its_path_and_a_hint():
    problems = validate_source(
        {"frm": "x.jsonl", "format": "jsnl", "skip": -1, "limit": 1.5, "items": "content"}
    )
    assert problems == [
        # the misspelt 'from' is the one problem about 'from'
        ("unknown field 'frm' in the items source", ".frm", "did you mean 'from'?"),
        ('unknown items format "jsnl"', ".format", "did you mean 'jsonl'?"),
        ("'skip' must be an integer of at least 0, not -1", ".skip", problems[2][2]),
        ("'limit' must be an integer of at least 0, not 1.5", ".limit", problems[3][2]),
        ('unknown \'items\' "content"', ".items", "did you mean 'contents'?"),
    ]
    # 'form' is as close to 'format' as to 'from'; the missing 'from' is the likely one
    assert validate_source({"form": "x.csv"}) == [
        ("unknown field 'form' in the items source", ".form", "did you mean 'from'?")
    ]
    assert validate_source({"format": "csv"})[0][:2] == ("the items source has no 'from'", "")
    assert validate_source({"from": "-", "items": "paths"})[0][:2] == (
        "'items' applies to a glob, and standard input is one stream",
        ".items",
    )
    assert validate_source({"from": "a.jsonl", "items": "records"})[0][1] == ".items"
    assert validate_source({"from": "data/*.csv", "format": "csv"}) == [
        (
            "'format' reads records, but the items of this glob are its files' paths",
            ".format",
            'add "items": "records" to read every record of every file',
        )
    ]
    assert validate_source({"from": 3})[0][0] == "'from' must be a path, a glob or \"-\", not 3"
    assert validate_source("items.jsonl")[0][0] == "an items source must be an object with 'from'"
    # A template is checked once resolved; a valid object has no problems.
    assert validate_source({"from": "${prev.results.path}", "items": "records"}) == []
    assert validate_source({"from": "data/*.csv", "items": "records", "format": "csv", "skip": 0}) == []
    with pytest.raises(SourceError, match=r"batch.items.items: 'items' applies to a glob"):
        open_source({"from": "a.jsonl", "items": "paths"})
