"""The functions bench_dask.py's bare floors map over a cluster (importable on the
workers, so Dask sends them by name, as it does plait's chunk function)."""

from __future__ import annotations

from typing import Any


def noop(x: Any) -> Any:
    return x


def run_code(source: str, n: int) -> object:
    """What a code item does with its source, without plait around it: the
    source run in a namespace of its own, ``n`` its one input."""
    namespace: dict[str, object] = {"n": n}
    exec(source, namespace)
    return namespace.get("result")
