"""The JSON Schema (draft 2020-12) of the workflow format, for editors.

Built from the same field tables validation uses, plus each node type's
declared params, so the schema cannot drift from what `plait validate` accepts.
"""

from __future__ import annotations

from typing import Any

from plait.ir.format import BATCH, COMPAT_TOP, LIMITS, NODE, RETRY, TOP, Field, Fields
from plait.ir.model import INPUT_TYPES, TYPE_ALIASES
from plait.ir.validate import NODE_ID_RE

# pflow's switches: only the setting that is plait's behaviour validates (docs/pflow-compat.md)
_PFLOW_SWITCHES: dict[str, Any] = {
    "template_resolution_mode": {"enum": ["strict"], "description": "pflow's; 'permissive' is not supported"},
    "enable_namespacing": {"const": True, "description": "pflow's; false is not supported"},
    "mappings": {"type": "object", "maxProperties": 0, "description": "pflow's proxy mappings: not supported yet"},
}

_JSON_TYPES = {
    "string": {"type": "string"},
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "object": {"type": "object"},
    "array": {"type": "array"},
    "any": {},
}
_TEMPLATE = {"type": "string", "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_-]*"}


def _param_schema(param: dict[str, Any]) -> dict[str, Any]:
    types = param["type"].split("|")
    if "any" in types:
        out: dict[str, Any] = {}
    else:
        options = [_JSON_TYPES[t] for t in types if t in _JSON_TYPES]
        if "string" not in types:
            options.append(_TEMPLATE)  # a template may stand in for any typed value
        out = options[0] if len(options) == 1 else {"anyOf": options}
    out = dict(out)
    if param.get("description"):
        out["description"] = param["description"]
    if param.get("default") is not None:
        out["default"] = param["default"]
    return out


def _field_schema(f: Field) -> dict[str, Any]:
    out: dict[str, Any] = {"enum": list(f.choices)} if f.choices else dict(_JSON_TYPES.get(f.type, {}))
    if f.minimum is not None:
        out["minimum"] = f.minimum
    if f.maximum is not None:
        out["maximum"] = f.maximum
    if f.default is not None and not f.required:
        out["default"] = f.default
    if f.doc:
        out["description"] = f.doc
    return out


def _object_schema(fields: Fields, special: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {f.name: special.get(f.name) or _field_schema(f) for f in fields},
    }
    required = [f.name for f in fields if f.required]
    if required:
        out["required"] = required
    return out


_BUDGET = {
    "type": "object",
    "description": "the most to spend, in dollars",
    "required": ["usd"],
    "additionalProperties": False,
    "properties": {"usd": {"type": "number", "exclusiveMinimum": 0}},
}


def workflow_schema(node_types: list[dict[str, Any]]) -> dict[str, Any]:
    batch = _object_schema(
        BATCH,
        {
            "items": {
                "description": "a template resolving to a list, or an inline list",
                "anyOf": [{"type": "array"}, _TEMPLATE],
            },
            "as": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$", "default": BATCH.default("as")},
        },
    )
    per_type = []
    for decl in node_types:
        params: dict[str, Any] = {
            "type": "object",
            "properties": {p["name"]: _param_schema(p) for p in decl["params"]},
        }
        required = [p["name"] for p in decl["params"] if p["required"]]
        if required:
            params["required"] = required
        if not decl.get("open_params"):
            params["additionalProperties"] = False
        per_type.append(
            {
                "if": {"properties": {"type": {"const": decl["type"]}}, "required": ["type"]},
                "then": {"properties": {"params": params}},
            }
        )
    node = {
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "type"],
        "properties": {
            "id": {"type": "string", "pattern": NODE_ID_RE.pattern},
            "type": {"enum": sorted(d["type"] for d in node_types)},
            "purpose": {"type": "string"},
            "params": {"type": "object"},
            "parameters": {"type": "object", "description": "pflow's other name for params"},
            "batch": batch,
            "retry": _object_schema(RETRY, {}),
            "cache": {
                "description": NODE["cache"].doc,
                "anyOf": [
                    {"type": "boolean"},
                    {"type": "object", "additionalProperties": False,
                     "properties": {"ttl": {"type": ["string", "number"]}}},
                ],
            },
            "rate": {"description": "a limiter named in 'limits', or false for none",
                     "anyOf": [{"type": "string"}, {"const": False}]},
            "budget": _BUDGET,
        },
        "allOf": per_type,
    }
    input_spec = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "type": {"enum": [*INPUT_TYPES, *TYPE_ALIASES]},
            "required": {"type": "boolean", "default": True},
            "default": {},
            "description": {"type": "string"},
            "stdin": {"type": "boolean", "default": False},
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://plait.dev/schema/workflow.json",
        "title": "plait workflow",
        "type": "object",
        "required": ["nodes"],
        "additionalProperties": False,
        "properties": {
            "$schema": {"type": "string"},
            "ir_version": {"type": "string", "pattern": r"^[01]\.\d+(\.\d+)?", "default": "0.1.0"},
            "executor": {"type": "string", "default": "auto"},
            "max_parallel_nodes": _field_schema(TOP["max_parallel_nodes"]),
            "fail_on_item_errors": _field_schema(TOP["fail_on_item_errors"]),
            "description": {"type": "string"},
            "inputs": {"type": "object", "additionalProperties": input_spec},
            "outputs": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["source"],
                    "additionalProperties": False,
                    "properties": {
                        "source": {},
                        "description": {"type": "string"},
                        "type": {"type": "string"},
                    },
                },
            },
            "nodes": {"type": "array", "minItems": 1, "items": node},
            "edges": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["from", "to"],
                    "additionalProperties": False,
                    "properties": {
                        "from": {"type": "string"},
                        "to": {"type": "string"},
                        "action": {"type": "string", "default": "default"},
                    },
                },
            },
            "start_node": {"type": "string"},
            "limits": {
                "type": "object",
                "description": "named rate limiters shared by the whole run (docs/limits.md)",
                "additionalProperties": _object_schema(LIMITS, {
                    "concurrency": {"type": "integer", "exclusiveMinimum": 0},
                }),
            },
            "budget": _BUDGET,
            "prices": {"type": "object", "description": "price overrides, in the shape of prices.json"},
            **{
                name: {"description": "accepted for pflow compatibility; unused"}
                for name in COMPAT_TOP
                if name not in ("$schema", *_PFLOW_SWITCHES)
            },
            **_PFLOW_SWITCHES,
        },
    }
