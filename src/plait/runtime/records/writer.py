"""The run recorder: an event subscriber that writes the run records.

Its handler only appends the event to a deque (well under a microsecond); a
writer thread turns events into rows and commits them every ``FLUSH_S``
seconds in one transaction, with the database in WAL mode. So a 100k-item
batch pays little for being recorded, and a run that is interrupted, or
killed outright, leaves a record that is true up to the last commit.

Everything it writes comes from the events: the run and its nodes from
:class:`RunStarted`, attempts from the item events, tokens from
:class:`UsageRecorded`, the outcome from :class:`RunFinished`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plait.runtime import blobs
from plait.runtime.events import (
    BatchStarted,
    Event,
    ItemFailed,
    ItemFinished,
    ItemInterrupted,
    ItemRetried,
    NodeFinished,
    NodeStarted,
    RunFinished,
    RunStarted,
    UsageRecorded,
    items_in,
)
from plait.runtime.jsontext import compact
from plait.runtime.records.schema import connect, records_dir
from plait.runtime.redact import Redactor, is_secret_name

if TYPE_CHECKING:
    import sqlite3

    from plait.runtime.events import EventBus

FLUSH_S = 0.2  # the commit window: a kill loses at most this much of the record
# Events waiting for the writer, at most. A run that outpaces the writer (a
# million trivial items) then writes a flush itself instead of growing memory
# without bound: the record costs that run time, never memory. About one commit
# window of the fastest runs (an event with its outputs is ~0.5 KB: 5 MB at most).
MAX_BACKLOG = 10_000
# Rows (or events) kept in memory at most while the database cannot be written.
MAX_PENDING = 500_000
FINAL_TRIES = 3
PREVIEW_CHARS = 160
# outputs longer than this (as JSON text) are kept as a file in blobs/, named by their hash
BLOB_CHARS = 64 * 1024
_NAMES_KEPT = 4096  # output names whose secrecy is remembered (a node's outputs have a few)
_NESTED_VALUES = 64  # values in dicts inside an item's outputs that the short way looks at, at most
_RECORDED = (
    RunStarted,
    RunFinished,
    NodeStarted,
    BatchStarted,
    NodeFinished,
    ItemFinished,
    ItemFailed,
    ItemRetried,
    ItemInterrupted,
    UsageRecorded,
)


class RunRecorder:
    """Records one run as it goes: ``attach(bus)``, run, then ``close()``.

    A bad moment does not end recording: when the database is locked by
    another program (longer than its busy timeout) or the disk is full, the
    rows wait in memory and the writer tries again with backoff; it says so
    through ``on_trouble`` and ``on_recovered``. Rows beyond ``MAX_PENDING``
    are dropped (failures are kept first) and the run's record then says how
    many attempts it lacks.
    """

    def __init__(
        self,
        *,
        path: Path | None = None,
        redactor: Redactor | None = None,
        on_trouble: Callable[[str], None] | None = None,
        on_recovered: Callable[[str], None] | None = None,
    ) -> None:
        self.redactor = redactor or Redactor()
        conn = connect(path)
        assert conn is not None
        self._conn: sqlite3.Connection = conn
        self.run_id: str | None = None
        self._run: int | None = None
        self.started = time.time()
        self.error: str | None = None  # why recording stopped, if it did
        self.trouble: str | None = None  # why the last commit failed, while it is retried
        self.lost = 0  # attempts not recorded (dropped while the database could not be written)
        self.on_trouble = on_trouble
        self.on_recovered = on_recovered
        self._trouble_since = 0.0
        self._backoff = FLUSH_S
        self._events: deque[Event] = deque()
        self._nodes: dict[str, _NodeState] = {}
        self._tokens: dict[tuple[str, int | None], list[Any]] = {}
        self._items_ok = 0
        self._items_failed = 0
        self._clean_names: dict[Any, bool] = {}
        # prepared, not yet committed (rows without their run column)
        self._begun: RunStarted | None = None
        self._ok_rows: list[tuple[Any, ...]] = []
        self._rows: list[tuple[Any, ...]] = []
        #: reused rows, copied from the earlier run's record by SQLite itself, a
        #: stretch of consecutive rows at a time: [node, reused_from, slot, first
        #: rowid, last rowid, index of the first, time of the first, of the last]
        self._copies: list[list[Any]] = []
        self._finished: RunFinished | None = None
        self._blobs = (path.parent if path is not None else records_dir()) / "blobs"
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="plait-records", daemon=True)

    def attach(self, bus: EventBus) -> None:
        # Not ItemStarted: an attempt's row is written from its outcome, which
        # carries its start; one that never ends is ItemInterrupted.
        bus.subscribe(self._on_event, kinds=_RECORDED)

    def _on_event(self, event: Event) -> None:
        # The per-event cost on the runtime's side: one append and a length check.
        events = self._events
        events.append(event)
        if len(events) > MAX_BACKLOG:
            if self.trouble is None:
                self._flush()
            elif len(events) > MAX_PENDING:  # the database cannot keep up at all: memory can
                events.popleft()
                self.lost += 1
        elif type(event) is RunStarted and not event.path and self._begun is None and self._run is None:
            # The run's row is written at once, so the run is listed from its first moment.
            self._flush()
            self._thread.start()

    # -- the writer thread

    def _loop(self) -> None:
        while not self._stop.wait(self._backoff if self.trouble else FLUSH_S):
            self._flush()

    def _flush(self) -> None:
        import sqlite3

        with self._flush_lock:
            if self.error is not None:
                self._events.clear()
                return
            events = self._events
            n = len(events)
            pop = events.popleft
            try:
                if n:
                    self._prepare([pop() for _ in range(n)])
                if not (self._begun or self._ok_rows or self._rows or self._copies or self._finished or self._dirty()):
                    return
                self._commit()
            except sqlite3.Error as exc:
                if not _passing(exc):
                    self.error = f"{type(exc).__name__}: {exc}"
                    return
                self._troubled(exc)  # locked for long, a full disk: keep the rows, try again
                return
            except Exception as exc:  # anything else is a bug: stop recording, keep the run going
                self.error = f"{type(exc).__name__}: {exc}"
                return
            if self.trouble is not None:
                self._recovered()

    def _dirty(self) -> bool:
        return any(node.dirty for node in self._nodes.values())

    def _troubled(self, exc: BaseException) -> None:
        text = str(exc)
        if "locked" in text or "busy" in text:
            why = "the records database is locked by another program"
        elif "full" in text or "disk I/O" in text:
            why = f"the disk under {self._conn_path()} is full or failing ({text})"
        else:
            why = f"the records database cannot be written ({type(exc).__name__}: {text})"
        first = self.trouble is None
        self.trouble = why
        if first:
            self._trouble_since = time.monotonic()
            self._backoff = FLUSH_S
            if self.on_trouble is not None:
                self.on_trouble(f"{why}; plait keeps what happens and tries again")
        else:
            self._backoff = min(self._backoff * 2, 15.0)
        pending = len(self._ok_rows) + len(self._rows)
        if pending > MAX_PENDING:
            # Memory stays bounded: successes go first, failures are what a user looks for.
            drop = min(pending - MAX_PENDING, len(self._ok_rows))
            del self._ok_rows[:drop]
            self.lost += drop

    def _recovered(self) -> None:
        took = time.monotonic() - self._trouble_since
        message = f"the run record caught up after {took:.0f} s ({self.trouble})"
        self.trouble = None
        self._backoff = FLUSH_S
        if self.on_recovered is not None:
            self.on_recovered(message)

    def _conn_path(self) -> str:
        try:
            row = self._conn.execute("PRAGMA database_list").fetchone()
            return str(Path(row[2]).parent)
        except Exception:
            return "the records folder"

    def _prepare(self, batch: list[Event]) -> None:
        """Events to rows and node state, in memory: nothing here touches the database."""
        rows, ok_rows = self._rows, self._ok_rows
        for ev in batch:
            kind = type(ev)
            if kind is ItemFinished and not self._tokens and ev.index is not None:  # type: ignore[attr-defined]
                self._ok_row(ev, ok_rows)  # type: ignore[arg-type]  # most events: the short way
            elif kind is RunStarted:
                if not ev.path and self._begun is None and self._run is None:  # type: ignore[attr-defined]
                    self._begun = ev  # type: ignore[assignment]
                    self.run_id = ev.run_id  # type: ignore[attr-defined]
                    self.started = ev.at
            else:
                self._apply(ev, rows)

    def _commit(self) -> None:
        conn = self._conn
        conn.execute("BEGIN")
        try:
            if self._begun is not None:
                self._begin(self._begun)
            run = self._run
            if run is not None:
                if self._ok_rows:
                    # in the order they came, each stretch of rows of one form at once
                    for size, stretch in groupby(self._ok_rows, len):
                        conn.executemany(_INSERT_OK_BY_SIZE[size], [(run, *r) for r in stretch])
                for node_id, reused, slot, first, last, idx, t_first, t_last in self._copies:
                    step = (t_last - t_first) / (last - first) if last > first else 0.0
                    cur = conn.execute(_COPY_ITEMS, (run, node_id, idx, first, slot, t_first, step, reused, last))
                    if cur.rowcount != last - first + 1:  # the earlier run's rows are gone (deleted meanwhile)
                        self.lost += last - first + 1 - max(0, cur.rowcount)
                if self._rows:
                    conn.executemany(_INSERT_ITEM, [(run, *r) for r in self._rows])
                written = [node for node in self._nodes.values() if node.dirty]
                for node in written:
                    conn.execute(_UPSERT_NODE, node.row(run))
                conn.execute(
                    "UPDATE runs SET items_ok = ?, items_failed = ?, updated = ?, record_note = ? WHERE id = ?",
                    (self._items_ok, self._items_failed, time.time(), self._note(), run),
                )
                if self._finished is not None:
                    self._end(self._finished)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if self._begun is not None:
                self._run = None  # its row was not kept
            raise
        self._begun = None
        self._ok_rows = []
        self._rows = []
        self._copies = []
        self._finished = None
        if run is not None:
            for node in written:
                node.dirty = False

    def _note(self) -> str | None:
        if not self.lost:
            return None
        return f"{self.lost} attempts were not recorded: {self.trouble or 'the database could not be written'}"

    def _begin(self, ev: RunStarted) -> None:
        from plait import __version__

        wf = ev.workflow
        shown_inputs = self.redactor.value(ev.inputs)
        secret = sorted(k for k, v in shown_inputs.items() if v == "***" and ev.inputs.get(k) != "***")
        cur = self._conn.execute(
            "INSERT INTO runs (run_id, workflow, workflow_path, inputs, status, started, updated, pid,"
            " cwd, plait_version, resumed_from, secret_inputs, items_from)"
            " VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                ev.run_id,
                wf.file if wf is not None else None,
                str(Path(wf.file).resolve()) if wf is not None and wf.file else None,
                _dumps(shown_inputs),
                ev.at,
                ev.at,
                os.getpid(),
                os.getcwd(),
                __version__,
                ev.resumed_from,
                _dumps(secret) if secret else None,
                ev.items_from,
            ),
        )
        assert cur.lastrowid is not None
        self._run = cur.lastrowid
        if wf is not None:
            for spec in wf.nodes:
                self._conn.execute(
                    "INSERT INTO nodes (run, node_id, position, type, params, batch, status, fingerprint)"
                    " VALUES (?, ?, ?, ?, ?, ?, 'not_run', ?)",
                    (
                        self._run,
                        spec.id,
                        spec.position,
                        spec.type,
                        _dumps(self.redactor.value(spec.params)),
                        _dumps(_batch_summary(spec)) if spec.batch is not None else None,
                        ev.fingerprints.get(spec.id),
                    ),
                )

    def _apply(self, ev: Event, rows: list[tuple[Any, ...]]) -> None:
        if isinstance(ev, ItemFinished):
            if ev.index is None and ev.outputs:
                self.redactor.learn_from(ev.outputs)  # a token a node obtained: masked from now on
            self._final(ev, rows, "success", None, ev.item)
        elif isinstance(ev, ItemFailed):
            self._final(ev, rows, "failed", ev.error, ev.item)
        elif isinstance(ev, ItemRetried):
            self._final(ev, rows, "throttled" if ev.throttled else "retried", ev.error, None)
        elif isinstance(ev, ItemInterrupted):
            self._final(ev, rows, "interrupted" if ev.reason == "interrupted" else "cancelled", None, None)
        elif isinstance(ev, UsageRecorded):
            self._usage(ev)
        elif isinstance(ev, NodeStarted):
            node = self._node(ev.loc.key, ev.type)
            node.status = "running"
            node.visits += 1
            if node.started is None:
                node.started = ev.at
        elif isinstance(ev, BatchStarted):
            node = self._node(ev.loc.key)
            node.total = ev.total
            node.grouped = ev.grouped
            if ev.carried:  # rows a resumed results file kept: reused, though no item event comes
                ok = ev.carried - ev.carried_failed
                node.ok += ok
                node.failed += ev.carried_failed
                node.reused += ok
                node.dirty = True
                if not ev.loc.path:
                    self._items_ok += ok
                    self._items_failed += ev.carried_failed
        elif isinstance(ev, NodeFinished):
            self._node_finished(ev)
        elif isinstance(ev, RunFinished) and not ev.path:
            self._finished = ev

    def _ok_row(self, ev: ItemFinished, rows: list[tuple[Any, ...]]) -> None:
        """A successful attempt without tokens: the row of most items, with fewer columns to bind."""
        key = ev.loc.key
        node = self._nodes.get(key) or self._node(key)
        item = ev.item
        n = items_in(item) if node.grouped else 1  # a group: its items
        node.ok += n
        node.dirty = True
        if ev.reused is not None:
            node.reused += n
        elif ev.cached:
            node.cached += n
        idx = ev.index
        shown = None
        top = not ev.loc.path
        if idx is not None and top:
            self._items_ok += n
            shown = str(item) if type(item) is int else self._preview(item)
            record = ev.record
            if record is not None and record[1] == shown and not self.redactor.knows_any(record[2]):
                # Reused as recorded (the same preview, nothing this run masks in its
                # outputs): SQLite copies the row; consecutive rows go as one stretch.
                rid = record[0]
                copies = self._copies
                last = copies[-1] if copies else None
                if (
                    last is not None and last[4] + 1 == rid and last[5] + (rid - last[3]) == idx
                    and last[0] == key and last[1] == ev.reused and last[2] == ev.slot
                ):
                    last[4] = rid
                    last[7] = ev.at
                else:
                    copies.append([key, ev.reused, ev.slot, rid, rid, idx, ev.at, ev.at])
                return
        text, ref, masked = self._outputs(ev.outputs) if top else (None, None, None)
        started = ev.at - ev.duration_ms / 1000.0
        # sqlite3 binds a None only after failing to find an adapter for it (an
        # AttributeError made and dropped, a microsecond each): most rows are
        # written by a statement that names only the columns they fill.
        if (
            ref is None and masked is None and ev.action == "default" and not ev.cached and shown is not None
            and text is not None and ev.key is not None and idx is not None
        ):
            if ev.reused is None:
                rows.append((key, idx, ev.attempt, ev.slot, started, ev.at, shown, ev.key, text))
            else:
                rows.append((key, idx, ev.attempt, ev.slot, started, ev.at, shown, ev.key, text, ev.reused))
            return
        rows.append(
            (
                key, idx, ev.attempt, ev.slot, started, ev.at, shown,
                ev.key, text, ref, masked, ev.action if ev.action != "default" else None, ev.reused,
                1 if ev.cached else None,
            )
        )

    def _outputs(self, outputs: Any) -> tuple[str | None, str | None, int | None]:
        """An item's outputs as stored: (JSON text, or the content address of a large
        one, and whether secret-named values were masked: such an item re-runs on resume)."""
        if outputs is None:
            return None, None, None
        if type(outputs) is dict and self._flat_and_clean(outputs):
            try:
                text = compact(outputs)
            except (TypeError, ValueError):
                pass
            else:
                if len(text) <= BLOB_CHARS:
                    return text, None, None
        shown, masked = self.redactor.masked(outputs)
        try:
            text = compact(shown)
        except (TypeError, ValueError):
            text = json.dumps(shown, ensure_ascii=False, separators=(",", ":"), default=str)
            masked = True  # not its own JSON: not restorable as it was
        if len(text) > BLOB_CHARS:
            return None, blobs.store(self._blobs, text), 1 if masked else None
        return text, None, 1 if masked else None

    def _flat_and_clean(self, outputs: dict[Any, Any], nested: bool = False) -> bool:
        """True when ``redactor.masked`` would keep these outputs as they are, found
        the short way for most items' outputs: names that are not secret (each name
        asked once), values that are numbers, text with nothing to mask, or a few
        small dicts of those (an HTTP response and its headers)."""
        names = self._clean_names
        text = self.redactor.text
        room = _NESTED_VALUES
        for name, value in outputs.items():
            clean = names.get(name)
            if clean is None:
                clean = type(name) is str and not is_secret_name(name)
                if len(names) < _NAMES_KEPT:
                    names[name] = clean
            if not clean:
                return False
            kind = type(value)
            if kind is str:
                if value and text(value) != value:
                    return False
            elif kind is dict and not nested:
                # one level deeper, for a few values in all: a large one goes the long way at once
                room -= len(value)
                if room < 0 or not self._flat_and_clean(value, True):
                    return False
            elif not (kind is int or kind is float or kind is bool or value is None):
                return False  # a list, or not JSON data: the long way
        return True

    def _final(
        self,
        ev: ItemFinished | ItemFailed | ItemRetried | ItemInterrupted,
        rows: list[tuple[Any, ...]],
        status: str,
        error: str | None,
        item: Any,
    ) -> None:
        """One attempt's row: its outcome, tokens, and (for an item's final outcome) a preview."""
        node_id = ev.loc.key
        idx = ev.index
        used = self._tokens.pop((node_id, idx), None) if self._tokens else None
        node = self._node(node_id)
        top_item = idx is not None and ev.loc.top_level
        final = status in ("success", "failed") and ev.loc.top_level
        text, ref, masked = self._outputs(getattr(ev, "outputs", None)) if final else (None, None, None)
        preview = None
        n = items_in(item) if node.grouped else 1  # a group: its items
        if status == "success":
            node.ok += n
            if getattr(ev, "reused", None) is not None:
                node.reused += n
            elif getattr(ev, "cached", False):
                node.cached += n
            if top_item:
                self._items_ok += n
                preview = self._preview(item)
        elif status == "failed":
            node.failed += n
            if top_item:
                self._items_failed += n
                preview = self._preview(item)
        elif status == "retried":
            node.retries += 1
        elif status == "throttled":
            node.throttled += 1
        rows.append(
            (
                node_id,
                idx,
                ev.attempt,
                ev.slot,
                status,
                ev.at - (ev.duration_ms or 0.0) / 1000.0,
                ev.at,
                self.redactor.text(error) if error else None,
                used[1] if used else None,
                used[2] if used else None,
                preview,
                getattr(ev, "key", None),
                text,
                ref,
                masked,
                (getattr(ev, "action", None) if getattr(ev, "action", "default") != "default" else None),
                getattr(ev, "reused", None),
                1 if getattr(ev, "cached", False) else None,
                (round(used[3], 9) if used[3] is not None else None) if used else None,
            )
        )

    def _preview(self, item: Any) -> str:
        line = preview(item)
        if item is not None and not isinstance(item, bool | int | float):
            line = self.redactor.text(line)
        return line

    def _node_finished(self, ev: NodeFinished) -> None:
        node = self._node(ev.loc.key)
        node.status = ev.status or "success"
        if node.status == "failed" and ev.error == "interrupted":
            node.status = "interrupted"
        node.ended = ev.at
        node.duration_ms = ev.duration_ms
        node.error = self.redactor.text(ev.error) if ev.error else None
        node.error_index = ev.index
        if ev.counts and ev.counts.get("count") is not None:
            node.total = ev.counts["count"]

    def _node(self, node_id: str, type_: str | None = None) -> _NodeState:
        node = self._nodes.get(node_id)
        if node is None:
            node = self._nodes[node_id] = _NodeState(node_id, type_)
        node.dirty = True
        return node

    def _usage(self, ev: UsageRecorded) -> None:
        inp, outp = ev.input_tokens, ev.output_tokens
        node_id = ev.loc.key
        # Tokens count towards the item that made the call and towards the
        # top-level item (and node) it ran under, when it ran in a sub-workflow.
        keys = [(node_id, ev.index)]
        if not ev.loc.top_level:
            keys.append(ev.loc.top)
        cost = ev.cost_usd
        for key in keys:
            row = self._tokens.setdefault(key, [0, 0, 0, None])
            row[0] += 1
            row[1] += inp
            row[2] += outp
            node = self._node(key[0])
            node.llm[0] += 1
            node.llm[1] += inp
            node.llm[2] += outp
            if cost is not None:
                row[3] = (row[3] or 0.0) + cost
                node.cost = (node.cost or 0.0) + cost

    def _end(self, ev: RunFinished) -> None:
        """The run's outcome; attempts and nodes still open were cut short."""
        ended = ev.at
        for node in self._nodes.values():
            if node.status == "running":
                node.status = "interrupted" if ev.status == "interrupted" else "failed"
                node.ended = ended
                self._conn.execute(_UPSERT_NODE, node.row(self._run))
        for entry in ev.errors:
            stopped = self._nodes.get(str(entry.get("node_id")))
            if entry.get("message") == "interrupted" and stopped is not None:
                stopped.status = "interrupted"
                self._conn.execute(_UPSERT_NODE, stopped.row(self._run))
        first = ev.errors[0] if ev.errors else None
        error = None
        if ev.status == "partial":
            error = "; ".join(f"{e['message']} in '{e['node_id']}'" for e in ev.errors)
        elif first:
            error = str(first.get("message"))
            if first.get("node_id") and error != "interrupted":
                error = f"node '{first['node_id']}' failed: {error}"
        if error:
            error = self.redactor.text(error)
        usage = ev.usage
        self._conn.execute(
            "UPDATE runs SET status = ?, ended = ?, updated = ?, duration_ms = ?, error = ?, llm_calls = ?,"
            " input_tokens = ?, output_tokens = ?, cost_usd = ? WHERE id = ?",
            (
                ev.status,
                ended,
                ended,
                ev.duration_ms,
                error,
                usage.get("calls", 0),
                usage.get("input_tokens", 0),
                usage.get("output_tokens", 0),
                usage.get("cost_usd"),
                self._run,
            ),
        )

    # -- the end

    def close(self, *, status: str = "failed") -> None:
        """Drain the writer and close. When the run never finished (it raised,
        or a second Ctrl-C stopped it at once), ``status`` says what happened."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        try:
            self._flush()
            if self.error is None and self._run is None and self._begun is None:
                return  # the run never started
            if self.error is None and self._finished is None and not self._ended():
                ended = time.time()
                error = "interrupted" if status == "interrupted" else "the run stopped on an internal error"
                self._events.append(
                    RunFinished(self.run_id or "", status, (ended - self.started) * 1000.0, [{"message": error}], at=ended)
                )
                self._flush()
            for _ in range(FINAL_TRIES):  # the database was locked or full: a last few tries
                if self.trouble is None or self.error is not None:
                    break
                time.sleep(min(self._backoff, 2.0))
                self._flush()
            if self.trouble is not None and self.error is None:
                self.error = f"the run record is incomplete: {self.trouble}"
            elif self.lost and self.error is None:
                self.error = f"the run record is incomplete: {self._note()}"
        finally:
            self._conn.close()

    def _ended(self) -> bool:
        if self._run is None:
            return False
        try:
            row = self._conn.execute("SELECT status FROM runs WHERE id = ?", (self._run,)).fetchone()
        except Exception:
            return False
        return row is not None and row[0] != "running"


def _passing(exc: BaseException) -> bool:
    """A database error that may go away by itself (a lock, a full or failing disk)."""
    text = str(exc).lower()
    return any(w in text for w in ("locked", "busy", "full", "disk i/o", "unable to open", "readonly"))


def _batch_summary(spec: Any) -> dict[str, Any]:
    b = spec.batch
    if isinstance(b.items, str):
        items: Any = b.items
    elif isinstance(b.items, dict):  # a source: {"from": ..., "format": ...} as written
        items = b.items
    else:
        items = f"<inline list of {len(b.items)}>"
    summary = {
        "items": items,
        "as": b.alias,
        "parallel": b.parallel,
        "max_concurrent": b.max_concurrent,
        "error_handling": b.error_handling,
        "max_retries": b.max_retries,
    }
    if b.group:
        summary["group"] = b.group
        if b.group_bytes is not None:
            summary["group_bytes"] = b.group_bytes
    return summary


class _NodeState:
    __slots__ = (
        "cached",
        "cost",
        "dirty",
        "duration_ms",
        "ended",
        "error",
        "error_index",
        "failed",
        "grouped",
        "llm",
        "node_id",
        "ok",
        "retries",
        "reused",
        "started",
        "status",
        "throttled",
        "total",
        "type",
        "visits",
    )

    def __init__(self, node_id: str, type_: str | None = None) -> None:
        self.node_id = node_id
        self.type = type_
        self.status = "not_run"
        self.visits = 0
        self.started: float | None = None
        self.ended: float | None = None
        self.duration_ms: float | None = None
        self.error: str | None = None
        self.error_index: int | None = None
        self.total: int | None = None
        self.grouped = False  # batch.group: a row stands for the items of its group
        self.ok = 0
        self.failed = 0
        self.retries = 0
        self.throttled = 0
        self.cached = 0  # items answered from the item cache
        self.reused = 0  # items whose result an earlier run recorded (a resume)
        self.llm = [0, 0, 0]
        self.cost: float | None = None
        self.dirty = True

    def row(self, run: int | None) -> tuple[Any, ...]:
        return (
            run,
            self.node_id,
            self.type,
            self.status,
            self.visits,
            self.started,
            self.ended,
            self.duration_ms,
            self.error,
            self.error_index,
            self.total,
            self.ok,
            self.failed,
            self.retries,
            *self.llm,
            None if self.cost is None else round(self.cost, 9),
            self.throttled,
            self.cached,
            self.reused,
        )


_INSERT_OK_ITEM = (
    "INSERT INTO items (run, node_id, idx, attempt, slot, status, started, ended, preview, key, outputs,"
    " outputs_ref, outputs_masked, action, reused_from, cached)"
    " VALUES (?, ?, ?, ?, ?, 'success', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_PLAIN_ITEM = (
    "INSERT INTO items (run, node_id, idx, attempt, slot, status, started, ended, preview, key, outputs)"
    " VALUES (?, ?, ?, ?, ?, 'success', ?, ?, ?, ?, ?)"
)
_INSERT_REUSED_ITEM = (
    "INSERT INTO items (run, node_id, idx, attempt, slot, status, started, ended, preview, key, outputs,"
    " reused_from) VALUES (?, ?, ?, ?, ?, 'success', ?, ?, ?, ?, ?, ?)"
)
#: a stretch of reused rows (rowids ?4 to ?9 of the earlier run), copied as they
#: were recorded into this run (?1): their index from ?3 on, their time from ?6
#: on by ?7 a row, reused from ?8, as a reused success's row is written
_COPY_ITEMS = (
    "INSERT INTO items (run, node_id, idx, attempt, slot, status, started, ended, preview, key, outputs,"
    " outputs_ref, action, reused_from)"
    " SELECT ?1, ?2, ?3 + (rowid - ?4), attempt, ?5, 'success', ?6 + (rowid - ?4) * ?7, ?6 + (rowid - ?4) * ?7,"
    " preview, key, outputs, outputs_ref, action, ?8 FROM items WHERE rowid BETWEEN ?4 AND ?9 AND run <> ?1"
    " ORDER BY rowid"
)
#: the statement for a successful row by its length (without its run)
_INSERT_OK_BY_SIZE = {9: _INSERT_PLAIN_ITEM, 10: _INSERT_REUSED_ITEM, 14: _INSERT_OK_ITEM}
_INSERT_ITEM = (
    "INSERT INTO items (run, node_id, idx, attempt, slot, status, started, ended, error,"
    " input_tokens, output_tokens, preview, key, outputs, outputs_ref, outputs_masked, action,"
    " reused_from, cached, cost_usd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_NODE_COLUMNS = (
    "status, visits, started, ended, duration_ms, error, error_index, items_total, items_ok,"
    " items_failed, retries, llm_calls, input_tokens, output_tokens, cost_usd, throttled,"
    " items_cached, items_reused"
)
_UPSERT_NODE = (
    f"INSERT INTO nodes (run, node_id, type, {_NODE_COLUMNS}) VALUES ({', '.join('?' * 21)})"
    " ON CONFLICT (run, node_id) DO UPDATE SET type = coalesce(nodes.type, excluded.type), "
    + ", ".join(f"{c.strip()} = excluded.{c.strip()}" for c in _NODE_COLUMNS.split(","))
)


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    elif value is None or isinstance(value, bool | float):
        return json.dumps(value)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except ValueError:
            text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


