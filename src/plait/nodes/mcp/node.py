"""The MCP tool node: one ``tools/call`` per run (or per batch item).

Each cached tool gets a subclass (built by ``catalog.tool_class``) that carries its
server, its tool name and the params taken from its input schema. The call goes
through the run's session with that server (``session.ServerHandle``, a per-run
async resource on the run's event loop): a batch of 200 items talks to one
server process, its calls multiplexed up to the batch's ``max_concurrent``.

Outputs follow pflow's MCP node, so a pflow workflow reads them unchanged:
``result`` is the tool's structured content when it sent some, else its content
(one text block parsed as JSON when it is JSON, several as a list); when
``result`` is an object, its fields are outputs too (``${node.field}``). A
result with ``isError`` is an item failure carrying the server's text.
"""

from __future__ import annotations

import ast
import json
from typing import Any, ClassVar

from plait.nodes.base import ItemContext, NodeError, PlaitNode, Services

_imported = False


class _Unset:
    """The runtime default of every tool argument: left out of the workflow, it is not
    sent (a null is sent only when the workflow says null and the schema allows it)."""

    def __repr__(self) -> str:
        return "unset"


UNSET: Any = _Unset()


class McpToolNode(PlaitNode):
    """Base of the generated ``mcp-<server>-<tool>`` node types."""

    mcp_server: ClassVar[str] = ""
    mcp_tool: ClassVar[str] = ""
    #: the params that go to the tool (the rest, ``timeout``, are plait's)
    mcp_tool_params: ClassVar[frozenset[str]] = frozenset()
    #: params whose schema allows null: a null is sent, not dropped
    mcp_nullable: ClassVar[frozenset[str]] = frozenset()
    mcp_enums: ClassVar[dict[str, list[Any]]] = {}
    #: the schema's defaults, shown by `plait nodes`; the server applies them
    mcp_defaults: ClassVar[dict[str, Any]] = {}
    mcp_schema: ClassVar[dict[str, Any]] = {}

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> list[tuple[str, str | None]]:
        problems: list[tuple[str, str | None]] = []
        for name, allowed in cls.mcp_enums.items():
            value = params.get(name)
            if name in params and not (isinstance(value, str) and "${" in value) and value not in allowed:
                shown = ", ".join(json.dumps(v) for v in allowed)
                problems.append((f"param '{name}' must be one of {shown}, not {json.dumps(value)}", name))
        timeout = params.get("timeout")
        if "timeout" not in cls.mcp_tool_params and isinstance(timeout, int | float) and timeout <= 0:
            problems.append(("param 'timeout' must be a positive number of seconds", "timeout"))
        return problems

    @classmethod
    def warm_up(cls, services: Services) -> None:
        # The SDK takes a second or two to import; do it while the first nodes run.
        global _imported
        if not _imported:
            _imported = True
            try:
                import plait.nodes.mcp.session  # noqa: F401
            except Exception:
                pass  # reported, with the fix, by the first call

    @classmethod
    def interface(cls) -> dict[str, Any]:
        decl = super().interface()
        for p in decl["params"]:
            if p["default"] is UNSET:
                p["default"] = cls.mcp_defaults.get(p["name"])
        decl["mcp"] = {"server": cls.mcp_server, "tool": cls.mcp_tool, **cls.mcp_schema}
        return decl

    def prep(self, shared: ItemContext) -> tuple[Services, dict[str, Any], float | None]:
        params = shared.params
        arguments = {
            k: v
            for k, v in params.items()
            if k in self.mcp_tool_params and v is not UNSET and (v is not None or k in self.mcp_nullable)
        }
        timeout = None if "timeout" in self.mcp_tool_params else params.get("timeout")
        return shared.services, arguments, timeout

    def exec(self, prep_res: tuple[Services, dict[str, Any], float | None]) -> dict[str, Any]:
        return prep_res[0].call_async(self.exec_async(prep_res))

    async def exec_async(self, prep_res: tuple[Services, dict[str, Any], float | None]) -> dict[str, Any]:
        services, arguments, timeout = prep_res
        try:
            from plait.nodes.mcp.session import server_handle
        except ImportError as exc:
            raise NodeError(
                f"MCP nodes need the MCP SDK, which cannot be imported ({exc}): pip install 'plait[mcp]'",
                retryable=False,
            ) from None

        handle = await server_handle(services, self.mcp_server)
        result = await handle.call(self.mcp_tool, arguments, timeout)
        return outputs_of(result, self.mcp_server, self.mcp_tool)


def outputs_of(result: Any, server: str, tool: str) -> dict[str, Any]:
    """A ``CallToolResult`` as the node's outputs (pflow's shape), or the item's failure."""
    if getattr(result, "is_error", False):
        text = _error_text(result)
        raise NodeError(f"MCP tool '{tool}' of server '{server}' failed: {text}", outputs={"error": text})
    structured = getattr(result, "structured_content", None)
    value = structured if structured is not None else _content_value(getattr(result, "content", None) or [])
    outputs: dict[str, Any] = {"result": value}
    # pflow lifts an object's fields to outputs unless it reports an error of its own;
    # that error then stays inside `result` (not an item failure), as there.
    if isinstance(value, dict) and not value.get("error"):
        for key, field in value.items():
            if isinstance(key, str) and not key.startswith(("_", "is_")):
                outputs[key] = field
    return outputs


def _error_text(result: Any) -> str:
    for block in getattr(result, "content", None) or []:
        text = getattr(block, "text", None)
        if isinstance(text, str) and text:
            return text
    structured = getattr(result, "structured_content", None)
    if structured is not None:
        return json.dumps(structured, default=str)
    return "the tool reported an error without a message"


def _content_value(blocks: list[Any]) -> Any:
    values = [_block_value(b) for b in blocks]
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _block_value(block: Any) -> Any:
    kind = getattr(block, "type", None)
    if kind == "text":
        return parse_text(str(block.text))
    if kind in ("image", "audio"):
        return {"type": kind, "data": block.data, "mime_type": getattr(block, "mime_type", None)}
    if kind == "resource_link":
        return {
            "type": "resource_link",
            "uri": str(block.uri),
            "name": getattr(block, "name", None),
            "mime_type": getattr(block, "mime_type", None),
        }
    if kind == "resource":
        res = block.resource
        out: dict[str, Any] = {"type": "resource", "uri": str(res.uri), "mime_type": getattr(res, "mime_type", None)}
        if getattr(res, "text", None) is not None:
            out["text"] = res.text
        if getattr(res, "blob", None) is not None:
            out["blob"] = res.blob
        return out
    dump = getattr(block, "model_dump", None)
    return dump(mode="json", by_alias=True, exclude_none=True) if callable(dump) else str(block)


def parse_text(text: str) -> Any:
    """Text that holds JSON becomes the value (so ``${node.result.items[0]}`` works);
    a Python literal dict or list, which some servers send by mistake, too, as pflow
    reads them. Any other text stays text."""
    stripped = text.strip()
    if not stripped or stripped[0] not in '{["-0123456789tfn':
        return text
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    if stripped[0] in "{[":
        try:
            value = ast.literal_eval(stripped)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return text
        if isinstance(value, dict | list):
            return value
    return text
