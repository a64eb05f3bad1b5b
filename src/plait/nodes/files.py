"""File nodes: read, write, copy, move, delete, list. Relative paths are taken
from the current working directory, as in a shell.

Writes never leave a half-written file under the final name: the new content goes
to a temporary file beside it, is flushed to disk, and is renamed over the old one
(docs/format.md, "Limits and hostile input", says what a crash can leave).
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from plait.nodes.base import NodeError, Output, Param, PlaitNode

DEFAULT_MAX_READ = 256 * 1024 * 1024
_CHUNK = 1024 * 1024


def _missing(path: str, what: str = "file") -> NodeError:
    return NodeError(f"{what} not found: {path}", retryable=False)


class ReadFileNode(PlaitNode):
    type_name = "read-file"
    description = "Read a text file and return its content as it is."
    param_specs = (
        Param("file_path", "string", required=True, description="path of the file to read"),
        Param("encoding", "string", default="utf-8", description="text encoding"),
        Param(
            "max_bytes",
            "integer",
            default=DEFAULT_MAX_READ,
            description="refuse files larger than this (256 MiB by default); also stops endless sources",
        ),
    )
    output_specs = (
        Output("content", "string", "the file's text"),
        Output("size", "integer", "size in bytes"),
    )
    primary_output = "content"

    def exec(self, p: dict[str, Any]) -> dict[str, Any]:
        path = Path(p["file_path"])
        limit = p["max_bytes"]
        if not isinstance(limit, int) or limit < 1:
            raise NodeError(f"max_bytes must be a positive number of bytes, not {limit!r}", retryable=False)
        try:
            data = _read_capped(path, limit)
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


def _read_capped(path: Path, limit: int) -> bytearray:
    """At most ``limit`` bytes, whatever the source (a huge file, /dev/zero, a pipe)."""
    with open(path, "rb") as fh:
        info = os.fstat(fh.fileno())
        if stat.S_ISREG(info.st_mode) and info.st_size > limit:
            raise _too_big(path, limit, info.st_size)
        data = bytearray()
        while True:
            chunk = fh.read(min(_CHUNK, limit + 1 - len(data)))
            if not chunk:
                return data
            data += chunk
            if len(data) > limit:
                raise _too_big(path, limit, None)


def _too_big(path: Path, limit: int, size: int | None) -> NodeError:
    what = f"is {size} bytes, more" if size is not None else "holds more"
    return NodeError(
        f"{path} {what} than max_bytes allows ({limit} bytes); raise max_bytes to read it"
        " whole, or process it with a shell command (head, split, jq)",
        retryable=False,
    )


# -- atomic replacement ---------------------------------------------------------------


def _temp_name(dest: Path) -> Path:
    # Hidden, beside the destination (so the rename stays on one filesystem), and
    # recognisable when a kill leaves one behind.
    return dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.plait-tmp")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot sync a folder; the rename itself is still atomic
    finally:
        os.close(fd)


def _replace_atomically(
    dest: Path, fill: Callable[[BinaryIO], object], finish: Callable[[Path], object] | None = None
) -> None:
    """Write a new file through ``fill`` under a temporary name, flush it to disk,
    let ``finish`` set its permissions, and rename it over ``dest``."""
    while True:
        tmp = _temp_name(dest)
        try:
            # 0o666 and the umask, as open() would give a new file
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            fill(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if finish is not None:
            finish(tmp)
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(dest.parent)


def _keep_permissions(old: Path, new: Path) -> None:
    try:
        info = os.stat(old)
    except OSError:
        return
    os.chmod(new, stat.S_IMODE(info.st_mode))
    if hasattr(os, "chown") and (info.st_uid, info.st_gid) != (os.getuid(), os.getgid()):
        try:
            os.chown(new, info.st_uid, info.st_gid)
        except OSError:
            pass  # only root may give a file away; the mode is kept all the same


def _is_special(path: Path) -> bool:
    """A device, a FIFO or a socket: written in place, never replaced by a rename
    (think /dev/null)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class WriteFileNode(PlaitNode):
    type_name = "write-file"
    description = "Write text (or JSON for objects and lists) to a file."
    param_specs = (
        Param("file_path", "string", required=True, description="path of the file to write"),
        Param("content", "any", required=True, description="text; an object or list is written as JSON"),
        Param(
            "append",
            "boolean",
            default=False,
            description="append instead of replacing (in place: a crash can leave part of the new text)",
        ),
        Param("create_dirs", "boolean", default=True, description="create missing parent folders"),
        Param("encoding", "string", default="utf-8", description="text encoding"),
        Param(
            "content_is_binary",
            "boolean",
            default=False,
            description="content is base64 text, written as the bytes it encodes (pflow's param)",
        ),
    )
    output_specs = (
        Output("written", "integer", "bytes written"),
        Output("path", "string", "absolute path of the file"),
    )
    primary_output = "path"

    def exec(self, p: dict[str, Any]) -> dict[str, Any]:
        path = Path(p["file_path"])
        content = p["content"]
        if p.get("content_is_binary"):
            data = _base64_bytes(content)
        else:
            data = _text_bytes(content, p["encoding"])
        if p["create_dirs"]:
            _make_folder(path.parent, path)
        elif not path.parent.exists():
            raise NodeError(
                f"folder {path.parent} does not exist", retryable=False
            )
        # A symlink is followed, as open() would: its target gets the new content.
        target = Path(os.path.realpath(path)) if path.is_symlink() else path
        try:
            if target.is_dir():
                raise IsADirectoryError(errno.EISDIR, "is a directory")
            if p["append"] or _is_special(target):
                _write_in_place(target, data, append=p["append"])
            else:
                if target.exists() and not os.access(target, os.W_OK):
                    raise PermissionError(errno.EACCES, "permission denied")
                keep = target.exists()
                _replace_atomically(
                    target,
                    lambda fh: fh.write(data),
                    (lambda tmp: _keep_permissions(target, tmp)) if keep else None,
                )
        except IsADirectoryError:
            raise NodeError(f"{path} is a directory", retryable=False)
        except PermissionError:
            raise NodeError(
                f"permission denied writing {path} (plait writes a temporary file in the same"
                " folder and renames it, so the folder must be writable too)",
                retryable=False,
            )
        except OSError as exc:
            raise NodeError(
                f"cannot write {path}: {exc.strerror or exc}; the file is left as it was"
                if not p["append"]
                else f"cannot append to {path}: {exc.strerror or exc}",
                retryable=False,
            )
        return {"written": len(data), "path": str(path.resolve())}


def _text_bytes(content: Any, encoding: str) -> bytes:
    if isinstance(content, dict | list):
        text = json.dumps(content, indent=2, ensure_ascii=False) + "\n"
    elif content is None:
        text = ""
    elif isinstance(content, bool):
        text = "true" if content else "false"
    else:
        text = str(content)
    try:
        return text.encode(encoding)
    except LookupError:
        raise NodeError(f"unknown encoding '{encoding}'", retryable=False)


def _base64_bytes(content: Any) -> bytes:
    """The bytes that base64 text stands for; whitespace and line breaks inside are
    allowed (as `base64` prints them), any other stray character is an error."""
    import base64
    import binascii

    if not isinstance(content, str):
        raise NodeError(
            f"content_is_binary needs base64 text as the content, not {type(content).__name__}",
            retryable=False,
        )
    compact = "".join(content.split())
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        shown = compact if len(compact) <= 40 else compact[:37] + "..."
        raise NodeError(
            f"content_is_binary is set but the content is not valid base64 ({exc}): {shown!r}",
            retryable=False,
        )


def _write_in_place(path: Path, data: bytes, *, append: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        # One write call per chunk with O_APPEND: parallel appenders do not overwrite each other.
        _write_all(fd, data)
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fsync(fd)
    finally:
        os.close(fd)


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


def _destination(p: dict[str, Any], *, follow_source: bool) -> tuple[Path, Path]:
    src = Path(p["source_path"])
    dest = Path(p["dest_path"])
    if not src.exists():
        raise _missing(str(src), "source")
    # Like cp and mv: into an existing folder, or a new one when the path ends with '/'.
    if dest.is_dir() or str(p["dest_path"]).endswith(("/", os.sep)):
        dest = dest / src.name
    if dest.exists() or dest.is_symlink():
        if dest.exists() and os.path.samefile(src, dest):
            raise NodeError(f"source and destination are the same file: {dest}", retryable=False)
        if not p["overwrite"]:
            raise NodeError(
                f"destination exists: {dest}; set \"overwrite\": true to replace it", retryable=False
            )
        src_is_dir = src.is_dir() and (follow_source or not src.is_symlink())
        dest_is_dir = dest.is_dir() and not dest.is_symlink()
        if dest_is_dir and not src_is_dir:
            raise NodeError(
                f"cannot replace the folder {dest} with a file; delete the folder first, "
                "or give a path inside it",
                retryable=False,
            )
        if src_is_dir and not dest_is_dir:
            raise NodeError(
                f"cannot replace the file {dest} with a folder; delete the file first, "
                "or give another destination",
                retryable=False,
            )
    if src.is_dir() and dest.resolve().is_relative_to(src.resolve()):
        raise NodeError(f"cannot put the folder {src} inside itself ({dest})", retryable=False)
    if p["create_dirs"]:
        _make_folder(dest.parent, dest)
    elif not dest.parent.exists():
        raise NodeError(f"folder {dest.parent} does not exist", retryable=False)
    return src, dest


def _make_folder(folder: Path, for_path: Path) -> None:
    """``create_dirs``: the folder and its parents, or a NodeError saying why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a file stands where a folder should
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder)
        raise NodeError(f"cannot create the folder {folder} for {for_path}: {blocker} is a file, not a folder",
                        retryable=False) from None
    except OSError as exc:
        why = exc.strerror or str(exc)
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(folder) else ""
        raise NodeError(f"cannot create the folder {folder} for {for_path}: {why}{where}", retryable=False) from None


def _copy_file_atomically(src: Path, dest: Path) -> None:
    with open(src, "rb") as fin:
        # copy2's promise: the copy gets the source's permissions and times
        _replace_atomically(
            dest, lambda fh: shutil.copyfileobj(fin, fh, _CHUNK), lambda tmp: shutil.copystat(src, tmp)
        )


def _copy_tree_atomically(src: Path, dest: Path) -> None:
    tmp = _temp_name(dest)
    try:
        shutil.copytree(src, tmp, symlinks=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _swap_in(tmp, dest)


def _swap_in(new: Path, dest: Path) -> None:
    """Rename the folder ``new`` to ``dest``. A folder already there is set aside
    first and removed once the new one is in place (put back if the rename fails)."""
    if dest.is_symlink():
        dest.unlink()
    if dest.is_dir():
        old = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.plait-old")
        os.rename(dest, old)
        try:
            os.rename(new, dest)
        except BaseException:
            os.rename(old, dest)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(new, dest)
    _fsync_dir(dest.parent)


def _move(src: Path, dest: Path) -> None:
    if src.is_dir() and not src.is_symlink():
        try:
            _swap_in(src, dest)  # one filesystem: a rename
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            _copy_tree_atomically(src, dest)
            shutil.rmtree(src)
        return
    try:
        os.replace(src, dest)  # atomic, over an existing file too
        _fsync_dir(dest.parent)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    # Another filesystem: copy beside the destination, rename, then drop the source.
    if src.is_symlink():
        tmp = _temp_name(dest)
        os.symlink(os.readlink(src), tmp)
        os.replace(tmp, dest)
    else:
        _copy_file_atomically(src, dest)
    os.unlink(src)


class CopyFileNode(PlaitNode):
    type_name = "copy-file"
    description = "Copy a file or a folder; the copy appears whole or not at all."
    param_specs = _TRANSFER_PARAMS
    output_specs = (Output("copied", "string", "path of the copy"),)
    primary_output = "copied"

    def exec(self, p: dict[str, Any]) -> dict[str, Any]:
        src, dest = _destination(p, follow_source=True)
        try:
            if src.is_dir():
                _copy_tree_atomically(src, dest)
            else:
                _copy_file_atomically(src, dest)
        except OSError as exc:
            raise NodeError(
                f"cannot copy {src} to {dest}: {exc.strerror or exc}; the destination is left as it was",
                retryable=False,
            )
        return {"copied": str(dest)}


class MoveFileNode(PlaitNode):
    type_name = "move-file"
    description = "Move (rename) a file or a folder; the destination is replaced in one step."
    param_specs = _TRANSFER_PARAMS
    output_specs = (Output("moved", "string", "the new path"),)
    primary_output = "moved"

    def exec(self, p: dict[str, Any]) -> dict[str, Any]:
        src, dest = _destination(p, follow_source=False)
        try:
            _move(src, dest)
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
        parts = _pattern_parts(p["pattern"])
        if p["recursive"] and parts[0] != "**":
            parts.insert(0, "**")
        try:
            files = sorted(_Glob(parts, p["include_dirs"]).run(root))
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise NodeError(
                    f"cannot list {root}: too many folders open at once ({exc.strerror}); "
                    "list a sub-folder, or raise the limit of open files (ulimit -n)",
                    retryable=False,
                )
            raise NodeError(f"cannot list {root}: {exc.strerror or exc}", retryable=False)
        return {"files": files, "count": len(files)}


def _pattern_parts(pattern: str) -> list[str]:
    def invalid(why: str) -> NodeError:
        return NodeError(f"invalid pattern {pattern!r}: {why}", retryable=False)

    if not pattern:
        raise invalid("it is empty")
    if os.path.isabs(pattern):
        raise invalid("give one relative to 'path', e.g. *.txt")
    parts = [part for part in pattern.replace(os.sep, "/").split("/") if part not in ("", ".")]
    if ".." in parts:
        raise invalid("'..' is not allowed; point 'path' at the folder to list instead")
    if not parts:
        raise invalid("it names no file; use * for everything")
    return parts


class _Dir:
    """An open folder whose sub-folders are still to be opened (relative to it)."""

    __slots__ = ("fd", "pending")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending = 0

    def release(self) -> None:
        self.pending -= 1
        if self.pending == 0:
            os.close(self.fd)
            self.fd = -1


class _Glob:
    """pathlib's glob semantics (``*``, ``?``, ``[...]`` within a name, ``**`` for any
    number of folders, case-sensitive, hidden names included), walked without
    recursion: trees thousands of folders deep work, and sub-folders are opened
    relative to their parent, so paths longer than the system's limit work too."""

    _OPEN_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)

    def __init__(self, parts: list[str], include_dirs: bool) -> None:
        self.parts = parts
        self.end = len(parts)
        self.include_dirs = include_dirs
        self.dirs_only = parts[-1] == "**"  # as pathlib: a trailing ** selects folders
        self._matches: list[str] = []  # found in the folder being read

    def _closure(self, states: set[int]) -> frozenset[int]:
        todo = list(states)
        while todo:
            i = todo.pop()
            if i < self.end and self.parts[i] == "**" and i + 1 not in states:
                states.add(i + 1)
                todo.append(i + 1)
        return frozenset(states)

    def _step(self, states: frozenset[int], name: str) -> tuple[frozenset[int], frozenset[int]]:
        """The states after ``name``: all of them, and those reached by matching the
        name against a part other than ``**`` (the only ones a symlink may lead to)."""
        by_name: set[int] = set()
        stay: set[int] = set()
        for i in states:
            if i == self.end:
                continue
            part = self.parts[i]
            if part == "**":
                stay.add(i)
            elif fnmatch.fnmatchcase(name, part):
                by_name.add(i + 1)
        if not by_name and not stay:
            return frozenset(), frozenset()
        named = self._closure(set(by_name)) if by_name else frozenset()
        return self._closure(by_name | stay), named

    def run(self, root: Path) -> Iterator[str]:
        start = self._closure({0})
        base = os.fspath(root)
        if self.end in start and self.include_dirs:
            yield base
        relative = os.scandir in os.supports_fd and os.open in os.supports_dir_fd
        if not relative:  # no dir_fd (Windows): plain paths, still without recursion
            yield from self._run_by_path(base, start)
            return
        opened: list[_Dir] = []
        stack: list[tuple[_Dir | None, str, str, frozenset[int]]] = [(None, base, base, start)]
        try:
            while stack:
                parent, name, shown, states = stack.pop()
                try:
                    # Symlinks to folders are entered only where _visit allows it.
                    fd = os.open(name, self._OPEN_DIR, dir_fd=parent.fd if parent else None)
                except (PermissionError, FileNotFoundError, NotADirectoryError):
                    if parent is None:
                        raise
                    continue  # unreadable or gone since it was seen: skipped, as pathlib does
                finally:
                    if parent is not None:
                        parent.release()
                folder = _Dir(fd)
                opened.append(folder)
                with os.scandir(fd) as entries:
                    for entry in entries:
                        child = self._visit(entry, shown, states)
                        if child is not None:
                            folder.pending += 1
                            stack.append((folder, entry.name, *child))
                    matches, self._matches = self._matches, []
                yield from matches
                if folder.pending == 0:
                    os.close(fd)
                    folder.fd = -1
        finally:
            for folder in opened:
                if folder.fd >= 0:
                    os.close(folder.fd)
                    folder.fd = -1

    def _visit(
        self, entry: os.DirEntry[str], shown: str, states: frozenset[int]
    ) -> tuple[str, frozenset[int]] | None:
        """Note a match; return the folder to enter next, with its states, if any."""
        after, named = self._step(states, entry.name)
        if not after:
            return None
        path = entry.name if shown == "." else os.path.join(shown, entry.name)
        try:
            real_dir = entry.is_dir(follow_symlinks=False)
            linked_dir = not real_dir and entry.is_symlink() and entry.is_dir()
        except OSError:
            real_dir = linked_dir = False
        if self.end in after:
            if self.dirs_only:
                wanted = self.include_dirs and real_dir
            else:
                wanted = self.include_dirs or _is_file(entry)
            if wanted:
                self._matches.append(path)
        # As pathlib: ** never follows a symlink, a named part (*, a name) does. Each
        # link followed uses up a part of the pattern, so links cannot loop.
        enter = after if real_dir else named if linked_dir else frozenset()
        if any(i < self.end for i in enter):
            return path, enter
        return None

    def _run_by_path(self, base: str, start: frozenset[int]) -> Iterator[str]:
        stack = [(base, start)]
        while stack:
            shown, states = stack.pop()
            try:
                entries = list(os.scandir(shown))
            except (PermissionError, FileNotFoundError, NotADirectoryError):
                if shown == base:
                    raise
                continue
            for entry in entries:
                child = self._visit(entry, shown, states)
                if child is not None:
                    stack.append(child)
            matches, self._matches = self._matches, []
            yield from matches


def _is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False
