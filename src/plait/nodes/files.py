"""File nodes: read, write, copy, move, delete, list. Relative paths are taken
from the current working directory, as in a shell."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from plait.nodes.base import NodeError, Output, Param, PlaitNode


def _missing(path: str, what: str = "file") -> NodeError:
    return NodeError(f"{what} not found: {path}", retryable=False)


class ReadFileNode(PlaitNode):
    type_name = "read-file"
    description = "Read a text file and return its content as it is."
    param_specs = (
        Param("file_path", "string", required=True, description="path of the file to read"),
        Param("encoding", "string", default="utf-8", description="text encoding"),
    )
    output_specs = (
        Output("content", "string", "the file's text"),
        Output("size", "integer", "size in bytes"),
    )
    primary_output = "content"

    def exec(self, p: dict[str, Any]) -> dict[str, Any]:
        path = Path(p["file_path"])
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise _missing(str(path))
        except IsADirectoryError:
            raise NodeError(f"{path} is a directory, not a file", retryable=False)
        except PermissionError:
            raise NodeError(f"permission denied reading {path}", retryable=False)
        try:
            content = data.decode(p["encoding"])
        except LookupError:
            raise NodeError(f"unknown encoding '{p['encoding']}'", retryable=False)
        except UnicodeDecodeError as exc:
            raise NodeError(
                f"{path} is not valid {p['encoding']} text (byte {exc.start}); set 'encoding'",
                retryable=False,
            )
        return {"content": content, "size": len(data)}


class WriteFileNode(PlaitNode):
    type_name = "write-file"
    description = "Write text (or JSON for objects and lists) to a file."
    param_specs = (
        Param("file_path", "string", required=True, description="path of the file to write"),
        Param("content", "any", required=True, description="text; an object or list is written as JSON"),
        Param("append", "boolean", default=False, description="append instead of replacing"),
        Param("create_dirs", "boolean", default=True, description="create missing parent folders"),
        Param("encoding", "string", default="utf-8", description="text encoding"),
    )
    output_specs = (
        Output("written", "integer", "bytes written"),
        Output("path", "string", "absolute path of the file"),
    )
    primary_output = "path"

    def exec(self, p: dict[str, Any]) -> dict[str, Any]:
        path = Path(p["file_path"])
        content = p["content"]
        if isinstance(content, dict | list):
            text = json.dumps(content, indent=2, ensure_ascii=False) + "\n"
        elif content is None:
            text = ""
        elif isinstance(content, bool):
            text = "true" if content else "false"
        else:
            text = str(content)
        try:
            data = text.encode(p["encoding"])
        except LookupError:
            raise NodeError(f"unknown encoding '{p['encoding']}'", retryable=False)
        if p["create_dirs"]:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.parent.exists():
            raise NodeError(
                f"folder {path.parent} does not exist", retryable=False
            )
        try:
            with open(path, "ab" if p["append"] else "wb") as fh:
                fh.write(data)
        except IsADirectoryError:
            raise NodeError(f"{path} is a directory", retryable=False)
        except PermissionError:
            raise NodeError(f"permission denied writing {path}", retryable=False)
        return {"written": len(data), "path": str(path.resolve())}


_TRANSFER_PARAMS = (
    Param("source_path", "string", required=True, description="file or folder to take"),
    Param(
        "dest_path",
        "string",
        required=True,
        description="where it goes; into a folder that exists or ends with '/', keeping the name",
    ),
    Param("overwrite", "boolean", default=False, description="replace an existing destination"),
    Param("create_dirs", "boolean", default=True, description="create missing parent folders"),
)


def _destination(p: dict[str, Any]) -> tuple[Path, Path]:
    src = Path(p["source_path"])
    dest = Path(p["dest_path"])
    if not src.exists():
        raise _missing(str(src), "source")
    # Like cp and mv: into an existing folder, or a new one when the path ends with '/'.
    if dest.is_dir() or str(p["dest_path"]).endswith(("/", os.sep)):
        dest = dest / src.name
    if dest.exists():
        if os.path.samefile(src, dest):
            raise NodeError(f"source and destination are the same file: {dest}", retryable=False)
        if not p["overwrite"]:
            raise NodeError(
                f"destination exists: {dest}; set \"overwrite\": true to replace it", retryable=False
            )
    if src.is_dir() and dest.resolve().is_relative_to(src.resolve()):
        raise NodeError(f"cannot put the folder {src} inside itself ({dest})", retryable=False)
    if p["create_dirs"]:
        dest.parent.mkdir(parents=True, exist_ok=True)
    elif not dest.parent.exists():
        raise NodeError(f"folder {dest.parent} does not exist", retryable=False)
    return src, dest


def _clear(dest: Path) -> None:
    """Remove what "overwrite" replaces, so a folder is replaced rather than merged into."""
    if dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(dest)
    elif dest.exists() or dest.is_symlink():
        dest.unlink()


class CopyFileNode(PlaitNode):
    type_name = "copy-file"
    description = "Copy a file or a folder."
    param_specs = _TRANSFER_PARAMS
    output_specs = (Output("copied", "string", "path of the copy"),)
    primary_output = "copied"

    def exec(self, p: dict[str, Any]) -> dict[str, Any]:
        src, dest = _destination(p)
        try:
            _clear(dest)
            if src.is_dir():
                shutil.copytree(src, dest, symlinks=True)
            else:
                shutil.copy2(src, dest)
        except OSError as exc:
            raise NodeError(f"cannot copy {src} to {dest}: {exc.strerror or exc}", retryable=False)
        return {"copied": str(dest)}


class MoveFileNode(PlaitNode):
    type_name = "move-file"
    description = "Move (rename) a file or a folder."
    param_specs = _TRANSFER_PARAMS
    output_specs = (Output("moved", "string", "the new path"),)
    primary_output = "moved"

    def exec(self, p: dict[str, Any]) -> dict[str, Any]:
        src, dest = _destination(p)
        try:
            _clear(dest)
            shutil.move(str(src), str(dest))
        except OSError as exc:
            raise NodeError(f"cannot move {src} to {dest}: {exc.strerror or exc}", retryable=False)
        return {"moved": str(dest)}


class DeleteFileNode(PlaitNode):
    type_name = "delete-file"
    description = "Delete a file (or an empty folder)."
    param_specs = (
        Param("file_path", "string", required=True, description="what to delete"),
        Param("missing_ok", "boolean", default=False, description="succeed when it does not exist"),
    )
    output_specs = (Output("deleted", "boolean", "whether something was deleted"),)
    primary_output = "deleted"

    def exec(self, p: dict[str, Any]) -> dict[str, Any]:
        path = Path(p["file_path"])
        try:
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            else:
                path.unlink()
        except FileNotFoundError:
            if p["missing_ok"]:
                return {"deleted": False}
            raise NodeError(
                f"file not found: {path}; set \"missing_ok\": true to allow that", retryable=False
            )
        except OSError as exc:
            raise NodeError(f"cannot delete {path}: {exc.strerror}", retryable=False)
        return {"deleted": True}


class ListFilesNode(PlaitNode):
    type_name = "list-files"
    description = "List files in a folder matching a glob pattern, sorted."
    param_specs = (
        Param("path", "string", default=".", description="folder to list"),
        Param("pattern", "string", default="*", description="glob pattern, e.g. *.txt"),
        Param("recursive", "boolean", default=False, description="descend into sub-folders"),
        Param("include_dirs", "boolean", default=False, description="list folders too"),
    )
    output_specs = (
        Output("files", "array", "paths, ready for batch.items"),
        Output("count", "integer", "how many"),
    )
    primary_output = "files"

    def exec(self, p: dict[str, Any]) -> dict[str, Any]:
        root = Path(p["path"])
        if not root.is_dir():
            raise NodeError(f"folder not found: {root}", retryable=False)
        pattern = p["pattern"]
        try:
            matches = root.rglob(pattern) if p["recursive"] else root.glob(pattern)
            files = sorted(os.fspath(m) for m in matches if p["include_dirs"] or m.is_file())
        except (ValueError, NotImplementedError):  # an empty or an absolute pattern
            why = "it is empty" if not pattern else "give one relative to 'path', e.g. *.txt"
            raise NodeError(f"invalid pattern {pattern!r}: {why}", retryable=False)
        return {"files": files, "count": len(files)}
