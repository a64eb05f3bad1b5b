"""Where the run records live, and their schema.

The schema changes only through ``MIGRATIONS``: step *n* takes a database from
``PRAGMA user_version`` *n-1* to *n*. Never edit a step that has shipped; add one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from plait.errors import UsageError

if TYPE_CHECKING:
    import sqlite3

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
    # 3: a preview on each item's final row (written as the run goes, not at its end);
    # the time of the writer's last commit, the last known moment of a run that died
    """
    ALTER TABLE items ADD COLUMN preview TEXT;
    ALTER TABLE runs ADD COLUMN updated REAL;
    ALTER TABLE runs ADD COLUMN record_note TEXT;
    """,
    # 4: durable outcomes for resume: each final row keeps the item's key, its
    # outputs (large ones as content-addressed files in blobs/), the action it
    # took, and the run it was reused from; a run names the one it resumed and
    # the inputs it held secret; nodes keep their fingerprint
    """
    ALTER TABLE items ADD COLUMN key TEXT;
    ALTER TABLE items ADD COLUMN outputs TEXT;
    ALTER TABLE items ADD COLUMN outputs_ref TEXT;
    ALTER TABLE items ADD COLUMN outputs_masked INTEGER;
    ALTER TABLE items ADD COLUMN action TEXT;
    ALTER TABLE items ADD COLUMN reused_from TEXT;
    ALTER TABLE items ADD COLUMN cached INTEGER;
    ALTER TABLE items ADD COLUMN cost_usd REAL;
    ALTER TABLE nodes ADD COLUMN fingerprint TEXT;
    ALTER TABLE runs ADD COLUMN resumed_from TEXT;
    ALTER TABLE runs ADD COLUMN secret_inputs TEXT;
    DROP INDEX items_run;
    CREATE INDEX items_node ON items(run, node_id, idx);
    CREATE INDEX items_key ON items(run, node_id, key, idx) WHERE key IS NOT NULL;
    """,
    # 5: cost per run and node (items had cost_usd already), and the rate-limit
    # retries of a node, counted apart from its retries
    """
    ALTER TABLE runs ADD COLUMN cost_usd REAL;
    ALTER TABLE nodes ADD COLUMN cost_usd REAL;
    ALTER TABLE nodes ADD COLUMN throttled INTEGER NOT NULL DEFAULT 0;
    """,
    # 6: no index on item keys. Keys are hashes, so every commit of a long batch
    # wrote into pages all over that index (51 µs an item at a million items,
    # against 8 at 50,000); a resume matches the rows in index order instead and
    # builds a key index of the one run it resumes, in its temporary store, only
    # when an item does not match (runtime/resume.py)
    """
    DROP INDEX IF EXISTS items_key;
    """,
    # 7: where the batch reading standard input took its items: the absolute path
    # of `--items FILE`, or "-" for piped items, so a resume reads the same file
    """
    ALTER TABLE runs ADD COLUMN items_from TEXT;
    """,
    # 8: per node, how many of its items the item cache answered and how many a
    # resume reused (plait show says so, as the progress line did)
    """
    ALTER TABLE nodes ADD COLUMN items_cached INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE nodes ADD COLUMN items_reused INTEGER NOT NULL DEFAULT 0;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def busy_timeout() -> float:
    """Seconds a write waits for another program's lock: $PLAIT_RECORDS_BUSY_TIMEOUT, else 10."""
    try:
        value = float(os.environ.get("PLAIT_RECORDS_BUSY_TIMEOUT") or 10.0)
    except ValueError:
        return 10.0
    return value if 0 <= value <= 3600 else 10.0


def records_dir() -> Path:
    """plait's home (``$PLAIT_HOME``, else the user's data directory: :mod:`plait.paths`)."""
    from plait.paths import home

    return home()


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
    timeout = busy_timeout()
    conn = sqlite3.connect(str(path), timeout=timeout, check_same_thread=False, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        if isinstance(exc, sqlite3.OperationalError):  # locked, read-only, a full disk: it may pass
            raise
        # not a database, or a damaged one: no command can use it as it is
        raise UsageError(
            f"the run records in {path} cannot be read: {exc}",
            hint=f"move the file aside (mv {path} {path}.damaged): plait then starts new records there",
        ) from None
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
    # Rows and their index grow at the end (there is no index on item keys), so
    # a long batch needs few pages at hand; a bigger cache than SQLite's 2 MB
    # spares the queries of `plait show` re-reading the pages of a large run.
    conn.execute("PRAGMA cache_size = -8192")
    return int(version)


def _statements(script: str) -> list[str]:
    out = []
    for statement in script.split(";"):
        lines = [line.split("--", 1)[0] for line in statement.splitlines()]
        text = "\n".join(lines).strip()
        if text:
            out.append(text)
    return out
