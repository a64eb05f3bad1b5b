"""Compile a workflow: load → validate → check templates → ready-to-run nodes.

Everything that can be done once is done here, so the per-item path only
resolves pre-parsed templates and calls the node.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plait.errors import PlaitError, Problem, WorkflowInvalid, closest
from plait.ir import Workflow, build_workflow
from plait.ir.format import BATCH
from plait.ir.graph import effective_edges, start_node
from plait.ir.loader import load_document
from plait.ir.model import BatchSpec
from plait.ir.validate import document_order
from plait.ir.values import ConversionError, convert_text
from plait.nodes.base import NodeError, Param, PlaitNode
from plait.runtime.keys import (
    NotCanonical,
    canonical,
    canonical_param,
    digest,
    encode_str,
    node_fingerprint,
)
from plait.runtime.redact import hashed_in_keys
from plait.templates import Base, Compiled, Local, TemplateError, compile_value, fresh
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
    results: Compiled | None
    max_attempts: int
    retry_wait: float
    retry_backoff: str
    position: int
    executor: str = "auto"
    #: static params holding lists or dicts: each item gets its own copy
    static_containers: tuple[str, ...] = ()
    #: what decides the node's work besides its params' values (runtime/keys.py)
    fingerprint: str = ""
    #: the node's own cache setting (None: its type's default) and time to live
    cache: bool | None = None
    cache_ttl: float | None = None
    #: a param uses ${__item_key__} or ${__attempt__}: the key is taken from the
    #: params resolved without them (an item has one key, whatever the attempt)
    uses_item_key: bool = False
    #: the type asks for room on a limiter / in a budget before each call (PlaitNode.demand)
    demands: bool = False
    #: the node's limiter: a declared name, False for none, None for the default
    rate: str | bool | None = None
    budget_usd: float | None = None
    #: how ``canonical_params`` builds an item's canonical params (see ``_key_plan``)
    #: entries (name, its piece when static, else None; '"name":'; whether keys hash its text)
    key_plan: tuple[tuple[str, str | None, str, bool], ...] | None = None

    def item_key(self, params: dict[str, Any]) -> str | None:
        """``keys.item_key(self.fingerprint, params)`` for params this node resolved,
        with the static params' canonical text made once at compile time."""
        try:
            return digest(self.fingerprint + "\0" + self.canonical_params(params))
        except NotCanonical:
            return None

    def cache_key(self, params: dict[str, Any]) -> str | None:
        """``keys.cache_key(self.node_type, self.cls.cache_version, params)``, the same way."""
        try:
            return digest(f"{self.node_type}\0{self.cls.cache_version}\0" + self.canonical_params(params))
        except NotCanonical:
            return None

    def canonical_params(self, params: dict[str, Any]) -> str:
        """``keys.canonical(params)``: the static params' pieces as made at compile
        time, the others' made now, in the names' order. Raises NotCanonical."""
        plan = self.key_plan
        if plan is None or len(params) != len(plan):
            return canonical(params)
        pieces = []
        try:
            for name, fixed, head, hashed in plan:
                if fixed is None:
                    value = params[name]
                    kind = type(value)
                    if kind is int:  # what canonical_param gives for the usual values, without the call
                        pieces.append(head + int.__repr__(value))
                    elif kind is str and not (hashed and value):
                        pieces.append(head + encode_str(value))
                    else:
                        pieces.append(head + canonical_param(name, value))
                else:
                    pieces.append(fixed)
        except KeyError:  # not the params it resolves (a caller's own): the slow way
            return canonical(params)
        except ValueError:  # an int past the digits Python prints: no canonical form
            raise NotCanonical("an int with more digits than Python prints") from None
        return "{" + ",".join(pieces) + "}"

    def resolve_params(self, base: Base, local: Local) -> dict[str, Any]:
        # A fresh dict (and fresh lists and dicts inside it) for every item: no
        # item can see what another one changed in its params.
        params = dict(self.static_params)
        for name in self.static_containers:
            params[name] = fresh(params[name])
        for name, resolve, coerce in self.templated:
            try:
                value = resolve(base, local)
            except TemplateError as exc:  # say which param, beside the node the error is filed under
                raise TemplateError(f"param '{name}': {exc.message}", template=exc.template, hint=exc.hint) from None
            params[name] = value if coerce is _passthrough else coerce(value, name)
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


#: the workflow files being compiled, outermost first (a child naming one of them is a cycle)
_COMPILING: ContextVar[tuple[str, ...]] = ContextVar("plait_compiling", default=())


def load_and_compile(path: str | Path, registry: Mapping[str, type[PlaitNode]]) -> CompiledWorkflow:
    token = _COMPILING.set((*_COMPILING.get(), str(Path(path).resolve())))
    try:
        return _load_and_compile(path, registry)
    finally:
        _COMPILING.reset(token)


def _load_and_compile(path: str | Path, registry: Mapping[str, type[PlaitNode]]) -> CompiledWorkflow:
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
    # children first: their declared outputs are what templates may read of their nodes
    children, child_warnings, child_outputs = _child_problems(wf, types, registry, file)
    more, warnings = check_workflow(wf, types, check_order=not graph_in_doubt, known_outputs=child_outputs)
    problems += more + _executor_problems(wf) + _stream_problems(wf) + _budget_problems(wf, types)
    problems += children
    warnings += child_warnings
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


def _child_problems(
    wf: Workflow, types: Mapping[str, type[PlaitNode]], registry: Mapping[str, type[PlaitNode]], file: str | None
) -> tuple[list[Problem], list[str], dict[str, tuple[str, ...]]]:
    """A ``workflow`` node naming its child by a path as written: the child is
    compiled now, so a missing input, an unknown one, an invalid child or a cycle
    is found before anything runs, not when the node is reached. A child file that
    is not there yet (an earlier node may write it) is a warning. Also returns the
    declared outputs of each compiled child, by its node's id (a child declaring
    none gives its last node's outputs, which are not known here)."""
    problems: list[Problem] = []
    warnings: list[str] = []
    outputs: dict[str, tuple[str, ...]] = {}
    base = Path(file).resolve().parent if file else Path.cwd()
    for i, n in enumerate(wf.nodes):
        cls = types.get(n.type)
        # by its module, not issubclass: a workflow without one does not import it (start-up)
        if cls is None or not any(c.__module__ == _WORKFLOW_NODE for c in cls.__mro__):
            continue
        inline = n.params.get("workflow_ir")
        if isinstance(inline, dict) and "workflow" not in n.params and "workflow_ref" not in n.params:
            # its ${...} are its own: compiled as it is written
            try:
                child = compile_raw(inline, registry, file=None)
            except WorkflowInvalid as exc:
                from plait.runtime.subworkflows import problems_text

                problems.append(Problem(f"inline workflow_ir is invalid: {problems_text(exc)}",
                                        path=f"nodes[{i}].params.workflow_ir", node_id=n.id))
                continue
            problems += _input_problems(n, i, "the inline workflow_ir", child)
            if child.workflow.outputs:
                outputs[n.id] = tuple(child.outputs)
            continue
        which = "workflow" if "workflow" in n.params else "workflow_ref"
        path = n.params.get(which)
        if not isinstance(path, str) or not path.strip() or "${" in path:
            continue  # none, or a template: known at run time
        where = f"nodes[{i}].params.{which}"
        resolved = (base / os.path.expanduser(path)).resolve()
        stack = _COMPILING.get() or ((str(Path(file).resolve()),) if file else ())
        if str(resolved) in stack:
            chain = " -> ".join(shown_path(k, base) for k in (*stack[stack.index(str(resolved)):], str(resolved)))
            problems.append(Problem(f"sub-workflow cycle: {chain}", path=where, node_id=n.id,
                                    hint="a workflow cannot run itself, directly or through its children"))
            continue
        if not resolved.is_file():
            warnings.append(
                f"node '{n.id}': sub-workflow {path} is not there yet ({resolved}); it must be when the node runs"
            )
            continue
        try:
            child = load_and_compile(resolved, registry)
        except WorkflowInvalid as exc:
            from plait.runtime.subworkflows import problems_text

            problems.append(Problem(f"sub-workflow {path} is invalid: {problems_text(exc)}", path=where,
                                    node_id=n.id, hint=f"`plait validate {path}` lists its problems by line"))
            continue
        except PlaitError as exc:
            problems.append(Problem(f"sub-workflow {path}: {exc.message}", path=where, node_id=n.id, hint=exc.hint))
            continue
        problems += _input_problems(n, i, f"sub-workflow {path}", child)
        if child.workflow.outputs:
            outputs[n.id] = tuple(child.outputs)
    return problems, warnings, outputs


def _input_problems(n: Any, i: int, what: str, child: CompiledWorkflow) -> list[Problem]:
    """The child's inputs against what node ``n`` (at ``nodes[i]``) gives it:
    unknown ones, and required ones not given."""
    problems: list[Problem] = []
    key = "param_mapping" if "param_mapping" in n.params and "inputs" not in n.params else "inputs"
    given = n.params.get(key)
    if given is None:
        given = {}
    if not isinstance(given, dict):
        return problems  # the node says so when it runs
    declared = child.workflow.inputs
    needed = [name for name, spec in declared.items()
              if spec.required and not spec.has_default and name not in given]
    misspelt: set[str] = set()  # needed inputs an unknown one is taken for: one problem, not two
    for name in given:
        if name not in declared:
            meant = closest(str(name), declared)
            hint = f"did you mean '{meant}'?" if meant else ""
            if meant in needed:
                misspelt.add(meant)
                hint += " (a required input, missing)"
            problems.append(Problem(
                f"{what} has no input '{name}'", path=f"nodes[{i}].params.{key}.{name}",
                node_id=n.id,
                hint=hint or (f"its inputs: {', '.join(declared)}" if declared else "it declares no inputs"),
            ))
    missing = [name for name in needed if name not in misspelt]
    if missing:
        problems.append(Problem(
            f"{what} needs input{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
            path=f"nodes[{i}].params",
            node_id=n.id,
            hint=f"add {', '.join(repr(m) for m in missing)} to the '{key}' of node '{n.id}'",
        ))
    return problems


_WORKFLOW_NODE = "plait.nodes.workflow"


def shown_path(path: str, base: str | Path | None) -> str:
    """A workflow file as the user reads it: relative to ``base`` (the top-level
    file's folder) when it is inside it, else as it is."""
    if base and os.path.isabs(path):
        rel = os.path.relpath(path, base)
        if not rel.startswith(".."):
            return rel
    return path


def _budget_problems(wf: Workflow, types: Mapping[str, type[PlaitNode]]) -> list[Problem]:
    """Under a budget every paid call must have a price and an output bound, or its
    worst case could not be reserved: a node whose model has no price is an error now,
    not a surprise at the first item (docs/limits.md)."""
    budgeted = wf.budget_usd is not None or any(n.budget_usd is not None for n in wf.nodes)
    if not budgeted:
        return []
    paying = [n for n in wf.nodes if n.type in types and types[n.type].demand is not PlaitNode.demand]
    if not paying:
        return []
    far = [n for n in paying if n.batch is not None and (n.batch.executor == "dask" or (
        n.batch.executor == "auto" and wf.executor == "dask"))]
    if far:
        n = far[0]
        return [Problem(
            f"node '{n.id}' runs on the dask executor, whose workers cannot share this run's budget",
            f"nodes[{n.position}].batch.executor",
            "run it on threads or async (the budget is kept in this process), or drop the budget",
            node_id=n.id,
        )]
    import os

    from plait.errors import PlaitError
    from plait.runtime.prices import PriceTable

    try:
        table = PriceTable.load(wf.prices)
    except PlaitError as exc:
        return [Problem(exc.message, "prices", exc.hint or "")]
    problems = []
    for n in paying:
        if wf.budget_usd is None and n.budget_usd is None:
            continue
        declared = {p.name: p for p in types[n.type].param_specs}
        if "model" not in declared:
            continue
        path = f"nodes[{n.position}].params.model"
        model = n.params.get("model", declared["model"].default)
        from_env = model is None and os.environ.get("PLAIT_LLM_MODEL")
        if from_env:
            model = from_env
        if model is None:
            problems.append(Problem(
                f"node '{n.id}' runs under a budget but names no model, so its price is not known",
                path, "give it a \"model\" (plait prices list shows the priced ones)", node_id=n.id,
            ))
            continue
        if not isinstance(model, str) or "${" in model:
            continue  # known per item: an unpriced one is refused then, before its call
        price = table.resolve(model)
        if price is None:
            hint = table.suggest(model)
            problems.append(Problem(
                f"node '{n.id}' runs under a budget, but model '{model}' has no known price",
                path,
                (hint + "; or " if hint else "")
                + f'price it in the workflow: "prices": {{"models": {{"{model}": {{"input": 1.0, "output": 4.0}}}}}} '
                "(dollars per 1M tokens)",
                node_id=n.id,
            ))
        elif price.max_output is None and "max_tokens" in declared and n.params.get("max_tokens") is None:
            problems.append(Problem(
                f"node '{n.id}' runs under a budget, but model '{model}' has no known output limit, "
                "so the worst case of a call cannot be reserved",
                f"nodes[{n.position}].params",
                'give the node "max_tokens", or "max_output" to the model\'s entry in "prices"',
                node_id=n.id,
            ))
    return problems


def _executor_problems(wf: Workflow) -> list[Problem]:
    from plait.runtime.executors import check_executor_name, executor_names

    problems = []
    where: list[tuple[str, str, str | None]] = [("executor", wf.executor, None)]
    where += [(f"nodes[{n.position}].batch.executor", n.batch.executor, n.id) for n in wf.nodes if n.batch]
    for path, name, node_id in where:
        wrong = check_executor_name(name)
        if wrong is not None:
            problems.append(
                Problem(wrong, path=path, node_id=node_id, hint=f"executors: {', '.join(executor_names())}")
            )
    return problems


def _stream_problems(wf: Workflow) -> list[Problem]:
    """Item sources in batch.items, result sinks in batch.results (docs/streaming.md)."""
    problems: list[Problem] = []
    readers = []
    for n in wf.nodes:
        b = n.batch
        if b is None:
            continue
        path = f"nodes[{n.position}].batch"
        if isinstance(b.items, dict):
            from plait.runtime.sources import validate_source

            for message, suffix, hint in validate_source(b.items):
                problems.append(Problem(message, f"{path}.items{suffix}", hint, node_id=n.id))
            if b.items.get("from") == "-":
                readers.append(n.id)
        if b.results is not None:
            from plait.runtime.sinks import validate_sink

            for message, suffix, hint in validate_sink(b.results):
                problems.append(Problem(message, f"{path}.results{suffix}", hint, node_id=n.id))
    if len(readers) > 1:
        problems.append(
            Problem(
                f"only one batch can read standard input, but {', '.join(readers)} all do",
                "nodes",
                "read the others from files",
            )
        )
    if readers and any(spec.stdin for spec in wf.inputs.values()):
        problems.append(
            Problem(
                f"batch '{readers[0]}' reads standard input, and so does an input marked stdin: true",
                "inputs",
                "keep one of them on standard input",
            )
        )
    return problems


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

    def unknown_hint(self, name: str) -> str:
        more = getattr(self._registry, "unknown_hint", None)
        return more(name) if more is not None else ""


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
    attempts, wait, backoff = _retry_settings(spec)
    node = cls(spec.id, max_retries=attempts, wait=wait)
    fingerprint = node_fingerprint(
        spec.type, cls.version, spec.params, {"as": spec.batch.alias} if spec.batch is not None else None
    )
    return CompiledNode(
        id=spec.id,
        node_type=spec.type,
        cls=cls,
        node=node,
        static_params=static,
        templated=templated,
        batch=spec.batch,
        items=compile_value(spec.batch.items, copy=False) if spec.batch is not None else None,
        results=compile_value(spec.batch.results) if spec.batch is not None and spec.batch.results else None,
        max_attempts=attempts,
        retry_wait=wait,
        retry_backoff=backoff,
        position=spec.position,
        executor=spec.batch.executor if spec.batch is not None else "auto",
        static_containers=tuple(k for k, v in static.items() if isinstance(v, dict | list)),
        cache=spec.cache,
        cache_ttl=spec.cache_ttl,
        fingerprint=fingerprint,
        key_plan=_key_plan(static, [name for name, _, _ in templated]),
        uses_item_key=any(
            r.root in ("__item_key__", "__attempt__") for v in spec.params.values() for r in compile_value(v).refs
        ),
        demands=cls.demand is not PlaitNode.demand,
        rate=spec.rate,
        budget_usd=spec.budget_usd,
    )


def _key_plan(static: dict[str, Any], templated: list[str]) -> tuple[tuple[str, str | None, str, bool], ...] | None:
    """The canonical params text of every item, in pieces: ``canonical(params)``
    is ``{"name":value,...}`` in the names' order, and a static param's piece is
    the same for every item. None when a static value has no canonical form
    (no item of the node is then keyed; ``item_key`` finds that out itself)."""
    entries: list[tuple[str, str | None, str, bool]] = []
    try:
        for name in static:
            head = f"{encode_str(name)}:"
            entries.append((name, head + canonical_param(name, static[name]), head, hashed_in_keys(name)))
    except NotCanonical:
        return None
    entries += [(name, None, f"{encode_str(name)}:", hashed_in_keys(name)) for name in templated]
    if len({entry[0] for entry in entries}) != len(entries):
        return None
    entries.sort(key=lambda e: e[0])
    return tuple(entries)


def _retry_settings(spec: Any) -> tuple[int, float, str]:
    """Attempts, wait and backoff: each from the batch when it sets it, else from
    the node's retry when that sets it, else the format's default."""
    batch, retry = spec.batch, spec.retry
    out = []
    for batch_name, retry_name in (("max_retries", "max"), ("retry_wait", "wait"), ("retry_backoff", "backoff")):
        if batch is not None and batch_name in batch.given:
            out.append(getattr(batch, batch_name))
        elif retry is not None and retry_name in retry.given:
            out.append(getattr(retry, retry_name))
        else:
            out.append(BATCH.default(batch_name))
    return int(out[0]), float(out[1]), str(out[2])


# A declared type: the Python types whose values fit it as they are.
_EXACT_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


def _passthrough(value: Any, name: str) -> Any:
    return value


def _coercer(pspec: Param | None) -> Callable[[Any, str], Any]:
    """Fit a value produced by a template to the param's declared type.

    Text is read by the same converter as the command line's ``name=value``
    (:func:`plait.ir.values.convert_text`), so ``"1_000"`` or ``"nan"`` is not a
    number and ``"yes"`` is a boolean either way.
    """
    if pspec is None or pspec.type == "any":
        return _passthrough
    types = pspec.types
    # The exact Python types that fit, checked first: `fits` spells out the JSON
    # type name of the value, which costs more than the rest of an item's coercion.
    exact = frozenset(t for name in types for t in _EXACT_TYPES.get(name, ()))

    def coerce(value: Any, name: str) -> Any:
        if type(value) in exact or fits(value, pspec.type):
            return value
        if value is None and not pspec.required:
            return pspec.default
        if isinstance(value, str):
            for t in types:
                try:
                    return convert_text(value, t)
                except ConversionError:
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
