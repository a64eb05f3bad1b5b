"""A batch's results held compactly: each result as its JSON text, in input order.

A million results as Python dicts take about 700 bytes each (the dict, its
item, its outputs). Here each is its UTF-8 JSON text, appended to blocks of
64 KiB that are compressed once full (rows of one batch look alike: 6-8 times
smaller), plus 13 bytes of index. A result is decoded when it is read, so every read
gives a fresh value that no other node shares — what a template hands out
anyway. Results are JSON values, as they are in the run's records and in a
results file: a tuple reads back as a list. A result that is not JSON text
(an object a Python node made) is kept as it is.
"""

from __future__ import annotations

import json
import zlib
from array import array
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from typing import Any, overload

from plait.runtime.jsontext import compact

_MISSING = -1
_NO_ERROR = object()  # put_item's error when the item succeeded
#: results decoded per ``json.loads`` call when iterating (one call per result costs more)
_CHUNK = 256
_loads = json.loads
_encode = compact  # no cycle check on its fast path: a cycle comes back as ValueError
#: text kept uncompressed until a block holds this much
BLOCK = 1 << 16
_CACHED_BLOCKS = 4  # decompressed blocks kept for reads (in order, or nearly: a parallel batch's)


class _Text:
    """Append-only text: full blocks compressed, read back by (start, size)."""

    __slots__ = ("_bases", "_blocks", "_cache", "_open", "_open_base")

    def __init__(self) -> None:
        self._blocks: list[bytes] = []  # compressed
        self._bases = array("q")  # where each block starts in the whole text
        self._open = bytearray()
        self._open_base = 0
        self._cache: dict[int, bytes] = {}

    def append(self, data: bytes) -> int:
        start = self._open_base + len(self._open)
        self._open += data
        if len(self._open) >= BLOCK:
            self.seal()
        return start

    def seal(self) -> None:
        """The open block, compressed: the next text starts a new one."""
        self._blocks.append(zlib.compress(self._open, 1))
        self._bases.append(self._open_base)
        self._open_base += len(self._open)
        self._open = bytearray()

    def get(self, start: int, size: int) -> bytes | bytearray:
        base = self._open_base
        if start >= base:
            return self._open[start - base : start - base + size]
        no = bisect_right(self._bases, start) - 1
        block = self._cache.get(no)
        if block is None:
            block = zlib.decompress(self._blocks[no])
            cache = self._cache
            if len(cache) >= _CACHED_BLOCKS:
                cache.pop(next(iter(cache), -1), None)
            cache[no] = block
        offset = start - self._bases[no]
        return block[offset : offset + size]

    def many(self, starts: Sequence[int], sizes: Sequence[int]) -> list[bytes | bytearray]:
        """``get(start, size)`` for each pair, in one call (a block found once for the texts in it)."""
        pending, base = self._open, self._open_base
        texts: list[bytes | bytearray] = []
        lo = hi = 0  # the block at hand holds [lo, hi) of the whole text
        block: bytes | bytearray = b""
        for start, size in zip(starts, sizes, strict=True):
            if start >= base:
                texts.append(pending[start - base : start - base + size])
            elif lo <= start < hi:
                texts.append(block[start - lo : start - lo + size])
            else:
                block = self.get(start, size)
                texts.append(block)
                no = bisect_right(self._bases, start) - 1
                lo = self._bases[no]
                hi = self._bases[no + 1] if no + 1 < len(self._bases) else base
                block = self._cache.get(no, b"")
                if not block:  # not kept (a cache of none): the next text looks again
                    lo = hi = 0
        return texts

    def nbytes(self) -> int:
        return len(self._open) + sum(map(len, self._blocks)) + 8 * len(self._bases)


class ResultList(Sequence[Any]):
    """Results by item index; ``None`` for an item without one (yet)."""

    __slots__ = ("_att", "_count", "_high", "_objects", "_orig", "_size", "_start", "_text")

    def __init__(self, capacity: int = 0) -> None:
        self._text = _Text()
        self._start = array("q", [_MISSING]) * capacity
        self._size = array("I", [0]) * capacity
        #: an item's attempts when its text leaves out the envelope every result has
        #: (``index``, ``attempts``: a third of a small result's text); 0 when it is all there
        self._att = array("B", [0]) * capacity
        self._objects: dict[int, Any] = {}  # results that are not JSON text
        self._count = 0  # results present
        self._high = 0  # one past the highest index given
        self._orig: array[int] | None = None  # the items' own indexes, when some are left out (present)

    # -- writing

    def put_item(
        self,
        index: int,
        item: Any,
        attempts: int,
        outputs: dict[str, Any] | None,
        error: Any = _NO_ERROR,
        text: str | None = None,
    ) -> None:
        """The result ``{"index", "item", "attempts", **outputs, "error"?}`` of item ``index``,
        stored without its index and attempts (they are given back when it is read).
        ``text``: the outputs' JSON text, when they were read from it (a reused
        item): it is kept as it is, not encoded again."""
        if attempts > 255 or (outputs and ("index" in outputs or "attempts" in outputs or "item" in outputs)):
            whole: dict[str, Any] = {"index": index, "item": item, "attempts": attempts}
            if outputs:
                whole.update(outputs)
            if error is not _NO_ERROR:
                whole["error"] = error
            self._store(index, whole, 0)
            return
        if text is not None and error is _NO_ERROR and self._put_text(index, item, attempts, text):
            return
        body: dict[str, Any] = {"item": item}
        if outputs:
            body.update(outputs)
        if error is not _NO_ERROR:
            body["error"] = error
        # _store and _place, written out for the usual result: JSON text for an
        # index not given yet, within the arrays (two calls, not four, per item)
        try:
            data = _encode(body).encode("utf-8", "surrogatepass")
        except (TypeError, ValueError):  # not JSON (or circular): the object itself, whole
            self._store(index, body, attempts)
            return
        starts = self._start
        if index >= len(starts) or starts[index] != _MISSING or self._objects:
            self._place(index, data, attempts)
            return
        starts[index] = self._text.append(data)
        self._size[index] = len(data)
        self._att[index] = attempts
        self._count += 1
        if index >= self._high:
            self._high = index + 1

    def _put_text(self, index: int, item: Any, attempts: int, text: str) -> bool:
        """``{"item": item, **outputs}`` from the outputs' own JSON text (an object of
        compact JSON, as plait stores it); False when it is not that (or the item is not JSON)."""
        if text == "{}":
            tail = "}"
        elif len(text) > 2 and text[0] == "{" and text[1] == '"' and text[-1] == "}":
            tail = "," + text[1:]
        else:
            return False
        try:
            head = int.__repr__(item) if type(item) is int else _encode(item)
        except (TypeError, ValueError):  # not JSON, or an int past the digits Python prints
            return False
        self._place(index, ('{"item":' + head + tail).encode("utf-8", "surrogatepass"), attempts)
        return True

    def _grow(self, index: int) -> None:
        starts = self._start
        grow = max(index + 1 - len(starts), len(starts) // 2, 1024)
        starts.extend(array("q", [_MISSING]) * grow)
        self._size.extend(array("I", [0]) * grow)
        self._att.extend(array("B", [0]) * grow)

    def _store(self, index: int, result: Any, attempts: int) -> None:
        try:
            data = _encode(result).encode("utf-8", "surrogatepass")
        except (TypeError, ValueError):  # not JSON (or circular): the object itself, whole
            if attempts:
                result = {"index": index, "item": result.pop("item"), "attempts": attempts, **result}
            self._place(index, None, attempts, result)
        else:
            self._place(index, data, attempts)

    def _place(self, index: int, data: bytes | None, attempts: int, whole: Any = None) -> None:
        """Item ``index``'s result: its JSON text ``data``, or (None) the object ``whole``."""
        starts = self._start
        if index >= len(starts):
            self._grow(index)
            starts = self._start
        if starts[index] == _MISSING and index not in self._objects:
            self._count += 1
        if data is None:
            self._objects[index] = whole
            starts[index] = _MISSING
        else:
            if self._objects:
                self._objects.pop(index, None)
            starts[index] = self._text.append(data)
            self._size[index] = len(data)
            self._att[index] = attempts
        if index >= self._high:
            self._high = index + 1

    def present(self) -> ResultList:
        """Only the items that have a result, in order (they share this list's text)."""
        if self._count == len(self._start):
            return self
        kept = ResultList()
        kept._text = self._text
        kept._orig = orig = array("q")
        mine = self._orig
        starts, sizes, objects = self._start, self._size, self._objects
        for i in range(self._high):
            if starts[i] != _MISSING:
                kept._start.append(starts[i])
                kept._size.append(sizes[i])
                kept._att.append(self._att[i])
            elif i in objects:
                kept._objects[len(kept._start)] = objects[i]
                kept._start.append(_MISSING)
                kept._size.append(0)
                kept._att.append(0)
            else:
                continue
            orig.append(i if mine is None else mine[i])
        kept._count = kept._high = len(kept._start)
        return kept

    def missing(self) -> list[int]:
        """The indexes without a result."""
        return [i for i, s in enumerate(self._start) if s == _MISSING and i not in self._objects]

    # -- reading (the Sequence protocol)

    def __len__(self) -> int:
        return len(self._start)

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self._read(i) for i in range(*index.indices(len(self._start)))]
        n = len(self._start)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("result index out of range")
        return self._read(index)

    def _read(self, i: int) -> Any:
        start = self._start[i]
        if start == _MISSING:
            return self._objects.get(i)
        value = _loads(self._text.get(start, self._size[i]))
        attempts = self._att[i]
        if attempts:
            index = i if self._orig is None else self._orig[i]
            return {"index": index, "item": value.pop("item"), "attempts": attempts, **value}
        return value

    def __iter__(self) -> Iterator[Any]:
        starts, sizes, atts, orig = self._start, self._size, self._att, self._orig
        store = self._text
        n = len(starts)
        i = 0
        while i < n:
            j = min(i + _CHUNK, n)
            try:
                run = starts.index(_MISSING, i, j)
            except ValueError:
                run = j
            if run > i:  # a run of JSON texts: decoded with one call
                texts = b",".join(store.many(starts[i:run], sizes[i:run]))
                for k, value in enumerate(_loads(b"[" + texts + b"]"), i):
                    attempts = atts[k]
                    if attempts:
                        index = k if orig is None else orig[k]
                        yield {"index": index, "item": value.pop("item"), "attempts": attempts, **value}
                    else:
                        yield value
            if run < j:
                yield self._read(run)
                run += 1
            i = run

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ResultList | list | tuple):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like a list

    def __repr__(self) -> str:
        if len(self) <= 20:
            return repr(list(self))
        return f"<ResultList of {len(self)} results: {self[:3]!r} ...>"

    def nbytes(self) -> int:
        """Memory held for the results' text and index (the objects not counted)."""
        arrays = (self._start, self._size, self._att, *(() if self._orig is None else (self._orig,)))
        return self._text.nbytes() + sum(a.itemsize * len(a) for a in arrays)


def plain(value: Any) -> Any:
    """``value`` with every ResultList in it as a list (for what needs real lists)."""
    if isinstance(value, ResultList):
        return list(value)
    if isinstance(value, dict):
        if any(isinstance(v, ResultList | dict) for v in value.values()):
            return {k: plain(v) for k, v in value.items()}
        return value
    return value


def json_default(value: Any) -> Any:
    """A ``default=`` for ``json.dumps``: a ResultList as a list, the rest as text."""
    if isinstance(value, ResultList):
        return list(value)
    return str(value)
