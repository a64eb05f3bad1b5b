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


class ConversionError(ValueError):
    """Text that does not read as the declared type; ``expected`` says what would.
    ``refused`` is set when the text parsed but holds what plait refuses (NaN, depth)."""

    def __init__(self, expected: str, refused: Refused | None = None) -> None:
        super().__init__(expected)
        self.expected = expected
        self.refused = refused


def convert_text(text: str, type_: str) -> Any:
    """Text to a value of a declared type: the one reading for the command line,
    standard input, sub-workflow inputs and templates.

    Numbers are JSON numbers (not Python's ``1_000``, ``nan`` or ``inf``);
    booleans are true/false, yes/no, on/off, 1/0 in any case; objects and
    arrays are JSON; ``any`` is JSON when it parses, else the text.
    """
    if type_ == "string":
        return text
    stripped = text.strip()
    if type_ == "integer":
        if not _INTEGER_RE.fullmatch(stripped):
            raise ConversionError("a whole number such as 42")
        return _int(stripped)
    if type_ == "number":
        if not _NUMBER_RE.fullmatch(stripped):
            raise ConversionError("a number such as 3.5")
        if _INTEGER_RE.fullmatch(stripped):
            return _int(stripped)
        number = float(stripped)
        if not math.isfinite(number):
            raise ConversionError("a number small enough to be finite")
        return number
    if type_ == "boolean":
        low = stripped.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConversionError("true or false")
    if type_ in ("object", "array"):
        try:
            value = parse_json(text)
        except json.JSONDecodeError as exc:
            raise ConversionError(f"JSON ({exc.msg} at column {exc.colno})")
        except Refused as exc:
            raise ConversionError(exc.locate(text).message, refused=exc)
        if not isinstance(value, dict if type_ == "object" else list):
            raise ConversionError("a JSON object {...}" if type_ == "object" else "a JSON list [...]")
        return value
    try:
        return parse_json(text)
    except ValueError:  # not JSON, or JSON that plait refuses (NaN, too deep...): the text
        return text


def _int(digits: str) -> int:
    try:
        return int(digits)
    except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
        raise ConversionError(f"a whole number of at most {MAX_INT_DIGITS} digits")


def convert(spec: InputSpec | None, name: str, text: str) -> Any:
    """A command-line or stdin value for input ``name``, by its declared type."""
    type_ = spec.type if spec is not None else "any"
    if _SURROGATE.search(text):
        # What the OS hands Python for bytes that are not UTF-8 (surrogateescape)
        raise UsageError(
            f"input '{name}' is not valid UTF-8 text",
            hint=f"give {name} as UTF-8 (check the terminal's or the file's encoding)",
        )
    try:
        return convert_text(text, type_)
    except ConversionError as exc:
        if exc.refused is not None:
            raise UsageError(
                f"input '{name}': {exc.refused.message} (at column {exc.refused.column})",
                hint=exc.refused.hint,
            )
        raise _bad(name, type_, text, exc.expected)


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


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: Any) -> float | None:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"90s"`` or a number of seconds; None when it is not one."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int | float):
        return float(text) if 0 < text < 1e12 else None
    if not isinstance(text, str):
        return None
    m = _DURATION_RE.match(text)
    if not m:
        return None
    seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    return seconds if 0 < seconds < 1e12 else None
