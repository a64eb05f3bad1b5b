"""The tool cache and the node types built from it.

``plait mcp sync`` writes ``$PLAIT_HOME/mcp-tools.json``: for each server, when it
was synced, from which config file, and every tool with its input and output
JSON Schemas. The registry reads it (only when a workflow names an ``mcp-...``
type, or when every type is listed) and gets one node class per tool, so
validation checks an MCP node's params like any other node's, with no server
running and no MCP SDK imported.

The cache file::

    {"format": 1,
     "servers": {"<server>": {"synced": "2026-05-01T10:00:00Z", "config": "<path>",
                              "transport": "stdio", "server_info": {...},
                              "tools": [{"name", "title", "description",
                                         "input_schema", "output_schema"}]}}}
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from plait.errors import UsageError, did_you_mean
from plait.nodes.base import Output, Param
from plait.nodes.mcp.config import plait_home
from plait.nodes.mcp.node import UNSET, McpToolNode

CACHE_NAME = "mcp-tools.json"
CACHE_FORMAT = 1
PREFIX = "mcp-"
_JSON_TYPES = ("string", "integer", "number", "boolean", "object", "array")


def cache_path() -> Path:
    return plait_home() / CACHE_NAME


def read_cache(path: Path | None = None) -> dict[str, Any]:
    """The cached servers by name ({} when nothing was synced yet)."""
    path = path or cache_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"the MCP tool cache {path} cannot be read: {exc}",
            hint="run `plait mcp sync` to rebuild it",
        )
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or not isinstance(data.get("servers"), dict):
        raise UsageError(
            f"the MCP tool cache {path} is not in the format this plait writes",
            hint="run `plait mcp sync` to rebuild it",
        )
    return data["servers"]


def write_cache(servers: dict[str, Any], path: Path | None = None) -> Path:
    path = path or cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".mcp-tools-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"format": CACHE_FORMAT, "servers": servers}, f, indent=2)
            f.write("\n")
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def type_name(server: str, tool: str) -> str:
    return f"{PREFIX}{server}-{tool}"


# -- JSON Schema -> declared params and outputs


def _schema_types(schema: Any) -> tuple[set[str], bool]:
    """The plait types a JSON Schema allows, and whether it allows null. An empty set: anything."""
    if not isinstance(schema, dict):
        return set(), False
    declared = schema.get("type")
    if isinstance(declared, str):
        declared = [declared]
    types: set[str] = set()
    nullable = False
    if isinstance(declared, list):
        for t in declared:
            if t == "null":
                nullable = True
            elif t in _JSON_TYPES:
                types.add(t)
            else:
                return set(), True
        if not types:
            return set(), nullable
    else:
        branches = schema.get("anyOf") or schema.get("oneOf")
        if not isinstance(branches, list):
            if "enum" in schema and isinstance(schema["enum"], list):
                return _enum_types(schema["enum"])
            return set(), True
        for branch in branches:
            sub, sub_null = _schema_types(branch)
            nullable = nullable or sub_null
            if not sub:
                if sub_null and isinstance(branch, dict) and branch.get("type") == "null":
                    continue
                return set(), True
            types |= sub
    return types, nullable


def _enum_types(values: list[Any]) -> tuple[set[str], bool]:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object", list: "array"}
    types = {names[type(v)] for v in values if type(v) in names}
    return types, any(v is None for v in values)


def _plait_type(types: set[str], nullable: bool = False) -> str:
    if not types or len(types) == len(_JSON_TYPES):
        return "any"
    if "number" in types:
        types.discard("integer")  # a number param already takes integers
    # "null" is a type name the static check understands (value_type(None) == "null").
    return "|".join([t for t in _JSON_TYPES if t in types] + (["null"] if nullable else []))


def _describe(schema: dict[str, Any]) -> str:
    text = schema.get("description") or schema.get("title") or ""
    if isinstance(schema.get("enum"), list):
        choices = "one of " + ", ".join(json.dumps(v) for v in schema["enum"])
        text = f"{text} ({choices})" if text else choices
    return " ".join(str(text).split())


def _params(input_schema: Any) -> tuple[list[Param], frozenset[str], dict[str, list[Any]], dict[str, Any]]:
    schema = input_schema if isinstance(input_schema, dict) else {}
    props = schema.get("properties")
    props = props if isinstance(props, dict) else {}
    required = schema.get("required")
    required = set(required) if isinstance(required, list) else set()
    params: list[Param] = []
    nullable: set[str] = set()
    enums: dict[str, list[Any]] = {}
    defaults: dict[str, Any] = {}
    for name, prop in props.items():
        prop = prop if isinstance(prop, dict) else {}
        types, allows_null = _schema_types(prop)
        if allows_null:
            nullable.add(name)
        if isinstance(prop.get("enum"), list):
            enums[name] = prop["enum"]
        if "default" in prop:
            defaults[name] = prop["default"]
        params.append(
            Param(
                name,
                _plait_type(types, allows_null),
                required=name in required,
                # Not the schema's default: an argument the workflow leaves out is not
                # sent (as pflow), and the server applies its own default.
                default=UNSET,
                description=_describe(prop),
            )
        )
    return params, frozenset(nullable), enums, defaults


def _outputs(output_schema: Any) -> list[Output]:
    outputs = [Output("result", "any", "the tool's result: its structured content, else its content")]
    if not isinstance(output_schema, dict):
        return outputs
    props = output_schema.get("properties")
    for name, prop in (props if isinstance(props, dict) else {}).items():
        if name == "result" or name.startswith(("_", "is_")):
            continue
        types, _ = _schema_types(prop)
        outputs.append(Output(name, _plait_type(types), _describe(prop if isinstance(prop, dict) else {})))
    return outputs


def _summary(tool: dict[str, Any], server: str) -> str:
    text = tool.get("description") or tool.get("title") or ""
    first = next((line.strip() for line in str(text).splitlines() if line.strip()), "")
    if len(first) > 160:
        first = first[:157] + "..."
    return first or f"MCP tool '{tool['name']}' of server '{server}'"


def tool_class(server: str, tool: dict[str, Any]) -> type[McpToolNode]:
    """A node type for one cached tool."""
    name = type_name(server, tool["name"])
    params, nullable, enums, defaults = _params(tool.get("input_schema"))
    tool_params = frozenset(p.name for p in params)
    if "timeout" not in tool_params:
        params.append(
            Param("timeout", "number", default=None, description="seconds to wait for the answer (plait's, not the tool's)")
        )
    given = tool.get("input_schema")
    input_schema: dict[str, Any] = given if isinstance(given, dict) else {}
    extra = input_schema.get("additionalProperties")
    output_schema = tool.get("output_schema")
    attrs: dict[str, Any] = {
        "type_name": name,
        "description": _summary(tool, server),
        "param_specs": tuple(params),
        "output_specs": tuple(_outputs(output_schema)),
        "primary_output": "result",
        "open_params": bool(extra) and extra is not False,
        # Without an output schema the fields of a JSON answer are not known before the run.
        "dynamic_outputs": not isinstance(output_schema, dict),
        "mcp_server": server,
        "mcp_tool": tool["name"],
        "mcp_tool_params": tool_params,
        "mcp_nullable": nullable,
        "mcp_enums": enums,
        "mcp_defaults": defaults,
        "mcp_schema": {"input": input_schema, "output": output_schema, "description": tool.get("description") or ""},
    }
    cls = type(f"Mcp_{server}_{tool['name']}".replace("-", "_"), (McpToolNode,), attrs)
    cls.__module__ = McpToolNode.__module__
    return cls


def node_types(cache: dict[str, Any] | None = None) -> list[tuple[str, type[McpToolNode], str]]:
    """(type name, class, where it came from) for every cached tool.

    Two servers may give one name (server ``a`` with tool ``b-c``, server ``a-b``
    with tool ``c``); the longer server name wins, as in pflow.
    """
    cache = read_cache() if cache is None else cache
    out: dict[str, tuple[str, type[McpToolNode], str]] = {}
    for server in sorted(cache, key=len):
        entry = cache[server]
        if not isinstance(entry, dict):
            continue
        source = f"MCP server '{server}' (synced {entry.get('synced', '?')})"
        for tool in entry.get("tools") or []:
            if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                name = type_name(server, tool["name"])
                out[name] = (name, tool_class(server, tool), source)
    return list(out.values())


def unknown_hint(name: str, cache: dict[str, Any] | None = None) -> str:
    """What to tell a user whose workflow names an ``mcp-...`` type that is not cached."""
    cache = read_cache() if cache is None else cache
    sync = "`plait mcp sync`"
    if not cache:
        return (
            "no MCP tools are known yet: configure the server in "
            f"{plait_home() / 'mcp-servers.json'} (or pflow's ~/.pflow/mcp-servers.json), then run {sync}"
        )
    rest = name[len(PREFIX) :]
    servers = sorted((s for s in cache if rest.startswith(f"{s}-")), key=len, reverse=True)
    if servers:
        server = servers[0]
        tools = [t.get("name", "") for t in cache[server].get("tools") or [] if isinstance(t, dict)]
        tool = rest[len(server) + 1 :]
        close = did_you_mean(type_name(server, tool), [type_name(server, t) for t in tools])
        listed = ", ".join(tools[:12]) + (", ..." if len(tools) > 12 else "")
        return (
            f"MCP server '{server}' has no tool '{tool}' in the cache"
            + (f" ({close})" if close else f" (its tools: {listed or 'none'})")
            + f"; run `plait mcp sync {server}` if the server changed"
        )
    every = [type_name(s, t.get("name", "")) for s, e in cache.items() for t in e.get("tools") or [] if isinstance(t, dict)]
    close = did_you_mean(name, every)
    return (
        f"no synced MCP server matches '{name}' (synced: {', '.join(sorted(cache))})"
        + (f" ({close})" if close else "")
        + f"; add the server to mcp-servers.json and run {sync}"
    )
