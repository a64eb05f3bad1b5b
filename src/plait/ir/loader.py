"""Read a workflow file into plain data, naming file, line and column when it is malformed."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plait.errors import Problem, WorkflowInvalid

SUFFIXES = (".json", ".yaml", ".yml")
MARKDOWN_SUFFIX = ".pflow.md"  # pflow's markdown format; Path.suffix sees only ".md"


@dataclass
class Document:
    """A workflow file as read: its plain IR, and what reading it found.

    For a ``.pflow.md`` the IR is built as far as the markdown allows, beside every
    problem in it, and :meth:`report` points later problems at markdown lines.
    """

    raw: Any
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    markdown: Any = None  # the MarkdownWorkflow of a .pflow.md

    def report(self, later: list[Problem]) -> list[Problem]:
        """The problems found while reading plus ``later`` ones, placed in the file."""
        if self.markdown is None:
            return [*self.problems, *later]
        problems: list[Problem] = self.markdown.report(later)
        return problems


def load_document(path: str | Path) -> Document:
    """Like :func:`load_file`, but a ``.pflow.md``'s problems come back instead of raising."""
    p = Path(path)
    if not p.name.lower().endswith(MARKDOWN_SUFFIX) or not p.is_file():
        return Document(load_file(p))
    from plait.ir.markdown import parse_markdown

    doc = parse_markdown(_read(p))
    return Document(doc.ir, doc.problems, doc.warnings, doc)


def _read(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8-sig")  # tolerate the BOM some editors write
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowInvalid([Problem(f"cannot read workflow file: {exc}")], file=str(p))


def load_file(path: str | Path) -> Any:
    p = Path(path)
    if p.name.lower().endswith(MARKDOWN_SUFFIX) and p.is_file():
        from plait.ir.markdown import load_markdown

        return load_markdown(_read(p), file=str(p))
    if not p.exists():
        raise WorkflowInvalid(
            [Problem(f"workflow file not found: {p}", hint="check the path and the current directory")],
            file=str(p),
        )
    if p.is_dir():
        raise WorkflowInvalid(
            [Problem(f"{p} is a directory, not a workflow file", hint="give the path of a .json or .yaml file")],
            file=str(p),
        )
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise WorkflowInvalid(
            [
                Problem(
                    f"unsupported workflow file type '{suffix or p.name}'",
                    hint=(
                        f"a pflow markdown workflow is named NAME{MARKDOWN_SUFFIX}"
                        if suffix == ".md"
                        else f"use a .json, .yaml, .yml or {MARKDOWN_SUFFIX} file"
                    ),
                )
            ],
            file=str(p),
        )
    try:
        text = p.read_text(encoding="utf-8-sig")  # tolerate the BOM some editors write
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowInvalid([Problem(f"cannot read workflow file: {exc}")], file=str(p))
    return load_text(text, "yaml" if suffix in (".yaml", ".yml") else "json", file=str(p))


def load_text(text: str, fmt: str, *, file: str | None = None) -> Any:
    if not text.strip():
        raise WorkflowInvalid(
            [Problem("the workflow file is empty", line=1, column=1, hint='start from {"nodes": [...]}')],
            file=file,
        )
    if fmt == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise WorkflowInvalid(
                [
                    Problem(
                        f"malformed JSON: {exc.msg}",
                        line=exc.lineno,
                        column=exc.colno,
                        hint=_json_hint(exc.msg),
                    )
                ],
                file=file,
            )
    import yaml  # lazy: only YAML workflows pay for it

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        message = f"malformed YAML: {problem}" + (f" ({context})" if context else "")
        raise WorkflowInvalid(
            [
                Problem(
                    message,
                    line=mark.line + 1 if mark is not None else None,
                    column=mark.column + 1 if mark is not None else None,
                    hint="check indentation and quoting; a value with ': ' or '#' needs quotes",
                )
            ],
            file=file,
        )


def _json_hint(msg: str) -> str:
    if "Expecting ',' delimiter" in msg:
        return "a comma is missing between two items, or a string is not closed"
    if "Expecting property name" in msg:
        return "JSON does not allow trailing commas or unquoted keys"
    if "Expecting value" in msg:
        return "a value is missing or not valid JSON (strings need double quotes)"
    return "fix the JSON syntax at that position"
