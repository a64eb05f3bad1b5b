"""The item cache: a successful item's outputs, kept across runs and workflows.

A node caches when its ``cache`` field says so (``true`` or ``{"ttl": "7d"}``),
or its type does by default (``llm``), unless the run says ``--no-cache``;
``--cache`` turns it on for every node, ``--refresh-cache`` answers nothing
from the cache but stores what runs. An entry's key is the node type, the
type's cache version and the item's exact resolved params in canonical JSON
(runtime/keys.py; secrets enter only as hashes). Only successes are stored,
with the usage they cost, so a hit reports the tokens and dollars it saved.
Items whose params have no canonical form are not cached (and counted), nor
are outputs that hold secret-looking values.

Identical keys within one batch share one execution: the first runs, the
others wait for its outcome.

The cache is ``cache.db`` (SQLite, WAL) in plait's home; large outputs sit in
``cache-blobs/`` beside it, named by their hash. ``plait cache stats|prune|clear``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plait.errors import UsageError
from plait.ir.values import parse_duration
from plait.runtime import blobs
from plait.runtime.items import Attempt, Outcome
from plait.runtime.jsontext import loads_stored

if TYPE_CHECKING:
    from plait.runtime.compile import CompiledNode

DB_NAME = "cache.db"
BLOB_CHARS = 64 * 1024
HIT_BATCH = 1000
#: rows a reader reads ahead at once: the first time, and at most (it doubles while they are used)
AHEAD_FIRST = 32
AHEAD_MOST = 1024
AHEAD_BYTES = 1 << 20  # and at most this much outputs text at once
#: rows read ahead are answered for this long; later they are read again (another
#: process may have stored or dropped entries meanwhile)
AHEAD_S = 1.0
_COLUMNS = "outputs, outputs_ref, usage, expires, rowid"
_SELECT_KEY = f"SELECT {_COLUMNS} FROM entries WHERE key = ?"
#: the rows after a rowid, each with the time they were read (the guard of its hit count)
_SELECT_AFTER = f"SELECT key, {_COLUMNS}, ?3 FROM entries WHERE rowid > ?1 ORDER BY rowid LIMIT ?2"
#: the hits of a stretch of entries read ahead at once, one each, unless an entry
#: there was stored again since (it is another entry then, as for the rowid and key below)
_HIT_STRETCH = "UPDATE entries SET hits = hits + 1, last_hit = ? WHERE rowid BETWEEN ? AND ? AND created <= ?"
RUN_S = 1.0  # hits of a stretch share their last hit time: a stretch spans at most this
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    node_type TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL,
    outputs TEXT,
    outputs_ref TEXT,
    usage TEXT,
    size INTEGER NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0,
    last_hit REAL
);
CREATE INDEX IF NOT EXISTS entries_expires ON entries(expires);
"""
@dataclass
class CacheStats:
    """What the cache did for one batch."""

    hits: int = 0
    stored: int = 0
    shared: int = 0  # items that waited for an identical one in flight
    not_cacheable: int = 0
    saved: dict[str, float] = field(default_factory=lambda: {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0})

    def metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cache_hits": self.hits, "cache_stored": self.stored}
        if self.shared:
            out["cache_shared"] = self.shared
        if self.not_cacheable:
            out["cache_not_cacheable"] = self.not_cacheable
        saved = {k: (round(v, 6) if k == "cost_usd" else int(v)) for k, v in self.saved.items() if v}
        if saved:
            out["cache_saved"] = saved
        return out


class CacheUnreadable(UsageError):
    """The cache file is not a database, or a damaged one: no command can use it as it is."""

    def __init__(self, path: Path, exc: Exception) -> None:
        super().__init__(
            f"the item cache in {path} cannot be read: {exc}",
            hint=f"move the file aside (mv {path} {path}.damaged): plait then starts a new cache there",
        )


class ItemCache:
    """The cache database, for one process (thread-safe)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        path = home / DB_NAME
        self._conn = sqlite3.connect(str(path), timeout=10.0, check_same_thread=False, isolation_level=None)
        try:
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            # Keys are hashes, so a batch of hits reads pages all over the key index:
            # kept in SQLite's cache (and mapped, not read) they are read once, not per item.
            self._conn.execute("PRAGMA cache_size = -16384")
            self._conn.execute("PRAGMA mmap_size = 134217728")
            self._conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            if isinstance(exc, sqlite3.OperationalError):  # locked, read-only, a full disk: it may pass
                raise
            raise CacheUnreadable(path, exc) from None
        self._lock = threading.Lock()
        self._hits: dict[tuple[int, str], tuple[int, float]] = {}  # (rowid, key) -> (hits not yet written, last hit)
        #: hits of entries read ahead, a stretch of consecutive rowids at a time:
        #: [first rowid, last rowid, when they were read, last hit]
        self._stretches: list[list[float]] = []
        self._pending = 0  # hits not yet written

    def close(self) -> None:
        with self._lock:
            self._write_hits()
            self._conn.close()

    def flush(self) -> None:
        """Write the hit counts kept in memory (at the end of a run)."""
        with self._lock:
            self._write_hits()

    def _write_hits(self) -> None:
        # A hit is counted in memory and written with the next write: one
        # transaction per HIT_BATCH hits, not a commit per item.
        if not self._pending:
            return
        hits, self._hits = self._hits, {}
        stretches, self._stretches = self._stretches, []
        self._pending = 0
        try:
            self._conn.execute("BEGIN")
            if hits:
                # by rowid: one B-tree look-up a hit, not two (the key index, then the row)
                self._conn.executemany(
                    "UPDATE entries SET hits = hits + ?, last_hit = ? WHERE rowid = ? AND key = ?",
                    [(n, last, rowid, key) for (rowid, key), (n, last) in hits.items()],
                )
            if stretches:  # a statement a stretch, not a row
                self._conn.executemany(_HIT_STRETCH, [(last, a, b, read) for a, b, read, last in stretches])
            self._conn.execute("COMMIT")
        except sqlite3.Error:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            # hit counts only inform `plait cache stats`; losing them loses no result

    def get(self, key: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The outputs and usage stored under ``key``, or None (absent, expired, unreadable)."""
        now = time.time()
        with self._lock:
            row = self._conn.execute(_SELECT_KEY, (key,)).fetchone()
            if row is None or not self._counted(key, row, now):
                return None
        return self._decoded(row)

    def reader(self) -> CacheReader:
        """Lookups for one batch, reading ahead while its keys come in the order they were stored."""
        return CacheReader(self)

    def _counted(self, key: str, row: tuple[Any, ...], now: float) -> bool:
        """Under the lock: False for an expired entry (dropped), else its hit is counted."""
        if row[3] is not None and row[3] < now:
            # the guard keeps an entry another process stored again meanwhile
            self._conn.execute("DELETE FROM entries WHERE key = ? AND expires < ?", (key, now))
            return False
        rowid = row[4]
        stretches = self._stretches
        if len(row) > 5:  # read ahead, at row[5]
            last = stretches[-1] if stretches else None
            if last is not None and last[1] + 1 == rowid and last[2] == row[5] and now - last[3] < RUN_S:
                last[1] = rowid
                last[3] = now
            else:
                stretches.append([rowid, rowid, row[5], now])
        else:
            at = (rowid, key)
            seen = self._hits.get(at)
            self._hits[at] = (seen[0] + 1 if seen else 1, now)
        self._pending += 1
        if self._pending >= HIT_BATCH:
            self._write_hits()
        return True

    def _decoded(self, row: tuple[Any, ...]) -> tuple[dict[str, Any], dict[str, Any]] | None:
        text = row[0]
        if text is None and row[1]:
            try:
                text = blobs.load(self.home / "cache-blobs", row[1])
            except OSError:
                return None
        if text is None:
            return None
        try:
            outputs = loads_stored(text)  # put() wrote it compact
        except ValueError:
            return None
        if type(outputs) is not dict:
            return None
        return outputs, json.loads(row[2]) if row[2] else {}

    def put(self, key: str, node_type: str, outputs: dict[str, Any], usage: dict[str, Any], ttl: float | None) -> bool:
        try:
            text = json.dumps(outputs, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError):
            return False
        ref = None
        if len(text) > BLOB_CHARS:
            ref = blobs.store(self.home / "cache-blobs", text)
        now = time.time()
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO entries (key, node_type, created, expires, outputs, outputs_ref, usage, size)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    node_type,
                    now,
                    now + ttl if ttl else None,
                    None if ref else text,
                    ref,
                    json.dumps(usage) if usage else None,
                    len(text),
                ),
            )
        return True

    # -- plait cache stats | prune | clear

    def stats(self) -> dict[str, Any]:
        now = time.time()
        with self._lock:
            self._write_hits()
            total = self._conn.execute(
                "SELECT count(*), coalesce(sum(size), 0), coalesce(sum(hits), 0) FROM entries"
            ).fetchone()
            expired = self._conn.execute(
                "SELECT count(*) FROM entries WHERE expires IS NOT NULL AND expires < ?", (now,)
            ).fetchone()[0]
            by_type = self._conn.execute(
                "SELECT node_type, count(*), coalesce(sum(size), 0), coalesce(sum(hits), 0) FROM entries"
                " GROUP BY node_type ORDER BY node_type"
            ).fetchall()
        return {
            "path": str(self.home / DB_NAME),
            "entries": total[0],
            "bytes": total[1],
            "hits": total[2],
            "expired": expired,
            "by_type": [{"type": t, "entries": n, "bytes": b, "hits": h} for t, n, b, h in by_type],
        }

    def prune(self, older_than: float | None = None) -> int:
        """Drop expired entries (and those older than ``older_than`` seconds); how many went."""
        now = time.time()
        with self._lock:
            self._write_hits()
            cur = self._conn.execute(
                "DELETE FROM entries WHERE (expires IS NOT NULL AND expires < ?) OR (? IS NOT NULL AND created < ?)",
                (now, older_than, now - (older_than or 0)),
            )
            gone = cur.rowcount
        self._sweep_blobs()
        return gone

    def clear(self) -> int:
        with self._lock:
            self._hits.clear()
            self._stretches.clear()
            self._pending = 0
            gone = self._conn.execute("DELETE FROM entries").rowcount
        self._sweep_blobs()
        return gone

    def _sweep_blobs(self) -> None:
        """Blobs no entry names any more (the run records' blobs are their own)."""
        folder = self.home / "cache-blobs"
        if not folder.exists():
            return
        with self._lock:
            kept = {r[0] for r in self._conn.execute("SELECT outputs_ref FROM entries WHERE outputs_ref IS NOT NULL")}
        for path in folder.glob("*/*"):
            if path.name not in kept:
                path.unlink(missing_ok=True)


class CacheReader:
    """One batch's lookups. A batch run again asks for its keys in the order its
    first run stored them, which is the entries' rowid order: once two hits
    are neighbours, the rows after them are read in one range scan (a few
    hundred at a time, as long as they are used), and a key among them is
    answered without a look-up of its own (a row of a range scan costs a
    seventh of one). A key not read ahead is looked up as usual.
    """

    def __init__(self, cache: ItemCache) -> None:
        self.cache = cache
        self._ahead: dict[str, tuple[Any, ...]] = {}  # key -> its row, read ahead
        self._last = -2  # rowid of the last entry looked up by its key
        self._end = 0  # the last rowid read ahead
        self._mark = 0  # a hit at this rowid or past it reads the next rows
        self._window = 0
        self._at = 0.0  # when the rows were read

    def get(self, key: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        cache = self.cache
        now = time.time()
        with cache._lock:
            ahead = self._ahead
            row = ahead.pop(key, None) if ahead else None
            if row is not None and now - self._at > AHEAD_S:
                ahead.clear()
                row = None
            if row is None:
                row = cache._conn.execute(_SELECT_KEY, (key,)).fetchone()
                if row is None:
                    return None
                rowid = row[4]
                if rowid == self._last + 1:  # neighbours: read on from here
                    ahead.clear()
                    self._end, self._window = rowid, AHEAD_FIRST // 2
                    self._read_ahead(rowid, now)
                self._last = rowid
            elif row[4] >= self._mark:
                self._read_ahead(row[4], now)
            if not cache._counted(key, row, now):
                return None
        return cache._decoded(row)

    def _read_ahead(self, rowid: int, now: float) -> None:
        """Under the lock: the next rows after those read ahead so far."""
        window = self._window = min(self._window * 2, AHEAD_MOST)
        ahead = self._ahead
        if len(ahead) > 2 * window:  # rows nobody asked for (other workflows' entries)
            low = rowid - window
            self._ahead = ahead = {k: r for k, r in ahead.items() if r[4] >= low}
        # read now, under the lock: after every entry it can see was stored
        cursor = self.cache._conn.execute(_SELECT_AFTER, (self._end, window, time.time()))
        count = size = 0
        end = self._end
        for got in cursor:
            ahead[got[0]] = got[1:]
            end = got[5]
            count += 1
            if got[1] is not None:
                size += len(got[1])
                if size > AHEAD_BYTES:
                    break
        cursor.close()
        self._end = end
        if count < window and size <= AHEAD_BYTES:  # the last entries: nothing more to read
            self._mark = 1 << 62
        else:
            self._mark = end - count // 2
        self._at = now


_open: dict[str, ItemCache] = {}
_open_lock = threading.Lock()


def open_cache(home: Path) -> ItemCache:
    key = str(home)
    with _open_lock:
        cache = _open.get(key)
        if cache is None:
            cache = _open[key] = ItemCache(home)
        return cache


_NOTHING: tuple[list[Outcome], list[Attempt]] = ([], [])  # never added to: the driver only reads it


class CacheCheck:
    """The cache's part of the driver's "already done?" for one node's batch."""

    keyed = False  # its own key leaves the workflow out: the item key is not needed

    def __init__(self, cache: ItemCache, cn: CompiledNode, *, ttl: float | None, read: bool) -> None:
        self.cache = cache
        self._get = cache.reader().get
        self.cn = cn
        self.ttl = ttl
        self.read = read
        self.stats = CacheStats()
        self._waiting: dict[str, list[Attempt]] = {}  # cache key -> attempts waiting for the one in flight
        self._keys: dict[tuple[int | None, int], str] = {}  # (index, attempt) in flight -> its cache key

    def before(self, attempt: Attempt) -> Outcome | bool | None:
        """An outcome from the cache, True when the attempt now waits for an identical
        one in flight, or None: it runs."""
        assert attempt.params is not None
        key = self.cn.cache_key(attempt.params)
        if key is None:
            self.stats.not_cacheable += 1
            return None
        if self.read:
            hit = self._get(key)
            if hit is not None:
                outputs, usage = hit
                stats = self.stats
                stats.hits += 1
                if usage:
                    saved = stats.saved
                    for name in ("input_tokens", "output_tokens"):
                        saved[name] += float(usage.get(name) or 0)
                    saved["cost_usd"] += float(usage.get("cost_usd") or 0)
                out = Outcome(attempt.index, attempt.item, 1, 0, time.time())
                out.ok = True
                out.cached = True
                out.key = attempt.key
                out.outputs = outputs
                return out
        if key in self._waiting:
            self._waiting[key].append(attempt)
            self.stats.shared += 1
            return True
        self._waiting[key] = []
        self._keys[(attempt.index, attempt.number)] = key
        return None

    def after(self, out: Outcome) -> tuple[list[Outcome], list[Attempt]]:
        """The leader of a key finished: store its success and answer those waiting for
        it; when it failed, they run themselves."""
        if not self._keys:  # no leader in flight (a batch of hits)
            return _NOTHING
        key = self._keys.pop((out.index, out.attempt), None)
        if key is None:
            return [], []
        waiting = self._waiting.pop(key, [])
        if not out.ok or not isinstance(out.outputs, dict):
            return [], waiting
        from plait.runtime.redact import Redactor

        _, masked = Redactor({}).masked(out.outputs)
        usage = {}
        llm_usage = out.outputs.get("llm_usage")
        if isinstance(llm_usage, dict):
            usage = {k: llm_usage.get(k) for k in ("input_tokens", "output_tokens", "cost_usd") if llm_usage.get(k)}
        if not masked and self.cache.put(key, self.cn.node_type, out.outputs, usage, self.ttl):
            self.stats.stored += 1
        shared = []
        for attempt in waiting:
            copy = Outcome(attempt.index, attempt.item, 1, 0, time.time())
            copy.ok = True
            copy.cached = True
            copy.key = attempt.key
            copy.outputs = json.loads(json.dumps(out.outputs, default=str))
            shared.append(copy)
        return shared, []

    def retried(self, out: Outcome) -> None:
        """The leader's attempt failed and is retried: the next attempt leads its key."""
        key = self._keys.pop((out.index, out.attempt), None)
        if key is not None:
            self._keys[(out.index, out.attempt + 1)] = key


__all__ = ["CacheCheck", "CacheReader", "CacheStats", "ItemCache", "open_cache", "parse_duration"]
