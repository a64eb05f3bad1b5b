"""Node types for the dask executor's tests (loaded with ``nodes=[...]``)."""

from __future__ import annotations

import os
from typing import Any

from plait.nodes.base import ItemContext, Output, Param, PlaitNode, Usage


class UsageProbeNode(PlaitNode):
    """Records ``tokens`` input and twice as many output tokens for its item, as an LLM call would."""

    type_name = "usage-probe"
    description = "A test node: records usage for its item."
    param_specs = (Param("tokens", "integer", default=1), Param("model", "string", default="probe-model"))
    output_specs = (Output("tokens", "integer"), Output("pid", "integer"))

    def prep(self, shared: ItemContext) -> Any:
        shared.services.record_usage(
            shared, Usage(model=shared.params["model"], input_tokens=shared.params["tokens"],
                          output_tokens=2 * shared.params["tokens"], cost_usd=0.001)
        )
        return shared.params

    def exec(self, prep_res: Any) -> dict[str, Any]:
        return {"tokens": prep_res["tokens"], "pid": os.getpid()}
