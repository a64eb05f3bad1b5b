"""Compile a workflow: load → validate → check templates → ready-to-run nodes.

Everything that can be done once is done here, so the per-item path only
resolves pre-parsed templates and calls the node.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plait.errors import WorkflowInvalid
from plait.ir import Workflow, build_workflow
from plait.ir.graph import effective_edges, start_node
from plait.ir.loader import load_document
from plait.ir.model import BatchSpec
from plait.ir.validate import document_order
from plait.nodes.base import NodeError, Param, PlaitNode
from plait.templates import Base, Compiled, Local, compile_value
from plait.templates.check import check_workflow, fits, value_type


@dataclass
class CompiledNode:
    id: str
    node_type: str
    cls: type[PlaitNode]
    node: PlaitNode
    static_params: dict[str, Any]
    templated: list[tuple[str, Callable[[Base, Local], Any], Callable[[Any, str], Any]]]
    batch: BatchSpec | None
    items: Compiled | None
    max_retries: int
    retry_wait: float
    position: int

    def resolve_params(self, base: Base, local: Local) -> dict[str, Any]:
        if not self.templated:
            return self.static_params
        params = dict(self.static_params)
        for name, resolve, coerce in self.templated:
            params[name] = coerce(resolve(base, local), name)
        return params


@dataclass
class CompiledWorkflow:
    workflow: Workflow
    nodes: dict[str, CompiledNode]
    order: list[str]
    edges_from: dict[str, list[tuple[str, str]]]  # node -> [(action, target)]
    start: str
    outputs: dict[str, Compiled]
    file: str | None
    warnings: list[str] = field(default_factory=list)

    @property
    def directory(self) -> str | None:
        return str(Path(self.file).resolve().parent) if self.file else None


def load_and_compile(path: str | Path, registry: Mapping[str, type[PlaitNode]]) -> CompiledWorkflow:
    doc = load_document(path)
    # One report: what reading the file found (a .pflow.md's markdown problems) and what
    # validation finds, the latter placed at their markdown lines.
    try:
        compiled = compile_raw(doc.raw, registry, file=str(path))
    except WorkflowInvalid as exc:
        raise WorkflowInvalid(doc.report(exc.problems), file=str(path)) from None
    if doc.problems:
        raise WorkflowInvalid(doc.report([]), file=str(path))
    compiled.warnings[:0] = doc.warnings
    return compiled


def compile_raw(
    raw: Any, registry: Mapping[str, type[PlaitNode]], *, file: str | None = None
) -> CompiledWorkflow:
    wf, problems = build_workflow(raw, _TypeView(registry), file=file)
    # Template and param checks run even on a broken structure: one report, every problem.
    graph_in_doubt = any(p.path.startswith(("edges", "start_node")) for p in problems)
    types = {n.type: registry[n.type] for n in wf.nodes if n.type in registry}
    more, warnings = check_workflow(wf, types, check_order=not graph_in_doubt)
    problems += more
    if problems:
        raise WorkflowInvalid(document_order(problems), file=file)
    nodes = {n.id: _compile_node(n, types[n.type]) for n in wf.nodes}
    edges_from: dict[str, list[tuple[str, str]]] = {}
    for e in effective_edges(wf):
        edges_from.setdefault(e.source, []).append((e.action, e.target))
    outputs = {name: compile_value(o.source) for name, o in wf.outputs.items()}
    return CompiledWorkflow(
        workflow=wf,
        nodes=nodes,
        order=[n.id for n in wf.nodes],
        edges_from=edges_from,
        start=start_node(wf),
        outputs=outputs,
        file=file,
        warnings=warnings,
    )


class _TypeView(Mapping[str, Any]):
    """The registry as validation sees it: names, and declarations on demand."""

    def __init__(self, registry: Mapping[str, type[PlaitNode]]) -> None:
        self._registry = registry

    def __getitem__(self, name: str) -> Any:
        return self._registry[name]

    def __contains__(self, name: object) -> bool:
        return name in self._registry

    def __iter__(self) -> Any:
        return iter(self._registry)

    def __len__(self) -> int:
        return len(self._registry)


def _compile_node(spec: Any, cls: type[PlaitNode]) -> CompiledNode:
    declared = {p.name: p for p in cls.param_specs}
    static: dict[str, Any] = {}
    templated = []
    for p in cls.param_specs:
        if p.name not in spec.params and not p.required:
            static[p.name] = p.default
    for name, value in spec.params.items():
        pspec = declared.get(name)
        if pspec is not None and not pspec.templates:
            static[name] = value
            continue
        compiled = compile_value(value, keep_parts=bool(pspec and pspec.keep_parts))
        if compiled.static:
            static[name] = compiled.value
        else:
            templated.append((name, compiled.resolve, _coercer(pspec)))
    retry = spec.retry
    max_retries = retry.max_retries if retry else 0
    retry_wait = retry.retry_wait if retry else 1.0
    if spec.batch is not None and (spec.batch.max_retries or retry is None):
        max_retries, retry_wait = spec.batch.max_retries, spec.batch.retry_wait
    node = cls(spec.id, max_retries=max_retries, wait=retry_wait)
    return CompiledNode(
        id=spec.id,
        node_type=spec.type,
        cls=cls,
        node=node,
        static_params=static,
        templated=templated,
        batch=spec.batch,
        items=compile_value(spec.batch.items) if spec.batch is not None else None,
        max_retries=max_retries,
        retry_wait=retry_wait,
        position=spec.position,
    )


def _passthrough(value: Any, name: str) -> Any:
    return value


def _coercer(pspec: Param | None) -> Callable[[Any, str], Any]:
    """Fit a value produced by a template to the param's declared type."""
    if pspec is None or pspec.type == "any":
        return _passthrough
    types = pspec.types

    def coerce(value: Any, name: str) -> Any:
        if fits(value, pspec.type):
            return value
        if value is None and not pspec.required:
            return pspec.default
        if isinstance(value, str):
            text = value.strip()
            for t in types:
                try:
                    if t == "integer":
                        return int(text)
                    if t == "number":
                        return float(text)
                    if t == "boolean" and text.lower() in ("true", "false"):
                        return text.lower() == "true"
                    if t in ("object", "array"):
                        parsed = json.loads(text)
                        if fits(parsed, t):
                            return parsed
                except ValueError:
                    continue
        if "string" in types and isinstance(value, int | float | bool):
            return json.dumps(value)
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise NodeError(
            f"param '{name}' must be {pspec.type.replace('|', ' or ')}, but its template gave "
            f"{value_type(value)} {shown}",
            retryable=False,
        )

    return coerce
