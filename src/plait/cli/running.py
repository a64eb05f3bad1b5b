"""`plait run`: compile, gather inputs, run with progress and signals, print the result."""

from __future__ import annotations

import json
import signal
import sys
from typing import Any

from plait.cli.inputs import parse_args, stdin_input
from plait.cli.render import error_block, print_value
from plait.errors import Interrupted, RunFailed
from plait.nodes.registry import Registry
from plait.runtime.compile import load_and_compile
from plait.runtime.engine import RunServices, Runner, coerce_inputs
from plait.runtime.events import EventBus


def run_command(
    workflow: str,
    words: tuple[str, ...],
    *,
    output_format: str,
    quiet: bool,
    nodes_paths: tuple[str, ...],
) -> int:
    registry = Registry()
    for path in nodes_paths:
        registry.load_path(path)
    compiled = load_and_compile(workflow, registry)
    specs = compiled.workflow.inputs
    given = parse_args(words, specs)
    piped = stdin_input(specs)
    if piped is not None and piped not in given and not sys.stdin.isatty():
        given[piped] = sys.stdin.read()
    values = coerce_inputs(compiled, given)

    bus = EventBus()
    if not quiet:
        from plait.cli.progress import attach_progress

        progress = attach_progress(bus, sys.stderr)
    else:
        progress = None
    services = RunServices(registry, bus, compiled.directory)
    previous = _install_signals(services)
    try:
        result = Runner(compiled, services).run(values)
    finally:
        _restore_signals(previous)
        services.close()
        if progress is not None:
            progress.close()

    if output_format == "json":
        sys.stdout.write(json.dumps(result.to_json(), indent=2, ensure_ascii=False, default=str) + "\n")
    elif result.status == "success":
        print_value(result.primary)
    if result.status == "interrupted":
        done = sum(1 for r in result.nodes.values() if r.status == "success")
        error_block(
            Interrupted(
                f"interrupted: {done} of {len(result.nodes)} nodes finished",
                hint="finished work is kept in the run's outputs above" if output_format == "json" else "",
            )
        )
        return 130
    if result.status != "success":
        first = result.errors[0] if result.errors else {"message": "the run failed"}
        node_id = first.get("node_id")
        message = f"node '{node_id}' failed: {first['message']}" if node_id else first["message"]
        error_block(
            RunFailed(message, node_id=node_id, index=first.get("index"), hint=first.get("hint", "")),
        )
        return 1
    return 0


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
