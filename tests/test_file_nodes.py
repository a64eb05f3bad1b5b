"""File nodes (SPEC §8) on real files in a temp dir, through the real CLI."""

from __future__ import annotations

import json
import os
import resource
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import plait_env

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


def test_a_folder_that_cannot_be_made_is_said_so_not_a_raw_os_error(
    plait: Run, workflow: Write, tmp_path: Path
) -> None:
    (tmp_path / "afile").write_text("in the way")
    for target, said in (
        ("afile/sub/c.txt", "cannot create the folder afile/sub for afile/sub/c.txt: afile is a file, not a folder"),
        ("afile/c.txt", "cannot create the folder afile for afile/c.txt: afile is a file, not a folder"),
        ("/proc/plait-none/c.txt", "cannot create the folder /proc/plait-none for /proc/plait-none/c.txt: "),
    ):
        r = plait("run", workflow({"nodes": [node("w", "write-file", file_path=target, content="x")]}))
        assert r.code == 1, r
        assert said in r.stderr and "Error:" not in r.stderr, r.stderr
    r = plait("run", workflow({"nodes": [
        node("c", "copy-file", source_path="afile", dest_path="afile/sub/copy.txt"),
    ]}))
    assert r.code == 1 and "afile is a file, not a folder" in r.stderr, r.stderr
    assert (tmp_path / "afile").read_text() == "in the way"


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


# -- limits and atomic writes (issue 10, points 10 and 12) -------------------------------


def test_read_file_of_an_endless_source_stops_at_max_bytes(plait: Run, workflow: Write) -> None:
    wf = {"nodes": [node("read", "read-file", file_path="/dev/zero", max_bytes=1024 * 1024)]}
    r = plait("run", workflow(wf))
    assert r.code == 1, r
    assert "/dev/zero holds more than max_bytes allows (1048576 bytes)" in r.stderr, r
    assert "raise max_bytes" in r.stderr


def test_read_file_refuses_a_file_over_the_default_cap_without_reading_it(
    plait: Run, workflow: Write, tmp_path: Path
) -> None:
    with open(tmp_path / "huge.bin", "wb") as fh:
        fh.truncate(257 * 1024 * 1024)  # sparse: no disk, and read-file must not read it
    r = plait("run", workflow({"nodes": [node("read", "read-file", file_path="huge.bin")]}))
    assert r.code == 1, r
    assert f"huge.bin is {257 * 1024 * 1024} bytes, more than max_bytes allows ({256 * 1024 * 1024} bytes)" in r.stderr


def test_read_file_up_to_max_bytes_exactly(plait: Run, workflow: Write, tmp_path: Path) -> None:
    (tmp_path / "ten.txt").write_text("0123456789")
    wf = {
        "nodes": [
            node("ok", "read-file", file_path="ten.txt", max_bytes=10),
            node("over", "read-file", file_path="ten.txt", max_bytes=9),
        ]
    }
    r = plait("run", "-o", "json", workflow(wf))
    assert r.code == 1
    assert "ten.txt is 10 bytes, more than max_bytes allows (9 bytes)" in r.stderr
    bad = plait("run", workflow({"nodes": [node("z", "read-file", file_path="ten.txt", max_bytes=0)]}))
    assert bad.code == 1 and "max_bytes must be a positive number of bytes" in bad.stderr, bad


def _nested(root: Path, depth: int, files_every: int) -> list[str]:
    """depth nested folders 'd' under root (paths pass PATH_MAX: built relative to each
    parent), with a file every files_every levels; returns the files' paths."""
    expected = []
    fd = os.open(root, os.O_RDONLY)
    rel = root.name
    try:
        for level in range(1, depth + 1):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
            rel += "/d"
            if level % files_every == 0 or level == depth:
                os.close(os.open(f"f{level}.txt", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
                expected.append(f"{rel}/f{level}.txt")
    finally:
        os.close(fd)
    return expected


def test_list_files_on_a_very_deep_tree(plait: Run, workflow: Write, tmp_path: Path) -> None:
    (tmp_path / "deep").mkdir()
    expected = _nested(tmp_path / "deep", 3000, 500)
    try:
        out = run_json(plait, workflow, node("ls", "list-files", path="deep", pattern="*.txt", recursive=True))
        assert out["outputs"]["files"] == sorted(expected)
        assert max(map(len, out["outputs"]["files"])) > 4096  # longer than PATH_MAX, listed all the same
    finally:
        # shutil.rmtree recurses too; rm walks any depth
        subprocess.run(["rm", "-rf", str(tmp_path / "deep")], check=True)


def test_list_files_follows_pathlib_glob_rules(plait: Run, workflow: Write, tmp_path: Path) -> None:
    root = tmp_path / "t"
    for rel in ("f.txt", ".hidden.txt", "a/g.txt", "a/b/h.txt", "a/b/c/i.csv", "sub/k.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    (root / "link").symlink_to("a")
    (root / "loop").symlink_to(".")
    patterns = ["*", "*.txt", "**/*.txt", "*/*.txt", "a/**/*.txt", "?.txt", "[fg].txt", "**/b/*", "*/b"]
    expected = {
        f"{pattern}|{recursive}|{dirs}": sorted(
            os.path.relpath(m, tmp_path)
            for m in (root.rglob(pattern) if recursive else root.glob(pattern))
            if dirs or m.is_file()
        )
        for pattern in patterns
        for recursive in (False, True)
        for dirs in (False, True)
    }
    wf = {
        "nodes": [
            {
                "id": "ls",
                "type": "list-files",
                "params": {
                    "path": "t",
                    "pattern": "${item.p}",
                    "recursive": "${item.r}",
                    "include_dirs": "${item.d}",
                },
                "batch": {
                    "items": [
                        {"p": p, "r": r, "d": d} for p in patterns for r in (False, True) for d in (False, True)
                    ]
                },
            }
        ]
    }
    r = plait("run", "-o", "json", workflow(wf))
    assert r.code == 0, r
    got = {f"{x['item']['p']}|{x['item']['r']}|{x['item']['d']}": x["files"] for x in r.json["outputs"]["results"]}
    assert got == expected


def test_list_files_refuses_dot_dot(plait: Run, workflow: Write, tree: Path) -> None:
    r = plait("run", workflow({"nodes": [node("ls", "list-files", path="data", pattern="../*")]}))
    assert r.code == 1 and "'..' is not allowed" in r.stderr, r


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "plait-" in p.name)


def test_write_file_keeps_mode_and_leaves_no_temporary_file(plait: Run, workflow: Write, tmp_path: Path) -> None:
    target = tmp_path / "conf.txt"
    target.write_text("old")
    target.chmod(0o640)
    (tmp_path / "link.txt").symlink_to("conf.txt")
    run_json(
        plait,
        workflow,
        node("w", "write-file", file_path="conf.txt", content="new"),
        node("via", "write-file", file_path="link.txt", content="newer"),
    )
    assert target.read_text() == "newer"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert (tmp_path / "link.txt").is_symlink()
    assert _leftovers(tmp_path) == []


def test_write_file_to_a_device_writes_in_place(plait: Run, workflow: Write) -> None:
    run_json(plait, workflow, node("w", "write-file", file_path="/dev/null", content="gone"))
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_parallel_appends_all_land(plait: Run, workflow: Write, tmp_path: Path) -> None:
    wf = {
        "nodes": [
            {
                **node("w", "write-file", file_path="log.txt", content="line ${item}\n", append=True),
                "batch": {"items": list(range(40)), "parallel": True, "max_concurrent": 8},
            }
        ]
    }
    r = plait("run", workflow(wf))
    assert r.code == 0, r
    assert sorted((tmp_path / "log.txt").read_text().splitlines()) == sorted(f"line {i}" for i in range(40))


def _run_with_file_size_limit(wf_path: str, cwd: Path, limit: int) -> subprocess.CompletedProcess[str]:
    """plait in a process that may not write files over ``limit`` bytes: the write fails
    half-way with EFBIG, as on a full disk (Python ignores SIGXFSZ)."""

    def limit_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [sys.executable, "-m", "plait", "run", wf_path],
        cwd=cwd,
        env=plait_env(),
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit_size,
        stdin=subprocess.DEVNULL,
    )


def test_a_write_that_fails_half_way_leaves_the_old_file_intact(workflow: Write, tmp_path: Path) -> None:
    old = "old content\n" * 1000
    (tmp_path / "data.txt").write_text(old)
    (tmp_path / "src.bin").write_bytes(b"x" * 3_000_000)
    (tmp_path / "copy.txt").write_text(old)
    wf = workflow({"nodes": [node("w", "write-file", file_path="data.txt", content="y" * 2_000_000)]})
    proc = _run_with_file_size_limit(wf, tmp_path, 1_000_000)
    assert (tmp_path / "data.txt").read_text() == old
    assert proc.returncode == 1, proc
    assert "cannot write data.txt: File too large; the file is left as it was" in proc.stderr, proc.stderr
    wf = workflow({"nodes": [node("c", "copy-file", source_path="src.bin", dest_path="copy.txt", overwrite=True)]})
    proc = _run_with_file_size_limit(wf, tmp_path, 1_000_000)
    assert (tmp_path / "copy.txt").read_text() == old
    assert proc.returncode == 1, proc
    assert "cannot copy src.bin to copy.txt: File too large" in proc.stderr, proc.stderr
    assert _leftovers(tmp_path) == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A real 1 MiB tmpfs; skipped where mounting is not allowed (not root, no CAP_SYS_ADMIN)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if not sys.platform.startswith("linux") or shutil.which("mount") is None:
        pytest.skip("needs Linux mount")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_leaves_the_old_file_intact(plait: Run, workflow: Write, tmp_path: Path, small_disk: Path) -> None:
    old = "precious\n" * 20_000  # 180 kB of the 1 MiB
    (small_disk / "keep.txt").write_text(old)
    (tmp_path / "big.bin").write_bytes(b"z" * 2_000_000)
    wf = {
        "nodes": [
            {
                "id": "w",
                "type": "write-file",
                "params": {"file_path": "disk/keep.txt", "content": "${item}"},
                "batch": {"items": ["w" * 2_000_000], "error_handling": "continue"},
            },
            node("c", "copy-file", source_path="big.bin", dest_path="disk/keep.txt", overwrite=True),
        ]
    }
    r = plait("run", "-o", "json", workflow(wf))
    assert (small_disk / "keep.txt").read_text() == old
    assert r.code == 1, r
    assert "No space left on device" in r.stderr, r
    assert "cannot copy big.bin to disk/keep.txt" in r.stderr, r
    errors = r.json["nodes"]
    assert errors["w"]["status"] == "partial"  # continue: the item failed, recorded
    assert (small_disk / "keep.txt").read_text() == old
    assert _leftovers(small_disk) == []


@pytest.mark.parametrize("node_type", ["copy-file", "move-file"])
def test_overwrite_never_swaps_a_folder_for_a_file(
    plait: Run, workflow: Write, tmp_path: Path, node_type: str
) -> None:
    (tmp_path / "a.txt").write_text("file")
    (tmp_path / "out" / "a.txt").mkdir(parents=True)
    (tmp_path / "out" / "a.txt" / "inside").write_text("keep me")
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "t").write_text("t")
    (tmp_path / "plain").write_text("plain file")
    wf = {
        "nodes": [
            node("file_over_dir", node_type, source_path="a.txt", dest_path="out/", overwrite=True),
        ]
    }
    r = plait("run", workflow(wf))
    assert r.code == 1, r
    assert "cannot replace the folder out/a.txt with a file" in r.stderr, r
    assert (tmp_path / "out" / "a.txt" / "inside").read_text() == "keep me"
    wf = {"nodes": [node("dir_over_file", node_type, source_path="tree", dest_path="plain", overwrite=True)]}
    r = plait("run", workflow(wf))
    assert r.code == 1, r
    assert "cannot replace the file plain with a folder" in r.stderr, r
    assert (tmp_path / "plain").read_text() == "plain file"
    assert (tmp_path / "a.txt").exists() and (tmp_path / "tree" / "t").exists()


def test_replacing_a_folder_leaves_nothing_behind(plait: Run, workflow: Write, tmp_path: Path) -> None:
    for rel in ("one/one.txt", "dest/dest.txt", "other/one/two.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    run_json(
        plait,
        workflow,
        node("first", "copy-file", source_path="one", dest_path="dest"),
        node("again", "copy-file", source_path="one", dest_path="dest", overwrite=True),
        node("over", "move-file", source_path="other/one", dest_path="dest", overwrite=True),
    )
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["dest.txt", "one"]
    assert sorted(p.name for p in (tmp_path / "dest" / "one").iterdir()) == ["two.txt"]
    assert not (tmp_path / "other" / "one").exists()
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path / "dest") == []
