"""Resuming a run: the recorded outcomes of an earlier run, found again by item key.

A resumed run is a new run that, before each item runs, asks the earlier
run's record whether an item with the same key (and the same occurrence
number) finished there: a success is reused as it was (its outputs, attempts,
action), a failure too with ``only_unfinished``; anything else runs. Items are
matched by content, never by position, so reordering, inserting or deleting
input items reuses exactly the items whose key matches.

Memory stays flat: the recorded rows of a node are read in index order beside
the input (the common case, an unchanged input, matches row for row), and only
a mismatch costs an indexed look-up.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plait.runtime import blobs
from plait.runtime.items import Outcome
from plait.runtime.jsontext import loads_stored

_FINAL = ("success", "failed")
_COLUMNS = "rowid, idx, key, status, attempt, error, outputs, outputs_ref, outputs_masked, action, preview"
# positions in a row of _COLUMNS (plain tuples: a Row by name costs more than the look-up itself)
_RID, _IDX, _KEY, _STATUS, _ATTEMPT, _ERROR, _OUTPUTS, _REF, _MASKED, _ACTION, _PREVIEW = range(11)
_CHUNK = 512  # rows read at a time beside the input: fewer trips through SQLite (and the GIL)
# How far ahead of the front (in rows, and in indexes) a row the index found may
# be for the front to jump to it, leaving the rows between (a deletion); a row
# farther away is taken where it is (an item moved), unless _JUMP_AFTER items in
# a row were found ahead: the front then follows them however far.
_LOOKAHEAD = 2048
_JUMP_AFTER = 256


def _pos(row: tuple[Any, ...]) -> int:
    idx = row[_IDX]
    return -1 if idx is None else int(idx)


@dataclass
class Plan:
    """What a resumed run will do, node by node, as far as the record tells before it starts."""

    reuse: int = 0
    rerun_failed: int = 0
    unfinished: int = 0
    changed: list[str] = field(default_factory=list)
    nodes: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        parts = [f"reuse {self.reuse:,}"]
        if self.rerun_failed:
            parts.append(f"rerun {self.rerun_failed:,} failed")
        if self.unfinished:
            parts.append(f"run {self.unfinished:,} unfinished")
        if self.changed:
            n = len(self.changed)
            parts.append(f"{n} node{'s' if n != 1 else ''} changed ({', '.join(self.changed)})")
        return " · ".join(parts)


class ReuseSource:
    """The record of the run being resumed."""

    def __init__(
        self,
        db: Path,
        run: dict[str, Any],
        *,
        only_unfinished: bool = False,
        rerun: frozenset[str] = frozenset(),
    ) -> None:
        self.run_id: str = run["run_id"]
        self._run = run["id"]
        self._db = db
        self.only_unfinished = only_unfinished
        self.rerun = rerun
        conn = self._connect()
        try:
            rows = conn.execute("SELECT node_id, fingerprint FROM nodes WHERE run = ?", (self._run,)).fetchall()
        finally:
            conn.close()
        self.fingerprints: dict[str, str | None] = {r[0]: r[1] for r in rows if "/" not in r[0]}
        self._reused = 0  # by the nodes closed so far
        self._open: list[NodeReuse] = []
        self.lock = threading.Lock()

    @property
    def reused(self) -> int:
        """Items reused so far, in every node."""
        with self.lock:
            return self._reused + sum(node.reused for node in self._open)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self._db), timeout=30.0, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        return conn

    def for_node(self, node_id: str, fingerprint: str) -> NodeReuse | None:
        """What may be reused for a node; None when nothing can be (forced to rerun, new, or changed)."""
        if node_id in self.rerun or node_id not in self.fingerprints:
            return None
        if self.fingerprints[node_id] not in (None, fingerprint):
            return None  # its keys would not match anyway: spare the look-ups
        node = NodeReuse(self, node_id)
        with self.lock:  # concurrent branches resume their batches at once
            self._open.append(node)
        return node

    def _closed(self, node: NodeReuse) -> None:
        with self.lock:
            if node in self._open:
                self._open.remove(node)
                self._reused += node.reused

    def plan(self, fingerprints: dict[str, str]) -> Plan:
        plan = Plan()
        conn = self._connect()
        try:
            for node_id, fp in fingerprints.items():
                old = self.fingerprints.get(node_id, "missing")
                if node_id in self.rerun:
                    plan.nodes[node_id] = "runs again (--rerun)"
                    continue
                if old == "missing" or (old is not None and old != fp):
                    plan.changed.append(node_id)
                    plan.nodes[node_id] = "changed: runs again"
                    continue
                counts = dict(
                    conn.execute(
                        "SELECT status, count(*) FROM items WHERE run = ? AND node_id = ? AND status IN"
                        " ('success', 'failed') AND key IS NOT NULL GROUP BY status",
                        (self._run, node_id),
                    ).fetchall()
                )
                row = conn.execute(
                    "SELECT items_total, items_ok, items_failed, batch FROM nodes WHERE run = ? AND node_id = ?",
                    (self._run, node_id),
                ).fetchone()
                ok, failed = counts.get("success", 0), counts.get("failed", 0)
                if row is not None and row[3] and json.loads(row[3]).get("group") and (ok or failed):
                    # a row stands for a group: the node's own counts are of items, as its total is
                    ok, failed = row[1], row[2]
                total = row
                plan.reuse += ok
                if self.only_unfinished:
                    plan.reuse += failed
                else:
                    plan.rerun_failed += failed
                known = total[0] if total and total[0] is not None else None
                unfinished = max(0, known - ok - failed) if known is not None else (0 if ok or failed else 1)
                plan.unfinished += unfinished
                plan.nodes[node_id] = (
                    f"reuse {ok}" + (f", rerun {failed} failed" if failed and not self.only_unfinished else "")
                    + (f", {unfinished} unfinished" if unfinished else "")
                )
        finally:
            conn.close()
        return plan


class NodeReuse:
    """The recorded final outcomes of one node, matched to its items as they come, in input order.

    The rule (keys by content, duplicates by occurrence): the n-th item of the
    new input with key K takes the n-th recorded row with key K, in index
    order. Taken one item at a time, that is "the first recorded row with key
    K not taken yet", and it needs no memory of the keys seen so far.

    The rows are read in index order beside the input; the row at the *front*
    of that stream is taken when its key is the item's (an unchanged input
    matches row for row, at the cost of a comparison). Any other item is looked
    up in a key index of this node's rows, built in SQLite's temporary store
    the first time one is needed (an unchanged input never builds it). Rows are
    told apart as taken or not by two bitmaps over their rowids: rows taken
    before the front reached them (*ahead*), and rows the front passed without
    taking (*left*: a deleted or moved item). A Bloom filter of the left rows'
    keys tells the front when an earlier row might hold its key (it then asks
    the index). After a deletion the front jumps to the row the index found,
    so the items that follow match row for row again.
    """

    def __init__(self, source: ReuseSource, node_id: str) -> None:
        self.source = source
        self.node_id = node_id
        self.reused = 0
        self._run_id = source.run_id
        self._conn = sqlite3.connect(str(source._db), timeout=30.0, check_same_thread=False)
        self._where = (source._run, node_id)
        self._cursor: sqlite3.Cursor | None = self._conn.execute(
            f"SELECT {_COLUMNS} FROM items WHERE run = ? AND node_id = ? AND status IN ('success', 'failed')"
            " AND key IS NOT NULL ORDER BY idx, rowid",
            self._where,
        )
        self._rows: list[tuple[Any, ...]] = []  # read from the stream; the front is _rows[_at]
        self._at = 0
        self._front: tuple[Any, ...] | None = None
        self._indexed = False
        self._base = 0  # the smallest rowid of the node's rows, bit 0 of the bitmaps
        self._ahead_bits: bytearray | None = None
        self._left_bits: bytearray | None = None
        self._ahead = 0  # rows taken ahead of the front that it has not passed yet
        self._left = 0  # rows the front passed without taking them, not taken since
        self._bloom: bytearray | None = None
        self._bloom_mask = 0
        self._far = 0  # items in a row taken far ahead of the front (a large deletion)
        self._after: dict[str, tuple[int, int]] = {}  # a duplicated key: its last row taken by the index
        self._next_front()

    # -- the stream

    def _fill(self) -> bool:
        """More rows from the stream into the buffer; False at its end."""
        if self._cursor is None:
            return False
        more = self._cursor.fetchmany(_CHUNK)
        if not more:
            self._cursor = None
            return False
        if self._at:
            del self._rows[: self._at]
            self._at = 0
        self._rows += more
        return True

    def _next_front(self) -> None:
        """The front moves to the next row not taken yet (or to the end)."""
        while True:
            if self._at >= len(self._rows) and not self._fill():
                self._front = None
                return
            row = self._rows[self._at]
            if self._ahead and self._taken_ahead(row[_RID]):
                self._at += 1
                continue
            self._front = row
            return

    def _taken_ahead(self, rid: int) -> bool:
        bits = self._ahead_bits
        assert bits is not None
        i = rid - self._base
        if bits[i >> 3] & (1 << (i & 7)):
            bits[i >> 3] &= ~(1 << (i & 7)) & 0xFF
            self._ahead -= 1
            return True
        return False

    def _leave(self, row: tuple[Any, ...]) -> None:
        """The front passes a row it did not take: it stays there to be taken (by the index)."""
        if self._left_bits is None:
            self._bitmaps()
        assert self._left_bits is not None
        i = row[_RID] - self._base
        self._left_bits[i >> 3] |= 1 << (i & 7)
        self._left += 1
        if self._bloom is None:
            size = 1 << max(16, (self._count() * 8).bit_length())  # bits: ~8 per row
            self._bloom = bytearray(size >> 3)
            self._bloom_mask = size - 1
        h = hash(row[_KEY])
        for bit in (h & self._bloom_mask, (h >> 32) & self._bloom_mask):
            self._bloom[bit >> 3] |= 1 << (bit & 7)

    def _maybe_left(self, key: str) -> bool:
        bloom = self._bloom
        if bloom is None:
            return False
        h = hash(key)
        a, b = h & self._bloom_mask, (h >> 32) & self._bloom_mask
        return bool(bloom[a >> 3] & (1 << (a & 7)) and bloom[b >> 3] & (1 << (b & 7)))

    # -- the index, for items that do not match the front

    def _index(self) -> None:
        if self._indexed:
            return
        # Inserted in key order, so the temporary B-tree is built by appending.
        self._conn.execute(
            "CREATE TEMP TABLE reuse_keys (key TEXT NOT NULL, pos INTEGER NOT NULL, rid INTEGER NOT NULL,"
            " PRIMARY KEY (key, pos, rid)) WITHOUT ROWID"
        )
        self._conn.execute(
            "INSERT INTO temp.reuse_keys SELECT key, coalesce(idx, -1), rowid FROM main.items WHERE run = ?"
            " AND node_id = ? AND status IN ('success', 'failed') AND key IS NOT NULL ORDER BY 1, 2, 3",
            self._where,
        )
        self._indexed = True

    def _count(self) -> int:
        self._index()
        return int(self._conn.execute("SELECT count(*) FROM temp.reuse_keys").fetchone()[0])

    def _bitmaps(self) -> None:
        self._index()
        low, high = self._conn.execute("SELECT min(rid), max(rid) FROM temp.reuse_keys").fetchone()
        self._base = low or 0
        size = ((high or 0) - self._base) // 8 + 1
        self._ahead_bits = bytearray(size)
        self._left_bits = bytearray(size)

    def _find(self, key: str) -> tuple[Any, ...] | None:
        """The first row with this key not taken yet, by the index; it is taken."""
        front = self._front
        if front is None and not self._left:
            return None  # every row was passed, and taken: nothing is left to find
        self._index()
        after = self._after.get(key)
        if after is None:
            found = self._conn.execute(
                "SELECT pos, rid FROM temp.reuse_keys WHERE key = ? ORDER BY pos, rid", (key,)
            ).fetchall()
        else:
            found = self._conn.execute(
                "SELECT pos, rid FROM temp.reuse_keys WHERE key = ? AND (pos, rid) > (?, ?) ORDER BY pos, rid",
                (key, *after),
            ).fetchall()
        if not found:
            return None
        if self._ahead_bits is None:
            self._bitmaps()
        ahead, left = self._ahead_bits, self._left_bits
        assert ahead is not None and left is not None
        at = (_pos(front), front[_RID]) if front is not None else None
        for pos, rid in found:
            i = rid - self._base
            if at is None or (pos, rid) < at:  # passed by the front: taken unless it was left
                if not left[i >> 3] & (1 << (i & 7)):
                    continue
                left[i >> 3] &= ~(1 << (i & 7)) & 0xFF
                self._left -= 1
                self._far = 0
            elif (pos, rid) == at:
                self._next_front_after_take()
                self._far = 0
            else:
                if ahead[i >> 3] & (1 << (i & 7)):
                    continue
                if not self._jump(pos, rid):
                    ahead[i >> 3] |= 1 << (i & 7)
                    self._ahead += 1
            if len(found) > 1:
                self._after[key] = (pos, rid)
            return self._conn.execute(f"SELECT {_COLUMNS} FROM items WHERE rowid = ?", (rid,)).fetchone()
        return None

    def _next_front_after_take(self) -> None:
        self._at += 1
        self._next_front()

    def _jump(self, pos: int, rid: int) -> bool:
        """Take a row ahead of the front by moving the front past it, leaving the rows
        between (a deletion); False when it is too far (a moved item: the front stays)."""
        front = self._front
        assert front is not None
        self._far += 1
        if pos - _pos(front) > _LOOKAHEAD and self._far < _JUMP_AFTER:
            return False
        if self._far < _JUMP_AFTER:
            # Near: the row must be among the next _LOOKAHEAD ones, or the front stays.
            j = self._at
            while True:
                if j >= len(self._rows):
                    start = self._at
                    if not self._fill():
                        return False
                    j -= start - self._at
                if self._rows[j][_RID] == rid:
                    break
                if j - self._at >= _LOOKAHEAD:
                    return False
                j += 1
            for row in self._rows[self._at : j]:
                if not (self._ahead and self._taken_ahead(row[_RID])):
                    self._leave(row)
            self._at = j
        else:
            # After _JUMP_AFTER items in a row found far ahead, the input left this
            # stretch of rows for good: the front follows, however far, leaving the
            # rows as it passes them (the buffer stays one chunk).
            while True:
                if self._at >= len(self._rows) and not self._fill():
                    self._front = None
                    self._far = 0
                    return False
                row = self._rows[self._at]
                if row[_RID] == rid:
                    break
                if not (self._ahead and self._taken_ahead(row[_RID])):
                    self._leave(row)
                self._at += 1
        self._at += 1
        self._far = 0
        self._next_front()
        return True

    def lookup(self, index: int | None, item: Any, key: str | None) -> Outcome | None:
        """The recorded outcome of the item with this key, to reuse; None: run it."""
        if key is None:
            return None
        row = self._front
        if row is not None and row[_KEY] == key and not (self._left and self._maybe_left(key)):
            # the common case, inline: the front is taken and the next row comes up
            self._at = at = self._at + 1
            if at < len(self._rows) and not self._ahead:
                self._front = self._rows[at]
            else:
                self._next_front()
            if self._far:
                self._far = 0
        else:
            row = self._find(key)
        if row is None or row[_MASKED]:
            return None  # not recorded, or its outputs were masked: it runs again
        if row[_STATUS] == "failed" and not self.source.only_unfinished:
            return None
        return self._outcome(row, index, item, key)

    def _outcome(self, row: tuple[Any, ...], index: int | None, item: Any, key: str) -> Outcome | None:
        # Reused now, in no time: the record of this run tells when, the earlier one how long it took.
        out = Outcome(index, item, row[_ATTEMPT] or 1, 0, time.time())
        out.key = key
        out.reused = self._run_id
        text = row[_OUTPUTS]
        if text is None and row[_REF]:
            try:
                text = blobs.load(self.source._db.parent / "blobs", row[_REF])
            except OSError:
                return None  # the blob is gone: run the item again
        if text is not None:
            try:
                out.outputs = loads_stored(text)  # the writer stores compact JSON
            except ValueError:
                return None
        if row[_ACTION]:
            out.action = row[_ACTION]
        if row[_STATUS] == "success":
            out.ok = True
            if text is not None and index is not None:
                # the row as it is: the recorder copies it into this run (when its
                # item's preview is the one recorded), the results take its text
                out.record = (row[_RID], row[_PREVIEW], text)
        else:
            out.error = row[_ERROR] or "failed"
            out.retryable = False
        self.reused += 1
        return out

    # the driver's check (runtime/driver.py: ItemCheck)

    def before(self, attempt: Any) -> Outcome | None:
        return self.lookup(attempt.index, attempt.item, attempt.key)

    def after(self, out: Outcome) -> tuple[list[Outcome], list[Any]]:
        return [], []

    def retried(self, out: Outcome) -> None:
        return None

    def close(self) -> None:
        self._cursor = None
        self._rows = []
        self._conn.close()
        self.source._closed(self)
