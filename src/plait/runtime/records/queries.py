"""Reading the run records: what `plait runs`, `plait show` and `plait timeline` ask.

The CLI reads the records through this module only.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from typing import Any

from plait.errors import UsageError
from plait.runtime.records.schema import connect, db_path, records_dir


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
    # power cut): its record is true up to the last commit, which is also the
    # last moment it is known to have been alive.
    if run["status"] == "running" and run.get("pid") != os.getpid() and not _pid_alive(run["pid"]):
        run["status"] = "died"
        last = run.get("updated") or run["started"]
        run["ended"] = last
        run["duration_ms"] = (last - run["started"]) * 1000.0
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
            back_text = ref[5:] if ref != "last" else "0"
            if not back_text.isdigit() or len(back_text) > 9:
                raise UsageError(
                    f"'{ref}' is not a run: after 'last~' comes how many runs back, such as last~2",
                    hint="`plait runs` lists recent runs",
                )
            back = int(back_text)
            row = self.conn.execute(
                "SELECT * FROM runs ORDER BY started DESC, id DESC LIMIT 1 OFFSET ?", (back,)
            ).fetchone()
            if row is None:
                if back:
                    count = self.conn.execute("SELECT count(*) FROM runs").fetchone()[0]
                    raise UsageError(
                        f"there is no run {back} before the last ({count} recorded)",
                        hint="`plait runs` lists recent runs",
                    )
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
            if node["status"] == "pending":  # what runs recorded before schema 3 called it
                node["status"] = "not_run"
            if run["status"] == "died" and node["status"] == "running":
                node["status"] = "died"  # it was running when its run was killed
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
            "SELECT node_id, idx, attempt, error, started, ended, preview FROM items"
            " WHERE run = ? AND status = 'failed' AND idx IS NOT NULL AND node_id NOT LIKE '%/%'"
            " ORDER BY node_id, idx",
            (run["id"],),
        )
        failed = [_row_dict(r) for r in rows]
        if any(item["preview"] is None for item in failed):
            previews = self._old_previews(run)
            for item in failed:
                if item["preview"] is None:
                    item["preview"] = previews.get((item["node_id"], item["idx"]))
        return failed

    def previews(self, run: dict[str, Any]) -> dict[tuple[str, int], str]:
        """The preview of every finished top-level item, by (node id, index)."""
        out = self._old_previews(run)
        rows = self.conn.execute(
            "SELECT node_id, idx, preview FROM items WHERE run = ? AND preview IS NOT NULL", (run["id"],)
        )
        for node_id, idx, shown in rows:
            out[(node_id, idx)] = shown
        return out

    def _old_previews(self, run: dict[str, Any]) -> dict[tuple[str, int], str]:
        # Runs recorded before schema 3 kept one JSON list of previews per node.
        out: dict[tuple[str, int], str] = {}
        rows = self.conn.execute("SELECT node_id, previews FROM item_previews WHERE run = ?", (run["id"],))
        for node_id, text in rows:
            for idx, shown in enumerate(json.loads(text)):
                if shown is not None:
                    out[(node_id, idx)] = shown
        return out


__all__ = ["Records", "db_path", "records_dir"]
