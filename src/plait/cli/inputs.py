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
