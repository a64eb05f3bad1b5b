"""The scheduler: which node runs next (SPEC §3), and the run as a whole."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plait.errors import UsageError, did_you_mean
from plait.ir.graph import Reachability
from plait.ir.values import fit_input
from plait.runtime.batch import BatchFailed, run_batch, run_single
from plait.runtime.compile import CompiledNode, CompiledWorkflow
from plait.runtime.events import NodeFinished, NodeStarted, RunFinished, RunStarted, RunWarning
from plait.runtime.executors import AUTO, make_executor
from plait.runtime.executors.local import SequentialExecutor
from plait.runtime.results import plain
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
    #: what validation warned of, then what the run did (an empty glob, a damaged cache...)
    warnings: list[str] = field(default_factory=list)

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
            **({"warnings": self.warnings} if self.warnings else {}),
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

    def __init__(
        self,
        compiled: CompiledWorkflow,
        services: RunServices,
        *,
        executor: str | None = None,
        max_parallel_nodes: int | None = None,
    ) -> None:
        self.compiled = compiled
        self.services = services
        self.bus = services.bus
        #: the run's choice of executor (the command line's --executor), below a batch's own
        self.executor = executor
        if executor is not None and services.parent is None:
            services.executor_choice = executor
        if max_parallel_nodes is not None and max_parallel_nodes < 1:
            raise UsageError(
                f"max_parallel_nodes must be at least 1, not {max_parallel_nodes}",
                hint="1 runs the nodes one after another",
            )
        if max_parallel_nodes is not None and services.parent is None:
            services.max_parallel_nodes = max_parallel_nodes
        # A run-wide choice (the command line's) holds in sub-workflows too;
        # without one each workflow brings its own.
        chosen = max_parallel_nodes if max_parallel_nodes is not None else services.root.max_parallel_nodes
        self.max_parallel_nodes: int = chosen if chosen is not None else compiled.workflow.max_parallel_nodes

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
        warnings = list(cw.warnings)

        def warned(ev: Any) -> None:  # a RunWarning
            warnings.append(f"{ev.loc}: {ev.message}" if ev.loc is not None else ev.message)

        top = services.parent is None
        if top:
            bus.subscribe(warned, kinds=(RunWarning,))
        if bus.active:
            bus.emit(
                RunStarted(
                    services.run_id,
                    cw.workflow,
                    inputs,
                    path=services.path,
                    fingerprints={nid: cn.fingerprint for nid, cn in cw.nodes.items()},
                    resumed_from=services.resumed_from,
                    items_from=_items_from(services.stdin),
                )
            )
        if services.parent is None:
            services.warm_up({cn.cls for cn in cw.nodes.values()})
        services.configure_limits(cw)
        sched = _Schedule(self, base, results, errors)
        sched.run()
        status, last = sched.status, sched.last
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
        if top:
            bus.unsubscribe(warned)
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
            warnings=warnings,
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
            values: dict[str, Any] = {}
            for name, c in cw.outputs.items():
                # An output of a node that did not run on the path taken (the other side
                # of an error edge, a branch not chosen) is left out, not a failure of a
                # run that ended well; any other template problem still is one.
                skipped = [r.root for r in c.refs if r.root in cw.nodes and r.root not in base]
                if skipped:
                    message = f"output '{name}' is left out: node '{skipped[0]}' did not run on this path"
                    self.bus.emit(RunWarning(None, message))
                    continue
                values[name] = c.resolve(base, {})
            if len(cw.outputs) == 1:
                return values, next(iter(values.values()), None)
            return values, values
        if last is None:
            return {}, None
        # what the caller gets: lists, not a batch's compact results
        value = plain(base.get(last))
        outputs = value if isinstance(value, dict) else {"value": value}
        cls = cw.nodes[last].cls
        if cw.nodes[last].batch is None and cls.primary_output and cls.primary_output in outputs:
            return outputs, outputs[cls.primary_output]
        return outputs, outputs


def _items_from(stdin: Any) -> str | None:
    """What a run record keeps of the items standard input stands for (see RunStarted)."""
    if stdin is None:
        return None
    path = getattr(stdin, "path", None)  # sources.ItemsFile: `--items FILE`
    return path if isinstance(path, str) else "-"


def _reachability(cw: CompiledWorkflow) -> Reachability:
    succ = {n: [t for _, t in edges] for n, edges in cw.edges_from.items()}
    return Reachability(cw.order, succ)


#: how often the scheduler looks up from waiting for a node (signals, Ctrl-C)
_WAIT_S = 0.2


@dataclass
class _Done:
    """A node's visit that ended, handed back to the scheduler."""

    node_id: str
    seq: int
    action: str = "default"
    ok: bool = True
    error: str | None = None
    index: int | None = None
    crash: BaseException | None = None  # an error of plait's own, raised again in the run's thread
    view: dict[str, Any] | None = None  # the outputs as the node saw them, its own added


class _Schedule:
    """One run's walk over the graph (SPEC §3), with independent branches at once.

    A node may start when no pending or running node can still lead to it (so
    a join waits for every branch that reaches it), and, inside a loop, when it
    cannot lead to a running node either (the nodes of one loop take turns, as
    they do one at a time). Up to ``max_parallel_nodes`` nodes run at once.
    When a single node can start and nothing runs, it runs in the run's own
    thread, exactly as with one node at a time (signals reach it there); nodes
    that start together run in threads of their own, each reading a copy of
    the outputs taken at its start, and their outputs are merged back here.

    Fail-fast: once a node fails without an error edge (or the run is
    interrupted, or a loop reaches its limit) nothing new starts; the nodes
    already running finish (an interrupt stops them as it stops any node).
    """

    def __init__(
        self, runner: Runner, base: dict[str, Any], results: dict[str, NodeResult], errors: list[dict[str, Any]]
    ) -> None:
        self.runner = runner
        self.cw = runner.compiled
        self.services = runner.services
        self.base = base
        self.results = results
        self.errors = errors
        self.limit = runner.max_parallel_nodes
        self.reach = _reachability(self.cw)
        self.pending: list[str] = [self.cw.start]
        self.running: dict[str, int] = {}  # node id -> its launch number
        self.done: queue.SimpleQueue[_Done] = queue.SimpleQueue()
        self.status = "success"
        self.stopping = False
        self.last: str | None = None
        self._last_seq = -1
        self._seq = 0
        self._crash: BaseException | None = None

    def run(self) -> None:
        cancelled = self.services.cancelled
        while self.pending or self.running:
            if not self.stopping and cancelled.is_set():
                self._stop("interrupted")
            if not self.stopping:
                ready = self._ready()
                if ready and not self.running and len(ready) == 1:
                    node_id = ready[0]
                    if self._visit(node_id):
                        self._finish(self._run_here(node_id))
                    continue
                for node_id in ready:
                    if self._visit(node_id):
                        self._launch(node_id)
                    if self.stopping:
                        break
            if not self.running:
                if self.stopping or not self.pending:
                    break
                continue
            try:
                finished = self.done.get(timeout=_WAIT_S)
            except queue.Empty:
                continue
            self._finish(finished)
        if self._crash is not None:
            raise self._crash

    # -- choosing

    def _ready(self) -> list[str]:
        """The pending nodes that may start now, in the order they were activated."""
        room = self.limit - len(self.running)
        if room <= 0:
            return []
        pending, running, reach = self.pending, self.running, self.reach
        ready: list[str] = []
        for candidate in pending:
            if any(
                other != candidate and reach.leads_to(other, candidate) and not reach.leads_to(candidate, other)
                for other in pending
            ):
                continue  # a join, or a later step, still waits for another branch
            if any(reach.leads_to(r, candidate) or reach.leads_to(candidate, r) for r in running):
                continue
            if any(reach.leads_to(r, candidate) or reach.leads_to(candidate, r) for r in ready):
                continue  # two nodes of one loop: one at a time
            ready.append(candidate)
            if len(ready) == room:
                break
        if not ready and not running and pending:
            # Inside a loop every node can lead to every other: the earliest activated goes.
            ready.append(pending[0])
        return ready

    def _visit(self, node_id: str) -> bool:
        """Count a visit; False (and the run stops) past the loop limit."""
        self.pending.remove(node_id)
        res = self.results[node_id]
        res.visits += 1
        if res.visits > MAX_VISITS:
            self.errors.append(
                {
                    "node_id": node_id,
                    "message": f"reached {MAX_VISITS} times, the loop limit",
                    "hint": "check the actions that lead back to it",
                }
            )
            self._stop("failed")
            return False
        return True

    # -- running

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _run_here(self, node_id: str, seq: int | None = None) -> _Done:
        seq = self._next_seq() if seq is None else seq
        cn = self.cw.nodes[node_id]
        action, ok, error, index = self.runner._run_node(cn, self.base, self.results[node_id])
        return _Done(node_id, seq, action, ok, error, index)

    def _launch(self, node_id: str) -> None:
        seq = self._next_seq()
        cn = self.cw.nodes[node_id]
        res = self.results[node_id]
        view = dict(self.base)  # a consistent view: later merges do not reach a node already started
        runner, done = self.runner, self.done

        def work() -> None:
            try:
                action, ok, error, index = runner._run_node(cn, view, res)
                done.put(_Done(node_id, seq, action, ok, error, index, view=view))
            except BaseException as exc:  # handed to the run's thread, which raises it when the others end
                done.put(_Done(node_id, seq, ok=False, error=f"{type(exc).__name__}: {exc}", crash=exc))

        self.running[node_id] = seq
        thread = threading.Thread(target=work, name=f"plait-node-{node_id}", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # "can't start new thread": run it here instead
            del self.running[node_id]
            self._finish(self._run_here(node_id, seq))

    # -- finishing

    def _stop(self, status: str) -> None:
        if not self.stopping:
            self.stopping = True
            self.status = status

    def _finish(self, d: _Done) -> None:
        self.running.pop(d.node_id, None)
        if d.view is not None and d.node_id in d.view:
            self.base[d.node_id] = d.view[d.node_id]
        if d.seq > self._last_seq:
            # The last node is the last one started among those that ended, so
            # the result does not hang on which of two branches ended first.
            self._last_seq, self.last = d.seq, d.node_id
        if d.crash is not None:
            if self._crash is None:
                self._crash = d.crash
            self._stop("failed")
            return
        action = d.action
        if not d.ok:
            if d.error == "interrupted" or self.services.cancelled.is_set():
                self.errors.append({"node_id": d.node_id, "message": "interrupted"})
                self._stop("interrupted")
                return
            if self.results[d.node_id].status == BUDGET:  # resumable: nothing failed, the money ran out
                self.errors.append({"node_id": d.node_id, "message": d.error})
                self._stop(BUDGET)
                return
            targets = [t for a, t in self.cw.edges_from.get(d.node_id, ()) if a == "error"]
            if not targets:
                entry: dict[str, Any] = {"node_id": d.node_id, "message": d.error}
                if d.index is not None:
                    entry["index"] = d.index
                self.errors.append(entry)
                self._stop("failed")
                return
            action = "error"
        if self.stopping:
            return
        for a, target in self.cw.edges_from.get(d.node_id, ()):
            if a == action and target not in self.pending:
                self.pending.append(target)
