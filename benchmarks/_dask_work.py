"""The functions bench_dask.py's bare floors map over a cluster (importable on the
workers, so Dask sends them by name, as it does plait's chunk function)."""

from __future__ import annotations

from typing import Any


def noop(x: Any) -> Any:
    return x


def burn(n: int) -> int:
    # The same loop as the code node's source in bench_dask.py.
    x = 0
    for i in range(n):
        x += i
    return x
