"""Keep secrets out of what plait writes down (run records, timelines).

Two rules, applied together:

* by name: a value under a key that looks secret (``Authorization``,
  ``api_key``, ``auth_token``, ``client_secret``, ``password``, ``Cookie``...)
  is replaced by ``***``. Numbers and booleans are kept (``max_tokens: 500`` is
  not a secret), so is a value made only of templates (``${env.API_KEY}`` says
  where the secret comes from, not what it is).
* by value: free text (an error message, an item preview) is scrubbed of
  ``Bearer <token>``, ``user:password@`` in URLs, ``?api_key=...`` query
  parameters, and every value that was redacted by name or that sits in an
  environment variable with a secret-looking name.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from typing import Any

MASK = "***"

# Names that hold secrets by what they say, wherever the word sits in the name.
_SECRET_WORDS = re.compile(
    r"secret|passw|passphrase|credential|authorization|cookie|signature|session"
    r"|(?:^|[_\-.])auth(?:$|[_\-.])",
    re.IGNORECASE,
)
# `key` and `token` are also parts of ordinary words (monkey, keywords,
# tokenizer) and ordinary names (sort_key, item_key): they count as whole words
# of the name (api_key, apiKey, x-api-key, key, access_token, authToken), or
# run together with a word that makes them secret (apikey, accesstoken).
_NAME_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_KEY_QUALIFIERS = ("api", "access", "secret", "private", "client", "master", "signing", "sign", "app", "auth",
                   "license", "encryption", "ssh", "gpg", "pgp", "service", "account", "subscription", "session")
#: words before `key` that make it a name for something that is not a secret
_KEY_NOT_SECRET = frozenset(
    ("item", "sort", "primary", "foreign", "cache", "partition", "row", "group", "lookup", "unique", "index",
     "join", "dedup", "dedupe", "object", "map", "dict", "hash", "hot", "short", "music", "idempotency",
     "composite", "natural", "surrogate", "public", "range", "shard", "bucket", "table", "column")
)
_KEY_WORD = re.compile(r"(?:" + "|".join(_KEY_QUALIFIERS) + r")?keys?$")
_TOKEN_WORD = re.compile(r"[a-z]*tokens?$")
# What the keys of items and cache entries hash instead of keeping (runtime/keys.py).
# Broader than the rule above, and fixed: a key computed today must equal the key
# of the same params computed by an earlier plait, and hashing a value that is no
# secret costs nothing there.
_HASHED_IN_KEYS = re.compile(
    r"token|key|secret|passw|passphrase|credential|authorization|cookie|signature|session"
    r"|(?:^|[_\-.])auth(?:$|[_\-.])",
    re.IGNORECASE,
)
# Environment variables whose names look secret but whose values are not (a
# path, a socket): learning them would mask every path under the working folder.
_NOT_SECRET_ENV = frozenset(
    ("PWD", "OLDPWD", "SSH_AUTH_SOCK", "GPG_AGENT_INFO", "KEYTIMEOUT", "XAUTHORITY", "XDG_SESSION_ID",
     "XDG_SESSION_TYPE", "XDG_SESSION_CLASS", "XDG_SESSION_DESKTOP", "DESKTOP_SESSION", "SESSION_MANAGER",
     "DBUS_SESSION_BUS_ADDRESS")
)
_TEMPLATES_ONLY = re.compile(r"^(?:\s*\$\{[^}]*\}\s*)+$")
_BEARER = re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=\-]{4,}", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^\s:/@]+):[^\s@/]+@", re.IGNORECASE)
_QUERY_PARAM = re.compile(r"([?&;]([A-Za-z0-9_.\-]+)=)([^&#\s\"']+)")
_HEADER_LINE = re.compile(
    r"((?:authorization|proxy-authorization|cookie|set-cookie|x-api-key|api-key)\s*[:=]\s*)"
    r"(?!(?:Bearer|Basic|Token)\s)([^\s,;\"'}]+)",
    re.IGNORECASE,
)
_SUSPECT = re.compile(
    r"://|=|\"\s*:|bearer|basic|token|authorization|cookie|api-key", re.IGNORECASE
)
_QUOTE_COLON = re.compile(r'"\s*:')
_SUSPECT_WORDS = ("bearer", "basic", "token", "authorization", "cookie", "api-key")

_JSON_PAIR = re.compile(r'"([^"\\]{1,64})"(\s*:\s*)"((?:[^"\\]|\\.)*)"')
# A secret-named JSON value cut off by a preview: no closing quote before the end.
_JSON_PAIR_CUT = re.compile(r'"([^"\\]{1,64})"(\s*:\s*)"((?:[^"\\]|\\.)*)(?:\.\.\.|…)?$')
# Short values would match by accident inside ordinary text.
_MIN_SECRET_LEN = 6


def _suspect(text: str) -> bool:
    """``_SUSPECT.search(text)``, for ASCII text by substring tests: the regex tries
    every alternative, case-folded, at every position (a microsecond and a half
    for a short line, on every text of every item a run record stores). In ASCII
    text, ignoring case is matching the lowercased text: the letters that also
    fold to these words' letters (the Kelvin sign, the long s) are not ASCII."""
    if not text.isascii():
        return _SUSPECT.search(text) is not None
    if "://" in text or "=" in text:
        return True
    low = text.lower()
    for word in _SUSPECT_WORDS:
        if word in low:
            return True
    return '"' in text and _QUOTE_COLON.search(text) is not None


@functools.lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    if _SECRET_WORDS.search(name):
        return True
    lowered = name.lower()
    if "key" not in lowered and "token" not in lowered:
        return False
    before = None
    for word in _NAME_WORDS.findall(name):
        word = word.lower()
        if _TOKEN_WORD.match(word):
            return True
        if _KEY_WORD.match(word) and (len(word) > 4 or before not in _KEY_NOT_SECRET):
            return True
        before = word
    return False


@functools.lru_cache(maxsize=4096)
def hashed_in_keys(name: str) -> bool:
    """Whether an item or cache key hashes the value of a param named ``name``."""
    return bool(_HASHED_IN_KEYS.search(name))


class Redactor:
    """Redacts structured values by key name and learns the values it hid,
    so the same secret is also scrubbed from free text later."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        env = os.environ if environ is None else environ
        for name, value in env.items():
            if is_secret_name(name) and name.upper() not in _NOT_SECRET_ENV and not _looks_like_a_path(value):
                self.learn(value)

    def learn(self, value: Any) -> None:
        if (
            isinstance(value, str)
            and len(value) >= _MIN_SECRET_LEN
            and value not in self._secrets
            and not _TEMPLATES_ONLY.match(value)
        ):
            self._secrets.add(value)
            self._pattern = None

    def learn_from(self, value: Any) -> None:
        """Learn the secrets a value holds under secret-looking names (an
        ``access_token`` in an HTTP response, a ``set-cookie`` header), so they are
        masked wherever they appear later, also in free text."""
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                for k, v in item.items():
                    if isinstance(k, str) and is_secret_name(k) and _maskable(v):
                        self._learn_all(v)
                    elif isinstance(v, dict | list):
                        stack.append(v)
                    elif isinstance(v, str) and _json_object_text(v):
                        stack.append(_parsed(v))
            elif isinstance(item, list):
                stack.extend(v for v in item if isinstance(v, dict | list))

    def value(self, value: Any, name: str | None = None) -> Any:
        """A copy of ``value`` with secret-named entries masked (recursively)."""
        if name is not None and is_secret_name(name) and _maskable(value):
            self._learn_all(value)
            return MASK
        if isinstance(value, dict):
            return {k: self.value(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value

    def masked(self, value: Any, name: str | None = None) -> tuple[Any, bool]:
        """Like :meth:`value`, and whether anything was masked; the parts that
        hold nothing to mask are the very same objects (no copy)."""
        if name is not None and is_secret_name(name) and _maskable(value):
            self._learn_all(value)
            return MASK, True
        if isinstance(value, dict):
            out: dict[Any, Any] | None = None
            for k, v in value.items():
                new, changed = self.masked(v, str(k))
                if changed:
                    if out is None:
                        out = dict(value)
                    out[k] = new
            return (value, False) if out is None else (out, True)
        if isinstance(value, list | tuple):
            lst: list[Any] | None = None
            for i, v in enumerate(value):
                new, changed = self.masked(v)
                if changed:
                    if lst is None:
                        lst = list(value)
                    lst[i] = new
            return (value, False) if lst is None else (lst, True)
        if isinstance(value, str):
            shown = self.text(value)
            return shown, shown != value
        return value, False

    def knows_any(self, text: str) -> bool:
        """Whether ``text`` holds a secret value this redactor was given or learned
        (what :meth:`text` masks besides the patterns every run masks alike)."""
        return bool(self._secrets) and self._secrets_pattern().search(text) is not None

    def _secrets_pattern(self) -> re.Pattern[str]:
        """The values learned, longest first (a secret inside a longer one is masked with it)."""
        pattern = self._pattern
        if pattern is None:
            ordered = sorted(self._secrets, key=len, reverse=True)
            pattern = self._pattern = re.compile("|".join(re.escape(s) for s in ordered))
        return pattern

    def text(self, text: str) -> str:
        """Free text with anything that looks like a credential masked."""
        if not text:
            return text
        if self._secrets:
            text = self._secrets_pattern().sub(MASK, text)
        if not _suspect(text):  # most text: nothing to mask
            return text
        if "://" in text:
            text = _URL_USERINFO.sub(rf"\1:{MASK}@", text)
        if '":' in text or '" :' in text:
            text = _JSON_PAIR.sub(_mask_json_pair, text)
            text = _JSON_PAIR_CUT.sub(_mask_json_pair, text)
        if "=" in text:
            text = _QUERY_PARAM.sub(_mask_query, text)
        text = _BEARER.sub(rf"\1 {MASK}", text)
        return _HEADER_LINE.sub(rf"\1{MASK}", text)

    def _learn_all(self, value: Any) -> None:
        if isinstance(value, str):
            self.learn(value)
            # "Bearer abc..." hides "abc..." too, wherever it shows up alone
            parts = value.split()
            if len(parts) == 2:
                self.learn(parts[1])
        elif isinstance(value, dict):
            for v in value.values():
                self._learn_all(v)
        elif isinstance(value, list | tuple):
            for v in value:
                self._learn_all(v)


_JSON_TEXT_MAX = 1 << 20


def _json_object_text(text: str) -> bool:
    """Text that holds a JSON object (a shell node's stdout): templates step into it."""
    return len(text) < _JSON_TEXT_MAX and text.lstrip()[:1] == "{" and '":' in text


def _parsed(text: str) -> Any:
    import json

    try:
        return json.loads(text)
    except ValueError:
        return None


def _looks_like_a_path(value: str) -> bool:
    return value.startswith(("/", "~/", "./")) or (len(value) > 2 and value[1:3] in (":\\", ":/"))


def _maskable(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float):
        return False
    if isinstance(value, str):
        return bool(value) and not _TEMPLATES_ONLY.match(value)
    return True


def _mask_query(m: re.Match[str]) -> str:
    if is_secret_name(m.group(2)) and m.group(3) != MASK:
        return m.group(1) + MASK
    return m.group(0)


def _mask_json_pair(m: re.Match[str]) -> str:
    if is_secret_name(m.group(1)) and m.group(3) and not _TEMPLATES_ONLY.match(m.group(3)):
        return f'"{m.group(1)}"{m.group(2)}"{MASK}"'
    return m.group(0)


_default: Redactor | None = None


def redact(value: Any, name: str | None = None) -> Any:
    """Mask secrets in a value (dicts by key name, strings by content)."""
    global _default
    if _default is None:
        _default = Redactor()
    return _default.value(value, name)


def redact_text(text: str) -> str:
    global _default
    if _default is None:
        _default = Redactor()
    return _default.text(text)
