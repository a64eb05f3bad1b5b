"""workflow: run another workflow as one step (or one batch item) of this one.

The child comes from a file (``workflow``, relative to the parent file's folder)
or is written inline (``workflow_ir``). ``inputs`` fill the child's declared
inputs; the child's declared outputs become this node's outputs. Running the
child, with its depth limit, cycle detection, events and LLM usage, is the
runtime's job, reached through ``services.run_workflow``.
"""

from __future__ import annotations

from typing import Any

from plait.nodes.base import ItemContext, NodeError, Param, PlaitNode


class WorkflowNode(PlaitNode):
    type_name = "workflow"
    description = (
        "Run a child workflow (a file or inline IR); its declared outputs become this node's."
    )
    param_specs = (
        Param(
            "workflow",
            "string",
            description="path of the child workflow; relative paths start at this workflow's folder",
        ),
        Param(
            "workflow_ir",
            "object",
            description="the child workflow written inline, instead of a path; its ${...} are "
            "the child's own, so pass the parent's values through 'inputs'",
            # its ${...} are resolved when the child runs, against the child's inputs and nodes
            templates=False,
        ),
        Param(
            "inputs",
            "object",
            default=None,
            description="values for the child's inputs, by name (templates are resolved here first)",
        ),
    )
    # The outputs are the child's declared outputs (its last node's when it
    # declares none): known only once the child is loaded, so not checked statically.
    dynamic_outputs = True

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> list[tuple[str, str | None]]:
        has_path, has_ir = "workflow" in params, "workflow_ir" in params
        if has_path == has_ir:
            return [
                (
                    "give exactly one of 'workflow' (a path) or 'workflow_ir' (an inline workflow)"
                    + (", not both" if has_path else ""),
                    None,
                )
            ]
        return []

    def prep(self, shared: ItemContext) -> dict[str, Any]:
        params = shared.params
        path = params.get("workflow")
        ir = params.get("workflow_ir")
        if (path is None) == (ir is None):
            raise NodeError(
                "give exactly one of 'workflow' (a path) or 'workflow_ir' (an inline workflow)"
                + (", not both" if path is not None else ""),
                retryable=False,
            )
        if path is not None and not (isinstance(path, str) and path.strip()):
            raise NodeError(f"'workflow' must be a path, not {path!r}", retryable=False)
        if ir is not None and not isinstance(ir, dict):
            raise NodeError(
                f"'workflow_ir' must be a workflow object, not {type(ir).__name__}", retryable=False
            )
        inputs = params.get("inputs")
        if inputs is None:
            inputs = {}
        elif not isinstance(inputs, dict):
            raise NodeError(
                f"'inputs' must be an object mapping the child's input names to values, "
                f"not {type(inputs).__name__}",
                retryable=False,
            )
        return {"ctx": shared, "path": path, "ir": ir, "inputs": inputs}

    def exec(self, prep_res: dict[str, Any]) -> dict[str, Any]:
        ctx: ItemContext = prep_res["ctx"]
        return ctx.services.run_workflow(
            ctx, path=prep_res["path"], ir=prep_res["ir"], inputs=prep_res["inputs"]
        )
