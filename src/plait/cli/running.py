"""`plait run`: compile, gather inputs, run with progress and signals, print the result."""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import Any

from plait.cli.inputs import add_piped, items_stream, parse_args
from plait.cli.render import error_block, json_text, print_value, write_out
from plait.errors import Interrupted, PlaitError, RunFailed
from plait.nodes.registry import Registry
from plait.runtime.compile import load_and_compile
from plait.runtime.engine import Runner, RunResult, coerce_inputs
from plait.runtime.events import EventBus
from plait.runtime.results import ResultList
from plait.runtime.services import RunServices


def run_command(
    workflow: str,
    words: tuple[str, ...],
    *,
    output_format: str,
    quiet: bool,
    nodes_paths: tuple[str, ...],
    record: bool = True,
    executor: str | None = None,
    strict: bool = False,
    resume: str | None = None,
    only_unfinished: bool = False,
    rerun: tuple[str, ...] = (),
    resumed: dict[str, Any] | None = None,
    cache: str = "default",
    scheduler: str | None = None,
    max_parallel_nodes: int | None = None,
    items: str | None = None,
) -> int:
    if scheduler:
        # The dask executor reads its scheduler from the environment (as its
        # factory has no other way in); this process runs one workflow.
        import os

        os.environ["PLAIT_DASK_SCHEDULER"] = scheduler
        executor = executor or "dask"
    registry = Registry()
    for path in nodes_paths:
        registry.load_path(path)
    compiled = load_and_compile(workflow, registry)
    for text in compiled.warnings:  # what validation warns of (warnings are not progress: -q keeps them)
        sys.stderr.write(f"warning: {text}\n")
    old_run = resumed or (_run_to_resume(resume) if resume is not None else None)
    if (only_unfinished or rerun) and old_run is None:
        from plait.errors import UsageError

        raise UsageError("--only-unfinished and --rerun go with --resume RUN", hint="or use: plait resume RUN")
    if executor is not None:
        from plait.runtime.executors import check_executor_name, executor_names

        wrong = check_executor_name(executor)
        if wrong is not None:
            from plait.errors import UsageError

            raise UsageError(f"--executor: {wrong}", hint=f"executors: {', '.join(executor_names())}")
    bus = EventBus(on_subscriber_error=_subscriber_failed)
    services = RunServices(registry, bus, compiled.directory)
    services.cache_mode = cache
    # Slow imports (aiohttp or httpx for an http node) start now, beside input
    # parsing and the records database, instead of inside the first items.
    from plait.runtime.executors import exec_paths

    services.warm_up({cn.cls for cn in compiled.nodes.values()}, exec_paths(compiled, executor))
    specs = compiled.workflow.inputs
    given = parse_args(words, specs)
    # A batch reading {"from": "-"} takes standard input (or --items FILE);
    # validation has made sure no input is marked stdin: true beside it.
    items_note = ""
    if old_run is not None and items is None:
        items, items_note = _resumed_items(old_run, compiled)
    services.stdin = items_stream(compiled, items, sys.stdin, workflow=workflow)
    if services.stdin is None:
        add_piped(given, specs, sys.stdin)
    if old_run is not None:
        given = _resumed_inputs(old_run, given, specs)
    values = coerce_inputs(compiled, given)
    plan = None
    if old_run is not None:
        plan = _start_resume(services, compiled, old_run, only_unfinished, rerun)
        if not quiet or output_format != "json":
            sys.stderr.write(f"resuming run {old_run['run_id']}: {plan.line()}{items_note}\n")

    from plait.runtime.redact import Redactor

    redactor = Redactor()
    recorder = _start_recorder(redactor) if record else None
    if recorder is not None:
        recorder.attach(bus)
    if not quiet:
        from plait.cli.progress import attach_progress

        progress = attach_progress(bus, sys.stderr, cancelled=services.cancelled)
    else:
        progress = None
        from plait.runtime.events import RunWarning

        bus.subscribe(_print_warning, kinds=(RunWarning,))  # warnings are not progress: -q keeps them
    previous = _install_signals(services)
    result: RunResult | None = None
    stopped = "failed"  # what the record says if the run raises: an internal error
    try:
        result = Runner(compiled, services, executor=executor, max_parallel_nodes=max_parallel_nodes).run(values)
    except KeyboardInterrupt:  # a second Ctrl-C: stop now, but still say how far it got
        stopped = "interrupted"
    finally:
        _restore_signals(previous)
        services.close()
        if progress is not None:
            progress.close()
        if recorder is not None:
            recorder.close(status=stopped)
            if recorder.error:
                text = recorder.error
                if not text.startswith("the run record is incomplete"):
                    text = f"the run record is incomplete: {text}"
                sys.stderr.write(f"warning: {text}\n")
    run_id = recorder.run_id if recorder is not None else None
    recorded = run_id is not None and recorder is not None and not recorder.error
    details = f"  details: plait show {run_id}\n" if recorded else ""
    resume_hint = f"plait resume {run_id}" if recorded else None
    if resume_hint is not None:
        piped = services.stdin is not None and not isinstance(getattr(services.stdin, "path", None), str)
        details += f"  resume:  {resume_hint}" + (" (pipe the same items into it)\n" if piped else "\n")

    if result is None:
        error_block(Interrupted("interrupted: stopped at once by a second Ctrl-C"))
        sys.stderr.write(details)
        return 130
    _learn_secrets(redactor, compiled, result)
    if old_run is not None and old_run.get("items_from") == "-" and items is None:
        _fewer_piped(old_run, compiled, result)
    strict = strict or bool(compiled.workflow.fail_on_item_errors)
    if output_format == "json":
        payload = {"run_id": run_id, **result.to_json()}
        if result.status == "partial":
            payload["strict"] = strict
        if result.status != "success" and resume_hint is not None:
            payload["resume"] = resume_hint
        if old_run is not None and plan is not None:
            payload["resumed_from"] = {"run_id": old_run["run_id"], "plan": plan.line(), "reused": plan_reused(services)}
        write_out(json_text(redactor.value(payload)) + "\n")
    elif result.status in ("success", "partial"):
        print_value(result.primary)
    if result.status == "partial":
        partial_line(result, run_id if recorded else None, strict)
        return 1 if strict else 0
    if result.status == "interrupted":
        error_block(Interrupted(_how_far(result)))
        sys.stderr.write(details)
        return 130
    if result.status != "success":
        first: dict[str, Any] = result.errors[0] if result.errors else {"message": "the run failed"}
        node_id = first.get("node_id")
        message = f"node '{node_id}' failed: {first['message']}" if node_id else first["message"]
        if result.status == "budget":  # nothing failed: the money ran out (docs/limits.md)
            message = f"stopped by the budget in '{node_id}': {first['message']}"
            first = {**first, "hint": "the items that did not run are kept for `plait resume` "
                     "(raise budget.usd in the workflow first to give them more room)"}
        error_block(
            RunFailed(
                redactor.text(message),
                node_id=node_id,
                index=first.get("index"),
                hint=redactor.text(first.get("hint", "")),
            ),
        )
        sys.stderr.write(details)
        return 1
    return 0


def estimate_command(
    workflow: str, words: tuple[str, ...], *, output_format: str, nodes_paths: tuple[str, ...]
) -> int:
    """`plait run WF --estimate`: what a run would ask of paid services, calling none."""
    from plait.cli.estimate import estimate, render

    registry = Registry()
    for path in nodes_paths:
        registry.load_path(path)
    compiled = load_and_compile(workflow, registry)
    specs = compiled.workflow.inputs
    given = parse_args(words, specs)
    add_piped(given, specs, sys.stdin)
    values = coerce_inputs(compiled, given)
    services = RunServices(registry, EventBus(), compiled.directory)
    services.stdin = sys.stdin
    try:
        report = estimate(compiled, values, services)
    finally:
        services.close()
    if output_format == "json":
        write_out(json_text(report) + "\n")
    else:
        write_out(render(report))
    return 0


#: a batch's results looked at for secrets a node obtained (its first ones; the
#: rest are masked by name wherever they are written)
_RESULTS_SCANNED = 100


def _learn_secrets(redactor: Any, compiled: Any, result: RunResult) -> None:
    """Secrets nodes obtained during the run (an access_token from a login step)
    are masked wherever they show up afterwards, in free text too."""
    for node_id, value in result.values.items():
        cn = compiled.nodes.get(node_id)
        if cn is None:
            continue
        if cn.batch is not None and isinstance(value, dict):
            results = value.get("results")
            if isinstance(results, list | ResultList):  # else a reference to a results file, not read back
                redactor.learn_from(results[:_RESULTS_SCANNED])
        else:
            redactor.learn_from(value)


def partial_line(result: RunResult, run_id: str | None, strict: bool) -> None:
    """The last line of a run whose batches finished with failed items: in warning colour."""
    from plait.cli.render import warning

    parts = [
        f"{r.items[2]} of {r.items[0]} items failed in '{node_id}'"
        for node_id, r in result.nodes.items()
        if r.status == "partial" and r.items is not None
    ]
    text = "partial: " + "; ".join(parts)
    if strict:
        text += " (exit 1: --strict / fail_on_item_errors)"
    if run_id:
        text += f"; the failed items: plait show {run_id}"
    warning(text)


def _fewer_piped(run: dict[str, Any], compiled: Any, result: RunResult) -> None:
    """A resume of a run whose items were piped in, given fewer items than that run
    had (an empty pipe, say): said, as the plan counted the items recorded."""
    from plait.cli.inputs import stdin_batch
    from plait.runtime.records.queries import Records

    node_id = stdin_batch(compiled)
    now = result.nodes[node_id].items if node_id in result.nodes else None
    if node_id is None or now is None:
        return
    import sqlite3

    try:
        records = Records.open()
        try:
            row = records.conn.execute(
                "SELECT items_total FROM nodes WHERE run = ? AND node_id = ?", (run["id"], node_id)
            ).fetchone()
        finally:
            records.close()
    except sqlite3.Error:
        return  # only a warning: the run itself is over and reported
    before = row[0] if row is not None else None
    if before is not None and now[0] < before:
        sys.stderr.write(
            f"warning: batch '{node_id}' read {now[0]:,} items from standard input, where run {run['run_id']}"
            f" had {before:,}: to resume it, pipe the same items in again\n"
        )


def _print_warning(ev: Any) -> None:
    where = f"{ev.loc}: " if ev.loc is not None else ""
    sys.stderr.write(f"warning: {where}{ev.message}\n")


def _run_to_resume(ref: str) -> dict[str, Any]:
    """The recorded run to resume, refused while it still runs."""
    from plait.errors import UsageError
    from plait.runtime.records.queries import Records

    records = Records.open()
    try:
        run = records.resolve(ref)
    finally:
        records.close()
    if run["status"] == "running":
        raise UsageError(
            f"run {run['run_id']} is still running (process {run.get('pid')})",
            hint="wait for it to end, or stop it (Ctrl-C) and resume it then",
        )
    return run


def _resumed_items(run: dict[str, Any], compiled: Any) -> tuple[str | None, str]:
    """The items file a resume reads when no --items is given: the one the run read
    (its record keeps the path), and a note for the plan line."""
    from plait.cli.inputs import stdin_batch
    from plait.errors import UsageError

    was = run.get("items_from")
    if was is None or stdin_batch(compiled) is None:
        return None, ""
    if was == "-":
        if sys.stdin is not None and sys.stdin.isatty():
            raise UsageError(
                f"run {run['run_id']} read its items from standard input, and this one has none piped in",
                hint=f"pipe the same items in again (... | plait resume {run['run_id']}), or give them: --items FILE",
            )
        return None, ""
    import os

    if not os.path.isfile(was):
        raise UsageError(
            f"run {run['run_id']} read its items from {was} (--items), which is not there any more",
            hint=f"give the items again: plait resume {run['run_id']} --items FILE",
        )
    return was, f" (items from {was})"


def _resumed_inputs(run: dict[str, Any], given: dict[str, Any], specs: dict[str, Any]) -> dict[str, Any]:
    """The resumed run's inputs, as recorded, under those given now; secret ones must be given again."""
    import json as _json

    from plait.errors import UsageError

    secret = set(_json.loads(run.get("secret_inputs") or "[]"))
    merged = {k: v for k, v in (run.get("inputs") or {}).items() if k in specs and k not in secret}
    merged.update(given)
    missing = sorted(s for s in secret if s in specs and s not in given)
    if missing:
        raise UsageError(
            f"run {run['run_id']} had secret inputs that were not recorded: {', '.join(missing)}",
            hint="give them again: " + " ".join(f"{m}=..." for m in missing),
        )
    return merged


def _start_resume(
    services: RunServices, compiled: Any, run: dict[str, Any], only_unfinished: bool, rerun: tuple[str, ...]
) -> Any:
    from plait.errors import UsageError, did_you_mean
    from plait.runtime.records.schema import db_path
    from plait.runtime.resume import ReuseSource

    for node_id in rerun:
        if node_id not in compiled.nodes:
            raise UsageError(
                f"--rerun: no node '{node_id}'",
                hint=did_you_mean(node_id, compiled.nodes) or f"nodes: {', '.join(compiled.nodes)}",
            )
    source = ReuseSource(db_path(), run, only_unfinished=only_unfinished, rerun=frozenset(rerun))
    services.reuse = source
    services.resumed_from = run["run_id"]
    return source.plan({nid: cn.fingerprint for nid, cn in compiled.nodes.items()})


def plan_reused(services: RunServices) -> int:
    source = services.reuse
    return int(source.reused) if source is not None else 0


def _subscriber_failed(subscriber: Any, exc: BaseException) -> None:
    what = getattr(subscriber, "__qualname__", None) or type(subscriber).__qualname__
    sys.stderr.write(
        f"warning: an event subscriber ({what}) failed and was detached; the run goes on: "
        f"{type(exc).__name__}: {exc}\n"
    )


def _start_recorder(redactor: Any) -> Any:
    """The run record; a run goes on without one when it cannot be written."""
    from plait.runtime.records.writer import RunRecorder

    def trouble(message: str) -> None:
        sys.stderr.write(f"warning: the run record cannot be written now: {message}\n")

    def recovered(message: str) -> None:
        sys.stderr.write(f"note: {message}\n")

    try:
        return RunRecorder(redactor=redactor, on_trouble=trouble, on_recovered=recovered)
    except PlaitError as exc:
        hint = f"\n  hint: {exc.hint}" if exc.hint else ""
        sys.stderr.write(f"warning: this run is not recorded: {exc.message}{hint}\n")
    except Exception as exc:  # an unwritable folder, a locked or damaged database
        sys.stderr.write(f"warning: this run is not recorded: {type(exc).__name__}: {exc}\n")
    return None


def _how_far(result: RunResult) -> str:
    """`interrupted: 1 of 3 nodes finished; 'e' finished 420 of 10000 items`."""
    done = sum(1 for r in result.nodes.values() if r.status == "success")
    text = f"interrupted: {done} of {len(result.nodes)} nodes finished"
    for node_id, res in result.nodes.items():
        out = result.values.get(node_id)
        if res.status in ("failed", "interrupted") and isinstance(out, dict) and isinstance(out.get("count"), int):
            finished = out.get("batch_metadata", {}).get("completed")
            if finished is None:
                finished = sum(1 for r in out.get("results") or () if r is not None)
            failed = out.get("error_count") or 0
            text += f"; '{node_id}' finished {finished} of {out['count']} items"
            if failed:
                text += f" ({failed} failed)"
    return text


#: after an interrupt, how long a node blocking the main thread may take to notice
STOP_ESCALATE_S = 0.75


def _install_signals(services: RunServices) -> dict[int, Any]:
    """First SIGINT/SIGTERM: stop starting work and wind down. A second SIGINT: stop now.

    A node that blocks the main thread (a read on a FIFO) would not notice the
    first signal: when the main thread is still inside a node's exec
    ``STOP_ESCALATE_S`` later, the signal is sent again and the handler raises
    :class:`plait.runtime.items.Interrupt` into that exec, so the run stops
    within a second and still records how far it got.
    """
    import threading

    from plait.runtime.items import Interrupt, main_thread_in_exec

    previous: dict[int, Any] = {}
    state: dict[str, Any] = {"escalating": False, "timer": None}
    main = threading.main_thread().ident

    def escalate(signum: int) -> None:
        if main_thread_in_exec() and main is not None:
            state["escalating"] = True
            with contextlib.suppress(OSError, ValueError):
                signal.pthread_kill(main, signum)

    def stop(signum: int, frame: Any) -> None:
        if state["escalating"]:
            state["escalating"] = False
            if main_thread_in_exec():
                raise Interrupt
            return
        if services.cancelled.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        services.cancelled.set()
        if state["timer"] is None:
            timer = threading.Timer(STOP_ESCALATE_S, escalate, (signum,))
            timer.daemon = True
            timer.start()
            state["timer"] = timer

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, stop)
        except ValueError:  # not the main thread (embedded use)
            pass
    return previous


def _restore_signals(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
