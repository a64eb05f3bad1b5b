"""Progress on stderr (placeholder until the progress display lands)."""

from __future__ import annotations

from typing import Any, TextIO

from plait.runtime.events import Event, EventBus


class _Lines:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, event: Event) -> None:
        if event.kind == "node_finished" and event.node_id and "/" not in event.node_id:
            mark = "✓" if event.status == "success" else "✗"
            self.stream.write(f"{mark} {event.node_id} ({(event.duration_ms or 0):.0f} ms)\n")

    def close(self) -> None:
        self.stream.flush()


def attach_progress(bus: EventBus, stream: TextIO) -> Any:
    lines = _Lines(stream)
    bus.subscribe(lines)
    return lines
