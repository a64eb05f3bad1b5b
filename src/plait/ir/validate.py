"""Structural validation: turn raw data into a :class:`Workflow`, collecting every problem.

Template references and param value types are checked one layer up
(:mod:`plait.templates.check`), where templates are understood.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

from plait.errors import Problem, closest, did_you_mean
from plait.ir.format import (
    BATCH,
    COMPAT_NODE,
    COMPAT_TOP,
    EDGE,
    INPUT,
    NODE,
    OUTPUT,
    RETRY,
    TOP,
    UNSUPPORTED_NODE,
    Field,
)
from plait.ir.model import (
    INPUT_TYPES,
    TYPE_ALIASES,
    BatchSpec,
    Edge,
    InputSpec,
    NodeSpec,
    OutputSpec,
    RetrySpec,
    Workflow,
    fits,
    value_type,
)

SUPPORTED_MAJORS = (0, 1)  # pflow's planner writes 1.0.0
NODE_ID_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_COMPAT_TOP = (*COMPAT_TOP, *COMPAT_NODE, *UNSUPPORTED_NODE)  # accepted, but not offered in hints
TOP_FIELDS = (*TOP.names, *COMPAT_TOP)
NODE_FIELDS = (*NODE.names, *COMPAT_NODE, *UNSUPPORTED_NODE)
EDGE_FIELDS = EDGE.names
INPUT_FIELDS = INPUT.names
OUTPUT_FIELDS = OUTPUT.names
BATCH_FIELDS = BATCH.names
RETRY_FIELDS = RETRY.names
# plait 0.1's names inside a node's retry, before it took pflow's {max, wait, backoff}
_OLD_RETRY_FIELDS = {"max_retries": "max", "retry_wait": "wait"}
RESERVED_ROOTS = ("env", "__index__", "__item_key__", "__attempt__")


class ParamInfo(Protocol):
    name: str
    required: bool


class NodeTypeInfo(Protocol):
    """What validation needs to know of a node type (its declaration)."""

    param_specs: tuple[Any, ...]
    open_params: bool


class _Collector:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, message: str, path: str, hint: str = "", **where: Any) -> None:
        self.problems.append(Problem(message, path=path, hint=hint, **where))

    def unknown_fields(self, obj: Mapping[str, Any], allowed: tuple[str, ...], path: str, what: str) -> None:
        for key in obj:
            if key not in allowed:
                suggestion = did_you_mean(str(key), allowed)
                shown = [a for a in allowed if a not in _COMPAT_TOP]
                self.add(
                    f"unknown field '{key}' in {what}",
                    f"{path}.{key}" if path else str(key),
                    suggestion or f"allowed fields: {', '.join(shown)}",
                )


_SECTIONS = ("", "ir_version", "description", "inputs", "nodes", "edges", "start_node", "outputs")
_INDEX_RE = re.compile(r"^(\w+)(?:\[(\d+)\])?")


def document_order(problems: list[Problem]) -> list[Problem]:
    """Problems sorted as the file reads: by section, then node or edge index (stable)."""

    def key(p: Problem) -> tuple[int, int]:
        m = _INDEX_RE.match(p.path)
        section = m.group(1) if m else ""
        rank = _SECTIONS.index(section) if section in _SECTIONS else 0
        return rank, int(m.group(2)) if m and m.group(2) else -1

    return sorted(problems, key=key)


def build_workflow(
    raw: Any, node_types: Mapping[str, NodeTypeInfo], *, file: str | None = None
) -> tuple[Workflow, list[Problem]]:
    """Validate the structure of ``raw`` and build the model; problems are collected, not raised."""
    c = _Collector()
    if not isinstance(raw, dict):
        c.add(
            f"a workflow must be an object with a 'nodes' list, not {value_type(raw)}",
            "",
            'start from {"nodes": [{"id": "hello", "type": "shell", "params": {"command": "echo hi"}}]}',
        )
        return Workflow(nodes=[], file=file), c.problems
    c.unknown_fields(raw, TOP_FIELDS, "", "the workflow")

    ir_version = raw.get("ir_version", "0.1.0")
    if not isinstance(ir_version, str) or not re.match(r"^\d+\.\d+(\.\d+)?", ir_version):
        c.add(f"ir_version must be a semver string like '0.1.0', not {ir_version!r}", "ir_version")
    elif int(ir_version.split(".")[0]) not in SUPPORTED_MAJORS:
        c.add(
            f"unsupported ir_version '{ir_version}': this plait reads major versions 0 and 1",
            "ir_version",
            "upgrade plait, or write the workflow for ir_version 0.x or 1.x",
        )

    _pflow_top(raw, c)

    description = raw.get("description", "")
    if not isinstance(description, str):
        c.add("description must be a string", "description")
        description = ""

    inputs = _inputs(raw.get("inputs", {}), c)
    nodes = _nodes(raw.get("nodes"), node_types, c)
    node_ids = {n.id for n in nodes}
    for n in nodes:
        if n.batch is not None:
            where = f"nodes[{n.position}].batch.as"
            if n.batch.alias in node_ids:
                c.add(
                    f"batch alias '{n.batch.alias}' is also a node id",
                    where,
                    "choose another name for 'as' so templates are unambiguous",
                    node_id=n.id,
                )
            elif n.batch.alias in inputs:
                c.add(
                    f"batch alias '{n.batch.alias}' is also a workflow input",
                    where,
                    "choose another name for 'as' so templates are unambiguous",
                    node_id=n.id,
                )
    for name in inputs:
        if name in node_ids:
            c.add(
                f"input '{name}' has the same name as a node",
                f"inputs.{name}",
                "rename the input or the node so ${" + name + "} is unambiguous",
            )
    edges = _edges(raw.get("edges", []), node_ids, c)
    outputs = _outputs(raw.get("outputs", {}), c)

    fail_on_item_errors = _field(raw, TOP["fail_on_item_errors"], "", "", "", c)
    max_parallel_nodes = _field(raw, TOP["max_parallel_nodes"], "", "", "", c)
    executor = raw.get("executor", TOP.default("executor"))
    if not isinstance(executor, str) or not executor:
        c.add(f"executor must be the name of an executor, not {executor!r}", "executor")
        executor = TOP.default("executor")

    start = raw.get("start_node")
    if start is not None:
        if not isinstance(start, str):
            c.add("start_node must be a node id (string)", "start_node")
            start = None
        elif start not in node_ids and nodes:
            c.add(
                f"start_node '{start}' is not a node",
                "start_node",
                did_you_mean(start, node_ids) or f"nodes: {', '.join(sorted(node_ids))}",
            )
    limits, budget_usd, prices = _limit_fields(raw, nodes, c)
    wf = Workflow(
        nodes=nodes,
        edges=edges,
        inputs=inputs,
        outputs=outputs,
        ir_version=ir_version if isinstance(ir_version, str) else "0.1.0",
        description=description,
        start_node=start,
        file=file,
        executor=executor,
        fail_on_item_errors=fail_on_item_errors,
        max_parallel_nodes=max_parallel_nodes,
        limits=limits,
        budget_usd=budget_usd,
        prices=prices,
        raw=raw,
    )
    return wf, c.problems


def _pflow_top(raw: dict[str, Any], c: _Collector) -> None:
    """pflow's top-level switches: the setting that is plait's own behaviour is
    accepted; any other would change what the workflow means, so it is refused."""
    if "template_resolution_mode" in raw:
        mode = raw["template_resolution_mode"]
        if mode == "permissive":
            c.add(
                "template_resolution_mode 'permissive' is not supported: plait resolves every template "
                "strictly, and one that cannot be resolved fails its node instead of reaching it as text",
                "template_resolution_mode",
                "remove the field (or write 'strict'); to pass the text ${...} on as it is, write $${...}",
            )
        elif mode != "strict":
            c.add(
                f"template_resolution_mode must be 'strict' or 'permissive', not {mode!r}",
                "template_resolution_mode",
                "plait supports 'strict', pflow's default",
            )
    if "enable_namespacing" in raw:
        value = raw["enable_namespacing"]
        if value is False:
            c.add(
                "enable_namespacing false is not supported: plait always keeps each node's outputs "
                "under its id, and there is no flat shared store to write into",
                "enable_namespacing",
                "remove the field and read outputs as ${node_id.output}",
            )
        elif value is not True:
            c.add(f"enable_namespacing must be true or false, not {value!r}", "enable_namespacing")
    if "mappings" in raw:
        value = raw["mappings"]
        if not isinstance(value, dict):
            c.add(f"mappings must be an object, not {value_type(value)}", "mappings")
        elif value:
            c.add(
                "mappings (pflow's proxy mappings of node inputs and outputs) are not supported yet",
                "mappings",
                "remove 'mappings' and pass each value with a template, e.g. "
                '"params": {"content": "${fetch.stdout}"}',
            )


def _limit_fields(
    raw: dict[str, Any], nodes: list[NodeSpec], c: _Collector
) -> tuple[dict[str, Any] | None, float | None, dict[str, Any] | None]:
    """The top-level ``limits``, ``budget`` and ``prices``, and each node's ``rate``
    against the declared limiters (docs/limits.md)."""
    if not any(raw.get(k) is not None for k in ("limits", "budget", "prices")) and not any(
        isinstance(node, dict) and (node.get("rate") is not None or node.get("budget") is not None)
        for node in (raw["nodes"] if isinstance(raw.get("nodes"), list) else ())
    ):
        return None, None, None  # the common case, without importing the limiters
    from plait.runtime.limits import validate_budget, validate_limits, validate_rate_name

    limits = raw.get("limits")
    if limits is not None:
        problems = validate_limits(limits)
        for message, path, hint in problems:
            c.add(message, path, hint)
        if problems:
            limits = None
    budget_usd = None
    if raw.get("budget") is not None:
        problems = validate_budget(raw["budget"])
        for message, path, hint in problems:
            c.add(message, path, hint)
        if not problems:
            budget_usd = float(raw["budget"]["usd"])
    prices = raw.get("prices")
    if prices is not None:
        from plait.runtime.prices import default_table, validate_prices

        try:
            known = [p.model for p in default_table()]
        except Exception:  # a broken user prices file is reported when a run loads it
            known = None
        problems = validate_prices(prices, known=known)
        for message, path, hint in problems:
            c.add(message, path, hint)
        if problems:
            prices = None
    declared = raw.get("limits") if isinstance(raw.get("limits"), dict) else {}
    for n in nodes:
        node_raw = raw["nodes"][n.position]
        path = f"nodes[{n.position}]"
        if "rate" in node_raw and node_raw["rate"] is not None:
            rate = node_raw["rate"]
            if rate is False:
                n.rate = False
            elif rate is True:
                c.add("'rate' must name a limiter from 'limits', or be false for none, not true", f"{path}.rate",
                      "leave it out for the default limiter (one per model or host)", node_id=n.id)
            else:
                problems = validate_rate_name(rate, declared, f"{path}.rate")
                for message, where, hint in problems:
                    c.add(message, where, hint, node_id=n.id)
                if not problems:
                    n.rate = rate
        if node_raw.get("budget") is not None:
            problems = validate_budget(node_raw["budget"], f"{path}.budget")
            for message, where, hint in problems:
                c.add(message, where, hint, node_id=n.id)
            if not problems:
                n.budget_usd = float(node_raw["budget"]["usd"])
    return limits, budget_usd, prices


def _inputs(raw: Any, c: _Collector) -> dict[str, InputSpec]:
    out: dict[str, InputSpec] = {}
    if not isinstance(raw, dict):
        c.add(f"inputs must be an object of name: spec, not {value_type(raw)}", "inputs")
        return out
    stdin_inputs = []
    for name, spec in raw.items():
        path = f"inputs.{name}"
        if not isinstance(name, str) or not IDENT_RE.match(name):
            c.add(f"input name {name!r} is not an identifier", path, "use letters, digits and _")
            continue
        if name in RESERVED_ROOTS:
            c.add(f"input name '{name}' is reserved", path, "choose another name")
            continue
        if not isinstance(spec, dict):
            c.add(f"input '{name}' must be an object such as {{\"type\": \"string\"}}", path)
            continue
        c.unknown_fields(spec, INPUT_FIELDS, path, f"input '{name}'")
        type_ = spec.get("type", "any")
        if not isinstance(type_, str) or TYPE_ALIASES.get(type_, type_) not in INPUT_TYPES:
            c.add(
                f"input '{name}' has unknown type {type_!r}",
                f"{path}.type",
                did_you_mean(str(type_), INPUT_TYPES) or f"types: {', '.join(INPUT_TYPES)}",
            )
            type_ = "any"
        type_ = TYPE_ALIASES.get(type_, type_)
        required = spec.get("required", True)
        if not isinstance(required, bool):
            c.add(f"input '{name}'.required must be true or false", f"{path}.required")
            required = True
        stdin = spec.get("stdin", False)
        if not isinstance(stdin, bool):
            c.add(f"input '{name}'.stdin must be true or false", f"{path}.stdin")
            stdin = False
        if stdin:
            stdin_inputs.append(name)
        default = spec.get("default")
        if default is not None and not fits(default, type_):
            c.add(
                f"the default of input '{name}' must be {type_}, not {value_type(default)} ({default!r})",
                f"{path}.default",
                "change the default or the declared type",
            )
        desc = spec.get("description", "")
        out[name] = InputSpec(
            name=name,
            type=type_,
            required=required,
            default=spec.get("default"),
            has_default="default" in spec,
            description=desc if isinstance(desc, str) else "",
            stdin=stdin,
        )
    if len(stdin_inputs) > 1:
        c.add(
            f"only one input may take stdin, but {', '.join(stdin_inputs)} all do",
            f"inputs.{stdin_inputs[1]}.stdin",
            "keep 'stdin: true' on one input",
        )
    return out


def _outputs(raw: Any, c: _Collector) -> dict[str, OutputSpec]:
    out: dict[str, OutputSpec] = {}
    if not isinstance(raw, dict):
        c.add(f"outputs must be an object of name: spec, not {value_type(raw)}", "outputs")
        return out
    for name, spec in raw.items():
        path = f"outputs.{name}"
        if not isinstance(spec, dict):
            c.add(
                f"output '{name}' must be an object with a 'source'",
                path,
                'e.g. {"source": "${node.stdout}"}',
            )
            continue
        c.unknown_fields(spec, OUTPUT_FIELDS, path, f"output '{name}'")
        desc = spec.get("description", "")
        type_ = spec.get("type")
        out[name] = OutputSpec(
            name=str(name),
            # None: pflow's older form, an output named as what gives it (bound by the template check)
            source=spec.get("source"),
            description=desc if isinstance(desc, str) else "",
            type=type_ if isinstance(type_, str) else None,
        )
    return out


def _nodes(raw: Any, node_types: Mapping[str, NodeTypeInfo], c: _Collector) -> list[NodeSpec]:
    if raw is None:
        c.add("the workflow has no 'nodes'", "nodes", "add a list with at least one node")
        return []
    if not isinstance(raw, list):
        c.add(f"nodes must be a list, not {value_type(raw)}", "nodes")
        return []
    if not raw:
        c.add("nodes is empty", "nodes", "add at least one node")
        return []
    nodes: list[NodeSpec] = []
    seen: dict[str, int] = {}
    for i, node in enumerate(raw):
        path = f"nodes[{i}]"
        if not isinstance(node, dict):
            c.add(f"a node must be an object, not {value_type(node)}", path)
            continue
        c.unknown_fields(node, NODE_FIELDS, path, "a node")
        node_id = node.get("id")
        if not isinstance(node_id, str) or not NODE_ID_RE.match(node_id):
            if node_id is None:
                c.add("node has no 'id'", path, "give every node a unique id")
            else:
                c.add(
                    f"node id {node_id!r} is not valid",
                    f"{path}.id",
                    "an id starts with a letter or _, then letters, digits, _ or -, at most 64 characters",
                )
            node_id = f"<nodes[{i}]>"
        elif node_id in seen:
            c.add(
                f"duplicate node id '{node_id}' (also nodes[{seen[node_id]}])",
                f"{path}.id",
                "node ids must be unique",
                node_id=node_id,
            )
        elif node_id in RESERVED_ROOTS:
            c.add(f"node id '{node_id}' is reserved", f"{path}.id", "choose another id", node_id=node_id)
        else:
            seen[node_id] = i
        type_ = node.get("type")
        info = None
        if not isinstance(type_, str):
            c.add("node has no 'type'", path, f"types: {', '.join(sorted(node_types))}", node_id=node_id)
            type_ = ""
        elif type_ not in node_types:
            # A registry may know more about names it cannot resolve (the MCP tool cache).
            more = getattr(node_types, "unknown_hint", None)
            c.add(
                f"unknown node type '{type_}'",
                f"{path}.type",
                (more(type_) if more is not None else "")
                or did_you_mean(type_, node_types)
                or f"available types: {', '.join(sorted(node_types))}; a custom type comes from "
                "--nodes FILE.py or an installed plugin (the plait.nodes entry points)",
                node_id=node_id,
            )
        else:
            info = node_types[type_]
        if "parameters" in node and "params" in node:
            c.add(
                "the node has both 'params' and 'parameters'",
                f"{path}.parameters",
                "keep one: 'parameters' is pflow's other name for 'params'",
                node_id=node_id,
            )
        params = node.get("params", node.get("parameters", {}))
        for name, instead in UNSUPPORTED_NODE.items():
            if name in node:
                c.add(
                    f"'{name}' on a node is not supported yet (node '{node_id}')",
                    f"{path}.{name}",
                    instead,
                    node_id=node_id,
                )
        if not isinstance(params, dict):
            c.add(f"params must be an object, not {value_type(params)}", f"{path}.params", node_id=node_id)
            params = {}
        if info is not None:
            _check_param_names(node_id, type_, params, info, path, c)
        purpose = node.get("purpose", "")
        cache, cache_ttl = _cache(node.get("cache"), f"{path}.cache", node_id, c) if "cache" in node else (None, None)
        nodes.append(
            NodeSpec(
                id=node_id,
                type=type_,
                params=params,
                position=i,
                purpose=purpose if isinstance(purpose, str) else "",
                batch=_batch(node.get("batch"), f"{path}.batch", node_id, c) if "batch" in node else None,
                retry=_retry(node.get("retry"), f"{path}.retry", node_id, c) if "retry" in node else None,
                cache=cache,
                cache_ttl=cache_ttl,
            )
        )
    return nodes


def _check_param_names(
    node_id: str, type_: str, params: dict[str, Any], info: NodeTypeInfo, path: str, c: _Collector
) -> None:
    declared = {p.name: p for p in info.param_specs}
    misspelt: set[str] = set()  # required params an unknown one is taken for: one problem, not two
    if not info.open_params:
        for key in params:
            if key not in declared:
                meant = closest(str(key), declared)
                hint = f"did you mean '{meant}'?" if meant else ""
                if meant is not None and declared[meant].required and meant not in params:
                    misspelt.add(meant)
                    hint += " (a required param, missing)"
                c.add(
                    f"unknown param '{key}' for node type '{type_}'",
                    f"{path}.params.{key}",
                    hint or f"'{type_}' takes: {', '.join(declared) or 'no params'}",
                    node_id=node_id,
                    param=str(key),
                )
    for p in info.param_specs:
        if p.required and p.name not in params and p.name not in misspelt:
            c.add(
                f"missing required param '{p.name}' for node type '{type_}'",
                f"{path}.params",
                f"add \"{p.name}\" to the node's params (`plait nodes {type_}` shows them)",
                node_id=node_id,
                param=p.name,
            )


def _field(raw: dict[str, Any], f: Field, path: str, what: str, node_id: str, c: _Collector) -> Any:
    """The field's value when it is valid, else its default (and a problem)."""
    if f.name not in raw:
        return f.default
    value = raw[f.name]
    if value is None and f.default is None and not f.required:
        return None
    wrong = f.check(value)
    if wrong is None:
        return value
    hint = f.hint or (did_you_mean(str(value), f.choices) if f.choices and isinstance(value, str) else "")
    label = f"{what}.{f.name}" if what else f.name
    c.add(f"{label} {wrong}", f"{path}.{f.name}" if path else f.name, hint, node_id=node_id or None)
    return f.default


def _batch(raw: Any, path: str, node_id: str, c: _Collector) -> BatchSpec | None:
    if not isinstance(raw, dict):
        c.add(f"batch must be an object with 'items', not {value_type(raw)}", path, node_id=node_id)
        return None
    c.unknown_fields(raw, BATCH_FIELDS, path, "batch")
    if "items" not in raw:
        c.add("batch has no 'items'", path, 'e.g. "items": "${list_files.files}"', node_id=node_id)
    spec = BatchSpec(items=raw.get("items"), given=frozenset(k for k in raw if k in BATCH.by_name))
    alias = raw.get("as", BATCH.default("as"))
    if not isinstance(alias, str) or not IDENT_RE.match(alias):
        c.add(f"batch 'as' must be an identifier, not {alias!r}", f"{path}.as", node_id=node_id)
    elif alias in RESERVED_ROOTS:
        c.add(f"batch 'as' cannot be the reserved name '{alias}'", f"{path}.as", node_id=node_id)
    else:
        spec.alias = alias
    spec.parallel = _field(raw, BATCH["parallel"], path, "batch", node_id, c)
    spec.max_concurrent = _field(raw, BATCH["max_concurrent"], path, "batch", node_id, c)
    spec.error_handling = _field(raw, BATCH["error_handling"], path, "batch", node_id, c)
    spec.max_retries = _field(raw, BATCH["max_retries"], path, "batch", node_id, c)
    spec.retry_wait = float(_field(raw, BATCH["retry_wait"], path, "batch", node_id, c))
    spec.retry_backoff = _field(raw, BATCH["retry_backoff"], path, "batch", node_id, c)
    spec.max_failures = _field(raw, BATCH["max_failures"], path, "batch", node_id, c)
    mfr = _field(raw, BATCH["max_failure_rate"], path, "batch", node_id, c)
    spec.max_failure_rate = None if mfr is None else float(mfr)
    executor = _field(raw, BATCH["executor"], path, "batch", node_id, c)
    spec.executor = executor or BATCH.default("executor")
    spec.results = _field(raw, BATCH["results"], path, "batch", node_id, c)
    spec.group = _field(raw, BATCH["group"], path, "batch", node_id, c)
    spec.group_bytes = _field(raw, BATCH["group_bytes"], path, "batch", node_id, c)
    if spec.group_bytes is not None and spec.group is None:
        c.add("batch.group_bytes goes with batch.group", f"{path}.group_bytes",
              'e.g. "group": 20, "group_bytes": 100000', node_id=node_id)
    if (spec.max_failures is not None or spec.max_failure_rate is not None) and spec.error_handling == "fail_fast":
        c.add(
            "max_failures and max_failure_rate apply only with error_handling 'continue'",
            f"{path}.error_handling",
            "set \"error_handling\": \"continue\" (fail_fast already stops at the first failure)",
            node_id=node_id,
        )
    return spec


def _cache(raw: Any, path: str, node_id: str, c: _Collector) -> tuple[bool | None, float | None]:
    from plait.ir.values import parse_duration

    if isinstance(raw, bool):
        return raw, None
    if isinstance(raw, dict):
        c.unknown_fields(raw, ("ttl",), path, "cache")
        if "ttl" not in raw:
            return True, None
        ttl = parse_duration(raw["ttl"])
        if ttl is None:
            c.add(
                f"cache.ttl must be a duration such as \"7d\", \"12h\", \"30m\" or seconds, not {raw['ttl']!r}",
                f"{path}.ttl",
                node_id=node_id,
            )
        return True, ttl
    c.add(
        f"cache must be true, false or {{\"ttl\": \"7d\"}}, not {raw!r}",
        path,
        "true keeps successful results across runs; false never does",
        node_id=node_id,
    )
    return None, None


def _retry(raw: Any, path: str, node_id: str, c: _Collector) -> RetrySpec | None:
    if not isinstance(raw, dict):
        c.add(
            f"retry must be an object like {{\"max\": 3, \"wait\": 1}}, not {value_type(raw)}",
            path,
            node_id=node_id,
        )
        return None
    for old, new in _OLD_RETRY_FIELDS.items():
        if old in raw:
            c.add(
                f"retry.{old} is not a field of retry; it is '{new}' now, as in pflow",
                f"{path}.{old}",
                "retry.max counts total attempts (1 = no retry), retry.wait is seconds between them",
                node_id=node_id,
            )
    c.unknown_fields({k: v for k, v in raw.items() if k not in _OLD_RETRY_FIELDS}, RETRY_FIELDS, path, "retry")
    return RetrySpec(
        max=_field(raw, RETRY["max"], path, "retry", node_id, c),
        wait=float(_field(raw, RETRY["wait"], path, "retry", node_id, c)),
        backoff=_field(raw, RETRY["backoff"], path, "retry", node_id, c),
        given=frozenset(k for k in raw if k in RETRY.by_name),
    )


def _edges(raw: Any, node_ids: set[str], c: _Collector) -> list[Edge]:
    if not isinstance(raw, list):
        c.add(f"edges must be a list, not {value_type(raw)}", "edges")
        return []
    edges: list[Edge] = []
    seen: set[tuple[str, str, str]] = set()
    where: dict[int, int] = {}  # index in ``edges`` -> index in the file
    for i, edge in enumerate(raw):
        path = f"edges[{i}]"
        if not isinstance(edge, dict):
            c.add('an edge must be an object like {"from": "a", "to": "b"}', path)
            continue
        c.unknown_fields(edge, EDGE_FIELDS, path, "an edge")
        ok = True
        for end in ("from", "to"):
            value = edge.get(end)
            if not isinstance(value, str):
                c.add(f"edge has no '{end}' node id", path)
                ok = False
            elif value not in node_ids:
                c.add(
                    f"edge {end} unknown node '{value}'",
                    f"{path}.{end}",
                    did_you_mean(value, node_ids) or f"nodes: {', '.join(sorted(node_ids))}",
                )
                ok = False
        action = edge.get("action", "default")
        if not isinstance(action, str) or not action:
            c.add("edge action must be a non-empty string", f"{path}.action")
            ok = False
        if ok:
            key = (edge["from"], edge["to"], action)
            if key in seen:
                c.add(f"duplicate edge {edge['from']} -> {edge['to']} ({action})", path, "remove one of them")
                continue
            seen.add(key)
            edges.append(Edge(source=edge["from"], target=edge["to"], action=action))
            where[len(edges) - 1] = i
    _default_loops(edges, where, c)
    return edges


def _default_loops(edges: list[Edge], where: dict[int, int], c: _Collector) -> None:
    """A loop must pass through a non-default action, or nothing could ever end it."""
    succ: dict[str, list[tuple[str, int]]] = {}
    for k, e in enumerate(edges):
        if e.action == "default":
            succ.setdefault(e.source, []).append((e.target, k))
    done: set[str] = set()
    for e in edges:
        if e.source in done:
            continue
        # Iterative depth-first search: ``path`` is the current chain, ``todo`` its pending edges.
        path = [e.source]
        on_path = {e.source}
        todo = [iter(succ.get(e.source, ()))]
        while todo:
            step = next(todo[-1], None)
            if step is None:
                todo.pop()
                done.add(path[-1])
                on_path.discard(path.pop())
                continue
            target, k = step
            if target in on_path:
                loop = [*path[path.index(target) :], target]
                c.add(
                    f"edges form a loop of default actions: {' -> '.join(loop)}",
                    f"edges[{where[k]}]",
                    "a loop must go through an action a node chooses (such as 'retry'), "
                    "so that something can end it",
                )
            elif target not in done:
                path.append(target)
                on_path.add(target)
                todo.append(iter(succ.get(target, ())))
