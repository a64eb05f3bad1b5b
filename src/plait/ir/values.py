"""Text to typed input values, by the declared type (command line, stdin, sub-workflow inputs)."""

from __future__ import annotations

import json
import re
from typing import Any

from plait.errors import UsageError
from plait.ir.model import InputSpec, fits, value_type

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
        hint=f"give {expected} for {name}",
    )


def fit_input(spec: InputSpec, name: str, value: Any) -> Any:
    """A typed value handed to a workflow (a sub-workflow's inputs): kept when it
    fits the declared type, converted when it is text that reads as that type,
    refused otherwise."""
    if spec.type == "any" or fits(value, spec.type):
        return value
    if isinstance(value, str):
        return convert(spec, name, value)
    raise UsageError(
        f"input '{name}' is declared as {spec.type}, but got {value_type(value)}",
        hint=f"give {spec.type} for {name}",
    )
