"""File nodes (SPEC §8) on real files in a temp dir, through the real CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Run = Callable[..., Any]
Write = Callable[..., str]


def node(node_id: str, type_: str, **params: Any) -> dict[str, Any]:
    return {"id": node_id, "type": type_, "params": params}


def run_json(plait: Run, workflow: Write, *nodes: dict[str, Any], **wf: Any) -> Any:
    r = plait("run", "-o", "json", workflow({"nodes": list(nodes), **wf}))
    assert r.code == 0, r
    return r.json


# -- read-file ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "line one\nline two\n",
        "no trailing newline",
        "  indented\n\n\ttabs\n\n",
        "windows\r\nline endings\r\n",
        "1: looks numbered\n2: already\n",
        "ünïcödé ✓ 日本\n",
        "",
    ],
)
def test_read_file_returns_the_text_exactly(
    plait: Run, workflow: Write, tmp_path: Path, text: str
) -> None:
    (tmp_path / "in.txt").write_bytes(text.encode())
    out = run_json(plait, workflow, node("read", "read-file", file_path="in.txt"))
    assert out["outputs"]["content"] == text
    assert out["outputs"]["size"] == len(text.encode())


def test_read_file_prints_its_content_raw(plait: Run, workflow: Write, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("alpha\nbeta\n")
    r = plait("run", workflow({"nodes": [node("read", "read-file", file_path="in.txt")]}))
    assert r.code == 0, r
    assert r.stdout == "alpha\nbeta\n"


def test_read_file_with_an_encoding(plait: Run, workflow: Write, tmp_path: Path) -> None:
    (tmp_path / "latin.txt").write_bytes("café".encode("latin-1"))
    out = run_json(plait, workflow, node("read", "read-file", file_path="latin.txt", encoding="latin-1"))
    assert out["outputs"]["content"] == "café"


def test_read_file_not_valid_utf8(plait: Run, workflow: Write, tmp_path: Path) -> None:
    (tmp_path / "latin.txt").write_bytes("café".encode("latin-1"))
    r = plait("run", workflow({"nodes": [node("read", "read-file", file_path="latin.txt")]}))
    assert r.code == 1
    assert "not valid utf-8" in r.stderr and "encoding" in r.stderr


def test_read_file_missing(plait: Run, workflow: Write) -> None:
    r = plait("run", workflow({"nodes": [node("read", "read-file", file_path="nope.txt")]}))
    assert r.code == 1
    assert "file not found: nope.txt" in r.stderr
    assert "Traceback" not in r.stderr


def test_read_file_of_a_directory(plait: Run, workflow: Write, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    r = plait("run", workflow({"nodes": [node("read", "read-file", file_path="d")]}))
    assert r.code == 1
    assert "directory" in r.stderr


def test_read_json_file_and_step_into_it(plait: Run, workflow: Write, tmp_path: Path) -> None:
    (tmp_path / "cfg.json").write_text(json.dumps({"servers": [{"host": "a"}, {"host": "b"}]}))
    wf = {
        "nodes": [
            node("cfg", "read-file", file_path="cfg.json"),
            node("show", "shell", command="echo ${cfg.content.servers[1].host}"),
        ]
    }
    r = plait("run", workflow(wf))
    assert r.code == 0, r
    assert r.stdout == "b\n"


# -- write-file -----------------------------------------------------------------------


def test_write_file_text(plait: Run, workflow: Write, tmp_path: Path) -> None:
    out = run_json(plait, workflow, node("w", "write-file", file_path="out.txt", content="hello\nworld"))
    assert (tmp_path / "out.txt").read_text() == "hello\nworld"
    assert out["outputs"]["written"] == len("hello\nworld")
    assert Path(out["outputs"]["path"]) == (tmp_path / "out.txt").resolve()


@pytest.mark.parametrize("content", [{"a": 1, "b": [True, None]}, [1, "two", {"three": 3}]])
def test_write_file_dict_or_list_as_json(
    plait: Run, workflow: Write, tmp_path: Path, content: Any
) -> None:
    run_json(plait, workflow, node("w", "write-file", file_path="out.json", content=content))
    assert json.loads((tmp_path / "out.json").read_text()) == content


def test_write_file_json_from_a_template_keeps_the_structure(
    plait: Run, workflow: Write, tmp_path: Path
) -> None:
    wf = {
        "inputs": {"data": {"type": "object"}},
        "nodes": [node("w", "write-file", file_path="out.json", content="${data}")],
    }
    r = plait("run", workflow(wf), 'data={"k": ["v", 2]}')
    assert r.code == 0, r
    assert json.loads((tmp_path / "out.json").read_text()) == {"k": ["v", 2]}


def test_write_file_append(plait: Run, workflow: Write, tmp_path: Path) -> None:
    (tmp_path / "log.txt").write_text("first\n")
    run_json(
        plait,
        workflow,
        node("a", "write-file", file_path="log.txt", content="second\n", append=True),
        node("b", "write-file", file_path="log.txt", content="third\n", append=True),
    )
    assert (tmp_path / "log.txt").read_text() == "first\nsecond\nthird\n"


def test_write_file_replaces_without_append(plait: Run, workflow: Write, tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("old content that is long")
    run_json(plait, workflow, node("w", "write-file", file_path="f.txt", content="new"))
    assert (tmp_path / "f.txt").read_text() == "new"


def test_write_file_creates_parent_folders(plait: Run, workflow: Write, tmp_path: Path) -> None:
    run_json(plait, workflow, node("w", "write-file", file_path="a/b/c.txt", content="deep"))
    assert (tmp_path / "a" / "b" / "c.txt").read_text() == "deep"


def test_write_file_without_create_dirs(plait: Run, workflow: Write, tmp_path: Path) -> None:
    wf = {"nodes": [node("w", "write-file", file_path="missing/c.txt", content="x", create_dirs=False)]}
    r = plait("run", workflow(wf))
    assert r.code == 1
    assert "missing" in r.stderr and "does not exist" in r.stderr
    assert not (tmp_path / "missing").exists()


def test_write_then_read_round_trip(plait: Run, workflow: Write) -> None:
    text = "  spaced\n\ttabbed\nlast line without newline"
    out = run_json(
        plait,
        workflow,
        node("w", "write-file", file_path="rt.txt", content=text),
        node("r", "read-file", file_path="${w.path}"),
    )
    assert out["outputs"]["content"] == text


def test_write_file_in_a_batch(plait: Run, workflow: Write, tmp_path: Path) -> None:
    wf = {
        "nodes": [
            {
                **node("w", "write-file", file_path="out/${item.name}.txt", content="${__index__}:${item.body}"),
                "batch": {"items": [{"name": "a", "body": "x"}, {"name": "b", "body": "y"}]},
            }
        ]
    }
    r = plait("run", workflow(wf))
    assert r.code == 0, r
    assert (tmp_path / "out" / "a.txt").read_text() == "0:x"
    assert (tmp_path / "out" / "b.txt").read_text() == "1:y"


# -- copy-file, move-file -----------------------------------------------------------


def test_copy_file(plait: Run, workflow: Write, tmp_path: Path) -> None:
    (tmp_path / "src.txt").write_text("data")
    out = run_json(plait, workflow, node("c", "copy-file", source_path="src.txt", dest_path="dst.txt"))
    assert (tmp_path / "src.txt").read_text() == "data"
    assert (tmp_path / "dst.txt").read_text() == "data"
    assert out["outputs"]["copied"] == "dst.txt"


def test_copy_into_an_existing_folder_keeps_the_name(plait: Run, workflow: Write, tmp_path: Path) -> None:
    (tmp_path / "src.txt").write_text("data")
    (tmp_path / "folder").mkdir()
    run_json(plait, workflow, node("c", "copy-file", source_path="src.txt", dest_path="folder"))
    assert (tmp_path / "folder" / "src.txt").read_text() == "data"


def test_copy_into_a_new_folder_with_trailing_slash(plait: Run, workflow: Write, tmp_path: Path) -> None:
    (tmp_path / "src.txt").write_text("data")
    run_json(plait, workflow, node("c", "copy-file", source_path="src.txt", dest_path="newdir/"))
    assert (tmp_path / "newdir" / "src.txt").read_text() == "data"


def test_copy_refuses_to_overwrite_by_default(plait: Run, workflow: Write, tmp_path: Path) -> None:
    (tmp_path / "src.txt").write_text("new")
    (tmp_path / "dst.txt").write_text("old")
    r = plait("run", workflow({"nodes": [node("c", "copy-file", source_path="src.txt", dest_path="dst.txt")]}))
    assert r.code == 1
    assert "destination exists" in r.stderr and "overwrite" in r.stderr
    assert (tmp_path / "dst.txt").read_text() == "old"


def test_copy_with_overwrite(plait: Run, workflow: Write, tmp_path: Path) -> None:
    (tmp_path / "src.txt").write_text("new")
    (tmp_path / "dst.txt").write_text("old")
    run_json(plait, workflow, node("c", "copy-file", source_path="src.txt", dest_path="dst.txt", overwrite=True))
    assert (tmp_path / "dst.txt").read_text() == "new"


def test_copy_a_folder(plait: Run, workflow: Write, tmp_path: Path) -> None:
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "f.txt").write_text("leaf")
    run_json(plait, workflow, node("c", "copy-file", source_path="tree", dest_path="copy"))
    assert (tmp_path / "copy" / "sub" / "f.txt").read_text() == "leaf"
    assert (tmp_path / "tree" / "sub" / "f.txt").exists()


def test_copy_a_folder_over_an_existing_one_replaces_it(plait: Run, workflow: Write, tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "new.txt").write_text("new")
    (tmp_path / "backup" / "tree").mkdir(parents=True)
    (tmp_path / "backup" / "tree" / "stale.txt").write_text("stale")
    wf = {"nodes": [node("c", "copy-file", source_path="tree", dest_path="backup", overwrite=True)]}
    r = plait("run", workflow(wf))
    assert r.code == 0, r
    assert sorted(p.name for p in (tmp_path / "backup" / "tree").iterdir()) == ["new.txt"]


def test_copy_a_folder_into_itself_is_refused(plait: Run, workflow: Write, tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    r = plait("run", workflow({"nodes": [node("c", "copy-file", source_path="tree", dest_path="tree/inner")]}))
    assert r.code == 1
    assert "inside itself" in r.stderr


def test_copy_missing_source(plait: Run, workflow: Write) -> None:
    r = plait("run", workflow({"nodes": [node("c", "copy-file", source_path="nope", dest_path="x")]}))
    assert r.code == 1
    assert "source not found: nope" in r.stderr


def test_copy_a_file_onto_itself(plait: Run, workflow: Write, tmp_path: Path) -> None:
    (tmp_path / "same.txt").write_text("keep")
    wf = {"nodes": [node("c", "copy-file", source_path="same.txt", dest_path="./same.txt", overwrite=True)]}
    r = plait("run", workflow(wf))
    assert r.code == 1
    assert "same file" in r.stderr
    assert (tmp_path / "same.txt").read_text() == "keep"


def test_move_file(plait: Run, workflow: Write, tmp_path: Path) -> None:
    (tmp_path / "src.txt").write_text("data")
    out = run_json(plait, workflow, node("m", "move-file", source_path="src.txt", dest_path="sub/dst.txt"))
    assert not (tmp_path / "src.txt").exists()
    assert (tmp_path / "sub" / "dst.txt").read_text() == "data"
    assert out["outputs"]["moved"] == "sub/dst.txt"


def test_move_refuses_to_overwrite_by_default(plait: Run, workflow: Write, tmp_path: Path) -> None:
    (tmp_path / "src.txt").write_text("new")
    (tmp_path / "dst.txt").write_text("old")
    r = plait("run", workflow({"nodes": [node("m", "move-file", source_path="src.txt", dest_path="dst.txt")]}))
    assert r.code == 1
    assert (tmp_path / "src.txt").exists()
    assert (tmp_path / "dst.txt").read_text() == "old"


def test_move_with_overwrite(plait: Run, workflow: Write, tmp_path: Path) -> None:
    (tmp_path / "src.txt").write_text("new")
    (tmp_path / "dst.txt").write_text("old")
    run_json(plait, workflow, node("m", "move-file", source_path="src.txt", dest_path="dst.txt", overwrite=True))
    assert not (tmp_path / "src.txt").exists()
    assert (tmp_path / "dst.txt").read_text() == "new"


# -- delete-file ------------------------------------------------------------------------


def test_delete_file(plait: Run, workflow: Write, tmp_path: Path) -> None:
    (tmp_path / "gone.txt").write_text("x")
    out = run_json(plait, workflow, node("d", "delete-file", file_path="gone.txt"))
    assert not (tmp_path / "gone.txt").exists()
    assert out["outputs"] == {"deleted": True}


def test_delete_missing_fails_unless_missing_ok(plait: Run, workflow: Write) -> None:
    r = plait("run", workflow({"nodes": [node("d", "delete-file", file_path="nope.txt")]}))
    assert r.code == 1
    assert "not found: nope.txt" in r.stderr and "missing_ok" in r.stderr
    out = run_json(plait, workflow, node("d", "delete-file", file_path="nope.txt", missing_ok=True))
    assert out["outputs"] == {"deleted": False}


def test_delete_an_empty_folder_but_not_a_full_one(plait: Run, workflow: Write, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    run_json(plait, workflow, node("d", "delete-file", file_path="empty"))
    assert not (tmp_path / "empty").exists()
    r = plait("run", workflow({"nodes": [node("d", "delete-file", file_path="full")]}))
    assert r.code == 1
    assert "cannot delete full" in r.stderr
    assert (tmp_path / "full" / "f").exists()


# -- list-files ---------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "sub" / "deeper").mkdir(parents=True)
    for rel in ("b.txt", "a.txt", "c.csv", "sub/d.txt", "sub/deeper/e.txt"):
        (root / rel).write_text(rel.upper())
    return root


def test_list_files_pattern(plait: Run, workflow: Write, tree: Path) -> None:
    out = run_json(plait, workflow, node("ls", "list-files", path="data", pattern="*.txt"))
    assert out["outputs"]["files"] == ["data/a.txt", "data/b.txt"]
    assert out["outputs"]["count"] == 2


def test_list_files_default_pattern_lists_files_only(plait: Run, workflow: Write, tree: Path) -> None:
    out = run_json(plait, workflow, node("ls", "list-files", path="data"))
    assert out["outputs"]["files"] == ["data/a.txt", "data/b.txt", "data/c.csv"]


def test_list_files_recursive(plait: Run, workflow: Write, tree: Path) -> None:
    out = run_json(plait, workflow, node("ls", "list-files", path="data", pattern="*.txt", recursive=True))
    assert out["outputs"]["files"] == [
        "data/a.txt",
        "data/b.txt",
        "data/sub/d.txt",
        "data/sub/deeper/e.txt",
    ]


def test_list_files_missing_folder(plait: Run, workflow: Write) -> None:
    r = plait("run", workflow({"nodes": [node("ls", "list-files", path="nowhere")]}))
    assert r.code == 1
    assert "folder not found: nowhere" in r.stderr


def test_list_files_feeds_a_batch(plait: Run, workflow: Write, tree: Path) -> None:
    wf = {
        "nodes": [
            node("ls", "list-files", path="data", pattern="*.txt", recursive=True),
            {
                "id": "read",
                "type": "read-file",
                "params": {"file_path": "${file}"},
                "batch": {"items": "${ls.files}", "as": "file"},
            },
            node("join", "shell", command="echo ${read.count} ${read.results[3].content}"),
        ]
    }
    r = plait("run", "-o", "json", workflow(wf))
    assert r.code == 0, r
    results = r.json["nodes"]
    assert results["read"]["status"] == "success"
    assert r.json["outputs"]["stdout"] == "4 SUB/DEEPER/E.TXT"



@pytest.mark.parametrize(("pattern", "why"), [("", "empty"), ("/etc/*", "relative to 'path'")])
def test_list_files_with_an_unusable_pattern_is_a_clear_failure(
    plait: Run, workflow: Write, tree: Path, pattern: str, why: str
) -> None:
    r = plait("run", workflow({"nodes": [node("ls", "list-files", path="data", pattern=pattern)]}))
    assert r.code == 1, r
    assert f"invalid pattern {pattern!r}" in r.stderr and why in r.stderr, r


def test_list_files_then_copy_each(plait: Run, workflow: Write, tree: Path, tmp_path: Path) -> None:
    wf = {
        "nodes": [
            node("ls", "list-files", path="data", pattern="*.txt"),
            {
                "id": "copy",
                "type": "copy-file",
                "params": {"source_path": "${item}", "dest_path": "backup/"},
                "batch": {"items": "${ls.files}", "parallel": True},
            },
        ]
    }
    r = plait("run", workflow(wf))
    assert r.code == 0, r
    assert sorted(p.name for p in (tmp_path / "backup").iterdir()) == ["a.txt", "b.txt"]
