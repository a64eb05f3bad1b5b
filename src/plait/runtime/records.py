"""Run records: every run, node and item attempt, in SQLite under ``.plait/``.

The recorder is an event subscriber like the progress display. Its handler
only appends the event to a deque (well under a microsecond); a writer thread
turns events into rows and commits them every ``FLUSH_S`` seconds in one
transaction, with the database in WAL mode. So a 100k-item batch pays little
for being recorded, and a run that is interrupted, or killed outright, leaves
a record that is true up to the last flush.

The schema changes only through ``MIGRATIONS``: step *n* takes a database from
``PRAGMA user_version`` *n-1* to *n*. Never edit a step that has shipped; add one.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plait.errors import UsageError
from plait.runtime.redact import Redactor

if TYPE_CHECKING:
    import sqlite3

    from plait.runtime.compile import CompiledWorkflow
    from plait.runtime.engine import RunResult
    from plait.runtime.events import Event, EventBus

FLUSH_S = 0.5
# Events waiting for the writer, at most. A run that outpaces the writer (a
# million trivial items) then writes a flush itself instead of growing memory
# without bound: the record costs that run time, never memory.
MAX_BACKLOG = 50_000
PREVIEW_CHARS = 160
DB_NAME = "runs.db"

MIGRATIONS: list[str] = [
    # 1: runs, nodes, item attempts
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL UNIQUE,
        workflow TEXT,
        workflow_path TEXT,
        inputs TEXT,
        status TEXT NOT NULL,
        started REAL NOT NULL,
        ended REAL,
        duration_ms REAL,
        error TEXT,
        items_ok INTEGER NOT NULL DEFAULT 0,
        items_failed INTEGER NOT NULL DEFAULT 0,
        pid INTEGER,
        cwd TEXT,
        plait_version TEXT
    );
    CREATE INDEX runs_started ON runs(started);
    CREATE TABLE nodes (
        run INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        node_id TEXT NOT NULL,
        position INTEGER,
        type TEXT,
        params TEXT,
        batch TEXT,
        status TEXT NOT NULL,
        visits INTEGER NOT NULL DEFAULT 0,
        started REAL,
        ended REAL,
        duration_ms REAL,
        error TEXT,
        error_index INTEGER,
        items_total INTEGER,
        items_ok INTEGER NOT NULL DEFAULT 0,
        items_failed INTEGER NOT NULL DEFAULT 0,
        retries INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (run, node_id)
    );
    CREATE TABLE items (
        run INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        node_id TEXT NOT NULL,
        idx INTEGER,
        attempt INTEGER NOT NULL,
        slot INTEGER,
        status TEXT NOT NULL,
        started REAL,
        ended REAL,
        error TEXT
    );
    CREATE INDEX items_run ON items(run);
    """,
    # 2: token usage per run, node and item; a preview of each batch item
    """
    ALTER TABLE runs ADD COLUMN llm_calls INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN input_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN output_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE nodes ADD COLUMN llm_calls INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE nodes ADD COLUMN input_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE nodes ADD COLUMN output_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE items ADD COLUMN input_tokens INTEGER;
    ALTER TABLE items ADD COLUMN output_tokens INTEGER;
    CREATE TABLE item_previews (
        run INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        node_id TEXT NOT NULL,
        previews TEXT NOT NULL,  -- a JSON list: the preview of item i at position i
        PRIMARY KEY (run, node_id)
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def records_dir() -> Path:
    """``$PLAIT_HOME`` or ``.plait`` in the working directory."""
    home = os.environ.get("PLAIT_HOME")
    return Path(home) if home else Path.cwd() / ".plait"


def db_path() -> Path:
    return records_dir() / DB_NAME


def connect(path: Path | None = None, *, create: bool = True) -> sqlite3.Connection | None:
    """Open (and migrate) the records database; None when it does not exist and
    ``create`` is false."""
    import sqlite3

    path = path or db_path()
    if not path.exists():
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        ignore = path.parent / ".gitignore"
        if path.parent.name == ".plait" and not ignore.exists():
            ignore.write_text("# run records of plait, local to this machine\n*\n")
    conn = sqlite3.connect(str(path), timeout=10.0, check_same_thread=False, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA foreign_keys = ON")
    migrate(conn)
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database to SCHEMA_VERSION; return the version it had."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise UsageError(
            f"the run records were written by a newer plait (schema {version}, this plait knows "
            f"{SCHEMA_VERSION})",
            hint="upgrade plait, or point PLAIT_HOME at another folder",
        )
    if version < SCHEMA_VERSION:
        # One writer migrates; a second process waits on the lock, then sees the new version.
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for number in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _statements(MIGRATIONS[number - 1]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return int(version)


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


# --------------------------------------------------------------------------- writing


class RunRecorder:
    """Records one run as it goes. Subscribe it, run, then ``close(result)``."""

    def __init__(
        self,
        compiled: CompiledWorkflow,
        inputs: dict[str, Any],
        *,
        workflow: str,
        path: Path | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        from plait import __version__

        self.redactor = redactor or Redactor()
        self.started = time.time()
        conn = connect(path)
        assert conn is not None
        self._conn = conn
        safe_inputs = self.redactor.value(inputs)
        for attempt in range(5):
            self.run_id = secrets.token_hex(4)
            try:
                cur = conn.execute(
                    "INSERT INTO runs (run_id, workflow, workflow_path, inputs, status, started, pid,"
                    " cwd, plait_version) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?)",
                    (
                        self.run_id,
                        workflow,
                        str(Path(compiled.file).resolve()) if compiled.file else None,
                        _dumps(safe_inputs),
                        self.started,
                        os.getpid(),
                        os.getcwd(),
                        __version__,
                    ),
                )
                break
            except Exception as exc:  # an id taken by another run: draw again
                if "UNIQUE" not in str(exc) or attempt == 4:
                    raise
        assert cur.lastrowid is not None
        self._run: int = cur.lastrowid
        conn.execute("BEGIN")
        for spec in compiled.workflow.nodes:
            batch = None
            if spec.batch is not None:
                b = spec.batch
                items = b.items if isinstance(b.items, str) else f"<inline list of {len(b.items)}>"
                batch = {
                    "items": items,
                    "as": b.alias,
                    "parallel": b.parallel,
                    "max_concurrent": b.max_concurrent,
                    "error_handling": b.error_handling,
                    "max_retries": b.max_retries,
                }
            conn.execute(
                "INSERT INTO nodes (run, node_id, position, type, params, batch, status)"
                " VALUES (?, ?, ?, ?, ?, ?, 'pending')",
                (
                    self._run,
                    spec.id,
                    spec.position,
                    spec.type,
                    _dumps(self.redactor.value(spec.params)),
                    _dumps(batch) if batch else None,
                ),
            )
        conn.execute("COMMIT")

        self._events: deque[Event] = deque()
        self._nodes: dict[str, _NodeState] = {}
        self._inflight: dict[tuple[str | None, int | None, int | None], tuple[float, int | None]] = {}
        self._tokens: dict[tuple[str, int | None], list[int]] = {}
        self._items_ok = 0
        self._items_failed = 0
        self.error: str | None = None  # why recording stopped, if it did
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="plait-records", daemon=True)
        self._thread.start()

    def attach(self, bus: EventBus) -> None:
        bus.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        # The per-event cost on the runtime's side: one append and a length check.
        events = self._events
        events.append(event)
        if len(events) > MAX_BACKLOG:
            self._flush()

    # -- the writer thread

    def _loop(self) -> None:
        while not self._stop.wait(FLUSH_S):
            self._flush()
        self._flush()

    def _flush(self) -> None:
        with self._flush_lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self.error is not None:
            self._events.clear()
            return
        events = self._events
        n = len(events)
        if not n:
            return
        pop = events.popleft
        try:
            rows = self._rows([pop() for _ in range(n)])
            self._write(rows)
        except Exception as exc:  # a full disk must not take the run down with it
            self.error = f"{type(exc).__name__}: {exc}"

    def _rows(self, batch: list[Event]) -> list[tuple[Any, ...]]:
        run = self._run
        rows: list[tuple[Any, ...]] = []
        add = rows.append
        inflight = self._inflight
        tokens = self._tokens
        text = self.redactor.text
        for ev in batch:
            kind = ev.kind
            if kind == "item_started":
                inflight[(ev.node_id, ev.index, ev.attempt)] = (ev.time, ev.slot)
                continue
            if kind == "item_finished" or kind == "item_failed" or kind == "item_retried":
                node_id = ev.node_id or ""
                idx = ev.index
                inflight.pop((node_id, idx, ev.attempt), None)
                started = ev.time - (ev.duration_ms or 0.0) / 1000.0
                used = tokens.pop((node_id, idx), None) if tokens else None
                node = self._node(node_id)
                if kind == "item_finished":
                    status, error = "success", None
                    node.ok += 1
                    if idx is not None and "/" not in node_id:
                        self._items_ok += 1
                elif kind == "item_failed":
                    status, error = "failed", text(ev.error or "")
                    node.failed += 1
                    if idx is not None and "/" not in node_id:
                        self._items_failed += 1
                else:
                    status, error = "retried", text(ev.error or "")
                    node.retries += 1
                add(
                    (
                        run,
                        node_id,
                        idx,
                        ev.attempt,
                        ev.slot,
                        status,
                        started,
                        ev.time,
                        error,
                        used[1] if used else None,
                        used[2] if used else None,
                    )
                )
                continue
            if kind == "llm_call":
                self._llm_call(ev)
            elif kind == "node_started":
                node = self._node(ev.node_id or "")
                node.status = "running"
                node.visits += 1
                if node.started is None:
                    node.started = ev.time
            elif kind == "batch_started":
                node = self._node(ev.node_id or "")
                node.total = (ev.data or {}).get("total")
            elif kind == "node_finished":
                node = self._node(ev.node_id or "")
                node.status = ev.status or "success"
                if node.status == "failed" and ev.error == "interrupted":
                    node.status = "interrupted"
                node.ended = ev.time
                node.duration_ms = ev.duration_ms
                node.error = text(ev.error) if ev.error else None
                node.error_index = ev.index
                counts = ev.data or {}
                if counts.get("count") is not None:
                    node.total = counts["count"]
        return rows

    def _node(self, node_id: str) -> _NodeState:
        node = self._nodes.get(node_id)
        if node is None:
            node = self._nodes[node_id] = _NodeState(node_id)
        node.dirty = True
        return node

    def _llm_call(self, ev: Event) -> None:
        data = ev.data or {}
        inp, outp = int(data.get("input_tokens") or 0), int(data.get("output_tokens") or 0)
        node_id = ev.node_id or ""
        # Tokens count towards the item that made the call and towards the
        # top-level item (and node) it ran under, when it ran in a sub-workflow.
        keys = [(node_id, ev.index)]
        if "/" in node_id:
            top = node_id.split("/", 1)[0]
            name, _, rest = top.partition("[")
            keys.append((name, int(rest[:-1]) if rest.endswith("]") else None))
        for key in keys:
            row = self._tokens.setdefault(key, [0, 0, 0])
            row[0] += 1
            row[1] += inp
            row[2] += outp
            node = self._node(key[0])
            node.llm[0] += 1
            node.llm[1] += inp
            node.llm[2] += outp

    def _write_node(self, node: _NodeState) -> None:
        self._conn.execute(_UPSERT_NODE, node.row(self._run))

    def _write(self, rows: list[tuple[Any, ...]]) -> None:
        conn = self._conn
        conn.execute("BEGIN")
        try:
            if rows:
                conn.executemany(_INSERT_ITEM, rows)
            for node in self._nodes.values():
                if node.dirty:
                    node.dirty = False
                    conn.execute(_UPSERT_NODE, node.row(self._run))
            conn.execute(
                "UPDATE runs SET items_ok = ?, items_failed = ? WHERE id = ?",
                (self._items_ok, self._items_failed, self._run),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # -- the end

    def close(self, result: RunResult | None = None, *, status: str | None = None) -> None:
        """Drain the writer and write the run's outcome. Without a result (the
        run raised), ``status`` says what happened: interrupted or failed."""
        self._stop.set()
        self._thread.join()
        ended = time.time()
        if self.error is not None:
            self._conn.close()
            return
        rows = []
        for (node_id, idx, attempt), (started, slot) in self._inflight.items():
            rows.append(
                (self._run, node_id, idx, attempt, slot, "interrupted", started, ended, None, None, None)
            )
        self._inflight.clear()
        for node in self._nodes.values():
            if node.status == "running":
                node.status = "interrupted"
                node.ended = ended
                node.dirty = True
        try:
            self._write(rows)
            if result is not None:
                for entry in result.errors:
                    stopped = self._nodes.get(str(entry.get("node_id")))
                    if entry.get("message") == "interrupted" and stopped is not None:
                        stopped.status = "interrupted"
                        self._write_node(stopped)
                final = result.status
                first = result.errors[0] if result.errors else None
                error = None
                if first:
                    error = str(first.get("message"))
                    if first.get("node_id") and error != "interrupted":
                        error = f"node '{first['node_id']}' failed: {error}"
                    error = self.redactor.text(error)
                usage = result.llm_usage
                duration_ms = result.duration_ms
            else:
                final = status or "failed"
                error = "interrupted" if final == "interrupted" else "the run stopped on an internal error"
                usage = {}
                duration_ms = (ended - self.started) * 1000.0
            self._conn.execute(
                "UPDATE runs SET status = ?, ended = ?, duration_ms = ?, error = ?, llm_calls = ?,"
                " input_tokens = ?, output_tokens = ? WHERE id = ?",
                (
                    final,
                    ended,
                    duration_ms,
                    error,
                    usage.get("calls", 0),
                    usage.get("input_tokens", 0),
                    usage.get("output_tokens", 0),
                    self._run,
                ),
            )
            if result is not None:
                self._write_previews(result.values)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._conn.close()

    def _write_previews(self, values: dict[str, Any]) -> None:
        # One JSON list per batch node: a row per item would cost more than
        # the rest of the record at 100k items.
        text = self.redactor.text
        for node_id, node in self._nodes.items():
            out = values.get(node_id) if "/" not in node_id else None
            if node.total is None or not isinstance(out, dict):
                continue
            shown: list[str | None] = [None] * node.total
            for result in out.get("results") or ():
                if isinstance(result, dict) and isinstance(result.get("index"), int):
                    item = result.get("item")
                    line = preview(item)
                    if item is not None and not isinstance(item, bool | int | float):
                        line = text(line)
                    if 0 <= result["index"] < len(shown):
                        shown[result["index"]] = line
            self._conn.execute(
                "INSERT OR REPLACE INTO item_previews VALUES (?, ?, ?)",
                (self._run, node_id, json.dumps(shown, ensure_ascii=False)),
            )


class _NodeState:
    __slots__ = (
        "dirty",
        "duration_ms",
        "ended",
        "error",
        "error_index",
        "failed",
        "llm",
        "node_id",
        "ok",
        "retries",
        "started",
        "status",
        "total",
        "visits",
    )

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.status = "pending"
        self.visits = 0
        self.started: float | None = None
        self.ended: float | None = None
        self.duration_ms: float | None = None
        self.error: str | None = None
        self.error_index: int | None = None
        self.total: int | None = None
        self.ok = 0
        self.failed = 0
        self.retries = 0
        self.llm = [0, 0, 0]
        self.dirty = True

    def row(self, run: int) -> tuple[Any, ...]:
        return (
            run,
            self.node_id,
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
        )


_INSERT_ITEM = (
    "INSERT INTO items (run, node_id, idx, attempt, slot, status, started, ended, error,"
    " input_tokens, output_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_NODE_COLUMNS = (
    "status, visits, started, ended, duration_ms, error, error_index, items_total, items_ok,"
    " items_failed, retries, llm_calls, input_tokens, output_tokens"
)
_UPSERT_NODE = (
    f"INSERT INTO nodes (run, node_id, {_NODE_COLUMNS}) VALUES ({', '.join('?' * 16)})"
    f" ON CONFLICT (run, node_id) DO UPDATE SET "
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


# --------------------------------------------------------------------------- reading


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _row_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {k: row[k] for k in row.keys()}  # noqa: SIM118 - sqlite3.Row is not a mapping


def _run_dict(row: sqlite3.Row) -> dict[str, Any]:
    run = _row_dict(row)
    # A run still marked running whose process is gone was killed (SIGKILL,
    # power cut): its record is true up to the last flush.
    if run["status"] == "running" and run.get("pid") != os.getpid() and not _pid_alive(run["pid"]):
        run["status"] = "died"
    run["inputs"] = json.loads(run["inputs"]) if run.get("inputs") else {}
    return run


class Records:
    """Read access for ``plait runs``, ``plait show`` and ``plait timeline``."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @classmethod
    def open(cls) -> Records:
        conn = connect(create=False)
        if conn is None:
            raise UsageError(
                f"no runs recorded yet in {records_dir()}",
                hint="runs are recorded in .plait/ of the folder plait runs in (or $PLAIT_HOME)",
            )
        return cls(conn)

    def close(self) -> None:
        self.conn.close()

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM runs ORDER BY started DESC, id DESC LIMIT ?", (limit,))
        return [_run_dict(r) for r in rows]

    def resolve(self, ref: str) -> dict[str, Any]:
        """A run by id, unique id prefix, ``last`` (or ``last~N``, N runs before it)."""
        if ref == "last" or ref.startswith("last~"):
            back = int(ref[5:] or 0) if ref != "last" and ref[5:].isdigit() else 0
            row = self.conn.execute(
                "SELECT * FROM runs ORDER BY started DESC, id DESC LIMIT 1 OFFSET ?", (back,)
            ).fetchone()
            if row is None:
                raise UsageError("no runs recorded yet", hint="run a workflow first: plait run FILE")
            return _run_dict(row)
        rows = self.conn.execute(
            "SELECT * FROM runs WHERE run_id LIKE ? ORDER BY started DESC LIMIT 6",
            (ref.lower().replace("%", "").replace("_", "") + "%",),
        ).fetchall()
        if not rows:
            raise UsageError(f"no run with id '{ref}'", hint="`plait runs` lists recent runs")
        if len(rows) > 1:
            ids = ", ".join(r["run_id"] for r in rows[:5])
            raise UsageError(f"'{ref}' matches several runs: {ids}", hint="give more of the id")
        return _run_dict(rows[0])

    def nodes(self, run: dict[str, Any]) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT * FROM nodes WHERE run = ? ORDER BY position IS NULL, position, started",
            (run["id"],),
        )
        out = []
        for r in rows:
            node = _row_dict(r)
            node["params"] = json.loads(node["params"]) if node.get("params") else {}
            node["batch"] = json.loads(node["batch"]) if node.get("batch") else None
            out.append(node)
        return out

    def items(
        self, run: dict[str, Any], *, status: str | None = None, top_level: bool = True
    ) -> Iterable[sqlite3.Row]:
        sql = "SELECT * FROM items WHERE run = ?"
        args: list[Any] = [run["id"]]
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        if top_level:
            sql += " AND node_id NOT LIKE '%/%'"
        return self.conn.execute(sql + " ORDER BY started, rowid", args)

    def failed_items(self, run: dict[str, Any]) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT node_id, idx, attempt, error, started, ended FROM items"
            " WHERE run = ? AND status = 'failed' AND idx IS NOT NULL AND node_id NOT LIKE '%/%'"
            " ORDER BY node_id, idx",
            (run["id"],),
        )
        failed = [_row_dict(r) for r in rows]
        if failed:
            previews = self.previews(run)
            for item in failed:
                item["preview"] = previews.get((item["node_id"], item["idx"]))
        return failed

    def previews(self, run: dict[str, Any]) -> dict[tuple[str, int], str]:
        out: dict[tuple[str, int], str] = {}
        rows = self.conn.execute("SELECT node_id, previews FROM item_previews WHERE run = ?", (run["id"],))
        for node_id, text in rows:
            for idx, shown in enumerate(json.loads(text)):
                if shown is not None:
                    out[(node_id, idx)] = shown
        return out
