"""`plait run`: compile, gather inputs, run with progress and signals, print the result."""

from __future__ import annotations

import json
import signal
import sys
from typing import Any

from plait.cli.inputs import add_piped, parse_args
from plait.cli.render import error_block, print_value
from plait.errors import Interrupted, PlaitError, RunFailed
from plait.nodes.registry import Registry
from plait.runtime.compile import load_and_compile
from plait.runtime.engine import Runner, RunResult, coerce_inputs
from plait.runtime.events import EventBus
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
    scheduler: str | None = None,
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
    if executor is not None:
        from plait.runtime.executors import check_executor_name, executor_names

        wrong = check_executor_name(executor)
        if wrong is not None:
            from plait.errors import UsageError

            raise UsageError(f"--executor: {wrong}", hint=f"executors: {', '.join(executor_names())}")
    bus = EventBus(on_subscriber_error=_subscriber_failed)
    services = RunServices(registry, bus, compiled.directory)
    # Slow imports (httpx for an http node) start now, beside input parsing and
    # the records database, instead of inside the first items.
    services.warm_up({cn.cls for cn in compiled.nodes.values()})
    specs = compiled.workflow.inputs
    given = parse_args(words, specs)
    add_piped(given, specs, sys.stdin)
    values = coerce_inputs(compiled, given)

    recorder = _start_recorder() if record else None
    if recorder is not None:
        recorder.attach(bus)
    if not quiet:
        from plait.cli.progress import attach_progress

        progress = attach_progress(bus, sys.stderr, cancelled=services.cancelled)
    else:
        progress = None
    previous = _install_signals(services)
    result: RunResult | None = None
    stopped = "failed"  # what the record says if the run raises: an internal error
    try:
        result = Runner(compiled, services, executor=executor).run(values)
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
                sys.stderr.write(f"warning: the run record is incomplete: {recorder.error}\n")
    run_id = recorder.run_id if recorder is not None else None
    recorded = run_id is not None and recorder is not None and not recorder.error
    details = f"  details: plait show {run_id}\n" if recorded else ""

    if result is None:
        error_block(Interrupted("interrupted: stopped at once by a second Ctrl-C"))
        sys.stderr.write(details)
        return 130
    if output_format == "json":
        payload = {"run_id": run_id, **result.to_json()}
        sys.stdout.write(json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")
    elif result.status == "success":
        print_value(result.primary)
    if result.status == "interrupted":
        error_block(Interrupted(_how_far(result)))
        sys.stderr.write(details)
        return 130
    if result.status != "success":
        first: dict[str, Any] = result.errors[0] if result.errors else {"message": "the run failed"}
        node_id = first.get("node_id")
        message = f"node '{node_id}' failed: {first['message']}" if node_id else first["message"]
        error_block(
            RunFailed(message, node_id=node_id, index=first.get("index"), hint=first.get("hint", "")),
        )
        sys.stderr.write(details)
        return 1
    return 0


def _subscriber_failed(subscriber: Any, exc: BaseException) -> None:
    what = getattr(subscriber, "__qualname__", None) or type(subscriber).__qualname__
    sys.stderr.write(
        f"warning: an event subscriber ({what}) failed and was detached; the run goes on: "
        f"{type(exc).__name__}: {exc}\n"
    )


def _start_recorder() -> Any:
    """The run record; a run goes on without one when it cannot be written."""
    from plait.runtime.records.writer import RunRecorder

    try:
        return RunRecorder()
    except PlaitError as exc:
        sys.stderr.write(f"warning: this run is not recorded: {exc.message}\n")
    except Exception as exc:  # an unwritable folder, a locked or damaged database
        sys.stderr.write(f"warning: this run is not recorded: {type(exc).__name__}: {exc}\n")
    return None


def _how_far(result: RunResult) -> str:
    """`interrupted: 1 of 3 nodes finished; 'e' finished 420 of 10000 items`."""
    done = sum(1 for r in result.nodes.values() if r.status == "success")
    text = f"interrupted: {done} of {len(result.nodes)} nodes finished"
    for node_id, res in result.nodes.items():
        out = result.values.get(node_id)
        if res.status == "failed" and isinstance(out, dict) and isinstance(out.get("count"), int):
            finished = out.get("batch_metadata", {}).get("completed")
            if finished is None:
                finished = sum(1 for r in out.get("results") or () if r is not None)
            failed = out.get("error_count") or 0
            text += f"; '{node_id}' finished {finished} of {out['count']} items"
            if failed:
                text += f" ({failed} failed)"
    return text


def _install_signals(services: RunServices) -> dict[int, Any]:
    """First SIGINT/SIGTERM: stop starting work and wind down. A second SIGINT: stop now."""
    previous: dict[int, Any] = {}

    def stop(signum: int, frame: Any) -> None:
        if services.cancelled.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        services.cancelled.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, stop)
        except ValueError:  # not the main thread (embedded use)
            pass
    return previous


def _restore_signals(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
