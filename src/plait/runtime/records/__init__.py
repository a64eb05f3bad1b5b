"""Run records: every run, node and item attempt, in SQLite.

* :mod:`.schema` — where the database lives, its migrations, opening it
* :mod:`.writer` — :class:`RunRecorder`, the event subscriber that writes a run
* :mod:`.queries` — :class:`Records`, what the CLI reads

The names below are imported on first use: a run imports the writer only, and
``plait runs`` the queries only.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {
    "MIGRATIONS": "schema",
    "SCHEMA_VERSION": "schema",
    "connect": "schema",
    "db_path": "schema",
    "migrate": "schema",
    "records_dir": "schema",
    "FLUSH_S": "writer",
    "RunRecorder": "writer",
    "preview": "writer",
    "Records": "queries",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'plait.runtime.records' has no attribute {name!r}")
    return getattr(import_module(f"plait.runtime.records.{module}"), name)
