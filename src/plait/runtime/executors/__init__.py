"""Executors: the seam between batch semantics and where attempts actually run.

An executor takes attempts (``submit``) and hands back their outcomes
(``next_outcome``), nothing more. Ordering, retries, the error policy and the
limits live above, in :mod:`plait.runtime.driver`, once for every executor —
the way httpx keeps its transports behind one small interface.

Executors are chosen by name: ``sequential``, ``threads`` and ``async`` are built in;
others come from the ``plait.executors`` entry-point group (the value is a
factory ``factory(slots, job_name) -> Executor``). A batch's ``executor`` field,
the command line's ``--executor`` and the workflow's ``executor`` field choose
one, in that order; ``auto`` (the default) is ``async`` for a parallel batch
of a node type with ``exec_async``, ``threads`` for other parallel batches, and
``sequential`` otherwise. Every executor passes the same conformance
suite (tests/test_executor_conformance.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from plait.errors import UsageError, did_you_mean
from plait.runtime.items import Attempt, Outcome

if TYPE_CHECKING:
    from plait.runtime.compile import CompiledNode, CompiledWorkflow
    from plait.runtime.services import RunServices
    from plait.templates import Base

ENTRY_POINT_GROUP = "plait.executors"
AUTO = "auto"


@dataclass
class Job:
    """What an executor runs attempts of: one batch (or one node) of one run.

    ``run(attempt, slot)`` is the per-item path in this process; an executor
    that runs attempts elsewhere uses ``node``, ``base`` and ``services`` to set
    the same work up there.
    """

    node: CompiledNode
    base: Base
    services: RunServices
    run: Callable[[Attempt, int], Outcome]
    workflow: CompiledWorkflow | None = None  # the workflow the node belongs to

    @property
    def name(self) -> str:
        return self.node.id


class Executor(Protocol):
    #: how many attempts run at once; the driver keeps a small multiple of this in flight
    slots: int

    def start(self, job: Job) -> None:
        """Called once, before the first submit."""
        ...

    def submit(self, attempt: Attempt) -> None: ...

    def next_outcome(self, timeout: float | None = None) -> Outcome | None:
        """The next finished attempt's outcome (``cancelled`` for a dropped one), or None on timeout."""
        ...

    def cancel_pending(self) -> None:
        """Drop attempts that have not started; each still yields an outcome with ``cancelled``."""
        ...

    def close(self) -> None:
        """Release what the executor holds; attempts still running are abandoned."""
        ...


ExecutorFactory = Callable[[int, str], Executor]


def _sequential(slots: int, name: str) -> Executor:
    from plait.runtime.executors.local import SequentialExecutor

    return SequentialExecutor()


def _threads(slots: int, name: str) -> Executor:
    from plait.runtime.executors.local import ThreadExecutor

    return ThreadExecutor(slots, name=name)


def _async(slots: int, name: str) -> Executor:
    from plait.runtime.executors.aio import AsyncExecutor

    return AsyncExecutor(slots, name=name)


BUILTIN: dict[str, ExecutorFactory] = {"sequential": _sequential, "threads": _threads, "async": _async}
_entry_points: dict[str, Any] | None = None


def _plugins() -> dict[str, Any]:
    global _entry_points
    if _entry_points is None:
        from importlib.metadata import entry_points

        _entry_points = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in BUILTIN}
    return _entry_points


def executor_names() -> list[str]:
    return [AUTO, *BUILTIN, *sorted(_plugins())]


def check_executor_name(name: str) -> str | None:
    """A problem message for an unknown executor name, or None."""
    if name == AUTO or name in BUILTIN or name in _plugins():
        return None
    names = executor_names()
    hint = did_you_mean(name, names)
    return f"unknown executor '{name}'" + (f"; {hint}" if hint else f" (known: {', '.join(names)})")


def choose(name: str | None, *, parallel: bool, slots: int, async_capable: bool) -> tuple[str, int]:
    """The executor ``auto`` (or None) stands for, and the slots it gets."""
    if not parallel or slots < 1:
        slots = 1
    if name in (None, AUTO):
        name = ("async" if async_capable else "threads") if slots > 1 else "sequential"
    return name, slots


def exec_paths(workflow: CompiledWorkflow, run_choice: str | None) -> dict[type[Any], set[str]]:
    """For each node type of ``workflow``: whether its nodes will run ``exec``
    (``"sync"``), ``exec_async`` (``"async"``) or both, by the choice
    :func:`make_executor` will make (the batch's own executor, then the run's,
    then the workflow's). Node types warm up only the path they will use."""
    paths: dict[type[Any], set[str]] = {}
    default = run_choice if run_choice not in (None, AUTO) else workflow.workflow.executor
    for cn in workflow.nodes.values():
        cls = cn.cls
        path = "sync"
        if cn.batch is not None and cls.has_async_exec():
            name = cn.executor if cn.executor != AUTO else default
            if choose(name, parallel=cn.batch.parallel, slots=cn.batch.max_concurrent, async_capable=True)[0] == "async":
                path = "async"
        paths.setdefault(cls, set()).add(path)
    return paths


def make_executor(
    name: str | None, *, parallel: bool, slots: int, job_name: str = "plait", async_capable: bool = False
) -> Executor:
    """The executor called ``name``. ``auto`` (or None): for a parallel batch,
    ``async`` when the node type has ``exec_async`` and ``threads`` otherwise;
    ``sequential`` for the rest."""
    name, slots = choose(name, parallel=parallel, slots=slots, async_capable=async_capable)
    factory = BUILTIN.get(name)
    if factory is None:
        ep = _plugins().get(name)
        if ep is None:
            raise UsageError(check_executor_name(name) or name, hint="see `plait run --help` for --executor")
        try:
            factory = ep.load()
        except Exception as exc:
            raise UsageError(
                f"executor '{name}' could not be loaded from {ep.value}: {type(exc).__name__}: {exc}",
                hint="check the package that provides it (`pip show` it)",
            )
    assert factory is not None
    return factory(slots, job_name)


__all__ = [
    "AUTO",
    "Attempt",
    "Executor",
    "Job",
    "Outcome",
    "check_executor_name",
    "choose",
    "exec_paths",
    "executor_names",
    "make_executor",
]
