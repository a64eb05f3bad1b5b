"""How errors and results read on a terminal. The CLI is the only place that prints."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from plait.errors import PlaitError, WorkflowInvalid


def _style(text: str, code: str, stream: TextIO) -> str:
    if stream.isatty():
        return f"\x1b[{code}m{text}\x1b[0m"
    return text


def error_block(exc: PlaitError, stream: TextIO = sys.stderr) -> None:
    lines = [_style("error: ", "1;31", stream) + exc.message]
    where = []
    if exc.file:
        where.append(f"file: {exc.file}")
    node_id = getattr(exc, "node_id", None)
    if node_id:
        where.append(f"node: {node_id}")
    index = getattr(exc, "index", None)
    if index is not None:
        where.append(f"item: {index}")
    if where:
        lines.append("  " + "  ".join(where))
    if isinstance(exc, WorkflowInvalid):
        for p in exc.problems:
            loc = p.path or ""
            if p.line is not None:
                loc = f"line {p.line}, column {p.column}" + (f" ({loc})" if loc else "")
            head = f"{loc}: " if loc else ""
            lines.append("  " + _style("✗ ", "31", stream) + head + p.message)
            if p.hint:
                lines.append(f"      hint: {p.hint}")
    elif exc.hint:
        lines.append(f"  hint: {exc.hint}")
    stream.write("\n".join(lines) + "\n")


def print_value(value: Any, stream: TextIO = sys.stdout) -> None:
    if value is None:
        return
    if isinstance(value, str):
        stream.write(value if value.endswith("\n") or not value else value + "\n")
    else:
        stream.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


def describe_node(decl: dict[str, Any]) -> str:
    lines = [f"{decl['type']}  — {decl['description']}"]
    if decl.get("source") and decl["source"] != "built-in":
        lines.append(f"  from {decl['source']}")
    if decl.get("open_params"):
        lines.append("  params: any (returned as they are)")
    elif decl["params"]:
        lines.append("  params:")
        for p in decl["params"]:
            if p["required"]:
                flag = "required"
            elif p["default"] is None:
                flag = "optional"
            else:
                flag = f"default {json.dumps(p['default'])}"
            desc = f" — {p['description']}" if p["description"] else ""
            lines.append(f"    {p['name']}: {p['type']} ({flag}){desc}")
    if decl["outputs"]:
        lines.append("  outputs:")
        for o in decl["outputs"]:
            desc = f" — {o['description']}" if o["description"] else ""
            lines.append(f"    {o['name']}: {o['type']}{desc}")
    return "\n".join(lines) + "\n"
