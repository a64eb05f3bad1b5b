"""Static checks of a workflow's templates and param values, before anything runs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from plait.errors import Problem, did_you_mean
from plait.ir.graph import RunOrder, unreachable
from plait.ir.model import Workflow, fits, value_type
from plait.templates import TEMPLATE_RE, Ref, broken_templates, compile_value

BATCH_OUTPUTS = ("results", "count", "success_count", "error_count", "errors", "batch_metadata")
# Every node may carry these besides its declared outputs.
ALWAYS_OUTPUTS = ("error",)

__all__ = ["check_workflow", "fits", "value_type"]


def check_workflow(
    wf: Workflow,
    node_types: Mapping[str, Any],
    *,
    check_order: bool = True,
    known_outputs: Mapping[str, tuple[str, ...]] | None = None,
) -> tuple[list[Problem], list[str]]:
    """Return (problems, warnings).

    ``check_order=False`` skips "cannot have run yet" when the graph itself is in
    doubt (a dangling edge, a bad start node), so a structural problem does not
    also come back as a list of false ordering problems. ``known_outputs``: the
    output names of nodes whose type cannot declare them (a workflow node whose
    child was compiled: its child's declared outputs), by node id.
    """
    known_outputs = known_outputs or {}
    problems: list[Problem] = []
    warnings: list[str] = []
    if not wf.nodes:
        return problems, warnings
    order = RunOrder(wf)
    aliases = _aliases(wf)
    node_ids = [n.id for n in wf.nodes]
    by_id = {n.id: n for n in wf.nodes}
    inputs = list(wf.inputs)

    for nid in unreachable(wf):
        warnings.append(f"node '{nid}' is never reached from the start node and will not run")

    def check_ref(ref: Ref, path: str, node_id: str | None, allowed_local: tuple[str, ...]) -> None:
        root = ref.root
        if root in allowed_local or root in wf.inputs:
            return
        if root == "env":
            if not ref.steps or not isinstance(ref.steps[0], str):
                problems.append(
                    Problem(f"{ref.text}: name a variable, like ${{env.HOME}}", path=path, node_id=node_id)
                )
            return
        if (root in ("__index__", "item") or root in aliases) and root not in by_id:
            where = f"node '{node_id}' has no batch" if node_id else "workflow outputs are outside every batch"
            problems.append(
                Problem(
                    f"{ref.text}: '{root}' is the item of a batch, but {where}",
                    path=path,
                    node_id=node_id,
                    hint=(
                        'add "batch": {"items": ...} to this node to run it once per item, '
                        "or reference a node output or an input instead"
                    ),
                )
            )
            return
        if root not in by_id:
            visible = [*(n for n in allowed_local if n not in ("__item_key__", "__attempt__")), *inputs]
            before = order.before(node_id) if node_id is not None and check_order else None
            visible += [n for n in node_ids if before is None or n in before]
            visible = list(dict.fromkeys(visible))
            hint = did_you_mean(root, [*node_ids, *inputs, *allowed_local])
            hint += (" " if hint else "") + (
                f"available: {', '.join(visible)}" if visible else "declare it under 'inputs'"
            )
            variable = root.split("-")[0]
            if variable.isupper():  # most likely shell syntax: ${HOME}, ${VAR-default}
                hint += (
                    f"; for the environment write ${{env.{variable}}}, for shell syntax "
                    f"${ref.text} (a doubled $ keeps it as it is)"
                )
            problems.append(
                Problem(
                    f"{ref.text}: no node or input named '{root}'",
                    path=path,
                    node_id=node_id,
                    hint=hint,
                )
            )
            return
        if node_id is not None and root == node_id:
            problems.append(
                Problem(
                    f"{ref.text}: node '{node_id}' refers to its own outputs",
                    path=path,
                    node_id=node_id,
                    hint="a node's params are resolved before it runs; read another node's outputs",
                )
            )
            return
        if check_order and node_id is not None and not order.can_run_before(root, node_id):
            problems.append(
                Problem(
                    f"{ref.text}: node '{root}' cannot have run before '{node_id}'",
                    path=path,
                    node_id=node_id,
                    hint=f"move '{root}' before '{node_id}' or add an edge from it",
                )
            )
            return
        target = by_id[root]
        if ref.steps and isinstance(ref.steps[0], str):
            known = _outputs_of(target, node_types, known_outputs)
            if known is not None and ref.steps[0] not in known:
                problems.append(
                    Problem(
                        f"{ref.text}: node '{root}' ({target.type}) has no output '{ref.steps[0]}'",
                        path=path,
                        node_id=node_id,
                        hint=did_you_mean(ref.steps[0], known) or f"outputs: {', '.join(known)}",
                    )
                )

    def check_broken(value: Any, path: str, node_id: str | None, param: str | None = None) -> None:
        for text in _strings(value):
            for bad in broken_templates(text):
                what = f"param '{param}' of node '{node_id}'" if param and node_id else path
                problems.append(
                    Problem(
                        f"{bad}: {what} holds a template plait cannot read, so it would reach the node "
                        "as literal text",
                        path=path,
                        node_id=node_id,
                        param=param,
                        hint=(
                            "a path is name(.name | [number] | [${name.path}])*, with no spaces; an index "
                            "template goes one level deep, as in ${node.results[${__index__}].stdout}; "
                            "$${...} keeps the text as it is"
                        ),
                    )
                )

    for n in wf.nodes:
        npath = f"nodes[{n.position}]"
        # every node's attempt has these; a batch item also its alias and index
        local: tuple[str, ...] = ("__item_key__", "__attempt__")
        if n.batch is not None:
            local = (n.batch.alias, "__index__", *local)
            items_c = compile_value(n.batch.items)
            if n.batch.results is not None:
                for ref in compile_value(n.batch.results).refs:
                    check_ref(ref, f"{npath}.batch.results", n.id, ())
            for ref in items_c.refs:
                check_ref(ref, f"{npath}.batch.items", n.id, ())
            check_broken(n.batch.items, f"{npath}.batch.items", n.id)
            if isinstance(n.batch.items, dict):
                pass  # a source object: checked with the sources (runtime/sources.py)
            elif items_c.static and not isinstance(n.batch.items, list | str) and n.batch.items is not None:
                problems.append(
                    Problem(
                        f"batch.items must be a list or a template, not {value_type(n.batch.items)}",
                        path=f"{npath}.batch.items",
                        node_id=n.id,
                        hint='e.g. "items": "${list.files}" or "items": ["a", "b"]',
                    )
                )
            elif items_c.static and isinstance(n.batch.items, str) and not _json_list(items_c.value):
                problems.append(
                    Problem(
                        "batch.items is a plain string, not a list, a JSON list or a template",
                        path=f"{npath}.batch.items",
                        node_id=n.id,
                        hint='write "${node.output}" to use a list another node produced',
                    )
                )
        cls = node_types.get(n.type)
        specs = {p.name: p for p in cls.param_specs} if cls is not None else {}
        if cls is not None:
            for message, param in cls.check_params(n.params):
                problems.append(
                    Problem(
                        message,
                        path=f"{npath}.params.{param}" if param else f"{npath}.params",
                        node_id=n.id,
                        param=param,
                        hint=f"`plait nodes {n.type}` describes its params",
                    )
                )
            warnings += [f"node '{n.id}': {text}" for text in cls.check_warnings(n.params)]
        for key, value in n.params.items():
            ppath = f"{npath}.params.{key}"
            spec = specs.get(key)
            if spec is not None and not spec.templates:
                continue
            compiled = compile_value(value)
            for ref in compiled.refs:
                check_ref(ref, ppath, n.id, local)
            check_broken(value, ppath, n.id, key)
            if spec is None or not compiled.static:
                continue
            if not fits(value, spec.type):
                problems.append(
                    Problem(
                        f"param '{key}' of node '{n.id}' must be {spec.type.replace('|', ' or ')}, "
                        f"not {value_type(value)} ({_short(value)})",
                        path=ppath,
                        node_id=n.id,
                        param=key,
                        hint=f"`plait nodes {n.type}` describes its params",
                    )
                )
    for name, out in list(wf.outputs.items()):
        if out.source is None:
            source, problem, warning = _bind_output(name, wf, node_types, known_outputs)
            if problem is not None:
                problems.append(problem)
            if warning is not None:
                warnings.append(warning)
            if source is None:
                del wf.outputs[name]  # nothing gives it: left out, as pflow leaves it
                continue
            out.source = source
        for ref in compile_value(out.source).refs:
            check_ref(ref, f"outputs.{name}.source", None, ())
        check_broken(out.source, f"outputs.{name}.source", None)
        if isinstance(out.source, str) and not TEMPLATE_RE.search(out.source):
            warnings.append(f"output '{name}' has no template in its source; it is the fixed text {out.source!r}")
    return problems, warnings


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if "${" in value else []
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _json_list(text: str) -> bool:
    try:
        return isinstance(json.loads(text), list)
    except ValueError:
        return False


def _aliases(wf: Workflow) -> set[str]:
    return {n.batch.alias for n in wf.nodes if n.batch is not None}


def _bind_output(
    name: str, wf: Workflow, node_types: Mapping[str, Any], known: Mapping[str, tuple[str, ...]]
) -> tuple[str | None, Problem | None, str | None]:
    """An output without a source (pflow's older form: the value of that name): the
    input of that name, else the one node declaring an output of that name.
    Returns (its source, a problem, a warning)."""
    if name in wf.inputs:
        return "${" + name + "}", None, None
    givers = [n.id for n in wf.nodes if name in (_outputs_of(n, node_types, known) or ())]
    if len(givers) == 1:
        return "${" + givers[0] + "." + name + "}", None, None
    example = '{"source": "${' + (givers[0] if givers else "node") + "." + name + '}"}'
    if givers:
        problem = Problem(
            f"output '{name}' has no 'source', and nodes {', '.join(givers)} all give an output '{name}'",
            path=f"outputs.{name}",
            hint=f"say which: {example}",
        )
        return None, problem, None
    return None, None, (
        f"output '{name}' has no 'source', and no input or node output is named '{name}': it is left out "
        f"(give it one: {example})"
    )


def _outputs_of(
    node: Any, node_types: Mapping[str, Any], known: Mapping[str, tuple[str, ...]] | None = None
) -> tuple[str, ...] | None:
    """Names a template may step into on this node, or None when they are not known statically."""
    if node.batch is not None:
        return BATCH_OUTPUTS + ALWAYS_OUTPUTS
    cls = node_types.get(node.type)
    mapped = getattr(cls, "mapped_outputs", None)
    if mapped is not None and mapped(node.params) is not None:  # a workflow node's output_mapping
        return tuple(mapped(node.params)) + ALWAYS_OUTPUTS
    if known and node.id in known:
        return known[node.id] + ALWAYS_OUTPUTS
    if cls is None or cls.open_params or not cls.output_specs or getattr(cls, "dynamic_outputs", False):
        return None
    return tuple(o.name for o in cls.output_specs) + ALWAYS_OUTPUTS


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
