"""Turn ``name=value`` words into typed input values, by the declared type."""

from __future__ import annotations

from typing import Any, TextIO

from plait.errors import UsageError, did_you_mean
from plait.ir.model import InputSpec
from plait.ir.values import convert


def parse_args(words: tuple[str, ...] | list[str], specs: dict[str, InputSpec]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for word in words:
        name, sep, text = word.partition("=")
        if not sep or not name:
            raise UsageError(
                f"expected name=value, got {word!r}",
                hint=f"inputs: {', '.join(specs) or 'this workflow declares none'}",
            )
        if name not in specs:
            raise UsageError(
                f"unknown input '{name}'",
                hint=did_you_mean(name, specs) or f"inputs: {', '.join(specs) or 'none declared'}",
            )
        if name in values:
            raise UsageError(f"input '{name}' given twice", hint="give each input once")
        values[name] = convert(specs[name], name, text)
    return values


def add_piped(given: dict[str, Any], specs: dict[str, InputSpec], stream: TextIO) -> None:
    """Give the one ``stdin`` input what was piped in, converted by its declared type."""
    name = stdin_input(specs)
    if name is None or name in given or stream.isatty():
        return
    text = stream.read()
    if text:  # nothing piped (</dev/null, cron): the input counts as not given
        given[name] = convert(specs[name], name, text)


def stdin_input(specs: dict[str, InputSpec]) -> str | None:
    for name, spec in specs.items():
        if spec.stdin:
            return name
    return None


def stdin_batch(compiled: Any) -> str | None:
    """The node whose batch reads its items from standard input (``{"from": "-"}``).

    Validation allows one such batch at most, so the first one found is the one.
    """
    for node_id, cn in compiled.nodes.items():
        spec = cn.batch
        if spec is not None and isinstance(spec.items, dict) and spec.items.get("from") == "-":
            return str(node_id)
    return None


def items_stream(
    compiled: Any, items: str | None, stream: Any, *, option: str = "--items", workflow: str = "WORKFLOW"
) -> Any:
    """What the batch reading ``-`` reads: the file given with ``--items`` (opened
    only when the batch starts), else the binary standard input; None when no batch reads it.

    Refused before anything runs: ``--items`` for a workflow with no such batch, a
    file that is not there, and a terminal on standard input (the run would wait
    for typing).
    """
    import os

    reader = stdin_batch(compiled)
    if items is not None and items != "-":
        if reader is None:
            raise UsageError(
                f"{option} {items}: no batch of this workflow reads its items from standard input",
                hint='a batch takes the file when its items are {"from": "-"}; '
                "otherwise give the file in the workflow",
            )
        path = os.path.expanduser(items)
        if not os.path.exists(path):
            raise UsageError(f"{option}: file not found: {items}", hint="the path is taken from the current directory")
        if os.path.isdir(path):
            raise UsageError(
                f"{option}: {items} is a folder, not a file",
                hint=f'to read a folder\'s files, use a glob in the workflow: {{"from": "{items.rstrip("/")}/*.jsonl"}}',
            )
        from plait.runtime.sources import ItemsFile

        return ItemsFile(os.path.abspath(path), items)
    if reader is None:
        if items == "-":
            raise UsageError(
                f"{option} -: no batch of this workflow reads its items from standard input",
                hint='a batch reads standard input when its items are {"from": "-"}',
            )
        return None
    if stream is None:
        raise UsageError(
            f"batch '{reader}' reads its items from standard input, but this process has none",
            hint=f"give them in a file: {option} items.jsonl",
        )
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        raise UsageError(
            f"batch '{reader}' reads its items from standard input, which is a terminal",
            hint=f"pipe them in (cat items.jsonl | plait run {workflow}, or plait run {workflow} < items.jsonl), "
            f"or give a file: {option} items.jsonl",
        )
    return getattr(stream, "buffer", stream)
