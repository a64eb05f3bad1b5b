"""The Python API: ``plait.run(...)`` and ``plait.validate(...)``.

    import plait

    check = plait.validate("flow.json")
    if not check.ok:
        for p in check.problems:
            print(p.path, p.message)

    result = plait.run("flow.json", inputs={"folder": "docs"})
    if result.ok:
        print(result.outputs)

A workflow is a path (``.json``, ``.yaml``) or the workflow object itself (a
dict). ``run`` raises :class:`plait.errors.WorkflowInvalid` for a workflow
that cannot run and :class:`plait.errors.UsageError` for inputs that do not
fit; every outcome of the run itself (success, a failed node, an interrupt) is
a :class:`RunResult`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from plait.errors import Problem, WorkflowInvalid
from plait.runtime.engine import NodeResult, RunResult

Workflow = str | os.PathLike[str] | Mapping[str, Any]


@dataclass
class Validation:
    """What ``plait.validate`` found."""

    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    nodes: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _registry(nodes: Iterable[str | os.PathLike[str]]) -> Any:
    from plait.nodes.registry import Registry

    registry = Registry()
    for path in nodes:
        registry.load_path(Path(path))
    return registry


def _compile(workflow: Workflow, registry: Any) -> Any:
    from plait.runtime.compile import compile_raw, load_and_compile

    if isinstance(workflow, Mapping):
        return compile_raw(dict(workflow), registry, file=None)
    return load_and_compile(os.fspath(workflow), registry)


def validate(workflow: Workflow, *, nodes: Iterable[str | os.PathLike[str]] = ()) -> Validation:
    """Check a workflow without running it; every problem is collected."""
    try:
        compiled = _compile(workflow, _registry(nodes))
    except WorkflowInvalid as exc:
        return Validation(problems=list(exc.problems))
    return Validation(warnings=list(compiled.warnings), nodes=len(compiled.nodes))


def run(
    workflow: Workflow,
    inputs: Mapping[str, Any] | None = None,
    *,
    executor: str | None = None,
    nodes: Iterable[str | os.PathLike[str]] = (),
    record: bool = False,
    on_event: Callable[[Any], None] | None = None,
    cancel: threading.Event | None = None,
    max_parallel_nodes: int | None = None,
    items: str | os.PathLike[str] | IO[Any] | None = None,
) -> RunResult:
    """Validate, then run a workflow.

    ``inputs`` are Python values, fitted to the declared input types (text
    that reads as the type is converted, as on the command line).
    ``executor`` chooses where batch items run (see ``plait run --executor``).
    ``record=True`` keeps a run record (``plait runs``). ``on_event`` receives
    every typed event (:mod:`plait.runtime.events`). Setting ``cancel`` stops
    the run as Ctrl-C does. ``max_parallel_nodes`` bounds the nodes of
    independent branches running at once (as ``--max-parallel-nodes``; default:
    the workflow's own field). ``items`` feeds the batch that reads standard
    input (``{"from": "-"}``): a path (opened when the batch starts) or an open
    file (binary or text); without it that batch reads ``sys.stdin``.
    """
    from plait.runtime.engine import Runner, coerce_inputs
    from plait.runtime.events import EventBus
    from plait.runtime.services import RunServices

    registry = _registry(nodes)
    compiled = _compile(workflow, registry)
    if executor is not None:
        from plait.errors import UsageError
        from plait.runtime.executors import check_executor_name

        wrong = check_executor_name(executor)
        if wrong is not None:
            raise UsageError(wrong)
    values = coerce_inputs(compiled, dict(inputs or {}), source="plait.run(inputs=...)")
    stdin = _items(compiled, items)
    bus = EventBus()
    if on_event is not None:
        bus.subscribe(on_event)
    directory = compiled.directory or str(Path.cwd())
    services = RunServices(registry, bus, directory, cancelled=cancel)
    from plait.runtime.executors import exec_paths

    # slow imports (aiohttp for a parallel http batch) start now, beside the records' set-up
    services.warm_up({cn.cls for cn in compiled.nodes.values()}, exec_paths(compiled, executor))
    services.stdin = stdin
    recorder = None
    if record:
        from plait.runtime.records.writer import RunRecorder

        recorder = RunRecorder()
        recorder.attach(bus)
    result: RunResult | None = None
    try:
        result = Runner(compiled, services, executor=executor, max_parallel_nodes=max_parallel_nodes).run(values)
        return result
    finally:
        services.close()
        if recorder is not None:
            recorder.close(status="failed" if result is None else result.status)


def _items(compiled: Any, items: str | os.PathLike[str] | IO[Any] | None) -> Any:
    """What the batch reading ``-`` reads, as ``plait run --items`` has it."""
    import sys

    from plait.cli.inputs import items_stream

    if items is None or isinstance(items, str | os.PathLike):
        return items_stream(
            compiled, None if items is None else os.fspath(items), sys.stdin, option="items", workflow="flow.json"
        )
    from plait.cli.inputs import stdin_batch
    from plait.errors import UsageError

    if stdin_batch(compiled) is None:
        raise UsageError(
            "items: no batch of this workflow reads its items from standard input",
            hint='a batch takes them when its items are {"from": "-"}',
        )
    return items


__all__ = ["NodeResult", "RunResult", "Validation", "run", "validate"]
