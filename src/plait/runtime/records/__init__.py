"""Run records: every run, node and item attempt, in SQLite.

* :mod:`.schema` — where the database lives, its migrations, opening it
* :mod:`.writer` — :class:`RunRecorder`, the event subscriber that writes a run
* :mod:`.queries` — :class:`Records`, what the CLI reads
"""

from plait.runtime.records.queries import Records
from plait.runtime.records.schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    connect,
    db_path,
    migrate,
    records_dir,
)
from plait.runtime.records.writer import FLUSH_S, RunRecorder, preview

__all__ = [
    "FLUSH_S",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Records",
    "RunRecorder",
    "connect",
    "db_path",
    "migrate",
    "preview",
    "records_dir",
]
