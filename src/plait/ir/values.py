"""Text to typed input values, by the declared type (command line, stdin, sub-workflow inputs)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from plait.errors import UsageError
from plait.ir.loader import MAX_INT_DIGITS, Refused, parse_json
from plait.ir.model import InputSpec, fits, value_type

_INTEGER_RE = re.compile(r"[-+]?[0-9]+")
_NUMBER_RE = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")
_SURROGATE = re.compile("[\ud800-\udfff]")


def convert(spec: InputSpec | None, name: str, text: str) -> Any:
    type_ = spec.type if spec is not None else "any"
    if _SURROGATE.search(text):
        # What the OS hands Python for bytes that are not UTF-8 (surrogateescape)
        raise UsageError(
            f"input '{name}' is not valid UTF-8 text",
            hint=f"give {name} as UTF-8 (check the terminal's or the file's encoding)",
        )
    if type_ == "string":
        return text
    if type_ == "integer":
        if not _INTEGER_RE.fullmatch(text.strip()):
            raise _bad(name, type_, text, "a whole number such as 42")
        return _whole(name, type_, text.strip())
    if type_ == "number":
        # JSON numbers only: not Python's "1_000", "nan" or "inf"
        if not _NUMBER_RE.fullmatch(text.strip()):
            raise _bad(name, type_, text, "a number such as 3.5")
        if _INTEGER_RE.fullmatch(text.strip()):
            return _whole(name, type_, text.strip())
        number = float(text.strip())
        if not math.isfinite(number):
            raise _bad(name, type_, text, "a number small enough to be finite")
        return number
    if type_ == "boolean":
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise _bad(name, type_, text, "true or false")
    if type_ in ("object", "array"):
        try:
            value = parse_json(text)
        except json.JSONDecodeError as exc:
            raise _bad(name, type_, text, f"JSON ({exc.msg} at column {exc.colno})")
        except Refused as exc:
            raise UsageError(
                f"input '{name}': {exc.locate(text).message} (at column {exc.column})",
                hint=exc.hint,
            )
        if not isinstance(value, dict if type_ == "object" else list):
            raise _bad(name, type_, text, "a JSON object {...}" if type_ == "object" else "a JSON list [...]")
        return value
    try:
        return parse_json(text)
    except ValueError:  # not JSON, or JSON that plait refuses (NaN, too deep...): the text
        return text


def _whole(name: str, type_: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:  # over Python's limit of digits
        raise _bad(name, type_, text, f"a whole number of at most {MAX_INT_DIGITS} digits")


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
