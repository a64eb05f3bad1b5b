"""plait: a workflow engine whose headline is batch processing.

``plait.run(workflow, inputs=...)`` and ``plait.validate(workflow)`` are the
Python API (see :mod:`plait.api`). They are imported on first use, so
``import plait`` (and ``plait --version``) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from plait.api import RunResult, Validation, run, validate

__all__ = ["RunResult", "Validation", "__version__", "run", "validate"]


def __getattr__(name: str) -> Any:
    if name in ("run", "validate", "RunResult", "Validation"):
        from plait import api

        return getattr(api, name)
    raise AttributeError(f"module 'plait' has no attribute {name!r}")
