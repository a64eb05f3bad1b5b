"""JSON text on the per-item path, without building an encoder per call.

``json.dumps`` with any keyword (``sort_keys``, ``separators``...) builds a
``JSONEncoder`` and then a C encoder on every call, which costs more than
encoding a small dict. These functions build the C encoder once and call it;
they give exactly the text ``json.dumps`` gives with the same options, and
raise the same errors (TypeError for what is not JSON, ValueError for NaN
under ``allow_nan=False``, a circular structure).
"""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Callable
from json import encoder as _enc
from typing import Any


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _build(*, sort_keys: bool, allow_nan: bool) -> Callable[[Any], str]:
    make = getattr(_enc, "c_make_encoder", None)
    quote = getattr(_enc, "c_encode_basestring", None)
    if make is None or quote is None:  # not CPython's accelerated json: the plain way
        slow = json.JSONEncoder(sort_keys=sort_keys, allow_nan=allow_nan, ensure_ascii=False, separators=(",", ":"))
        return slow.encode

    # Built once, without markers (the dict through which an encoder finds a
    # cycle): it then holds no state of a call, so threads share it, and a small
    # value costs a third less. A circular value recurses until RecursionError
    # and is encoded again with markers, which raise the ValueError json.dumps does.
    unchecked = make(None, _not_json, quote, None, ":", ",", sort_keys, False, allow_nan)
    join = "".join

    def encode(value: Any) -> str:
        if type(value) is str:
            return quote(value)
        try:
            return join(unchecked(value, 0))
        except RecursionError:
            return join(make({}, _not_json, quote, None, ":", ",", sort_keys, False, allow_nan)(value, 0))

    # Build once here to fail at import, not on the first item, if the signature ever changes.
    encode({"a": [1, 2.5, None, True]})
    return encode


#: compact text, keys as given (``json.dumps(v, ensure_ascii=False, separators=(",", ":"))``)
compact = _build(sort_keys=False, allow_nan=True)


#: one text per value: sorted keys, compact, NaN refused
canonical = _build(sort_keys=True, allow_nan=False)


_scan = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]  # what json.loads runs, without its wrappers


def loads_stored(text: str) -> Any:
    """JSON text plait stored compactly, decoded by the C scanner without
    ``json.loads``' Python layers (a third of the cost for a small value);
    anything else (spaces around it, an old row) goes the usual way.
    Raises ValueError as ``json.loads`` does."""
    try:
        value, end = _scan(text, 0)
        if end == len(text):
            return value
    except (StopIteration, ValueError):
        pass
    return json.loads(text)
