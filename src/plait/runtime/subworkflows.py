"""Running a child workflow for the ``workflow`` node (through ``Services.run_workflow``).

Compiled children are kept once per run (by file, or by inline IR), not once
per item. The child runs with services of its own that share the run's
cancellation, event bus and resources; its events carry the enclosing steps in
their location, and its usage counts at every level above it.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plait.errors import PlaitError, UsageError
from plait.nodes.base import ItemContext, NodeError

if TYPE_CHECKING:
    from plait.runtime.compile import CompiledWorkflow
    from plait.runtime.services import RunServices

MAX_DEPTH = 10  # nested sub-workflows


class SubWorkflows:
    def __init__(self) -> None:
        self._compiled: dict[str, CompiledWorkflow] = {}
        self._lock = threading.Lock()

    def _compile(self, key: str | None, build: Callable[[], CompiledWorkflow]) -> CompiledWorkflow:
        if key is None:
            return build()
        with self._lock:  # parallel items wait for the first one's compile
            hit = self._compiled.get(key)
            if hit is None:
                hit = self._compiled[key] = build()
            return hit

    def run(
        self,
        services: RunServices,
        ctx: ItemContext,
        *,
        path: str | None,
        ir: dict[str, Any] | None,
        inputs: dict[str, Any],
    ) -> dict[str, Any]:
        from plait.runtime.compile import compile_raw, load_and_compile
        from plait.runtime.engine import Runner, coerce_inputs
        from plait.runtime.services import RunServices

        if services.depth >= MAX_DEPTH:
            # The failures of the enclosing levels name every file on the way down.
            here = _show(services, services.stack[-1]) if services.stack else "this workflow"
            raise NodeError(
                f"sub-workflows nested more than {MAX_DEPTH} deep: {here} cannot run "
                f"{path if path is not None else 'its workflow_ir'}",
                retryable=False,
            )
        if path is not None:
            resolved = Path(os.path.expanduser(path))  # pflow's saved files: ~/.pflow/workflows/NAME.json
            if not resolved.is_absolute() and services.workflow_dir:
                resolved = Path(services.workflow_dir) / resolved
            resolved = resolved.resolve()
            key = str(resolved)
            if key in services.stack:
                chain = " -> ".join(_show(services, k) for k in (*services.stack, key))
                raise NodeError(f"sub-workflow cycle: {chain}", retryable=False)
            try:
                compiled = self._compile(key, lambda: load_and_compile(key, services.registry))
            except PlaitError as exc:
                raise NodeError(f"sub-workflow {path} is invalid: {problems_text(exc)}", retryable=False)
            child_dir: str | None = str(resolved.parent)
            name = path
        else:
            key = f"<inline workflow_ir of {ctx.node_id}>"
            try:
                compiled = self._compile(_ir_key(ir), lambda: compile_raw(ir, services.registry, file=None))
            except PlaitError as exc:
                raise NodeError(f"inline workflow_ir is invalid: {problems_text(exc)}", retryable=False)
            child_dir = services.workflow_dir
            name = "workflow_ir"
        child = RunServices(
            services.registry,
            services.bus,
            child_dir,
            cancelled=services.cancelled,
            parent=(services, ctx),
            stack=(*services.stack, key),
        )
        try:
            values = coerce_inputs(compiled, inputs, source=f"the inputs of node '{ctx.node_id}'")
        except UsageError as exc:
            hint = f"; {exc.hint}" if exc.hint else ""
            if exc.message.startswith("missing required input"):
                hint = f"; add them to the 'inputs' of node '{ctx.node_id}'"
            raise NodeError(f"sub-workflow {name}: {exc.message}{hint}", retryable=False)
        result = Runner(compiled, child, executor=services.root.executor_choice).run(values)
        if result.status == "interrupted":
            raise NodeError(f"sub-workflow {name} was interrupted", retryable=False)
        if result.status == "budget":  # the run's driver sees the stop and ends the batch resumably
            first = result.errors[0] if result.errors else {"message": "budget"}
            raise NodeError(f"sub-workflow {name} stopped: {first['message']}", retryable=False)
        if result.status not in ("success", "partial"):
            first = result.errors[0] if result.errors else {"message": result.status}
            where = ""
            if first.get("node_id"):
                where = f" at node '{first['node_id']}'"
                if first.get("index") is not None:
                    where += f" (item {first['index']})"
            raise NodeError(f"sub-workflow {name} failed{where}: {first['message']}", outputs=result.outputs)
        return result.outputs


def _show(services: RunServices, key: str) -> str:
    """A workflow file as the user reads it: relative to the top-level file's folder."""
    from plait.runtime.compile import shown_path

    return shown_path(key, services.root.workflow_dir)


def _ir_key(ir: Any) -> str | None:
    try:
        return "ir:" + json.dumps(ir, sort_keys=True)
    except (TypeError, ValueError):  # not JSON-shaped: compiled uncached, validation says why
        return None


def problems_text(exc: PlaitError) -> str:
    """An error's problems on one line (``path: message; ...``), or its message."""
    problems = getattr(exc, "problems", None)
    if problems:
        return "; ".join(f"{p.path}: {p.message}" if p.path else p.message for p in problems)
    return exc.message
