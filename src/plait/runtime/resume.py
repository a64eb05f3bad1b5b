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
from plait.runtime.keys import Occurrences

_FINAL = ("success", "failed")
_COLUMNS = "idx, key, status, attempt, error, outputs, outputs_ref, outputs_masked, action, started, ended, preview"
# positions in a row of _COLUMNS (plain tuples: a Row by name costs more than the look-up itself)
_KEY, _STATUS, _ATTEMPT, _ERROR, _OUTPUTS, _REF, _MASKED, _ACTION = 1, 2, 3, 4, 5, 6, 7, 8
_CHUNK = 512  # rows read at a time beside the input: fewer trips through SQLite (and the GIL)


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
        self.reused = 0
        self.lock = threading.Lock()

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
        return NodeReuse(self, node_id)

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
                total = conn.execute(
                    "SELECT items_total FROM nodes WHERE run = ? AND node_id = ?", (self._run, node_id)
                ).fetchone()
                ok, failed = counts.get("success", 0), counts.get("failed", 0)
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
    """The recorded final outcomes of one node, matched to its items as they come, in input order."""

    def __init__(self, source: ReuseSource, node_id: str) -> None:
        self.source = source
        self.node_id = node_id
        self._conn = sqlite3.connect(str(source._db), timeout=30.0, check_same_thread=False)
        self._cursor: sqlite3.Cursor | None = self._conn.execute(
            f"SELECT {_COLUMNS} FROM items WHERE run = ? AND node_id = ? AND status IN ('success', 'failed')"
            " AND key IS NOT NULL ORDER BY idx, rowid",
            (source._run, node_id),
        )
        self._old_occ = Occurrences()
        self._new_occ = Occurrences()
        self._rows: list[tuple[Any, ...]] = []
        self._at = 0
        self._head: tuple[tuple[Any, ...], int] | None = None
        self._advance()

    def _advance(self) -> None:
        if self._at >= len(self._rows):
            self._rows = self._cursor.fetchmany(_CHUNK) if self._cursor is not None else []
            self._at = 0
            if not self._rows:
                self._head, self._cursor = None, None
                return
        row = self._rows[self._at]
        self._at += 1
        self._head = (row, self._old_occ.next(row[_KEY]))

    def lookup(self, index: int | None, item: Any, key: str | None) -> Outcome | None:
        """The recorded outcome of the item with this key, to reuse; None: run it."""
        if key is None:
            return None
        occurrence = self._new_occ.next(key)
        row: tuple[Any, ...] | None = None
        head = self._head
        if head is not None and head[0][_KEY] == key and head[1] == occurrence:
            row = head[0]
            self._advance()
        else:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM items WHERE run = ? AND node_id = ? AND key = ?"
                " AND status IN ('success', 'failed') ORDER BY idx, rowid LIMIT 1 OFFSET ?",
                (self.source._run, self.node_id, key, occurrence),
            ).fetchone()
        if row is None or row[_MASKED]:
            return None  # not recorded, or its outputs were masked: it runs again
        if row[_STATUS] == "failed" and not self.source.only_unfinished:
            return None
        return self._outcome(row, index, item, key)

    def _outcome(self, row: tuple[Any, ...], index: int | None, item: Any, key: str) -> Outcome | None:
        # Reused now, in no time: the record of this run tells when, the earlier one how long it took.
        out = Outcome(index, item, int(row[_ATTEMPT] or 1), 0, time.time())
        out.key = key
        out.reused = self.source.run_id
        text = row[_OUTPUTS]
        if text is None and row[_REF]:
            try:
                text = blobs.load(self.source._db.parent / "blobs", row[_REF])
            except OSError:
                return None  # the blob is gone: run the item again
        try:
            out.outputs = json.loads(text) if text is not None else None
        except ValueError:
            return None
        out.action = row[_ACTION] or "default"
        if row[_STATUS] == "success":
            out.ok = True
        else:
            out.error = row[_ERROR] or "failed"
            out.retryable = False
        with self.source.lock:  # concurrent branches resume their batches at once
            self.source.reused += 1
        return out

    # the driver's check (runtime/driver.py: ItemCheck)

    def before(self, attempt: Any) -> Outcome | None:
        return self.lookup(attempt.index, attempt.item, attempt.key)

    def after(self, out: Outcome) -> tuple[list[Outcome], list[Any]]:
        return [], []

    def retried(self, out: Outcome) -> None:
        return None

    def close(self) -> None:
        self._conn.close()
