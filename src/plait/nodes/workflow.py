"""workflow: run another workflow as one step (or one batch item) of this one.

The child comes from a file (``workflow``, relative to the parent file's folder)
or is written inline (``workflow_ir``). ``inputs`` fill the child's declared
inputs; the child's declared outputs become this node's outputs. Running the
child, with its depth limit, cycle detection, events and LLM usage, is the
runtime's job, reached through ``services.run_workflow``.
"""

from __future__ import annotations

import re
from typing import Any

from plait.nodes.base import ItemContext, NodeError, Param, PlaitNode

#: pflow's storage modes that plait's child runs already are: the child sees
#: only the values passed to it (in pflow, ``isolated`` still hands the mapped
#: params to the child's templates, so the two read the same here)
_STORAGE_MODES = ("mapped", "isolated")
_UNSUPPORTED_STORAGE = {
    "scoped": "the child reads the parent's shared store by key prefix",
    "shared": "the child writes straight into the parent's shared store",
}
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


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
            "workflow_ref",
            "string",
            description="pflow's name for 'workflow': the path of the child workflow",
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
            "workflow_name",
            "string",
            description="pflow's saved workflow by name: not supported, give its file as 'workflow'",
            templates=False,
        ),
        Param(
            "inputs",
            "object",
            default=None,
            description="values for the child's inputs, by name (templates are resolved here first)",
        ),
        Param(
            "param_mapping",
            "object",
            default=None,
            description="pflow's name for 'inputs': {child_input: value or template}",
        ),
        Param(
            "output_mapping",
            "object",
            default=None,
            description="pflow's {child_output: name}: this node's outputs are then only these names",
            templates=False,
        ),
        Param(
            "storage_mode",
            "string",
            default="mapped",
            description="pflow's storage mode: 'mapped' (the default) or 'isolated'; the child sees "
            "only the values passed to it either way",
            templates=False,
        ),
    )
    # The outputs are the child's declared outputs (its last node's when it
    # declares none): not known from the type. A child compiled when its parent is
    # validated (runtime/compile.py) gives them to the template check.
    dynamic_outputs = True

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> list[tuple[str, str | None]]:
        problems: list[tuple[str, str | None]] = []
        if "workflow_name" in params:
            problems.append(
                (
                    "workflow_name (a workflow pflow saved by name) is not supported yet; give its file "
                    "instead: 'workflow': '~/.pflow/workflows/NAME.json' (plait reads pflow's saved files)",
                    "workflow_name",
                )
            )
        sources = [k for k in ("workflow", "workflow_ref", "workflow_ir") if k in params]
        if len(sources) != 1 and "workflow_name" not in params:
            problems.append(
                (
                    "give exactly one of 'workflow' (a path, pflow's 'workflow_ref') or 'workflow_ir' "
                    "(an inline workflow)" + (f", not both ({' and '.join(sources)})" if sources else ""),
                    None,
                )
            )
        if "inputs" in params and "param_mapping" in params:
            problems.append(
                ("give the child's values in 'inputs' or in 'param_mapping' (pflow's name), not both", None)
            )
        mode = params.get("storage_mode", "mapped")
        if mode in _UNSUPPORTED_STORAGE:
            problems.append(
                (
                    f"storage_mode '{mode}' is not supported: {_UNSUPPORTED_STORAGE[mode]}, and plait has "
                    "no shared store; pass values in with 'param_mapping' and take them out with "
                    "'output_mapping' (storage_mode 'mapped')",
                    "storage_mode",
                )
            )
        elif mode not in _STORAGE_MODES:
            problems.append((f"storage_mode must be 'mapped' or 'isolated', not {mode!r}", "storage_mode"))
        mapping = params.get("output_mapping")
        if mapping is not None:
            if not isinstance(mapping, dict):
                problems.append(("output_mapping must be an object {child_output: name}", "output_mapping"))
            else:
                for child, name in mapping.items():
                    if not isinstance(name, str) or not _KEY_RE.match(name):
                        problems.append(
                            (
                                f"output_mapping maps '{child}' to {name!r}, which is not a name a template "
                                "can read (letters, digits, _ and -)",
                                "output_mapping",
                            )
                        )
        return problems

    @classmethod
    def mapped_outputs(cls, params: dict[str, Any]) -> tuple[str, ...] | None:
        """This node's output names when ``output_mapping`` fixes them (checked statically)."""
        mapping = params.get("output_mapping")
        if isinstance(mapping, dict) and all(isinstance(v, str) for v in mapping.values()):
            return tuple(mapping.values())
        return None

    def prep(self, shared: ItemContext) -> dict[str, Any]:
        params = shared.params
        path = params.get("workflow")
        if path is None:
            path = params.get("workflow_ref")
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
            inputs = params.get("param_mapping")
        if inputs is None:
            inputs = {}
        elif not isinstance(inputs, dict):
            raise NodeError(
                f"'inputs' must be an object mapping the child's input names to values, "
                f"not {type(inputs).__name__}",
                retryable=False,
            )
        return {
            "ctx": shared,
            "path": path,
            "ir": ir,
            "inputs": inputs,
            "output_mapping": params.get("output_mapping"),
        }

    def exec(self, prep_res: dict[str, Any]) -> dict[str, Any]:
        ctx: ItemContext = prep_res["ctx"]
        outputs = ctx.services.run_workflow(
            ctx, path=prep_res["path"], ir=prep_res["ir"], inputs=prep_res["inputs"]
        )
        mapping = prep_res["output_mapping"]
        if not mapping:
            return outputs
        missing = [k for k in mapping if k not in outputs]
        if missing:
            # pflow only logs this; a name the parent reads that never arrives is an error here
            raise NodeError(
                f"output_mapping names {', '.join(repr(k) for k in missing)}, which the child workflow "
                f"did not produce; its outputs: {', '.join(outputs) or 'none'}",
                retryable=False,
            )
        return {name: outputs[child] for child, name in mapping.items()}
