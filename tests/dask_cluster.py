"""Dask clusters for the tests: a thread cluster shared by the session, and the
environment variable that points plait at a scheduler."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

_shared: Any = None


def shared_threads() -> Any:
    """Two in-process workers of two threads each (fast to start), made on first use."""
    global _shared
    if _shared is None:
        from distributed import LocalCluster

        _shared = LocalCluster(
            n_workers=2,
            threads_per_worker=2,
            processes=False,
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.ERROR,
        )
    return _shared


def close_shared() -> None:
    global _shared
    cluster, _shared = _shared, None
    if cluster is not None:
        cluster.close()


@contextlib.contextmanager
def scheduler(address: str) -> Iterator[str]:
    """``PLAIT_DASK_SCHEDULER`` set to ``address`` for the block."""
    before = os.environ.get("PLAIT_DASK_SCHEDULER")
    os.environ["PLAIT_DASK_SCHEDULER"] = address
    try:
        yield address
    finally:
        if before is None:
            os.environ.pop("PLAIT_DASK_SCHEDULER", None)
        else:
            os.environ["PLAIT_DASK_SCHEDULER"] = before


def plait_tasks(client: Any) -> dict[str, str]:
    """plait's chunk tasks that the scheduler holds, with their states."""

    def states(dask_scheduler: Any) -> dict[str, str]:
        return {str(k): ts.state for k, ts in dask_scheduler.tasks.items() if str(k).startswith("plait-chunk-")}

    result: dict[str, str] = client.run_on_scheduler(states)
    return result
