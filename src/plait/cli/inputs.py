"""Turn ``name=value`` words into typed input values, by the declared type."""

from __future__ import annotations

import json
import re
from typing import Any, TextIO

from plait.errors import UsageError, did_you_mean
from plait.ir.model import InputSpec

_INTEGER_RE = re.compile(r"[-+]?[0-9]+")
_NUMBER_RE = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")


def convert(spec: InputSpec | None, name: str, text: str) -> Any:
    type_ = spec.type if spec is not None else "any"
    if type_ == "string":
        return text
    if type_ == "integer":
        if not _INTEGER_RE.fullmatch(text.strip()):
            raise _bad(name, type_, text, "a whole number such as 42")
        return int(text.strip())
    if type_ == "number":
        # JSON numbers only: not Python's "1_000", "nan" or "inf"
        if not _NUMBER_RE.fullmatch(text.strip()):
            raise _bad(name, type_, text, "a number such as 3.5")
        number = float(text.strip())
        return int(number) if _INTEGER_RE.fullmatch(text.strip()) else number
    if type_ == "boolean":
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise _bad(name, type_, text, "true or false")
    if type_ in ("object", "array"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _bad(name, type_, text, f"JSON ({exc.msg} at column {exc.colno})")
        if not isinstance(value, dict if type_ == "object" else list):
            raise _bad(name, type_, text, "a JSON object {...}" if type_ == "object" else "a JSON list [...]")
        return value
    try:
        return json.loads(text)
    except ValueError:
        return text


def _bad(name: str, type_: str, text: str, expected: str) -> UsageError:
    shown = text if len(text) <= 60 else text[:57] + "..."
    return UsageError(
        f"input '{name}' is declared as {type_}, but got {shown!r}",
        hint=f"give {expected}: {name}=...",
    )


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
