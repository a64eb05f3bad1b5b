"""Turn ``name=value`` words into typed input values, by the declared type."""

from __future__ import annotations

import json
from typing import Any

from plait.errors import UsageError, did_you_mean
from plait.ir.model import InputSpec

_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")


def convert(spec: InputSpec | None, name: str, text: str) -> Any:
    type_ = spec.type if spec is not None else "any"
    if type_ == "string":
        return text
    if type_ == "integer":
        try:
            return int(text.strip())
        except ValueError:
            raise _bad(name, type_, text, "a whole number such as 42")
    if type_ == "number":
        try:
            number = float(text.strip())
        except ValueError:
            raise _bad(name, type_, text, "a number such as 3.5")
        return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number
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
        except ValueError as exc:
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


def stdin_input(specs: dict[str, InputSpec]) -> str | None:
    for name, spec in specs.items():
        if spec.stdin:
            return name
    return None
