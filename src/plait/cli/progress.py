"""Progress on stderr, as an event subscriber.

The runtime spends a few microseconds per item, so the handler only counts:
an item event is a comparison and an increment. Drawing happens elsewhere —
rich's refresh thread on a terminal, a ticker thread otherwise — reading the
counters as they are.

* On a terminal (rich, imported only then): a line per finished node, and a
  live row per running node (several when branches run at once), a bar for
  a batch with done/total, failures, rate and ETA.
* Elsewhere (a pipe, a CI log): no control codes; one line per node, and for a
  long batch a summary line every few seconds
  (``e: 4200/10000 items, 3 failed, 850/s, ETA 7s``).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from typing import Any, TextIO

from plait.runtime.events import (
    BatchStarted,
    Event,
    EventBus,
    ItemFailed,
    ItemFinished,
    ItemRetried,
    ItemStarted,
    Location,
    NodeFinished,
    NodeStarted,
    RunWarning,
    items_in,
)

SUMMARY_EVERY_S = 5.0  # plain mode: a batch running longer than this gets summary lines
RATE_WINDOW_S = 10.0  # rate and ETA follow the last seconds, not the whole batch


class NodeProgress:
    __slots__ = (
        "batch", "cached", "done", "failed", "grouped", "id", "loc", "retries", "reused", "started", "total", "type",
    )

    def __init__(self, node_id: str, type_: str, batch: bool, loc: Location | None = None) -> None:
        self.id = node_id
        self.loc = loc
        self.type = type_
        self.batch = batch
        self.started = time.monotonic()
        self.total: int | None = None
        self.done = 0
        self.failed = 0
        self.retries = 0
        self.reused = 0  # items whose recorded result was reused (resume)
        self.cached = 0  # items answered from the item cache
        self.grouped = False  # batch.group: an item event stands for each item of its list


class Rate:
    """Items per second over a sliding window, sampled by the drawing thread."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def sample(self, node: NodeProgress) -> float | None:
        now = time.monotonic()
        samples = self._samples
        samples.append((now, node.done))
        while len(samples) > 2 and now - samples[0][0] > RATE_WINDOW_S:
            samples.popleft()
        t0, d0 = samples[0]
        if now - t0 < 0.2:
            t0, d0 = node.started, 0
        elapsed = now - t0
        if elapsed <= 0 or node.done == 0:
            return None
        return (node.done - d0) / elapsed

    def reset(self) -> None:
        self._samples.clear()


class Tracker:
    """The subscriber: counts items of the running top-level nodes (several at once
    when independent branches run side by side)."""

    def __init__(self, display: Display) -> None:
        self.display = display
        #: the running top-level nodes by id, in the order they started
        self.running: dict[str, NodeProgress] = {}
        # item events find their node by the identity of their location (one
        # Location object per node and level), a dict look-up per item
        self._by_loc: dict[int, NodeProgress] = {}

    @property
    def node(self) -> NodeProgress | None:
        """The running node started last (None when none runs)."""
        return next(reversed(self.running.values()), None)

    def nodes(self) -> list[NodeProgress]:
        """The running nodes, oldest first (a copy: the drawing threads read it)."""
        return list(self.running.values())

    def __call__(self, ev: Event) -> None:
        kind = type(ev)
        if kind is ItemStarted:
            return
        if kind is ItemFinished or kind is ItemFailed or kind is ItemRetried:
            loc = ev.loc  # type: ignore[attr-defined]
            node = self._by_loc.get(id(loc))
            if node is not None and node.loc is loc:
                if kind is ItemRetried:
                    node.retries += 1
                else:
                    n = items_in(ev.item) if node.grouped else 1  # type: ignore[attr-defined]
                    node.done += n
                    if kind is ItemFailed:
                        node.failed += n
                    if ev.reused:  # type: ignore[attr-defined]
                        node.reused += n
                    elif kind is ItemFinished and ev.cached:  # type: ignore[attr-defined]
                        node.cached += n
            return
        loc = getattr(ev, "loc", None)
        if loc is None or not loc.top_level:  # run events, and the insides of sub-workflows
            return
        if isinstance(ev, NodeStarted):
            node = NodeProgress(loc.node_id, ev.type, ev.batch, loc)
            self.running.pop(loc.node_id, None)
            self.running[loc.node_id] = node
            self._by_loc[id(loc)] = node
            self.display.node_started(node)
        elif isinstance(ev, BatchStarted):
            node = self.running.get(loc.node_id)
            if node is not None:
                node.total = ev.total
                node.grouped = ev.grouped
                if ev.carried:  # a resumed results file held these: no item events come for them
                    node.done += ev.carried
                    node.failed += ev.carried_failed
                    node.reused += ev.carried - ev.carried_failed
                node.started = time.monotonic()
        elif isinstance(ev, NodeFinished):
            node = self.running.pop(loc.node_id, None)
            if node is None:
                node = NodeProgress(loc.node_id, "", False, loc)
            else:
                self._by_loc.pop(id(node.loc), None)
            self.display.node_finished(node, ev)


# --------------------------------------------------------------------------- text


def fmt_duration(ms: float) -> str:
    if ms < 1:
        return f"{ms * 1000:.0f} µs"
    if ms < 10:
        return f"{ms:.1f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    s = ms / 1000.0
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)}m {int(s % 60):02d}s"
    return f"{int(s // 3600)}h {int(s % 3600 // 60):02d}m"


def fmt_eta(seconds: float) -> str:
    if seconds < 60:
        return f"{max(seconds, 0):.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m {int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h {int(seconds % 3600 // 60):02d}m"


def fmt_rate(rate: float) -> str:
    if rate >= 100:
        return f"{rate:,.0f}/s"
    if rate >= 1:
        return f"{rate:.1f}/s"
    return f"{rate * 60:.1f}/min"


def summary(node: NodeProgress, rate: float | None) -> str:
    """``e: 4200/10000 items, 3 failed, 850/s, ETA 7s``"""
    total = node.total if node.total is not None else "?"
    parts = [f"{node.id}: {node.done}/{total} items"]
    if node.failed:
        parts.append(f"{node.failed} failed")
    if node.retries:
        parts.append(f"{node.retries} retried")
    if rate:
        parts.append(fmt_rate(rate))
        if node.total is not None and node.done < node.total:
            parts.append(f"ETA {fmt_eta((node.total - node.done) / rate)}")
    return ", ".join(parts)


def node_line(
    node: NodeProgress, ev: NodeFinished, marks: dict[str, str], cancelled: threading.Event | None = None
) -> tuple[str, str, str]:
    """(mark, node id, details) of a finished node."""
    status = ev.status or "success"
    interrupted = status == "interrupted" or (
        status == "failed" and (ev.error == "interrupted" or (cancelled is not None and cancelled.is_set()))
    )
    if interrupted:
        mark = marks["stop"]
    else:
        mark = {"success": marks["ok"], "partial": marks["partial"]}.get(status, marks["fail"])
    details = []
    counts = ev.counts or {}
    count = counts.get("count")
    if count is None:
        count = node.total
    if count is not None:
        done = node.done if interrupted or status not in ("success", "partial") else count
        items = f"{done}/{count} items" if done != count else f"{count} item{'s' if count != 1 else ''}"
        details.append(items)
        failed = counts.get("error_count") or node.failed
        if failed:
            details.append(f"{failed} failed")
        if node.reused:
            details.append(f"{node.reused} reused")
        if node.cached:
            details.append(f"{node.cached} from the cache")
        if node.retries:
            details.append(f"{node.retries} retried")
    if count is None and node.reused:
        details.append("reused")
    elif count is None and node.cached:
        details.append("from the cache")
    if interrupted:
        details.append("interrupted")
    elif status not in ("success", "partial") and not any(d.endswith(" failed") for d in details):
        details.append("failed")
    details.append(fmt_duration(ev.duration_ms or 0.0))
    return mark, node.id, ", ".join(details)


def _marks(stream: TextIO) -> dict[str, str]:
    encoding = getattr(stream, "encoding", None) or "ascii"
    try:
        "✓✗⏹⚠".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return {"ok": "ok", "fail": "FAILED", "stop": "STOPPED", "partial": "PARTIAL"}
    return {"ok": "✓", "fail": "✗", "stop": "⏹", "partial": "⚠"}


# --------------------------------------------------------------------------- displays


class Display:
    tracker: Tracker | None = None

    def warn(self, ev: Event) -> None:
        message = getattr(ev, "message", "")
        loc = getattr(ev, "loc", None)
        self.line(f"warning: {loc}: {message}" if loc is not None else f"warning: {message}")

    def line(self, text: str) -> None: ...

    def node_started(self, node: NodeProgress) -> None: ...

    def node_finished(self, node: NodeProgress, ev: NodeFinished) -> None: ...

    def close(self) -> None: ...


class PlainDisplay(Display):
    """No terminal: plain lines only, and a summary of a long batch now and then."""

    def __init__(self, stream: TextIO, every: float, cancelled: threading.Event | None = None) -> None:
        self.stream = stream
        self.cancelled = cancelled
        self.every = every
        self.marks = _marks(stream)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="plait-progress", daemon=True)
        self._thread.start()

    def _write(self, text: str) -> None:
        with self._lock:
            try:
                self.stream.write(text + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # a closed pipe must not fail the run
                pass

    def _tick(self) -> None:
        # per running node: its rate, and when its last summary was written
        seen: dict[int, tuple[NodeProgress, Rate, list[float]]] = {}
        while not self._stop.wait(min(self.every, 1.0)):
            nodes = self.tracker.nodes() if self.tracker else []
            alive = {id(n) for n in nodes}
            for key in [k for k in seen if k not in alive]:
                del seen[key]
            for node in nodes:
                entry = seen.get(id(node))
                if entry is None or entry[0] is not node:
                    entry = seen[id(node)] = (node, Rate(), [time.monotonic()])
                if not node.batch or node.total is None:
                    continue
                _, rate, last = entry
                r = rate.sample(node)
                now = time.monotonic()
                if now - last[0] >= self.every and now - node.started >= self.every:
                    last[0] = now
                    self._write(summary(node, r))

    def node_finished(self, node: NodeProgress, ev: NodeFinished) -> None:
        mark, node_id, details = node_line(node, ev, self.marks, self.cancelled)
        self._write(f"{mark} {node_id}  {details}")

    def line(self, text: str) -> None:
        self._write(text)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


class LiveDisplay(Display):
    """A terminal: rich draws a live bar for the running node, lines above it."""

    def __init__(self, stream: TextIO, cancelled: threading.Event | None) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=stream, highlight=False)
        self.cancelled = cancelled
        self.marks = _marks(stream)
        self._rates: dict[int, tuple[NodeProgress, Rate]] = {}
        self._spinner: Any = None
        self.live = Live(
            console=self.console,
            get_renderable=self._render,
            refresh_per_second=8,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.live.start()

    def node_started(self, node: NodeProgress) -> None:
        from rich.spinner import Spinner

        if self._spinner is None:
            self._spinner = Spinner("dots", style="cyan")

    def node_finished(self, node: NodeProgress, ev: NodeFinished) -> None:
        from rich.text import Text

        mark, node_id, details = node_line(node, ev, self.marks, self.cancelled)
        style = {self.marks["ok"]: "green", self.marks["stop"]: "yellow", self.marks["partial"]: "yellow"}.get(
            mark, "red"
        )
        line = Text.assemble((mark, f"bold {style}"), " ", (node_id, "bold"), "  ", (details, "dim"))
        self.live.refresh()  # the tracker has let go of the node: clear its bar first
        self.console.print(line)

    def line(self, text: str) -> None:
        from rich.text import Text

        self.console.print(Text(text, style="yellow"))

    def _rate_of(self, node: NodeProgress) -> Rate:
        entry = self._rates.get(id(node))
        if entry is None or entry[0] is not node:
            entry = self._rates[id(node)] = (node, Rate())
        return entry[1]

    def _render(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        nodes = self.tracker.nodes() if self.tracker else []
        if not nodes or self._spinner is None:
            self._rates.clear()
            return Text("")
        alive = {id(n) for n in nodes}
        for key in [k for k in self._rates if k not in alive]:
            del self._rates[key]
        grid = Table.grid(padding=(0, 1))
        for _ in range(4):
            grid.add_column()
        name_width = max(len(n.id) for n in nodes)
        for node in nodes:
            elapsed = (time.monotonic() - node.started) * 1000.0
            row: list[Any] = [self._spinner, Text(node.id.ljust(name_width), style="bold")]
            if node.batch and node.total is not None:
                rate = self._rate_of(node).sample(node)
                width = len(str(node.total))
                row.append(ProgressBar(total=max(node.total, 1), completed=node.done, width=32))
                info = Text(f"{node.done:>{width}}/{node.total}")
                if node.failed:
                    info.append(f"  {node.failed} failed", style="bold red")
                if node.retries:
                    info.append(f"  {node.retries} retried", style="yellow")
                if rate:
                    info.append(f"  {fmt_rate(rate)}", style="cyan")
                    if node.done < node.total:
                        info.append(f"  ETA {fmt_eta((node.total - node.done) / rate)}", style="magenta")
                info.append(f"  {fmt_duration(elapsed)}", style="dim")
                row.append(info)
            else:
                row.append(Text(fmt_duration(elapsed), style="dim"))
                row.append(Text(""))
            grid.add_row(*row)
        if self.cancelled is not None and self.cancelled.is_set():
            grid.add_row(
                "", Text("stopping: no new items start; waiting for those in flight", style="yellow"), "", ""
            )
        return grid

    def close(self) -> None:
        self.live.stop()


def attach_progress(
    bus: EventBus, stream: TextIO, *, cancelled: threading.Event | None = None
) -> Display:
    """Subscribe a progress display for ``stream`` (stderr); call ``close()`` after the run."""
    display: Display
    if _is_terminal(stream):
        display = LiveDisplay(stream, cancelled)
    else:
        every = float(os.environ.get("PLAIT_PROGRESS_EVERY") or SUMMARY_EVERY_S)
        display = PlainDisplay(stream, every, cancelled)
    tracker = Tracker(display)
    display.tracker = tracker
    bus.subscribe(tracker, kinds=(NodeStarted, BatchStarted, NodeFinished, ItemFinished, ItemFailed, ItemRetried))
    bus.subscribe(display.warn, kinds=(RunWarning,))
    return display


def _is_terminal(stream: TextIO) -> bool:
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return tty and os.environ.get("TERM", "") not in ("dumb", "unknown")
