"""A node type for the executor conformance suite and the seam tests (loaded with ``nodes=[...]``).

``probe`` does what its params say, keeping every piece of state in files, so
it behaves the same whether items run in this thread, in a thread pool, on an
event loop or in another process:

* ``log``: a file the item appends ``start <value>`` / ``end <value>`` lines to
* ``sleep``: seconds to sleep (in small steps, stopping early when the run is cancelled)
* ``fail_times`` with ``marker``: fail the first N attempts (counted in the marker file)
* ``fail``: always fail (``NodeError``); ``boom``: raise a plain exception;
  ``exit``: call ``sys.exit(3)``
* ``append_to``: a list param the node appends to in place (to show that it is its own copy)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from plait.nodes.base import ItemContext, NodeError, Output, Param, PlaitNode


class ProbeNode(PlaitNode):
    type_name = "probe"
    description = "A test node: sleeps, fails, raises or exits as its params say."
    param_specs = (
        Param("value", "any"),
        Param("log", "string"),
        Param("sleep", "number", default=0),
        Param("fail_times", "integer", default=0),
        Param("marker", "string"),
        Param("fail", "boolean", default=False),
        Param("boom", "boolean", default=False),
        Param("exit", "boolean", default=False),
        Param("append_to", "array"),
    )
    output_specs = (Output("value", "any"), Output("seen", "any"), Output("attempt", "integer"))

    def prep(self, shared: ItemContext) -> Any:
        return shared.params, shared.services.cancelled, shared.attempt

    def exec(self, prep_res: Any) -> dict[str, Any]:
        p, cancelled, attempt = prep_res
        log = p.get("log")
        if log:
            _append(log, f"start {p.get('value')}")
        deadline = time.monotonic() + float(p.get("sleep") or 0)
        while time.monotonic() < deadline and not cancelled.is_set():
            time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
        return self._finish(p, attempt)

    def _finish(self, p: dict[str, Any], attempt: int) -> dict[str, Any]:
        log = p.get("log")
        if log:
            _append(log, f"end {p.get('value')}")
        if p.get("boom"):
            raise RuntimeError(f"boom {p.get('value')}")
        if p.get("exit"):
            sys.exit(3)
        if p.get("fail"):
            raise NodeError(f"failed {p.get('value')}")
        if p.get("fail_times"):
            marker = Path(p["marker"])
            count = int(marker.read_text()) if marker.exists() else 0
            marker.write_text(str(count + 1))
            if count < p["fail_times"]:
                raise NodeError(f"flaky {p.get('value')} (attempt {count + 1})")
        seen = p.get("append_to")
        if isinstance(seen, list):
            seen.append("mine")
        return {"value": p.get("value"), "seen": seen, "attempt": attempt}


class AsyncProbeNode(ProbeNode):
    """``probe`` with an ``exec_async``: sleeps on the event loop, never in a thread."""

    type_name = "aprobe"
    description = "A test node like probe, with an async exec."

    async def exec_async(self, prep_res: Any) -> dict[str, Any]:
        import asyncio

        p, _cancelled, attempt = prep_res
        if p.get("log"):
            _append(p["log"], f"start {p.get('value')}")
        delay = float(p.get("sleep") or 0)
        if delay:
            await asyncio.sleep(delay)
        return self._finish(p, attempt)


def _append(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


class LoopUserNode(PlaitNode):
    """From a synchronous exec, uses a per-run async resource on the run's event loop."""

    type_name = "loop-user"
    description = "A test node: call_async with an async resource counted in files."
    param_specs = (Param("dir", "string", required=True), Param("value", "any"))
    output_specs = (Output("value", "any"), Output("session", "integer"))

    def prep(self, shared: ItemContext) -> Any:
        return shared.params, shared.services

    def exec(self, prep_res: Any) -> dict[str, Any]:
        p, services = prep_res
        folder = Path(p["dir"])

        async def make() -> int:
            import asyncio

            await asyncio.sleep(0.01)  # slow to make: concurrent askers must wait for this one
            _append(str(folder / "made.txt"), "made")
            return len((folder / "made.txt").read_text().splitlines())

        async def close(session: int) -> None:
            _append(str(folder / "closed.txt"), f"closed {session}")

        async def work() -> int:
            session: int = await services.async_resource("loop-user.session", make, close)
            return session

        return {"value": p.get("value"), "session": services.call_async(work())}
