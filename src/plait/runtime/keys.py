"""Keys by content: what makes an item the same item in another run.

A node's *fingerprint* covers what decides its work apart from its params'
values: its type and the type's version, its params as written (templates as
their sources), and the batch fields that change results (not the
concurrency knobs: ``parallel``, ``max_concurrent``, ``executor``). An item's
*key* is the fingerprint with the item's resolved params, in canonical JSON,
hashed: two runs give an item the same key exactly when it would do the same
work. Duplicates (two items with one key) are told apart by their occurrence
number, counted in input order.

A *cache key* leaves the workflow out: the node type, the type's cache
version and the resolved params, so the same call in another workflow hits
too. Values under secret-looking names enter every key only as their hash,
and keys are hashes themselves: no secret is ever stored in clear.
"""

from __future__ import annotations

import hashlib
import json
from json.encoder import encode_basestring as encode_str
from typing import Any

from plait.runtime.jsontext import canonical as _canonical_text
from plait.runtime.redact import hashed_in_keys

# batch fields that change where or how fast items run, not what they give
_NOT_IN_FINGERPRINT = frozenset(("parallel", "max_concurrent", "executor"))


class NotCanonical(ValueError):
    """A value with no canonical JSON form (a float NaN, an object of a class): never keyed."""


def canonical(value: Any) -> str:
    """One text per value: sorted keys, no spaces, secrets as their hashes."""
    try:
        return _canonical_text(_hide(value))
    except (TypeError, ValueError) as exc:
        raise NotCanonical(str(exc)) from None


def canonical_param(name: str, value: Any) -> str:
    """The text of ``value`` as the value of the param ``name`` inside
    ``canonical(params)`` (where a secret-looking name hides it)."""
    kind = type(value)
    if kind is str and not (value and hashed_in_keys(name)):
        return encode_str(value)
    if value is None:
        return "null"
    try:
        if kind is int:
            return int.__repr__(value)  # what the encoder writes (ValueError past 4300 digits)
        return _canonical_text(_hide(value, name))
    except (TypeError, ValueError) as exc:
        raise NotCanonical(str(exc)) from None


_PLAIN = frozenset((int, float, bool, type(None)))


def _hide(value: Any, name: str | None = None) -> Any:
    kind = type(value)
    if kind is str:
        if name is not None and value and hashed_in_keys(name):
            return {"sha256": hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()}
        return value
    if kind in _PLAIN:
        return value
    if kind is dict:
        for k, v in value.items():
            if type(v) not in _PLAIN or type(k) is not str:
                break
        else:
            return value  # text keys and plain values only: nothing to hide, no copy
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"key {k!r} is not text")
            out[k] = v if type(v) in _PLAIN else _hide(v, k)
        return out
    if kind is list or kind is tuple:
        return [_hide(v) for v in value]
    if isinstance(value, str):  # a TemplatedText: its text
        return _hide(str(value), name)
    if isinstance(value, dict):
        return _hide(dict(value), name)
    if isinstance(value, list | tuple):
        return [_hide(v) for v in value]
    if isinstance(value, bool | int | float):
        return value
    raise TypeError(f"{type(value).__name__} is not JSON data")


_BLAKE2B_16 = hashlib.blake2b(digest_size=16)  # never updated: copied, which skips the keywords' parsing


def digest(text: str) -> str:
    h = _BLAKE2B_16.copy()
    h.update(text.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def node_fingerprint(node_type: str, type_version: str, params: Any, batch: dict[str, Any] | None) -> str:
    """The hash of what decides a node's work besides its params' values."""
    shown_batch = None
    if batch is not None:
        shown_batch = {k: v for k, v in batch.items() if k not in _NOT_IN_FINGERPRINT}
    text = json.dumps(
        {"type": node_type, "version": type_version, "params": params, "batch": shown_batch},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return digest(text)


def item_key(fingerprint: str, params: dict[str, Any]) -> str | None:
    """The item's key, or None when its params have no canonical form (it is then never reused)."""
    try:
        return digest(fingerprint + "\0" + canonical(params))
    except NotCanonical:
        return None


def cache_key(node_type: str, cache_version: str, params: dict[str, Any]) -> str | None:
    try:
        return digest(f"{node_type}\0{cache_version}\0" + canonical(params))
    except NotCanonical:
        return None

