"""Drive one node item directly (prep → exec → post) with the runtime's real services.

For node tests that look at a single item closely; everything else goes through
the CLI.
"""

from __future__ import annotations

from typing import Any

import pytest

from plait.nodes.base import ItemContext, NodeError, PlaitNode
from plait.nodes.registry import Registry
from plait.runtime.events import Event, EventBus, UsageRecorded
from plait.runtime.services import RunServices


class DirectServices(RunServices):
    """The real RunServices of a run, keeping the LLM calls it records for assertions."""

    def __init__(self) -> None:
        bus = EventBus()
        super().__init__(Registry(), bus, None)
        self.calls: list[tuple[str, int | None, str, int, int]] = []
        bus.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, UsageRecorded):
            self.calls.append(
                (str(event.loc), event.index, event.model or "", event.input_tokens, event.output_tokens)
            )


def with_defaults(cls: type[PlaitNode], params: dict[str, Any]) -> dict[str, Any]:
    """Params as the runtime hands them over: declared defaults filled in."""
    return {p.name: p.default for p in cls.param_specs} | params


def run_item(
    node: PlaitNode, services: RunServices, params: dict[str, Any], index: int | None = None
) -> dict[str, Any]:
    ctx = ItemContext(node.node_id, index, with_defaults(type(node), params), services)
    prep_res = node.prep(ctx)
    exec_res = node.exec(prep_res)
    node.post(ctx, prep_res, exec_res)
    assert ctx.outputs is not None
    return ctx.outputs


def failure(node: PlaitNode, services: RunServices, params: dict[str, Any]) -> NodeError:
    with pytest.raises(NodeError) as info:
        run_item(node, services, params)
    return info.value
