"""The scheduler: which node runs next (SPEC §3), and the run as a whole."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plait.errors import UsageError, did_you_mean
from plait.ir.graph import Reachability
from plait.ir.values import fit_input
from plait.runtime.batch import BatchFailed, run_batch, run_single
from plait.runtime.compile import CompiledNode, CompiledWorkflow
from plait.runtime.events import NodeFinished, NodeStarted, RunFinished, RunStarted
from plait.runtime.executors import AUTO, make_executor
from plait.runtime.executors.local import SequentialExecutor
from plait.runtime.services import RunServices
from plait.runtime.status import BUDGET, FAILED, INTERRUPTED, NOT_RUN, PARTIAL, SUCCESS
from plait.templates import TemplateError

MAX_VISITS = 100  # per node, for loops through non-default actions


@dataclass
class NodeResult:
    status: str  # runtime/status.py: success | partial | failed | interrupted | not_run
    duration_ms: float = 0.0
    error: str | None = None
    index: int | None = None
    visits: int = 0
    #: a batch node's items: (count, succeeded, failed), and its first failures
    items: tuple[int, int, int] | None = None
    item_errors: list[dict[str, Any]] = field(default_factory=list)


#: failed items listed per node in the JSON envelope (all of them are in `plait show`)
ITEM_ERRORS_LISTED = 20


@dataclass
class RunResult:
    status: str  # runtime/status.py: success | partial | failed | interrupted
    outputs: dict[str, Any]
    nodes: dict[str, NodeResult]
    errors: list[dict[str, Any]]
    duration_ms: float
    llm_usage: dict[str, Any]
    last_node: str | None
    primary: Any = None  # what plain-text output prints when nothing is declared
    values: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "success"

    def to_json(self) -> dict[str, Any]:
        nodes: dict[str, Any] = {}
        for nid, r in self.nodes.items():
            entry: dict[str, Any] = {"status": r.status, "duration_ms": round(r.duration_ms, 3)}
            if r.error:
                entry["error"] = r.error
            if r.items is not None:
                count, ok, failed = r.items
                entry["items"] = {"count": count, "succeeded": ok, "failed": failed}
                if r.item_errors:
                    entry["item_errors"] = r.item_errors
            nodes[nid] = entry
        return {
            "status": self.status,
            "outputs": self.outputs,
            "nodes": nodes,
            "duration_ms": round(self.duration_ms, 3),
            "errors": self.errors,
            "llm_usage": self.llm_usage,
        }


def coerce_inputs(
    compiled: CompiledWorkflow, given: dict[str, Any], *, source: str = "command line"
) -> dict[str, Any]:
    """Apply defaults and required-ness to already-typed input values."""
    specs = compiled.workflow.inputs
    values: dict[str, Any] = {}
    for name in given:
        if name not in specs:
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
    """Runs one compiled workflow once (the top-level run, or a sub-workflow)."""

    def __init__(self, compiled: CompiledWorkflow, services: RunServices, *, executor: str | None = None) -> None:
        self.compiled = compiled
        self.services = services
        self.bus = services.bus
        #: the run's choice of executor (the command line's --executor), below a batch's own
        self.executor = executor
        if executor is not None and services.parent is None:
            services.executor_choice = executor

    def run(self, inputs: dict[str, Any]) -> RunResult:
        cw = self.compiled
        services = self.services
        t0 = time.perf_counter()
        base: dict[str, Any] = dict(inputs)
        results = {nid: NodeResult(NOT_RUN) for nid in cw.order}
        errors: list[dict[str, Any]] = []
        bus = self.bus
        if cw.file and not services.stack:  # the top level: a child calling it back is a cycle
            services.stack = (str(Path(cw.file).resolve()),)
        if bus.active:
            bus.emit(
                RunStarted(
                    services.run_id,
                    cw.workflow,
                    inputs,
                    path=services.path,
                    fingerprints={nid: cn.fingerprint for nid, cn in cw.nodes.items()},
                    resumed_from=services.resumed_from,
                )
            )
        if services.parent is None:
            services.warm_up({cn.cls for cn in cw.nodes.values()})
        services.configure_limits(cw)
        status = "success"
        last: str | None = None
        pending = [cw.start]
        reach = _reachability(cw)
        while pending:
            if services.cancelled.is_set():
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
                if error == "interrupted" or services.cancelled.is_set():
                    status = "interrupted"
                    errors.append({"node_id": node_id, "message": "interrupted"})
                    break
                if res.status == BUDGET:  # resumable: nothing failed, the money ran out
                    status = BUDGET
                    errors.append({"node_id": node_id, "message": error})
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
        if status == "success":
            # Finished, but items failed under `continue`: not a plain success.
            for node_id, res in results.items():
                if res.status == PARTIAL and res.items is not None:
                    count, _, failed = res.items
                    first = res.item_errors[0]["index"] if res.item_errors else None
                    errors.append(
                        {
                            "node_id": node_id,
                            "message": f"{failed} of {count} items failed",
                            "failed": failed,
                            "index": first,
                        }
                    )
            if errors:
                status = PARTIAL
        duration_ms = (time.perf_counter() - t0) * 1000.0
        usage = services.ledger.total()
        if bus.active:
            bus.emit(RunFinished(services.run_id, status, duration_ms, errors, usage, path=services.path))
        return RunResult(
            status=status,
            outputs=outputs,
            nodes=results,
            errors=errors,
            duration_ms=duration_ms,
            llm_usage=usage,
            last_node=last,
            primary=primary,
            values=base,
            run_id=services.run_id,
        )

    def _executor_name(self, cn: CompiledNode) -> str:
        if cn.executor != AUTO:
            return cn.executor
        if self.executor not in (None, AUTO):
            return self.executor
        return self.compiled.workflow.executor

    def _run_node(
        self, cn: CompiledNode, base: dict[str, Any], res: NodeResult
    ) -> tuple[str, bool, str | None, int | None]:
        services, bus = self.services, self.bus
        loc = services.location(cn.id)
        t0 = time.perf_counter()
        if bus.active:
            bus.emit(NodeStarted(loc, cn.node_type, cn.batch is not None))
        action, ok, error, index = "default", True, None, None
        if cn.batch is not None:
            spec = cn.batch
            executor = make_executor(
                self._executor_name(cn),
                parallel=spec.parallel,
                slots=spec.max_concurrent,
                job_name=cn.id,
                async_capable=cn.cls.has_async_exec(),
            )
            try:
                output = run_batch(cn, base, services, executor, self.compiled)
            except BatchFailed as exc:
                output = {**exc.outputs, "error": exc.message} if exc.outputs else {"error": exc.message}
                ok, error, index = False, exc.message, exc.index
            base[cn.id] = output
        else:
            out = run_single(cn, base, services, SequentialExecutor())
            base[cn.id] = out.outputs if out.ok else {**(out.outputs or {}), "error": out.error}
            if out.ok:
                action = out.action
            else:
                ok, error = False, out.error
                if out.attempt > 1:
                    error = f"{error} (after {out.attempt} attempts)"
        res.duration_ms += (time.perf_counter() - t0) * 1000.0
        res.error = error
        res.index = index
        counts = None
        out_value = base.get(cn.id)
        if cn.batch is not None and isinstance(out_value, dict):
            counts = {
                k: v for k in ("count", "success_count", "error_count") if isinstance(v := out_value.get(k), int)
            }
            if "count" in counts:
                res.items = (counts["count"], counts.get("success_count", 0), counts.get("error_count", 0))
                res.item_errors = [
                    {"index": e.get("index"), "error": e.get("error"), "attempts": e.get("attempts")}
                    for e in (out_value.get("errors") or [])[:ITEM_ERRORS_LISTED]
                ]
        if ok:
            res.status = PARTIAL if res.items is not None and res.items[2] else SUCCESS
        elif error == "interrupted" or services.cancelled.is_set():
            res.status = INTERRUPTED
        elif services.root.budget_stop is not None:
            res.status = BUDGET
        else:
            res.status = FAILED
        if bus.active:
            bus.emit(NodeFinished(loc, res.status, res.duration_ms, error, index, counts))
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


def _reachability(cw: CompiledWorkflow) -> Reachability:
    succ = {n: [t for _, t in edges] for n, edges in cw.edges_from.items()}
    return Reachability(cw.order, succ)


def _pick(pending: list[str], reach: Reachability, order: list[str]) -> str:
    """The next node to run: one that no other pending node could still lead to.

    That makes a join wait for every activated predecessor. Inside a loop every
    node can lead to every other; then the earliest activated wins.
    """
    for candidate in pending:
        if not any(
            other != candidate and reach.leads_to(other, candidate) and not reach.leads_to(candidate, other)
            for other in pending
        ):
            return candidate
    return pending[0]
