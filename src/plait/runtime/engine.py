"""The scheduler: which node runs next (SPEC §3), and the run as a whole."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from plait.errors import PlaitError, UsageError
from plait.ir.values import fit_input
from plait.nodes.base import ItemContext, PlaitNode, Services, Usage
from plait.runtime.batch import BatchFailed, run_batch, run_single
from plait.runtime.compile import CompiledWorkflow, compile_raw, load_and_compile
from plait.runtime.events import Event, EventBus
from plait.runtime.executors import SequentialExecutor, make_executor
from plait.templates import TemplateError

T = TypeVar("T")
_MISSING = object()
MAX_VISITS = 100  # per node, for loops through non-default actions
MAX_DEPTH = 10  # nested sub-workflows


@dataclass
class NodeResult:
    status: str  # success | failed | skipped
    duration_ms: float = 0.0
    error: str | None = None
    index: int | None = None
    visits: int = 0


@dataclass
class RunResult:
    status: str  # success | failed | interrupted
    outputs: dict[str, Any]
    nodes: dict[str, NodeResult]
    errors: list[dict[str, Any]]
    duration_ms: float
    llm_usage: dict[str, int]
    last_node: str | None
    primary: Any = None  # what plain-text output prints when nothing is declared
    values: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "outputs": self.outputs,
            "nodes": {
                nid: {
                    "status": r.status,
                    "duration_ms": round(r.duration_ms, 3),
                    **({"error": r.error} if r.error else {}),
                }
                for nid, r in self.nodes.items()
            },
            "duration_ms": round(self.duration_ms, 3),
            "errors": self.errors,
            "llm_usage": self.llm_usage,
        }


class UsageTotals:
    """LLM usage per node, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_node: dict[str, list[int]] = {}

    def add(self, node_id: str, input_tokens: int, output_tokens: int) -> None:
        with self._lock:
            row = self.by_node.setdefault(node_id, [0, 0, 0])
            row[0] += 1
            row[1] += input_tokens
            row[2] += output_tokens

    def of(self, node_id: str) -> dict[str, int]:
        with self._lock:
            calls, inp, outp = self.by_node.get(node_id, (0, 0, 0))
        return {"calls": calls, "input_tokens": inp, "output_tokens": outp}

    def total(self) -> dict[str, int]:
        with self._lock:
            rows = list(self.by_node.values())
        return {
            "calls": sum(r[0] for r in rows),
            "input_tokens": sum(r[1] for r in rows),
            "output_tokens": sum(r[2] for r in rows),
        }


class RunServices(Services):
    """The runtime's side of the node contract, for one run (and its children)."""

    def __init__(
        self,
        registry: Any,
        bus: EventBus,
        workflow_dir: str | None,
        *,
        cancelled: threading.Event | None = None,
        parent: tuple[RunServices, ItemContext] | None = None,
        stack: tuple[str, ...] = (),
    ) -> None:
        self.registry = registry
        self.bus = bus
        self.workflow_dir = workflow_dir
        self.cancelled = cancelled or threading.Event()
        self.usage = UsageTotals()
        self.parent = parent
        # The files of this workflow and the ones enclosing it, for cycle detection;
        # the top-level file is added by Runner.run, which knows it.
        self.stack = stack
        self.depth: int = parent[0].depth + 1 if parent else 0  # sub-workflow levels above the root
        self._root: RunServices = parent[0]._root if parent else self
        self._warmed = False
        # Per-run resources by key (the root's serve the whole run, children included).
        self._resources: dict[str, Any] = {}
        self._closers: list[tuple[Callable[[Any], None], Any]] = []
        self._resource_lock = threading.Lock()
        self._making: dict[str, threading.Lock] = {}
        # Sub-workflows compiled once per run (by file, or by inline IR), not once per item.
        self._compiled: dict[str, CompiledWorkflow] = {}
        self._compile_lock = threading.Lock()

    def resource(self, key: str, factory: Callable[[], T], close: Callable[[T], None] | None = None) -> T:
        root = self._root
        if root is not self:
            return root.resource(key, factory, close)
        hit = self._resources.get(key, _MISSING)
        if hit is not _MISSING:
            return hit
        with self._resource_lock:
            making = self._making.setdefault(key, threading.Lock())
        with making:  # one factory call per key; other keys are made meanwhile
            hit = self._resources.get(key, _MISSING)
            if hit is not _MISSING:
                return hit
            value = factory()
            with self._resource_lock:
                if close is not None:
                    self._closers.append((close, value))
                self._resources[key] = value
            return value

    def warm_up(self, node_classes: Any) -> None:
        """Let node types prepare slow shared resources in the background
        (the http node imports httpx and builds the SSL context) while the
        first nodes run."""
        if self._warmed:
            return
        self._warmed = True
        for cls in node_classes:
            if cls.warm_up is not PlaitNode.warm_up:
                threading.Thread(target=cls.warm_up, args=(self,), name="plait-warm-up", daemon=True).start()

    def close(self) -> None:
        """Close the run's resources, newest first; one that fails does not stop the others."""
        with self._resource_lock:
            closers, self._closers = self._closers, []
            self._resources.clear()
        for close, value in reversed(closers):
            try:
                close(value)
            except Exception:
                pass

    def record_usage(self, ctx: ItemContext, usage: Usage) -> None:
        # One event, where the call happened (a child's reaches the parent bus
        # through the forwarder, with its node id prefixed); the usage is added
        # at every level, so the parent's workflow node and run count it too.
        self.bus.emit(
            Event(
                "llm_call",
                ctx.node_id,
                index=ctx.index,
                data={
                    "model": usage.model,
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                },
            )
        )
        self._add_usage(ctx, usage.input_tokens, usage.output_tokens)

    def _add_usage(self, ctx: ItemContext, input_tokens: int, output_tokens: int) -> None:
        self.usage.add(ctx.node_id, input_tokens, output_tokens)
        if self.parent is not None:
            services, parent_ctx = self.parent
            services._add_usage(parent_ctx, input_tokens, output_tokens)

    def _show(self, key: str) -> str:
        """A workflow file as the user reads it: relative to the top-level file's folder."""
        top = self._root.workflow_dir
        if top and os.path.isabs(key):
            rel = os.path.relpath(key, top)
            if not rel.startswith(".."):
                return rel
        return key

    def _compile(self, key: str | None, build: Callable[[], CompiledWorkflow]) -> CompiledWorkflow:
        if key is None:
            return build()
        with self._compile_lock:  # parallel items wait for the first one's compile
            hit = self._compiled.get(key)
            if hit is None:
                hit = self._compiled[key] = build()
            return hit

    def run_workflow(
        self, ctx: ItemContext, *, path: str | None, ir: dict[str, Any] | None, inputs: dict[str, Any]
    ) -> dict[str, Any]:
        from plait.nodes.base import NodeError

        if self.depth >= MAX_DEPTH:
            # The failures of the enclosing levels name every file on the way down.
            here = self._show(self.stack[-1]) if self.stack else "this workflow"
            raise NodeError(
                f"sub-workflows nested more than {MAX_DEPTH} deep: {here} cannot run "
                f"{path if path is not None else 'its workflow_ir'}",
                retryable=False,
            )
        if path is not None:
            resolved = Path(path)
            if not resolved.is_absolute() and self.workflow_dir:
                resolved = Path(self.workflow_dir) / resolved
            resolved = resolved.resolve()
            key = str(resolved)
            if key in self.stack:
                chain = " -> ".join(self._show(k) for k in (*self.stack, key))
                raise NodeError(
                    f"sub-workflow cycle: {chain}",
                    retryable=False,
                )
            try:
                compiled = self._root._compile(key, lambda: load_and_compile(key, self.registry))
            except PlaitError as exc:
                raise NodeError(f"sub-workflow {path} is invalid: {_flatten(exc)}", retryable=False)
            child_dir: str | None = str(resolved.parent)
            name = path
        else:
            key = f"<inline workflow_ir of {ctx.node_id}>"
            try:
                compiled = self._root._compile(
                    _ir_key(ir), lambda: compile_raw(ir, self.registry, file=None)
                )
            except PlaitError as exc:
                raise NodeError(f"inline workflow_ir is invalid: {_flatten(exc)}", retryable=False)
            child_dir = self.workflow_dir
            name = "workflow_ir"
        bus = EventBus()
        if self.bus.active:
            prefix = f"{ctx.node_id}[{ctx.index}]" if ctx.index is not None else ctx.node_id
            parent_bus = self.bus

            def forward(event: Event) -> None:
                event.node_id = f"{prefix}/{event.node_id}" if event.node_id else prefix
                if event.kind in ("run_started", "run_finished"):
                    event.kind = "child_" + event.kind
                parent_bus.emit(event)

            bus.subscribe(forward)
        child = RunServices(
            self.registry,
            bus,
            child_dir,
            cancelled=self.cancelled,
            parent=(self, ctx),
            stack=(*self.stack, key),
        )
        try:
            values = coerce_inputs(compiled, inputs, source=f"the inputs of node '{ctx.node_id}'")
        except UsageError as exc:
            hint = f"; {exc.hint}" if exc.hint else ""
            if exc.message.startswith("missing required input"):
                hint = f"; add them to the 'inputs' of node '{ctx.node_id}'"
            raise NodeError(f"sub-workflow {name}: {exc.message}{hint}", retryable=False)
        result = Runner(compiled, child).run(values)
        if result.status == "interrupted":
            raise NodeError(f"sub-workflow {name} was interrupted", retryable=False)
        if result.status != "success":
            first = result.errors[0] if result.errors else {"message": result.status}
            where = ""
            if first.get("node_id"):
                where = f" at node '{first['node_id']}'"
                if first.get("index") is not None:
                    where += f" (item {first['index']})"
            raise NodeError(f"sub-workflow {name} failed{where}: {first['message']}", outputs=result.outputs)
        return result.outputs


def _ir_key(ir: Any) -> str | None:
    try:
        return "ir:" + json.dumps(ir, sort_keys=True)
    except (TypeError, ValueError):  # not JSON-shaped: compiled uncached, validation says why
        return None


def _flatten(exc: PlaitError) -> str:
    problems = getattr(exc, "problems", None)
    if problems:
        return "; ".join(f"{p.path}: {p.message}" if p.path else p.message for p in problems)
    return exc.message


def coerce_inputs(
    compiled: CompiledWorkflow, given: dict[str, Any], *, source: str = "command line"
) -> dict[str, Any]:
    """Apply defaults and required-ness to already-typed input values."""
    specs = compiled.workflow.inputs
    values: dict[str, Any] = {}
    for name in given:
        if name not in specs:
            from plait.errors import did_you_mean

            known = ", ".join(specs) or "none declared"
            raise UsageError(
                f"unknown input '{name}' ({source})",
                hint=did_you_mean(name, specs) or f"inputs: {known}",
            )
    missing = []
    for name, spec in specs.items():
        if name in given:
            # From the command line values arrive already converted; from a parent
            # workflow they are checked against the child's declared type here.
            values[name] = given[name] if source == "command line" else fit_input(spec, name, given[name])
        elif spec.has_default:
            values[name] = spec.default
        elif spec.required:
            missing.append(name)
        else:
            values[name] = None
    if missing:
        raise UsageError(
            f"missing required input{'s' if len(missing) > 1 else ''}: {', '.join(missing)}",
            hint="give "
            + " ".join(f"{m}=VALUE" for m in missing)
            + "".join(
                f", or pipe it on standard input ({m} takes stdin)" for m in missing if specs[m].stdin
            ),
        )
    return values


class Runner:
    """Runs one compiled workflow once."""

    def __init__(self, compiled: CompiledWorkflow, services: RunServices) -> None:
        self.compiled = compiled
        self.services = services
        self.bus = services.bus

    def run(self, inputs: dict[str, Any]) -> RunResult:
        cw = self.compiled
        t0 = time.perf_counter()
        base: dict[str, Any] = dict(inputs)
        results = {nid: NodeResult("skipped") for nid in cw.order}
        errors: list[dict[str, Any]] = []
        bus = self.bus
        if cw.file and not self.services.stack:  # the top level: a child calling it back is a cycle
            self.services.stack = (str(Path(cw.file).resolve()),)
        bus.emit(Event("run_started", data={"workflow": cw.file, "inputs": inputs}))
        if self.services.parent is None:
            self.services.warm_up({cn.cls for cn in cw.nodes.values()})
        status = "success"
        last: str | None = None
        pending = [cw.start]
        reach = _reachability(cw)
        while pending:
            if self.services.cancelled.is_set():
                status = "interrupted"
                break
            node_id = _pick(pending, reach, cw.order)
            pending.remove(node_id)
            cn = cw.nodes[node_id]
            res = results[node_id]
            res.visits += 1
            if res.visits > MAX_VISITS:
                errors.append(
                    {
                        "node_id": node_id,
                        "message": f"reached {MAX_VISITS} times, the loop limit",
                        "hint": "check the actions that lead back to it",
                    }
                )
                status = "failed"
                break
            action, ok, error, index = self._run_node(cn, base, res)
            last = node_id
            if not ok:
                if error == "interrupted" or self.services.cancelled.is_set():
                    status = "interrupted"
                    errors.append({"node_id": node_id, "message": "interrupted"})
                    break
                targets = [t for a, t in cw.edges_from.get(node_id, ()) if a == "error"]
                if not targets:
                    entry: dict[str, Any] = {"node_id": node_id, "message": error}
                    if index is not None:
                        entry["index"] = index
                    errors.append(entry)
                    status = "failed"
                    break
                action = "error"
            for a, target in cw.edges_from.get(node_id, ()):
                if a == action and target not in pending:
                    pending.append(target)
        outputs: dict[str, Any] = {}
        primary: Any = None
        if status == "success":
            try:
                outputs, primary = self._outputs(base, last)
            except TemplateError as exc:
                status = "failed"
                errors.append({"message": f"workflow output: {exc.message}"})
        duration_ms = (time.perf_counter() - t0) * 1000.0
        bus.emit(Event("run_finished", status=status, duration_ms=duration_ms))
        return RunResult(
            status=status,
            outputs=outputs,
            nodes=results,
            errors=errors,
            duration_ms=duration_ms,
            llm_usage=self.services.usage.total(),
            last_node=last,
            primary=primary,
            values=base,
        )

    def _run_node(
        self, cn: Any, base: dict[str, Any], res: NodeResult
    ) -> tuple[str, bool, str | None, int | None]:
        bus = self.bus
        t0 = time.perf_counter()
        bus.emit(Event("node_started", cn.id, data={"type": cn.node_type, "batch": cn.batch is not None}))
        action, ok, error, index = "default", True, None, None
        if cn.batch is not None:
            spec = cn.batch
            executor = make_executor(spec.parallel, spec.max_concurrent, name=cn.id)
            try:
                output = run_batch(
                    cn, base, self.services, bus, executor, lambda: self.services.usage.of(cn.id)
                )
            except BatchFailed as exc:
                output = {**exc.outputs, "error": exc.message} if exc.outputs else {"error": exc.message}
                ok, error, index = False, exc.message, exc.index
            base[cn.id] = output
        else:
            out = run_single(cn, base, self.services, bus, SequentialExecutor())
            base[cn.id] = out.outputs if out.ok else {**(out.outputs or {}), "error": out.error}
            if out.ok:
                action = out.action
            else:
                ok, error = False, out.error
                if out.attempt > 1:
                    error = f"{error} (after {out.attempt} attempts)"
        res.duration_ms += (time.perf_counter() - t0) * 1000.0
        res.status = "success" if ok else "failed"
        res.error = error
        res.index = index
        data = None
        out_value = base.get(cn.id)
        if cn.batch is not None and isinstance(out_value, dict):
            data = {k: out_value.get(k) for k in ("count", "success_count", "error_count")}
        bus.emit(
            Event(
                "node_finished",
                cn.id,
                status=res.status,
                duration_ms=res.duration_ms,
                error=error,
                index=index,
                data=data,
            )
        )
        return action, ok, error, index

    def _outputs(self, base: dict[str, Any], last: str | None) -> tuple[dict[str, Any], Any]:
        cw = self.compiled
        if cw.outputs:
            values = {name: c.resolve(base, {}) for name, c in cw.outputs.items()}
            if len(values) == 1:
                return values, next(iter(values.values()))
            return values, values
        if last is None:
            return {}, None
        value = base.get(last)
        outputs = value if isinstance(value, dict) else {"value": value}
        cls = cw.nodes[last].cls
        if cw.nodes[last].batch is None and cls.primary_output and cls.primary_output in outputs:
            return outputs, outputs[cls.primary_output]
        return outputs, outputs


def _reachability(cw: CompiledWorkflow) -> dict[str, set[str]]:
    from plait.ir.graph import reachable_from

    succ = {n: [t for _, t in edges] for n, edges in cw.edges_from.items()}
    return {n: reachable_from(n, succ) for n in cw.order}


def _pick(pending: list[str], reach: dict[str, set[str]], order: list[str]) -> str:
    """The next node to run: one that no other pending node could still lead to.

    That makes a join wait for every activated predecessor. Inside a loop every
    node can lead to every other; then the earliest activated wins.
    """
    for candidate in pending:
        if not any(
            other != candidate and candidate in reach[other] and other not in reach[candidate]
            for other in pending
        ):
            return candidate
    return pending[0]
