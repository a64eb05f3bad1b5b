"""`plait convert`: the same workflow as JSON or as pflow's markdown (.pflow.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

from plait.errors import Problem, UsageError, WorkflowInvalid
from plait.ir.loader import MARKDOWN_SUFFIX, load_file


def convert_command(workflow: str, to: str, output: str | None) -> int:
    source = Path(workflow)
    if output is not None and Path(output).resolve() == source.resolve():
        raise UsageError(
            f"{output} is the file being converted",
            hint="write the result to another file, or to standard output (no -o)",
        )
    title: str | None = None
    frontmatter = None
    notes: list[str] = []
    if source.name.lower().endswith(MARKDOWN_SUFFIX) and source.is_file():
        from plait.ir.markdown import parse_markdown

        doc = parse_markdown(_read(source))
        if doc.problems:
            raise WorkflowInvalid(doc.problems, file=str(source))
        raw, title, frontmatter = doc.ir, doc.title, doc.frontmatter
    else:
        raw = load_file(source)

    if to == "json":
        text = json.dumps(raw, indent=2, ensure_ascii=False) + "\n"
        if title:
            notes.append(f"the title '{title}' has no place in JSON and was left out")
        if frontmatter:
            notes.append("the frontmatter (pflow's save metadata) has no place in JSON and was left out")
    else:
        from plait.ir.markdown import to_markdown

        name = raw.get("name") if isinstance(raw, dict) else None
        title = title or (name if isinstance(name, str) and name.strip() else None)
        try:
            text, notes = to_markdown(raw, title=title or _title_of(source), frontmatter=frontmatter)
        except WorkflowInvalid as exc:
            raise WorkflowInvalid(
                [
                    Problem(
                        p.message,
                        path=p.path,
                        hint=p.hint or "keep this workflow in JSON, or change it so a .pflow.md can say it",
                    )
                    for p in exc.problems
                ],
                file=str(source),
            ) from None

    if output is None:
        click.echo(text, nl=False)
    else:
        try:
            Path(output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None
    for note in notes:
        click.echo(f"note: {note}", err=True)
    return 0


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowInvalid([Problem(f"cannot read workflow file: {exc}")], file=str(path)) from None


def _title_of(path: Path) -> str:
    """A heading from the file name: ``release-notes.json`` -> "Release notes"."""
    stem = path.name
    for suffix in (MARKDOWN_SUFFIX, ".json", ".yaml", ".yml"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    words = re.sub(r"[-_.]+", " ", stem).strip()
    return words[:1].upper() + words[1:] if words else "Workflow"
