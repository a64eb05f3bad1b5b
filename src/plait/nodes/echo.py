"""echo: returns its params unchanged. Handy for shaping data and for tests."""

from __future__ import annotations

from typing import Any

from plait.nodes.base import PlaitNode


class EchoNode(PlaitNode):
    type_name = "echo"
    description = "Return the params unchanged as outputs (shape data, test templates)."
    open_params = True

    def exec(self, prep_res: dict[str, Any]) -> dict[str, Any]:
        return prep_res
