"""How errors and results read on a terminal. The CLI is the only place that prints."""

from __future__ import annotations

import json
import math
import sys
from typing import Any, TextIO

from plait.errors import PlaitError, WorkflowInvalid
from plait.runtime.results import ResultList, json_default


def _style(text: str, code: str, stream: TextIO) -> str:
    if stream.isatty():
        return f"\x1b[{code}m{text}\x1b[0m"
    return text


def error_block(exc: PlaitError, stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
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
                col = f", column {p.column}" if p.column is not None else ""
                loc = f"line {p.line}{col}" + (f" ({loc})" if loc else "")
            head = f"{loc}: " if loc else ""
            lines.append("  " + _style("✗ ", "31", stream) + head + p.message)
            if p.hint:
                lines.append(f"      hint: {p.hint}")
    elif exc.hint:
        lines.append(f"  hint: {exc.hint}")
    stream.write("\n".join(lines) + "\n")


def warning(text: str, stream: TextIO | None = None) -> None:
    """A line in warning colour (yellow on a terminal), on stderr."""
    stream = stream or sys.stderr
    mark = "⚠ " if _encodable("⚠", stream) else "warning: "
    stream.write(_style(mark + text, "1;33", stream) + "\n")


def _encodable(text: str, stream: TextIO) -> bool:
    try:
        text.encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def write_out(text: str, stream: TextIO | None = None) -> None:
    """Write to stdout; a full disk or a closed file is a clear error, not a traceback
    (a reader that went away, `| head`, is left to the caller: BrokenPipeError)."""
    stream = stream or sys.stdout
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise PlaitError(
            f"cannot write the output: {exc.strerror or exc}",
            hint="check the disk or the file that standard output goes to",
        )


def print_value(value: Any, stream: TextIO | None = None) -> None:
    if value is None:
        return
    if isinstance(value, str):
        write_out(value if value.endswith("\n") or not value else value + "\n", stream)
    else:
        write_out(json_text(value) + "\n", stream)


def json_text(value: Any, indent: int | None = 2) -> str:
    """JSON that is always valid: NaN and infinities become null, and text with a
    lone surrogate (from an API or a file) is written with \\u escapes."""
    try:
        text = json.dumps(value, indent=indent, ensure_ascii=False, default=json_default, allow_nan=False)
    except ValueError:  # NaN or Infinity somewhere
        text = json.dumps(_finite(value), indent=indent, ensure_ascii=False, default=json_default)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(_finite(value), indent=indent, ensure_ascii=True, default=json_default)
    return text


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple | ResultList):
        return [_finite(v) for v in value]
    return value


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


def node_markdown(decls: list[dict[str, Any]]) -> str:
    """The node reference, generated from the declarations (docs/nodes.md)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    out = [
        "# Node types",
        "",
        "Generated by `plait nodes --markdown` from each node type's declaration;",
        "`plait nodes TYPE` shows the same in a terminal.",
        "",
    ]
    for d in decls:
        out += [f"## `{d['type']}`", "", d["description"], ""]
        if d.get("open_params"):
            out += ["Params: any; they are returned unchanged as the outputs.", ""]
        elif d["params"]:
            out += ["| param | type | default | description |", "|---|---|---|---|"]
            for p in d["params"]:
                default = "required" if p["required"] else ("" if p["default"] is None else f"`{json.dumps(p['default'])}`")
                out.append(f"| `{p['name']}` | {cell(p['type'])} | {default} | {cell(p['description'])} |")
            out.append("")
        if d["outputs"]:
            out += ["| output | type | description |", "|---|---|---|"]
            for o in d["outputs"]:
                out.append(f"| `{o['name']}` | {cell(o['type'])} | {cell(o['description'])} |")
            out.append("")
    return "\n".join(out)
