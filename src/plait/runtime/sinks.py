"""Result sinks: ``batch.results`` written to a file as items finish.

``{"to": "out.jsonl"}`` (or ``out.csv``) writes one line per item to
``out.jsonl.partial`` and renames it to ``out.jsonl`` when the batch succeeds;
on a failure or an interrupt the partial file stays, holding every finished
item. Results are written in input order through a bounded reorder buffer
(``"order": "completion"`` writes them as they come): the driver asks
:meth:`ResultSink.can_accept` before launching an item, so one slow head item
stops new launches instead of letting finished results pile up.

Every line starts with the item's ``index`` (and, for a failure, its
``error``), so a resume can learn cheaply which items a partial file already
holds, and whether they failed.
"""

from __future__ import annotations

import bisect
import csv
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import IO, Any

from plait.errors import did_you_mean
from plait.nodes.base import NodeError

SINK_FIELDS = ("to", "format", "order", "fields", "errors")
SINK_FORMATS = ("jsonl", "csv")
ORDERS = ("input", "completion")
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
PARTIAL = ".partial"
INLINE = "inline"

DEFAULT_CAPACITY = 1000  # results held behind a slow head item, at most
FLUSH_INTERVAL_S = 1.0  # a kill loses at most the results of the last second
WRITE_BUFFER = 1 << 20  # ...and never more than about this many bytes of them
KEEP_ERRORS = 100  # failed rows found by a resume, kept for the node's `errors`

_monotonic = time.monotonic
_HEAD = re.compile(rb'\{"index": (\d+)(, "error": )?')
_NEEDS_QUOTES = re.compile(r'[",\r\n]')


class SinkError(NodeError):
    """The results file cannot be written (or resumed): the batch node fails with this.

    A subclass of the node contract's :class:`NodeError` (never retried), with a ``hint``.
    """

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message, retryable=False)
        self.hint = hint


def is_sink(value: Any) -> bool:
    """True when ``batch.results`` asks for a file."""
    return isinstance(value, dict) and "to" in value


def sink_format_for(path: str) -> str | None:
    """jsonl or csv from a path's extension, else None."""
    return EXTENSIONS.get(os.path.splitext(path)[1].lower())


def _dynamic(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def validate_sink(obj: Any) -> list[tuple[str, str, str]]:
    """Static checks of a sink object: a list of (message, JSON path suffix, hint).

    The suffix is relative to ``batch.results``. Paths holding a template are
    checked once resolved, when the sink opens.
    """
    return _problems(obj, static=True)


def _problems(obj: Any, *, static: bool) -> list[tuple[str, str, str]]:
    if not isinstance(obj, dict):
        return [("a results sink must be an object with 'to'", "", 'e.g. {"to": "results.jsonl"}')]
    out: list[tuple[str, str, str]] = []
    for key in obj:
        if key not in SINK_FIELDS:
            out.append(
                (
                    f"unknown field '{key}' in the results sink",
                    f".{key}",
                    did_you_mean(str(key), SINK_FIELDS) or f"allowed fields: {', '.join(SINK_FIELDS)}",
                )
            )
    to = obj.get("to")
    fmt = obj.get("format")
    if "to" not in obj:
        out.append(("the results sink has no 'to'", "", 'e.g. "to": "results.jsonl" or "results.csv"'))
    elif not isinstance(to, str) or not to.strip():
        out.append((f"'to' must be a file path, not {json.dumps(to, default=str)}", ".to", 'e.g. "results.jsonl"'))
    elif to == "-":
        out.append(
            (
                "results cannot go to standard output",
                ".to",
                "write them to a file; without 'results' they are the node's output",
            )
        )
    elif fmt is None and not (static and _dynamic(to)) and sink_format_for(to) is None:
        hint = 'name it .jsonl or .csv, or add "format": "jsonl" (or "csv")'
        if to.lower().endswith(".json"):
            hint = "a JSON array cannot grow as items finish; use .jsonl (one result per line)"
        out.append((f"cannot tell the results format from the name {to!r}", ".to", hint))
    if fmt is not None and fmt not in SINK_FORMATS:
        hint = did_you_mean(str(fmt), SINK_FORMATS) or f"one of: {', '.join(SINK_FORMATS)}"
        out.append((f"unknown results format {json.dumps(fmt, default=str)}", ".format", hint))
    order = obj.get("order")
    if order is not None and order not in ORDERS:
        hint = did_you_mean(str(order), ORDERS) or "input (the default) or completion"
        out.append((f"unknown results order {json.dumps(order, default=str)}", ".order", hint))
    if "fields" in obj:
        fields = obj["fields"]
        if not isinstance(fields, list) or not fields or not all(isinstance(f, str) and f for f in fields):
            out.append(
                (
                    "'fields' must be a non-empty list of result field names",
                    ".fields",
                    'e.g. ["item", "response"]; a dotted name reaches inside: "item.id"',
                )
            )
        else:
            for i, name in enumerate(fields):
                if name in fields[:i]:
                    out.append((f"field {name!r} is listed twice", f".fields[{i}]", ""))
    if "errors" in obj:
        errors = obj["errors"]
        if not isinstance(errors, str) or not errors.strip() or errors == "-":
            out.append(
                (
                    f"'errors' must be a file path or \"inline\", not {json.dumps(errors, default=str)}",
                    ".errors",
                    'e.g. "errors.jsonl"; by default failed items are written with the others',
                )
            )
        elif errors == to:
            out.append(("'errors' names the same file as 'to'", ".errors", 'leave it out to write errors inline'))
    return out


class IndexSet:
    """A set of item indexes kept as sorted runs, so memory follows the gaps, not the items."""

    __slots__ = ("_ends", "_len", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []  # exclusive
        self._len = 0

    @classmethod
    def prefix(cls, n: int) -> IndexSet:
        s = cls()
        if n > 0:
            s._starts.append(0)
            s._ends.append(n)
            s._len = n
        return s

    def add(self, i: int) -> None:
        starts, ends = self._starts, self._ends
        if ends and ends[-1] == i:  # the usual case: the next index
            ends[-1] = i + 1
            self._len += 1
            return
        if not ends or i > ends[-1]:
            starts.append(i)
            ends.append(i + 1)
            self._len += 1
            return
        j = bisect.bisect_right(starts, i) - 1
        if j >= 0 and i < ends[j]:
            return
        joins_left = j >= 0 and ends[j] == i
        joins_right = j + 1 < len(starts) and starts[j + 1] == i + 1
        if joins_left and joins_right:
            ends[j] = ends[j + 1]
            del starts[j + 1], ends[j + 1]
        elif joins_left:
            ends[j] = i + 1
        elif joins_right:
            starts[j + 1] = i
        else:
            starts.insert(j + 1, i)
            ends.insert(j + 1, i + 1)
        self._len += 1

    def __contains__(self, i: object) -> bool:
        if not isinstance(i, int):
            return False
        j = bisect.bisect_right(self._starts, i) - 1
        return j >= 0 and i < self._ends[j]

    def __len__(self) -> int:
        return self._len

    def runs(self) -> list[tuple[int, int]]:
        """The runs as (first, last + 1) pairs."""
        return list(zip(self._starts, self._ends, strict=True))

    def __repr__(self) -> str:
        return f"IndexSet({self.runs()})"


def _make_encoder() -> Callable[[Any], str]:
    """JSON text of a result, unicode kept, anything odd as its str().

    The C encoder is built once and reused: ``json.dumps`` builds one per call,
    which is half the cost of encoding a small result. It keeps no markers (the
    dict of the containers being encoded, a fifth of the cost of a small row):
    a circular value then ends in a RecursionError, and is encoded again the
    checked way, which says what is wrong.
    """
    checked = json.JSONEncoder(ensure_ascii=False, default=str, skipkeys=True).encode
    if c_make_encoder is None:
        return checked
    iterencode = c_make_encoder(None, str, encode_basestring, None, ": ", ", ", False, False, True)
    join = "".join

    def encode(obj: Any) -> str:
        try:
            return join(iterencode(obj, 0))
        except (TypeError, ValueError, RecursionError):
            # keys that are not strings; a circular value raises again, as ValueError
            return checked(obj)

    return encode


def _getter(name: str) -> Callable[[Mapping[str, Any]], Any]:
    parts = name.split(".")

    def get(result: Mapping[str, Any]) -> Any:
        if name in result:
            return result[name]
        value: Any = result
        for part in parts:
            if isinstance(value, Mapping):
                if part not in value:
                    return None
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                return None
        return value

    return get


class _Row:
    __slots__ = ("failed", "index", "offset", "record")

    def __init__(self, index: int, offset: int, failed: bool, record: dict[str, Any] | None) -> None:
        self.index = index
        self.offset = offset  # where the line starts: a resume truncates there
        self.failed = failed
        self.record = record  # the parsed row, for failures only


class _File:
    """One output file (the results, or the separate errors file)."""

    def __init__(
        self,
        final: str,
        fmt: str,
        *,
        holds_errors: bool,
        fields: list[str] | None,
        default_fields: list[str] | None,
        encode: Callable[[Any], str],
    ) -> None:
        self.final = final
        self.partial = final + PARTIAL
        self.fmt = fmt
        self.holds_errors = holds_errors
        self.fields = fields
        self.default_fields = default_fields
        self.encode = encode
        self.count = 0
        self.f: IO[str] | None = None
        # jsonl: (name, getter) for chosen fields; csv: one getter per column after index
        self.getters: list[tuple[str, Callable[[Mapping[str, Any]], Any]]] | None = None
        self.error_listed = fields is not None and "error" in fields
        if fields is not None:
            self.getters = [(n, _getter(n)) for n in fields if n not in ("index", "error")]
        self.columns: list[str] | None = None
        if fmt == "csv":
            self.row = self._csv_row
            if fields is not None:
                self._fix_columns(fields)
        else:
            self.row = self._jsonl_row

    # --- writing ---

    def open(self, append: bool) -> None:
        self.f = open(  # noqa: SIM115  # closed by close()
            self.partial, "a" if append else "w", encoding="utf-8", newline="", buffering=WRITE_BUFFER
        )
        if self.fmt == "csv" and not append and self.columns is not None:
            self.f.write(self._header())

    def _jsonl_row(self, index: int, result: Mapping[str, Any], failed: bool) -> str:
        getters = self.getters
        if getters is None:
            if failed:
                obj: Any = {"index": index, "error": result.get("error")}
                for k, v in result.items():
                    if k != "index" and k != "error":
                        obj[k] = v
            elif type(result) is dict and next(iter(result), None) == "index" and result["index"] == index:
                obj = result
            else:
                obj = {"index": index}
                for k, v in result.items():
                    if k != "index":
                        obj[k] = v
        else:
            obj = {"index": index}
            if failed or self.error_listed:
                obj["error"] = result.get("error")
            for name, get in getters:
                obj[name] = get(result)
        return self.encode(obj) + "\n"

    def _fix_columns(self, names: list[str]) -> None:
        cols = ["index", *(n for n in names if n != "index")]
        if self.holds_errors and "error" not in cols:
            cols.append("error")
        self._set_columns(cols)

    def _set_columns(self, cols: list[str]) -> None:
        self.columns = cols
        self.getters = [(n, _getter(n)) for n in cols[1:]]

    def _header(self) -> str:
        assert self.columns is not None
        return ",".join(_quote(c) for c in self.columns) + "\n"

    def _csv_row(self, index: int, result: Mapping[str, Any], failed: bool) -> str:
        head = ""
        if self.columns is None:
            # Not chosen: the driver's default, else the first result written.
            keys = self.default_fields or [k for k in result if k not in ("index", "error")]
            self._fix_columns(list(keys))
            head = self._header()
        assert self.getters is not None
        cells = [str(index)]
        encode = self.encode
        for _, get in self.getters:
            cells.append(_cell(get(result), encode))
        if len(cells) == 1 and cells[0] == "":
            cells[0] = '""'  # an empty line would read as no row at all
        return head + ",".join(cells) + "\n"

    # --- resuming ---

    def scan(self) -> Iterator[_Row]:
        """The rows already in the partial file, after cutting a torn last line."""
        if not os.path.exists(self.partial):
            return iter(())
        _cut_torn_tail(self.partial)
        return self._scan_csv() if self.fmt == "csv" else self._scan_jsonl()

    def _scan_jsonl(self) -> Iterator[_Row]:
        with open(self.partial, "rb") as f:
            offset = 0
            for lineno, line in enumerate(f, 1):
                m = _HEAD.match(line)
                if m is not None and m.group(2) is None:
                    yield _Row(int(m.group(1)), offset, False, None)
                elif line.strip():
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        obj = None
                    index = obj.get("index") if isinstance(obj, dict) else None
                    if not isinstance(index, int) or isinstance(index, bool):
                        raise _not_ours(self.partial, lineno)
                    assert isinstance(obj, dict)
                    failed = bool(obj.get("error"))
                    yield _Row(index, offset, failed, obj if failed else None)
                offset += len(line)

    def _scan_csv(self) -> Iterator[_Row]:
        with open(self.partial, "rb") as f:
            offset = 0
            lineno = 0

            def feed() -> Iterator[str]:
                nonlocal offset, lineno
                for line in f:
                    offset += len(line)
                    lineno += 1
                    yield line.decode("utf-8", "replace")

            reader = csv.reader(feed(), strict=True)
            start = 0
            header: list[str] | None = None
            err_col = -1
            while True:
                start = offset
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    if "unexpected end of data" not in str(exc):
                        raise _not_ours(self.partial, lineno) from None
                    # A row torn inside a quoted field that held a newline.
                    f.close()
                    os.truncate(self.partial, start)
                    return
                if header is None:
                    if not row or row[0] != "index":
                        raise _not_ours(self.partial, lineno)
                    if self.columns is not None and row != self.columns:
                        raise SinkError(
                            f"cannot resume {self.partial}: its columns ({', '.join(row)}) are not "
                            f"the ones asked for ({', '.join(self.columns)})",
                            "delete the partial file to start over",
                        )
                    if self.columns is None:
                        self._set_columns(row)
                    header = row
                    err_col = row.index("error") if "error" in row else -1
                    continue
                if len(row) != len(header) or not row[0].isdigit():
                    raise _not_ours(self.partial, lineno)
                failed = err_col > 0 and row[err_col] != ""
                record = dict(zip(header, row, strict=True)) if failed else None
                yield _Row(int(row[0]), start, failed, record)

    def needs_header(self) -> bool:
        return self.fmt == "csv" and (not os.path.exists(self.partial) or os.path.getsize(self.partial) == 0)


def _drop_rows(path: str, starts: list[int], dropped: set[int]) -> None:
    """Rewrite ``path`` without the rows that start at the ``dropped`` offsets
    (``starts``: where every row starts, in file order; a CSV header before them stays)."""
    size = os.path.getsize(path)
    ends = [*starts[1:], size]
    tmp = path + ".tmp"
    with open(path, "rb") as src, open(tmp, "wb") as out:
        out.write(src.read(starts[0]) if starts else b"")
        for start, end in zip(starts, ends, strict=True):
            src.seek(start)
            data = src.read(end - start)
            if start not in dropped:
                out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _not_ours(path: str, lineno: int) -> SinkError:
    return SinkError(
        f"cannot resume {path}: line {lineno} is not a result line written by plait",
        "delete the partial file to start over",
    )


def _cut_torn_tail(path: str) -> None:
    """Cut whatever follows the last newline: a line that was being written when the run died."""
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        end = size
        keep = 0
        while end > 0:
            start = max(0, end - (1 << 16))
            f.seek(start)
            i = f.read(end - start).rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            end = start
        f.truncate(keep)


def _quote(text: str) -> str:
    if _NEEDS_QUOTES.search(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def _cell(value: Any, encode: Callable[[Any], str]) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        text = value
    elif value is True:
        return "true"
    elif value is False:
        return "false"
    elif isinstance(value, int | float):
        return encode(value)
    else:
        text = encode(value)  # nested values as JSON text
    return _quote(text)


class ResultSink:
    """Results of one batch, written to a file as items finish. Not thread-safe:
    call it from the thread that collects outcomes.

    ``resume=True`` reopens the partial files of an earlier run of the same
    batch: a torn last line is cut, and :attr:`done` holds the indexes they
    already have (the driver skips those). A failed row counts as not done,
    so the item runs again, unless ``keep_failed``. In input order the files
    are cut back to the longest complete prefix 0..k-1 (up to the first failed
    row), so they stay in order; in completion order every other row is kept.
    """

    def __init__(
        self,
        spec: dict[str, Any],
        *,
        base_dir: str | None = None,
        resume: bool = False,
        capacity: int = DEFAULT_CAPACITY,
        flush_interval: float = FLUSH_INTERVAL_S,
        default_fields: list[str] | None = None,
        keep_errors: int = KEEP_ERRORS,
        keep_failed: bool = False,
    ) -> None:
        problems = _problems(spec, static=False)
        if problems:
            message, suffix, hint = problems[0]
            raise SinkError(f"batch.results{suffix}: {message}", hint)
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        to: str = spec["to"]
        fmt = spec.get("format") or sink_format_for(to)
        assert fmt is not None  # checked above
        self.format = fmt
        self.order = spec.get("order", "input")
        self.capacity = capacity
        self.flush_interval = flush_interval
        fields = spec.get("fields")
        encode = _make_encoder()
        self._main = _File(
            _resolve(to, base_dir),
            fmt,
            holds_errors=spec.get("errors", INLINE) == INLINE,
            fields=fields,
            default_fields=default_fields,
            encode=encode,
        )
        self._encode = encode
        #: rows go to a JSONL file whole, as given (no chosen fields): the fast path of _emit
        self._plain = fmt == "jsonl" and fields is None
        self._errors: _File | None = None
        errors = spec.get("errors", INLINE)
        if errors != INLINE:
            self._errors = _File(
                _resolve(errors, base_dir),
                sink_format_for(errors) or "jsonl",
                holds_errors=True,
                fields=fields,
                default_fields=default_fields,
                encode=encode,
            )
        self._files = [f for f in (self._main, self._errors) if f is not None]
        #: indexes the files already held when opened (resume); the driver skips them
        self.done = IndexSet()
        #: failed rows found by a resume (at most ``keep_errors``), as written
        self.resumed_errors: list[dict[str, Any]] = []
        self.error_count = 0
        self._keep_errors = keep_errors
        #: a resume keeps the failed rows it finds (--only-unfinished) instead of running them again
        self._keep_failed = keep_failed
        self._input = self.order == "input"
        self._head = 0
        self._buffer: dict[int, Mapping[str, Any]] = {}
        self._closed = False
        self._reference: dict[str, Any] | None = None
        try:
            for f in self._files:
                os.makedirs(os.path.dirname(f.partial) or ".", exist_ok=True)
            if resume:
                self._resume()
            for f in self._files:
                f.open(append=resume and not f.needs_header())
        except OSError as exc:
            raise SinkError(f"cannot write the results: {exc.filename}: {exc.strerror}") from None
        self._flush_at = time.monotonic() + flush_interval

    # --- the driver's calls ---

    @property
    def buffered(self) -> int:
        """Results held behind a missing earlier one (input order)."""
        return len(self._buffer)

    @property
    def head(self) -> int:
        """The index the file waits for next (input order)."""
        return self._head

    @property
    def count(self) -> int:
        """Rows in the results file (with a resume's earlier ones)."""
        return self._main.count

    def can_accept(self, index: int) -> bool:
        """May the driver launch item ``index`` now? False while the head item
        holds ``capacity`` later results back: wait for outcomes, then ask again."""
        return not self._input or index < self._head + self.capacity

    def write(self, index: int, result: Mapping[str, Any]) -> None:
        """One item's final result (success or failure: a truthy ``error`` is a failure)."""
        if self._closed:
            raise RuntimeError("the results sink is closed")
        if not self._input:
            self._emit(index, result)
            return
        head = self._head
        if index == head:
            self._emit(index, result)
            head += 1
            buffer = self._buffer
            if buffer:
                while head in buffer:
                    self._emit(head, buffer.pop(head))
                    head += 1
            self._head = head
        elif index > head:
            if index in self._buffer:
                raise ValueError(f"a result for item {index} was already written")
            self._buffer[index] = result
        else:
            raise ValueError(f"a result for item {index} was already written")

    def _emit(self, index: int, result: Mapping[str, Any]) -> None:
        if (
            self._plain
            and type(result) is dict
            and not result.get("error")
            and next(iter(result), None) == "index"
            and result["index"] == index
        ):
            # The usual row: a success, every field, index first, to a JSONL
            # file: written as it is, without the general path's calls.
            main = self._main
            try:
                text = self._encode(result)
            except (TypeError, ValueError, RecursionError):
                self._emit_row(index, result)  # says what cannot be written, in the row
                return
            try:
                main.f.write(text + "\n")  # type: ignore[union-attr]  # open until close()
            except OSError as exc:
                raise SinkError(f"cannot write the results to {main.partial}: {exc.strerror}") from None
            main.count += 1
            if _monotonic() >= self._flush_at:
                self.flush()
            return
        self._emit_row(index, result)

    def _emit_row(self, index: int, result: Mapping[str, Any]) -> None:
        failed = bool(result.get("error"))
        target = self._errors if failed and self._errors is not None else self._main
        try:
            text = target.row(index, result, failed)
        except (TypeError, ValueError, RecursionError) as exc:  # a circular value
            failed = True
            target = self._errors or self._main
            text = target.row(index, {"index": index, "error": f"the result cannot be written as JSON: {exc}"}, True)
        try:
            target.f.write(text)  # type: ignore[union-attr]  # open until close()
        except OSError as exc:
            raise SinkError(f"cannot write the results to {target.partial}: {exc.strerror}") from None
        target.count += 1
        if failed:
            self.error_count += 1
        if _monotonic() >= self._flush_at:
            self.flush()

    def flush(self) -> None:
        """Hand what is written to the OS (it then survives a kill of this process)."""
        try:
            for f in self._files:
                if f.f is not None:
                    f.f.flush()
        except OSError as exc:
            raise SinkError(f"cannot write the results: {exc.strerror}") from None
        self._flush_at = time.monotonic() + self.flush_interval

    def close(self, success: bool) -> dict[str, Any]:
        """Finish: on success rename the partial files to their names; otherwise
        write the results still buffered (after the gap) and leave them partial.

        Returns the reference the node puts in ``results``:
        ``{"path", "format", "count"}`` plus ``errors_path`` and ``errors_count``
        with a separate errors file, and ``"partial": true`` when not renamed.
        """
        if self._reference is not None:
            return self._reference
        self._closed = True
        missing = self._head if self._buffer else None
        try:
            for i in sorted(self._buffer):
                self._emit(i, self._buffer.pop(i))
            ok = success and missing is None
            for f in self._files:
                assert f.f is not None
                f.f.flush()
                if ok:
                    os.fsync(f.f.fileno())  # the rename must not outrun the data
                f.f.close()
                f.f = None
            if ok:
                for f in self._files:
                    os.replace(f.partial, f.final)
        except OSError as exc:
            raise SinkError(f"cannot finish the results: {exc.strerror}") from None
        ref: dict[str, Any] = {
            "path": os.path.abspath(self._main.final if ok else self._main.partial),
            "format": self.format,
            "count": self._main.count,
        }
        if self._errors is not None:
            ref["errors_path"] = os.path.abspath(self._errors.final if ok else self._errors.partial)
            ref["errors_count"] = self._errors.count
        if not ok:
            ref["partial"] = True
        self._reference = ref
        if success and missing is not None:
            raise SinkError(
                f"the results are incomplete: item {missing} has none, so {ref['path']} was left partial"
            )
        return ref

    def __enter__(self) -> ResultSink:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._reference is None:
            self.close(success=False)

    # --- resume ---

    def _resume(self) -> None:
        kept: list[dict[str, Any]] = self.resumed_errors
        scans = [f.scan() for f in self._files]

        def close_scans() -> None:
            for s in scans:
                close = getattr(s, "close", None)  # generators; an empty scan has none
                if close is not None:
                    close()

        try:
            if self._input:
                # Each file is in index order; walk them together to find the
                # complete prefix 0..k-1, then cut every file where it goes past.
                heads = [next(s, None) for s in scans]
                expected = 0
                while True:
                    j = next((j for j, r in enumerate(heads) if r is not None and r.index == expected), -1)
                    if j < 0:
                        break
                    row = heads[j]
                    assert row is not None
                    if row.failed and not self._keep_failed:
                        break  # a failed item runs again, and so does what follows it
                    self._files[j].count += 1
                    self._count_failure(row, kept)
                    expected += 1
                    heads[j] = next(scans[j], None)
                close_scans()
                for f, head in zip(self._files, heads, strict=True):
                    if head is not None:
                        os.truncate(f.partial, head.offset)
                self.done = IndexSet.prefix(expected)
                self._head = expected
            else:
                for f, s in zip(self._files, scans, strict=True):
                    dropped: list[int] = []  # offsets of the failed rows that run again
                    starts: list[int] = []
                    for row in s:
                        starts.append(row.offset)
                        if row.index in self.done:
                            continue  # never written twice by plait; ignore if found
                        if row.failed and not self._keep_failed:
                            dropped.append(row.offset)
                            continue
                        self.done.add(row.index)
                        f.count += 1
                        self._count_failure(row, kept)
                    if dropped:
                        _drop_rows(f.partial, starts, set(dropped))
        finally:
            close_scans()

    def _count_failure(self, row: _Row, kept: list[dict[str, Any]]) -> None:
        if row.failed:
            self.error_count += 1
            if len(kept) < self._keep_errors and row.record is not None:
                kept.append(row.record)


def _resolve(path: str, base_dir: str | None) -> str:
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) or not base_dir else os.path.join(base_dir, path)
