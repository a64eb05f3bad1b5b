"""Item keys made from compile-time pieces are the keys the generic function gives.

Keys are kept in run records and the cache: a resumed run finds its finished
items by them, so the fast path must give exactly the old text, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import pytest

from plait.api import _compile, _registry
from plait.runtime import keys
from plait.runtime.items import Attempt, resolve


def reference_canonical(value: Any) -> str:
    """canonical() as it was written before the encoder was made once."""
    return json.dumps(keys._hide(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def reference_key(fingerprint: str, params: dict[str, Any]) -> str:
    text = fingerprint + "\0" + reference_canonical(params)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


ITEMS: list[Any] = [
    0,
    -7,
    10**40,
    1.5,
    True,
    None,
    "",
    "text with \"quotes\", \\ and é ☃ \n tabs\t",
    "\ud800 lone surrogate",
    [1, "two", [3.25, None], {"b": 1, "a": 2}],
    {"z": 1, "a": [True, False], "é": {"nested": "x"}},
]


@pytest.mark.parametrize("item", ITEMS, ids=[f"item{i}" for i in range(len(ITEMS))])
def test_an_items_key_is_the_generic_key_of_its_params(item):
    raw = {
        "nodes": [
            {
                "id": "n",
                "type": "echo",
                "params": {
                    "value": "${item}",
                    "text": "item ${item} of ${__index__}",
                    "api_key": "${item}",  # a secret-looking name: only its hash enters the key
                    # not masked in what plait shows, but hashed in keys, as keys always did
                    "keywords": "${item}",
                    "fixed": {"b": [1, 2.5, "é"], "a": None},
                    "password": "hunter22",
                    "zeta": 3,
                    "Alpha": "upper case sorts first",
                },
                "batch": {"items": [item]},
            }
        ]
    }
    cn = _compile(raw, _registry(())).nodes["n"]
    assert cn.key_plan is not None
    params, key = resolve(cn, {}, Attempt(0, item, 1))

    assert key == reference_key(cn.fingerprint, params)
    assert keys.canonical(params) == reference_canonical(params)
    assert key == keys.item_key(cn.fingerprint, params)
    # the item cache's key, from the same pieces (entries already stored must keep hitting)
    assert cn.cache_key(params) == reference_key(f"echo\0{cn.cls.cache_version}", params)
    assert cn.cache_key(params) == keys.cache_key("echo", cn.cls.cache_version, params)


def test_every_value_kind_has_the_reference_text():
    for value in [*ITEMS, {"token": "s3cret!", "list": [{"secret": "x"}]}, (1, 2), -0.0, 1e300]:
        assert keys.canonical({"v": value}) == reference_canonical({"v": value})
        assert keys.canonical_param("v", value) == reference_canonical(value)
    assert keys.canonical_param("api_key", "abc") == reference_canonical({"sha256": hashlib.sha256(b"abc").hexdigest()})


@pytest.mark.parametrize("bad", [math.nan, math.inf, {1: "int key"}, object()], ids=["nan", "inf", "int-key", "object"])
def test_params_without_a_canonical_form_have_no_key(bad):
    raw = {"nodes": [{"id": "n", "type": "echo", "params": {"value": "${item}"}, "batch": {"items": [1]}}]}
    cn = _compile(raw, _registry(())).nodes["n"]
    with pytest.raises(keys.NotCanonical):
        keys.canonical_param("value", bad)
    assert cn.item_key({"value": bad}) is None
    assert cn.cache_key({"value": bad}) is None
    assert keys.item_key(cn.fingerprint, {"value": bad}) is None


def test_a_static_param_without_a_canonical_form_leaves_every_item_unkeyed():
    raw = {"nodes": [{"id": "n", "type": "echo", "params": {"value": "${item}", "big": math.nan}, "batch": {"items": [1, 2]}}]}
    cn = _compile(raw, _registry(())).nodes["n"]
    assert cn.key_plan is None
    assert resolve(cn, {}, Attempt(0, 1, 1))[1] is None


def test_params_other_than_the_nodes_own_take_the_generic_path():
    raw = {"nodes": [{"id": "n", "type": "echo", "params": {"value": "${item}"}, "batch": {"items": [1]}}]}
    cn = _compile(raw, _registry(())).nodes["n"]
    for params in ({"other": 1}, {"value": 1, "more": 2}, {}):
        assert cn.item_key(params) == reference_key(cn.fingerprint, params)
        assert cn.cache_key(params) == keys.cache_key("echo", cn.cls.cache_version, params)
