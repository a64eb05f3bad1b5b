"""Item sources: ``batch.items`` read lazily from a file, a glob or standard input.

A source object such as ``{"from": "issues.jsonl"}``, ``{"from": "data/*.csv",
"items": "records"}`` or ``{"from": "-", "format": "jsonl"}`` is opened with
:func:`open_source`; the :class:`ItemSource` it returns yields ``(index, item)``
one at a time, so memory stays flat however many items there are. Where the
total is cheap to know (a regular file, a glob) it is counted first by a byte
scan, not a parse, so progress has an ETA and ``max_failure_rate`` keeps its
meaning; for standard input it is ``None``.

A malformed record does not stop the batch: it is yielded as a :class:`BadItem`
whose message names the file, line and column, and the driver makes it that
item's failure. A source that cannot be read at all (a missing file, a CSV
header with duplicate names, a JSON file that is not an array) raises
:class:`SourceError`, the node's failure.
"""

from __future__ import annotations

import codecs
import csv
import glob
import io
import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, islice
from typing import IO, Any, BinaryIO, TextIO

from plait.errors import did_you_mean
from plait.nodes.base import NodeError
from plait.runtime.items import BadItem

FORMATS = ("jsonl", "csv", "tsv", "lines", "json")
SOURCE_FIELDS = ("from", "format", "skip", "limit", "items")
#: what a glob's items are: each path, each file as {path, content}, or every record of every file
ITEM_MODES = ("paths", "contents", "records")
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".json": "json"}
STDIN = "-"
STDIN_NAME = "<stdin>"

_CHUNK = 1 << 19  # bytes per read when counting lines
_JSON_COUNT_CHUNK = 1 << 18  # counting a JSON array keeps a few reductions of each read
_JSON_CHUNK = 1 << 16  # characters per read of a JSON array
_BOM = b"\xef\xbb\xbf"
_MAGIC = re.compile(r"[*?[]")
#: whitespace that makes a line blank (blank lines are not items), per format;
#: a tab is a field separator in TSV, so a tab-only line is a row of empty fields
_BLANK = {"jsonl": b" \t\r", "lines": b" \t\r", "csv": b" \t\r", "tsv": b" \r"}
_PREVIEW = 200

# The C scanner behind json.loads, called directly: a parse without the
# wrapper's per-call checks costs a third of json.loads on small records. On a
# failure the line is parsed again by json.loads, for the exact message.
_scan_once: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


class SourceError(NodeError):
    """The items source cannot be read at all: the batch node fails with this.

    A subclass of the node contract's :class:`NodeError` (never retried), with a
    ``hint`` that says how to fix it.
    """

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message, retryable=False)
        self.hint = hint


class ItemsFile:
    """A file standing in for standard input (``plait run --items FILE``): opened
    only when the batch reads it, counted first like any file, and named in
    errors as it was given."""

    __slots__ = ("name", "path")

    def __init__(self, path: str, name: str | None = None) -> None:
        self.path = path
        self.name = name or path

    def __repr__(self) -> str:
        return f"ItemsFile({self.name!r})"


def is_source(value: Any) -> bool:
    """True when ``batch.items`` is a source object rather than a template or a list."""
    return isinstance(value, dict) and "from" in value


def format_for(path: str) -> str:
    """The format a path's extension implies: jsonl, csv, tsv, json, else lines."""
    return EXTENSIONS.get(os.path.splitext(path)[1].lower(), "lines")


def is_glob(path: str) -> bool:
    return bool(_MAGIC.search(path))


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _dynamic(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def validate_source(obj: Any) -> list[tuple[str, str, str]]:
    """Static checks of a source object: a list of (message, JSON path suffix, hint).

    The suffix is relative to ``batch.items`` (``""``, ``".format"``...). A
    ``from`` that holds a template is checked only once it is resolved, by
    :func:`open_source`.
    """
    return _problems(obj, static=True)


def _problems(obj: Any, *, static: bool) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    if not isinstance(obj, dict):
        return [("an items source must be an object with 'from'", "", 'e.g. {"from": "items.jsonl"}')]
    misspelt_from = False
    for key in obj:
        if key not in SOURCE_FIELDS:
            # {"form": ...}: the missing 'from' first, before fields that are as close
            hint = did_you_mean(str(key), ["from"]) if "from" not in obj else ""
            misspelt_from = misspelt_from or bool(hint)
            out.append(
                (
                    f"unknown field '{key}' in the items source",
                    f".{key}",
                    hint or did_you_mean(str(key), SOURCE_FIELDS) or f"allowed fields: {', '.join(SOURCE_FIELDS)}",
                )
            )
    src = obj.get("from")
    if "from" not in obj and misspelt_from:
        pass  # said above, with the fix
    elif "from" not in obj:
        out.append(
            (
                "the items source has no 'from'",
                "",
                'e.g. "from": "items.jsonl", a glob such as "data/*.csv", or "-" for standard input',
            )
        )
    elif isinstance(src, dict) and not static and isinstance(src.get("path"), str):
        src = src["path"]  # a results reference from an earlier batch: {"path", "format", "count"}
    elif not isinstance(src, str) or not src.strip():
        out.append(
            (
                f"'from' must be a path, a glob or \"-\", not {json.dumps(src, default=str)}",
                ".from",
                "a template that gives a path works too: \"${prev.results.path}\"",
            )
        )
        src = None
    known = isinstance(src, str) and not (static and _dynamic(src))
    fmt = obj.get("format")
    if fmt is not None and fmt not in FORMATS:
        hint = did_you_mean(str(fmt), FORMATS) or f"one of: {', '.join(FORMATS)}"
        out.append((f"unknown items format {json.dumps(fmt, default=str)}", ".format", hint))
    for key in ("skip", "limit"):
        if key in obj and not _is_count(obj[key]):
            out.append(
                (
                    f"'{key}' must be an integer of at least 0, not {json.dumps(obj[key], default=str)}",
                    f".{key}",
                    "skip: how many items to pass over first; limit: how many to read at most",
                )
            )
    mode = obj.get("items")
    if mode is not None and mode not in ITEM_MODES:
        hint = did_you_mean(str(mode), ITEM_MODES) or f"one of: {', '.join(ITEM_MODES)}"
        out.append((f"unknown 'items' {json.dumps(mode, default=str)}", ".items", hint))
    elif known:
        assert isinstance(src, str)
        if src == STDIN and mode is not None:
            out.append(
                (
                    "'items' applies to a glob, and standard input is one stream",
                    ".items",
                    "remove 'items'; set 'format' to say how standard input is split into items",
                )
            )
        elif src != STDIN and not is_glob(src) and mode is not None:
            out.append(
                (
                    f"'items' applies to a glob, and {src!r} is one file",
                    ".items",
                    'remove it, or give a glob such as "data/*.jsonl"',
                )
            )
        elif is_glob(src) and fmt is not None and (mode or "paths") != "records":
            out.append(
                (
                    f"'format' reads records, but the items of this glob are its files' {mode or 'paths'}",
                    ".format",
                    'add "items": "records" to read every record of every file',
                )
            )
    return out


def open_source(
    spec: dict[str, Any],
    *,
    base_dir: str | None = None,
    stdin: TextIO | BinaryIO | IO[Any] | ItemsFile | None = None,
    start_at: int = 0,
) -> ItemSource:
    """Open a source object whose ``from`` is resolved (no template left in it).

    ``from`` may also be a results reference from an earlier streaming batch
    (``{"path": ..., "format": ...}``). Relative paths are taken from
    ``base_dir`` (the workflow's folder). ``from: "-"`` reads ``stdin``: a
    stream, or an :class:`ItemsFile` read as a file (its format, when the
    source gives none, from its name). ``start_at`` resumes: the items before
    that index are passed over without being parsed where the format allows,
    and the indexes of the rest are unchanged.

    Raises :class:`SourceError` when the source cannot be read.
    """
    problems = _problems(spec, static=False)
    if problems:
        message, suffix, hint = problems[0]
        raise SourceError(f"batch.items{suffix}: {message}", hint)
    src = spec["from"]
    fmt: str | None = spec.get("format")
    if isinstance(src, dict):
        if fmt is None and src.get("format") in FORMATS:
            fmt = src["format"]
        src = src["path"]
    skip = spec.get("skip", 0) + start_at
    limit = spec.get("limit")
    if limit is not None:
        limit = max(0, limit - start_at)
    if src == STDIN and not isinstance(stdin, ItemsFile):
        return _stdin_source(stdin, fmt or "lines", skip, limit, start_at)
    if src == STDIN:
        assert isinstance(stdin, ItemsFile)
        full, path, src = stdin.path, stdin.name, stdin.name
    else:
        path = os.path.expanduser(src)
        full = path if os.path.isabs(path) or not base_dir else os.path.join(base_dir, path)
    if spec["from"] != STDIN and is_glob(path) and not os.path.isfile(full):
        return _glob_source(path, full, base_dir, spec.get("items") or "paths", fmt, skip, limit, start_at)
    fmt = fmt or format_for(path)
    st = _stat(full, src, None if spec["from"] == STDIN else base_dir)
    total = None
    if stat.S_ISREG(st.st_mode):  # a FIFO or a device would be consumed by counting
        total = _apply(_count_file(full, src, fmt), spec.get("skip", 0), spec.get("limit"))
    return ItemSource(src, total, [(full, src, fmt)], skip, limit, start_at)


def _stat(full: str, shown: str, base_dir: str | None) -> os.stat_result:
    try:
        st = os.stat(full)
    except FileNotFoundError:
        where = f" (looked in {base_dir})" if base_dir and not os.path.isabs(shown) else ""
        raise SourceError(
            f"items file not found: {shown}{where}",
            "relative paths are taken from the workflow's folder",
        ) from None
    except OSError as exc:
        raise SourceError(f"cannot read items file {shown}: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise SourceError(
            f"items source {shown} is a folder, not a file",
            f'to read its files use a glob such as "{shown.rstrip("/")}/*.jsonl"',
        )
    return st


def _apply(total: int | None, skip: int, limit: int | None) -> int | None:
    if total is None:
        return None
    total = max(0, total - skip)
    return total if limit is None else min(total, limit)


def _stdin_source(
    stdin: Any, fmt: str, skip: int, limit: int | None, start_at: int
) -> ItemSource:
    if stdin is None:
        raise SourceError("the items come from standard input, but there is none here")
    isatty = getattr(stdin, "isatty", None)
    if isatty is not None and isatty():
        raise SourceError(
            "the items come from standard input, which is a terminal",
            "pipe them in: plait run wf.json < items.jsonl",
        )
    return ItemSource(STDIN_NAME, None, [(stdin, STDIN_NAME, fmt)], skip, limit, start_at)


def _glob_source(
    pattern: str,
    full: str,
    base_dir: str | None,
    mode: str,
    fmt: str | None,
    skip: int,
    limit: int | None,
    start_at: int,
) -> ItemSource:
    # The folder before the first wildcard must exist: a glob that matches
    # nothing is an empty batch, a glob into a missing folder is a mistake.
    head = full[: _MAGIC.search(full).start()]  # type: ignore[union-attr]  # is_glob said so
    folder = os.path.dirname(head) or "."
    if not os.path.isdir(folder):
        raise SourceError(
            f"folder not found: {os.path.dirname(pattern[: _MAGIC.search(pattern).start()]) or '.'}"  # type: ignore[union-attr]
            f" (from the glob {pattern!r})",
            "relative paths are taken from the workflow's folder",
        )
    relative = not os.path.isabs(pattern)
    root = base_dir if relative else None
    names = sorted(
        n for n in glob.glob(pattern, root_dir=root, recursive=True) if os.path.isfile(_join(root, n))
    )
    files = [(_join(root, n), n) for n in names]
    if mode == "records":
        parts = [(p, n, fmt or format_for(n)) for p, n in files]
        total: int | None = 0
        for p, n, f in parts:
            count = _count_file(p, n, f)
            total = None if total is None or count is None else total + count
        total = _apply(total, skip - start_at, None if limit is None else limit + start_at)
        source = ItemSource(pattern, total, parts, skip, limit, start_at)
    else:
        # Paths usable from the working directory (where file nodes take them from).
        usable = [_usable(p) if relative else p for p, _ in files]
        total = _apply(len(files), skip - start_at, None if limit is None else limit + start_at)
        chosen = usable[skip:] if limit is None else usable[skip : skip + limit]
        names = names[skip:] if limit is None else names[skip : skip + limit]
        items = chosen if mode == "paths" else _contents(chosen, names)
        source = ItemSource(pattern, total, [], 0, None, start_at, items=items)
    if not files:  # an empty batch, and most often a mistyped pattern: said, not silent
        where = f" (in {base_dir})" if relative and base_dir else ""
        source.warning = f"batch.items: the glob {pattern!r} matched no files{where}, so the batch has no items"
    return source


def _join(root: str | None, name: str) -> str:
    return os.path.join(root, name) if root else name


def _usable(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel


class ItemSource:
    """Items read lazily: iterate once for ``(index, item)``; ``item`` may be a :class:`BadItem`.

    ``total`` is the number of items (after ``skip`` and ``limit``) when it was
    cheap to count, else ``None``. Close it (or use ``with``) to release the
    file; standard input is left open.
    """

    def __init__(
        self,
        name: str,
        total: int | None,
        parts: list[tuple[Any, str, str]],
        skip: int,
        limit: int | None,
        start_at: int,
        *,
        items: Iterable[Any] | None = None,
    ) -> None:
        self.name = name
        self.total = total
        self._parts = parts
        self._skip = [skip]  # shared by the files of a glob, hence a cell
        self._limit = limit
        self._start = start_at
        self._items = items
        self._open: Any = None
        self._outer: Iterator[Iterator[Any]] | None = None
        self._started = False
        self._closed = False
        #: something the user should hear about the source (a glob that matched nothing)
        self.warning: str | None = None

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        if self._started:
            raise RuntimeError("an item source can be read only once")
        self._started = True
        if self._items is not None:
            values: Iterator[Any] = iter(self._items)
        else:
            self._outer = self._readers()
            values = chain.from_iterable(self._outer)
        if self._limit is not None:
            values = islice(values, self._limit)
        return enumerate(values, self._start)

    def _readers(self) -> Iterator[Iterator[Any]]:
        for where, shown, fmt in self._parts:
            if not isinstance(where, str):  # standard input: read as it is, never closed here
                yield _reader(where, shown, fmt, self._skip, stream=True)
                continue
            try:
                # Closed below when the reader is done, or by close(): a
                # with-block cannot span the yield to the chaining iterator.
                f = open(where, "rb")  # noqa: SIM115
            except OSError as exc:
                raise SourceError(f"cannot read items file {shown}: {exc.strerror}") from None
            self._open = f
            try:
                yield _reader(f, shown, fmt, self._skip, stream=False)
            finally:
                self._open = None
                f.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._outer is not None:
            self._outer.close()  # type: ignore[attr-defined]  # a generator
        if self._open is not None:
            self._open.close()
        close = getattr(self._items, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> ItemSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- counting ---------------------------------------------------------------


def _count_file(path: str, shown: str, fmt: str) -> int | None:
    """The records of a file; None for a JSON file that is not an array (its reader says so)."""
    try:
        with open(path, "rb") as f:
            if fmt == "json":
                return _count_json_array(f)
            if fmt in ("csv", "tsv"):
                n = _count_lines(f, _BLANK[fmt], stop_at_quote=True)
                if n is None:  # a quoted field may hold a newline: count records properly
                    f.seek(0)
                    n = _count_csv_records(f, fmt)
                return max(0, n - 1)  # the header
            n = _count_lines(f, _BLANK[fmt])
            assert n is not None
            return n
    except OSError as exc:
        raise SourceError(f"cannot read items file {shown}: {exc.strerror}") from None


def _count_lines(f: BinaryIO, ws: bytes, *, stop_at_quote: bool = False, chunk: int = _CHUNK) -> int | None:
    """Non-blank lines, by a byte scan. ``None`` when ``stop_at_quote`` and a quote appears."""
    blank_starts = set(ws) | {10}
    # A blank line follows a newline with a newline or a blank byte: only the
    # chunks where that happens (or that start so) are counted line by line.
    probe = re.compile(b"\\n[\\n" + re.escape(ws) + b"]")
    strip = ws + b"\n"
    n = 0
    first = True
    while True:
        data = f.read(chunk)
        if not data:
            return n
        if data[-1:] != b"\n":
            data += f.readline()  # chunks end on a line boundary
        if first:
            first = False
            if data.startswith(_BOM):
                data = data[3:]
                if not data:
                    continue
        if stop_at_quote and b'"' in data:
            return None
        if data[0] in blank_starts or probe.search(data) is not None:
            n += sum(1 for line in data.split(b"\n") if line.strip(strip))
        else:
            n += data.count(b"\n") + (data[-1:] != b"\n")


def _count_csv_records(f: BinaryIO, fmt: str) -> int:
    text = io.TextIOWrapper(f, encoding="utf-8-sig", errors="replace", newline="")
    try:
        reader = csv.reader(text, delimiter="," if fmt == "csv" else "\t", strict=True)
        n = 0
        ws = _BLANK[fmt].decode()
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return n
            except csv.Error:
                n += 1  # read as one bad item
                continue
            if not _blank_row(row, ws):
                n += 1
    finally:
        text.detach()


_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'"[]{},')
_EMPTY_PAIR = re.compile(rb"\{,*\}|\[,*\]")
_BRACKET = re.compile(rb"([\[\]{}])")


def _count_json_array(f: BinaryIO, chunk: int = _JSON_COUNT_CHUNK) -> int | None:
    """Elements of a top-level JSON array, by a structural scan (no values are built).

    Escaped backslashes and quotes are dropped, then everything but quotes,
    brackets and commas; what lies between quotes is string content (it may
    hold brackets and commas) and is dropped too; nested pairs are collapsed
    and the commas left at depth 1 are counted. Every step is a bytes method
    running in C. ``None`` when the file is not an array; for a malformed file
    the count is an estimate (the reader reports the error).
    """
    carry = b""  # backslashes that end a chunk: they escape the next chunk's first byte
    depth = 0
    started = False
    first_seen = False
    elements = False
    in_string = False
    commas = 0
    first = True
    while True:
        block = f.read(chunk)
        if not block:
            break
        data = carry + block
        carry = b""
        if first:
            first = False
            if data.startswith(_BOM):
                data = data[3:]
        if not started:
            data = data.lstrip(b" \t\r\n")
            if not data:
                continue
            if data[:1] != b"[":
                return None
            data = data[1:]
            started = True
            depth = 1
        if not first_seen:
            rest = data.lstrip(b" \t\r\n")
            if rest:
                first_seen = True
                elements = rest[:1] != b"]"
        if data.endswith(b"\\"):
            kept = data.rstrip(b"\\")
            carry = data[len(kept) :]
            data = kept
        # Left to right, as a JSON reader pairs them: \\ first, then \".
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
        # An empty pair of quotes is a string without structure in it; dropping
        # two adjacent quotes leaves every other byte inside or outside as it was.
        s = data.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
        if b'"' in s:
            parts = s.split(b'"')
            s = b"".join(parts[1::2] if in_string else parts[::2])
            if len(parts) % 2 == 0:
                in_string = not in_string
        elif in_string:
            continue
        while True:
            shorter = _EMPTY_PAIR.sub(b"", s.replace(b"{}", b"").replace(b"[]", b""))
            if len(shorter) == len(s):
                break
            s = shorter
        for part in _BRACKET.split(s):
            if not part:
                continue
            if part in (b"[", b"{"):
                depth += 1
            elif part in (b"]", b"}"):
                depth -= 1
                if depth == 0:
                    return commas + 1 if elements else 0
            elif depth == 1:
                commas += len(part)
    if not started:
        return 0
    return commas + 1 if elements else 0


# --- reading ----------------------------------------------------------------


def _reader(where: Any, name: str, fmt: str, skip: list[int], *, stream: bool) -> Iterator[Any]:
    if fmt == "json":
        return _JsonArray(_text_chunks(where), name, skip).items()
    lines = _byte_lines(where) if stream else where
    if fmt == "jsonl":
        return _read_jsonl(lines, name, skip)
    if fmt == "lines":
        return _read_lines(lines, name, skip)
    return _read_csv(lines, name, fmt, skip)


def _byte_lines(stream: Any) -> Iterable[bytes]:
    """Standard input as lines of bytes, whether it was handed over as text or bytes."""
    if isinstance(stream, io.TextIOBase) or hasattr(stream, "encoding"):
        raw = getattr(stream, "buffer", None)
        if raw is not None:
            return raw
        return (line.encode("utf-8", "surrogateescape") for line in stream)
    return stream


def _text_chunks(where: Any) -> Callable[[int], tuple[str, bool]]:
    """A reader of decoded text: ``read(n) -> (text, ok)``; ``ok`` is False after
    bytes that are not UTF-8 (the text then holds what came before them)."""
    if hasattr(where, "encoding") and getattr(where, "buffer", None) is None:
        text_read = where.read

        def read_text(n: int) -> tuple[str, bool]:
            return text_read(n), True

        return read_text
    raw = getattr(where, "buffer", where)
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    # read1: what is there, up to n; a pipe fed slowly yields its elements as
    # they come instead of waiting for a full read
    raw_read = getattr(raw, "read1", raw.read)

    def read(n: int) -> tuple[str, bool]:
        while True:
            data = raw_read(n)
            try:
                text = decoder.decode(data, final=not data)
            except UnicodeDecodeError as exc:
                return data[: exc.start].decode("utf-8", "replace"), False
            if text or not data:
                return text, True

    return read


def _skip_lines(lines: Iterator[bytes], skip: list[int]) -> int:
    """Pass over ``skip[0]`` non-blank lines without parsing them; the lines consumed."""
    left = skip[0]
    n = 0
    if left:
        for raw in lines:
            n += 1
            if raw.strip(b" \t\r\n"):
                left -= 1
                if not left:
                    break
        skip[0] = left
    return n


def _preview(text: str) -> str:
    text = text.rstrip("\r\n")
    return text if len(text) <= _PREVIEW else text[: _PREVIEW - 3] + "..."


def _bad_utf8(name: str, lineno: int, raw: bytes, exc: UnicodeDecodeError) -> BadItem:
    col = len(raw[: exc.start].decode("utf-8", "replace")) + 1
    return BadItem(
        f"{name}:{lineno}:{col}: invalid UTF-8 (byte 0x{raw[exc.start]:02x})",
        _preview(raw.decode("utf-8", "replace")),
    )


_SKIP = object()  # a blank line: no item


def _read_jsonl(lines: Iterable[bytes], name: str, skip: list[int]) -> Iterator[Any]:
    it = iter(lines)
    lineno = _skip_lines(it, skip)
    scan = _scan_once
    for raw in it:
        lineno += 1
        try:
            s = raw.decode()
            value, end = scan(s, 0)
            if end != len(s) and s[end] != "\n" and s[end:].strip(" \t\r\n"):
                raise ValueError
        except (ValueError, StopIteration):
            value = _jsonl_slow(raw, name, lineno)
            if value is _SKIP:
                continue
        yield value


def _jsonl_slow(raw: bytes, name: str, lineno: int) -> Any:
    try:
        s = raw.decode()
    except UnicodeDecodeError as exc:
        return _bad_utf8(name, lineno, raw, exc)
    if lineno == 1 and s.startswith("\ufeff"):
        s = s[1:]
    s = s.rstrip("\r\n")  # else an error at the line's end is reported on "line 2"
    if not s.strip(" \t\r"):
        return _SKIP
    try:
        return json.loads(s)
    except json.JSONDecodeError as exc:
        return BadItem(f"{name}:{lineno}:{exc.colno}: invalid JSON: {exc.msg}", _preview(s))
    except ValueError as exc:  # an integer beyond Python's digit limit
        return BadItem(f"{name}:{lineno}:1: invalid JSON: {exc}", _preview(s))


def _read_lines(lines: Iterable[bytes], name: str, skip: list[int]) -> Iterator[Any]:
    it = iter(lines)
    lineno = _skip_lines(it, skip)
    for raw in it:
        lineno += 1
        try:
            s = raw.decode()
        except UnicodeDecodeError as exc:
            yield _bad_utf8(name, lineno, raw, exc)
            continue
        if lineno == 1 and s.startswith("\ufeff"):
            s = s[1:]
        s = s.rstrip("\r\n")
        if s.strip(" \t\r"):
            yield s


def _blank_row(row: list[str], ws: str) -> bool:
    return not row or (len(row) == 1 and not row[0].strip(ws))


def _read_csv(lines: Iterable[bytes], name: str, fmt: str, skip: list[int]) -> Iterator[Any]:
    delim = "," if fmt == "csv" else "\t"
    ws = _BLANK[fmt].decode()
    record: list[str] = []  # the text lines of the record being read
    lineno = 0
    undecodable: BadItem | None = None  # the first bad byte of this record

    def feed() -> Iterator[str]:
        nonlocal lineno, undecodable
        for raw in lines:
            lineno += 1
            try:
                s = raw.decode()
            except UnicodeDecodeError as exc:
                s = raw.decode("utf-8", "replace")
                if undecodable is None:
                    undecodable = _bad_utf8(name, lineno, raw, exc)
            if lineno == 1 and s.startswith("\ufeff"):
                s = s[1:]
            record.append(s)
            yield s

    # strict: a stray quote is a malformed record, not silently glued text
    reader = csv.reader(feed(), delimiter=delim, strict=True)
    header: list[str] | None = None
    width = 0
    while True:
        record.clear()
        undecodable = None
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            text = "".join(record)
            line, col = _position(text, lineno - len(record) + 1, _csv_walk(text, delim, -1))
            at = f"{name}:{line}:{col}" if col else f"{name}:{line}"
            if header is None:
                raise SourceError(f"{at}: cannot read the header row: {exc}") from None
            if skip[0]:
                skip[0] -= 1
                continue
            yield BadItem(f"{at}: invalid CSV: {exc}", _preview(text))
            continue
        if _blank_row(row, ws):
            continue
        if header is None:
            seen: set[str] = set()
            for i, col_name in enumerate(row):
                if col_name in seen:
                    raise SourceError(
                        f"{name}:{lineno}: the header row names column {col_name!r} twice "
                        f"(columns {row.index(col_name) + 1} and {i + 1})",
                        "column names become the items' keys, so they must differ",
                    )
                seen.add(col_name)
            header, width = row, len(row)
            continue
        if skip[0]:
            skip[0] -= 1
            continue
        if undecodable is not None:
            yield undecodable
            continue
        n = len(row)
        if n == width:
            yield dict(zip(header, row, strict=True))
        elif n < width:
            # A short row (trailing fields left out): the missing ones are null.
            item: dict[str, Any] = dict(zip(header, row, strict=False))
            for key in header[n:]:
                item[key] = None
            yield item
        else:
            text = "".join(record)
            line, col = _position(text, lineno - len(record) + 1, _csv_walk(text, delim, width))
            yield BadItem(
                f"{name}:{line}:{col}: row has {n} fields but the header has {width}; "
                f"field {width + 1} is {_preview(row[width])!r}",
                _preview(text),
            )


def _position(text: str, first_line: int, offset: int | None) -> tuple[int, int | None]:
    if offset is None:
        return first_line, None
    line = first_line + text.count("\n", 0, offset)
    return line, offset - text.rfind("\n", 0, offset)


def _csv_walk(text: str, delim: str, stop_field: int) -> int | None:
    """The offset where field ``stop_field`` starts, or where quoting goes wrong, else None.

    Used only on the error path, to name a column the csv module does not give.
    """
    i, n, field, at_start = 0, len(text), 0, True
    while i < n:
        if at_start and field == stop_field:
            return i
        ch = text[i]
        if at_start and ch == '"':
            j = i + 1
            while True:
                q = text.find('"', j)
                if q < 0:
                    return i  # never closed: point at the opening quote
                if text.startswith('""', q):
                    j = q + 2
                    continue
                break
            i = q + 1
            if i < n and text[i] not in (delim, "\r", "\n"):
                return i  # something after a closing quote
            at_start = False
        elif ch == delim:
            field += 1
            at_start = True
            i += 1
        elif ch in "\r\n":
            return None
        else:
            at_start = False
            i += 1
    return None


def _contents(paths: list[str], names: list[str]) -> Iterator[Any]:
    for path, name in zip(paths, names, strict=True):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            yield BadItem(f"{name}: cannot read: {exc.strerror}")
            continue
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            start = data.rfind(b"\n", 0, exc.start) + 1
            col = len(data[start : exc.start].decode("utf-8", "replace")) + 1
            yield BadItem(f"{name}:{line}:{col}: invalid UTF-8 (byte 0x{data[exc.start]:02x})")
            continue
        yield {"path": path, "content": text}


_WS = re.compile(r"[ \t\n\r]*")
_AFTER_VALUE = frozenset(" \t\n\r,]")


class _JsonArray:
    """A top-level JSON array read element by element from a text stream.

    The buffer holds the unread rest of the last reads, never the file: each
    element is decoded with the C scanner where it starts, and the consumed
    prefix is dropped. An element cut by the end of the buffer (an error near
    the buffer's end, an unterminated string, a number with nothing after it)
    gets more text and is decoded again; the reads grow with the element, so a
    huge element costs linear time. An element is yielded as soon as it is
    whole, so a pipe fed slowly gives its items as they come.
    """

    def __init__(self, read: Callable[[int], tuple[str, bool]], name: str, skip: list[int]) -> None:
        self.read = read
        self.name = name
        self.skip = skip
        self.buf = ""
        self.eof = False
        self.bad_bytes = False
        self.lines_before = 0  # newlines in the text dropped from the buffer
        self.col_before = 0  # characters of the current line dropped from the buffer

    def _more(self, pos: int) -> int:
        """Read more text; drop the consumed prefix. Returns ``pos`` in the new buffer."""
        if self.eof:
            return pos
        buf = self.buf
        if pos > _JSON_CHUNK:
            dropped = buf[:pos]
            nl = dropped.count("\n")
            if nl:
                self.lines_before += nl
                self.col_before = pos - dropped.rfind("\n") - 1
            else:
                self.col_before += pos
            buf = buf[pos:]
            pos = 0
        text, ok = self.read(max(_JSON_CHUNK, len(buf) - pos))
        if not ok:
            self.bad_bytes = True
            self.eof = True
        elif not text:
            self.eof = True
        self.buf = buf + text
        return pos

    def _where(self, pos: int) -> str:
        buf = self.buf
        nl = buf.count("\n", 0, pos)
        if nl:
            col = pos - buf.rfind("\n", 0, pos)
        else:
            col = self.col_before + pos + 1
        return f"{self.name}:{self.lines_before + nl + 1}:{col}"

    def _ws(self, pos: int) -> int:
        """Skip whitespace, reading on; returns the position of the next character (or len at EOF)."""
        while True:
            pos = _WS.match(self.buf, pos).end()  # type: ignore[union-attr]  # always matches
            if pos < len(self.buf) or self.eof:
                return pos
            pos = self._more(pos)

    def _bad(self, pos: int, message: str) -> BadItem:
        if self.bad_bytes and pos >= len(self.buf) - 1:
            message = "invalid UTF-8"
        return BadItem(f"{self._where(pos)}: invalid JSON: {message}", _preview(self.buf[pos : pos + _PREVIEW]))

    def items(self) -> Iterator[Any]:
        scan = _scan_once
        pos = self._ws(0)
        if pos >= len(self.buf):
            if self.bad_bytes:
                yield self._bad(pos, "invalid UTF-8")
            return  # an empty file: no items
        if self.buf[pos] != "[":
            raise SourceError(
                f"{self._where(pos)}: expected a JSON array ('['), found {self.buf[pos : pos + 20]!r}",
                'for one JSON value per line use "format": "jsonl"',
            )
        pos = self._ws(pos + 1)
        if pos < len(self.buf) and self.buf[pos] == "]":
            yield from self._after(pos + 1)
            return
        while True:
            while True:
                buf = self.buf
                try:
                    value, end = scan(buf, pos)
                except StopIteration as exc:
                    err, msg = exc.value, "Expecting value"
                except json.JSONDecodeError as exc:
                    err, msg = exc.pos, exc.msg
                except ValueError as exc:
                    err, msg = pos, str(exc)
                else:
                    # A container or a string is whole once closed; a number or
                    # a literal only when something that cannot extend it follows.
                    if self.eof or buf[end - 1] in '}]"' or (end < len(buf) and buf[end] in _AFTER_VALUE):
                        break
                    pos = self._more(pos)
                    continue
                if not self.eof and (err + 64 >= len(buf) or msg.startswith("Unterminated string")):
                    pos = self._more(pos)
                    continue
                yield self._bad(err, msg)
                return  # the rest of the array cannot be told apart
            if self.skip[0]:
                self.skip[0] -= 1
            else:
                yield value
            pos = self._ws(end)
            buf = self.buf
            if pos >= len(buf):
                yield self._bad(pos, "Expecting ',' delimiter")  # the file ends inside the array
                return
            ch = buf[pos]
            if ch == "]":
                yield from self._after(pos + 1)
                return
            if ch != ",":
                yield self._bad(pos, "Expecting ',' delimiter")
                return
            pos = self._ws(pos + 1)

    def _after(self, pos: int) -> Iterator[Any]:
        pos = self._ws(pos)
        if pos < len(self.buf):
            yield self._bad(pos, "Extra data after the array")
