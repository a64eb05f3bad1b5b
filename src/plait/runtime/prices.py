"""Model prices and token estimates: what a call costs, before and after.

Three layers, later ones winning field by field:

1. the table shipped with plait (``plait/data/prices.json``, dated ``as_of``),
2. the user's ``$PLAIT_HOME/prices.json`` (``.plait/prices.json`` in the
   working directory when ``PLAIT_HOME`` is not set),
3. a workflow's ``"prices"`` object.

All three have one shape: ``{"as_of": "YYYY-MM-DD", "models": {ID: {"input":
USD, "output": USD, "cached": USD | null, "provider": ..., "max_output": N,
"aliases": [...], "long_context": {"above": N, "input": .., "output": ..,
"cached": ..}}}}``, prices in dollars per million tokens. An overlay entry for
a known model may give only the fields it changes; a new model needs at least
``input`` and ``output``.

Finding a model's price (:meth:`PriceTable.match`), first hit wins:

1. the id exactly, then an alias (``4o`` → ``gpt-4o``);
2. the same, ignoring case;
3. without a routing prefix: ``openai/gpt-4o``, ``anthropic/claude-…``,
   ``gemini/gemini-2.5-pro``, ``openrouter/openai/gpt-4o`` (everything up to
   the last ``/``);
4. without a snapshot suffix: ``-2024-08-06``, ``-20250514``, ``-latest``,
   ``@20250514``, ``-001``.

Nothing fuzzier: ``gpt-4o-mini-tts`` does not get ``gpt-4o-mini``'s price. A
dated snapshot priced differently from its family is listed by its full id,
which rule 1 finds first.

Costs: ``input_tokens`` counts the whole prompt *including* the cached part
(OpenAI's ``prompt_tokens``, what ``llm`` reports), ``cached_tokens`` is the
part that was a cache hit, billed at ``cached`` (or ``input`` when the model
has no cache price). A prompt above ``long_context.above`` tokens bills the
whole call at the long-context prices. Anthropic's cache *writes* (1.25 x input)
are not modelled.

Token estimates (:func:`estimate_tokens`) are a dependency-free heuristic
shaped like a BPE pre-tokenizer: an ASCII word of up to 9 letters is one token
and longer ones add one per 5 letters; other words one plus one per 5
letters; a CJK character 0.75; digits one per 3; a run of punctuation half a
token per character (one when alone); a newline run or an indentation run
one; anything else (emoji) one per 3 UTF-8 bytes. Against OpenAI's
``o200k_base`` encoding (GPT-4o, GPT-4.1, GPT-5, o-series), on 20 prompts it
was tuned on and 12 held out (prose, JSON, YAML, code, numbers, URLs, German,
French, Italian, Chinese, Japanese, Korean, Russian, emoji), the mean error is
8 to 9 %, the worst single prompt 27 % off, and a set's total within 4 %; the
classic ``len(text) / 4`` is off by 16 to 25 % on average and up to 67 %
(``benchmarks/bench_limits.py`` measures it when ``bpe-openai`` is installed).
Other providers' tokenizers count differently (Claude's and the older
``cl100k`` typically more tokens for non-English text). For a budget, use
:func:`prompt_tokens_bound`, which can never be below the real count: a
byte-level BPE token is at least one byte.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from plait.errors import PlaitError, did_you_mean

PRICES_FILE = "prices.json"
PER = 1_000_000  # prices are per million tokens

#: fields of one model's entry
MODEL_FIELDS: dict[str, str] = {
    "input": "dollars per million prompt tokens",
    "output": "dollars per million generated tokens (reasoning tokens included)",
    "cached": "dollars per million prompt tokens read from the provider's cache (null: none)",
    "provider": "who serves it (openai, anthropic, google, ...)",
    "max_output": "the most tokens it can generate in one call (bounds the worst case without max_tokens)",
    "aliases": "other names it is called by",
    "long_context": "prices for a prompt above 'above' tokens: {above, input, output, cached}",
    "note": "free text",
}
_TOP_FIELDS = ("as_of", "currency", "unit", "note", "sources", "models")
_LONG_FIELDS = ("above", "input", "output", "cached")

# per message, the chat format's framing (OpenAI documents 3, plus 3 to prime the reply)
_MESSAGE_OVERHEAD = 3
_REPLY_PRIMING = 3
# an upper bound of that framing, for prompt_tokens_bound
_MESSAGE_OVERHEAD_BOUND = 8


@dataclass(frozen=True)
class LongContext:
    above: int
    input: float
    output: float
    cached: float | None = None


@dataclass(frozen=True)
class Price:
    """One model's prices, in dollars per million tokens."""

    model: str
    input: float
    output: float
    cached: float | None = None
    provider: str | None = None
    max_output: int | None = None
    aliases: tuple[str, ...] = ()
    long_context: LongContext | None = None
    note: str | None = None
    source: str = "plait"

    def rates(self, prompt_tokens: int) -> tuple[float, float, float]:
        """(input, cached, output) prices for a call with this many prompt tokens."""
        long = self.long_context
        if long is not None and prompt_tokens > long.above:
            cached = long.cached if long.cached is not None else long.input
            return long.input, cached, long.output
        return self.input, (self.cached if self.cached is not None else self.input), self.output

    def cost(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> float:
        # Once per call on the per-item path: the comparisons written out, not max/min calls.
        if input_tokens < 0:
            input_tokens = 0
        if output_tokens < 0:
            output_tokens = 0
        if cached_tokens <= 0:
            cached_tokens = 0
        elif cached_tokens > input_tokens:
            cached_tokens = input_tokens
        if self.long_context is None:
            if not cached_tokens:
                return (input_tokens * self.input + output_tokens * self.output) / PER
            inp, out = self.input, self.output
            cached = self.cached if self.cached is not None else inp
        else:
            inp, cached, out = self.rates(input_tokens)
        return ((input_tokens - cached_tokens) * inp + cached_tokens * cached + output_tokens * out) / PER

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "provider": self.provider,
            "input": self.input,
            "cached": self.cached,
            "output": self.output,
            "max_output": self.max_output,
            "aliases": list(self.aliases),
            "source": self.source,
        }
        if self.long_context is not None:
            lc = self.long_context
            out["long_context"] = {"above": lc.above, "input": lc.input, "output": lc.output, "cached": lc.cached}
        if self.note:
            out["note"] = self.note
        return out


_SNAPSHOT = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{8}|-latest|@\d{8}|@latest|-\d{3})$", re.IGNORECASE)


class PriceTable:
    """Prices by model id, with aliases; see the module documentation."""

    def __init__(self, prices: Mapping[str, Price], as_of: str | None = None) -> None:
        self.as_of = as_of
        self._prices: dict[str, Price] = dict(prices)
        self._index: dict[str, str] = {}
        self._folded: dict[str, str] = {}
        # ids before aliases, so an id always beats another model's alias
        for model_id, price in self._prices.items():
            for alias in price.aliases:
                self._index.setdefault(alias, model_id)
        for model_id in self._prices:
            self._index[model_id] = model_id
        for name, model_id in self._index.items():
            self._folded.setdefault(name.lower(), model_id)
        for model_id in self._prices:
            self._folded[model_id.lower()] = model_id

    # -- building ---------------------------------------------------------

    @classmethod
    def shipped(cls) -> PriceTable:
        text = resources.files("plait").joinpath("data", PRICES_FILE).read_text(encoding="utf-8")
        return cls({}).overlay(json.loads(text), source="plait")

    @classmethod
    def load(
        cls,
        workflow_prices: Mapping[str, Any] | None = None,
        *,
        home: str | os.PathLike[str] | None = None,
        user: bool = True,
    ) -> PriceTable:
        """plait's table, then the user's file, then the workflow's ``prices``."""
        table = _shipped()
        if user:
            path = user_prices_path(home)
            if path.is_file():
                table = table.overlay(_read_user_file(path), source=str(path))
        if workflow_prices is not None:
            table = table.overlay(workflow_prices, source="workflow")
        return table

    def overlay(self, block: Mapping[str, Any], *, source: str) -> PriceTable:
        """A new table with ``block`` (the prices.json shape) laid over this one."""
        problems = validate_prices(block, known=self._prices.keys())
        if problems:
            message, path, hint = problems[0]
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            if source in ("plait", "workflow"):
                raise PlaitError(f"{path}: {message}{more}", hint=hint)
            inner = path.removeprefix("prices").lstrip(".")  # a path inside the file
            where = f"{inner}: " if inner else ""
            raise PlaitError(f"bad prices file: {where}{message}{more}", hint=hint, file=source)
        merged = dict(self._prices)
        for model_id, entry in (block.get("models") or {}).items():
            merged[model_id] = _price(model_id, entry, merged.get(model_id), source)
        return PriceTable(merged, block.get("as_of") or self.as_of)

    # -- reading ------------------------------------------------------------

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.resolve(model) is not None

    def __iter__(self) -> Any:
        return iter(self._prices.values())

    def __len__(self) -> int:
        return len(self._prices)

    def names(self) -> list[str]:
        """Every id and alias."""
        return list(self._index)

    def match(self, model: str) -> tuple[Price, str] | None:
        """(price, how it matched) or None; ``how`` is ``exact``, ``alias``,
        ``case``, ``prefix`` or ``snapshot``."""
        if not isinstance(model, str) or not model.strip():
            return None
        name = model.strip()
        found = self._lookup(name)
        if found is not None:
            return found
        bare = name.rsplit("/", 1)[-1] if "/" in name else None
        if bare:
            found = self._lookup(bare)
            if found is not None:
                return found[0], "prefix"
        for candidate in (name, bare):
            if candidate and _SNAPSHOT.search(candidate):
                found = self._lookup(_SNAPSHOT.sub("", candidate))
                if found is not None:
                    return found[0], "snapshot"
        return None

    def _lookup(self, name: str) -> tuple[Price, str] | None:
        model_id = self._index.get(name)
        if model_id is not None:
            return self._prices[model_id], ("exact" if model_id == name else "alias")
        model_id = self._folded.get(name.lower())
        if model_id is not None:
            return self._prices[model_id], "case"
        return None

    def resolve(self, model: str) -> Price | None:
        found = self.match(model)
        return found[0] if found else None

    def suggest(self, model: str) -> str:
        """A did-you-mean for an unknown model ('' when nothing is close)."""
        name = model.strip()
        bare = _SNAPSHOT.sub("", name.rsplit("/", 1)[-1])
        return did_you_mean(bare, self.names()) or did_you_mean(name, self.names())

    def cost_usd(self, model: str, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> float | None:
        price = self.resolve(model)
        return None if price is None else price.cost(input_tokens, output_tokens, cached_tokens)

    def worst_case_usd(self, model: str, prompt_tokens_estimate: int, max_tokens: int | None) -> float | None:
        """The most a call can cost: every prompt token uncached, ``max_tokens``
        generated (the model's ``max_output`` when None). None when the price
        or the output bound is unknown."""
        price = self.resolve(model)
        if price is None:
            return None
        out = max_tokens if max_tokens is not None else price.max_output
        if out is None:
            return None
        prompt = max(0, int(prompt_tokens_estimate))
        inp, cached, out_rate = price.rates(prompt)
        return (prompt * max(inp, cached) + max(0, int(out)) * out_rate) / PER


def user_prices_path(home: str | os.PathLike[str] | None = None) -> Path:
    """``$PLAIT_HOME/prices.json``, else ``.plait/prices.json`` here (where the
    run records live too)."""
    if home is not None:
        return Path(home) / PRICES_FILE
    env = os.environ.get("PLAIT_HOME")
    return (Path(env) if env else Path.cwd() / ".plait") / PRICES_FILE


def _read_user_file(path: Path) -> Mapping[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlaitError(f"cannot read the prices file: {exc.strerror or exc}", file=str(path))
    except ValueError as exc:
        raise PlaitError(
            f"the prices file is not valid JSON: {exc}",
            hint='it holds {"models": {"MODEL": {"input": 2.5, "output": 10}}}, prices per 1M tokens',
            file=str(path),
        )
    if not isinstance(data, Mapping):
        raise PlaitError(
            f"the prices file must hold a JSON object, got {type(data).__name__}",
            hint='for example {"models": {"my-model": {"input": 1, "output": 2}}}',
            file=str(path),
        )
    return data


def _price(model_id: str, entry: Mapping[str, Any], base: Price | None, source: str) -> Price:
    fields: dict[str, Any] = {"source": source}
    for key in ("input", "output", "cached"):
        if key in entry:
            fields[key] = None if entry[key] is None else float(entry[key])
    if "provider" in entry:
        fields["provider"] = entry["provider"]
    if "max_output" in entry:
        fields["max_output"] = None if entry["max_output"] is None else int(entry["max_output"])
    if "note" in entry:
        fields["note"] = entry["note"]
    if "aliases" in entry:
        fields["aliases"] = tuple(entry["aliases"] or ())
    if "long_context" in entry:
        lc = entry["long_context"]
        fields["long_context"] = (
            None
            if lc is None
            else LongContext(
                above=int(lc["above"]),
                input=float(lc["input"]),
                output=float(lc["output"]),
                cached=None if lc.get("cached") is None else float(lc["cached"]),
            )
        )
    if base is not None:
        return replace(base, **fields)
    return Price(model=model_id, **fields)


# ---------------------------------------------------------------------------
# the default table (plait's + the user's), re-read when the user's file changes

_cache_lock = threading.Lock()
_cache: dict[str, Any] = {}  # "shipped": PriceTable, "default": (file key, PriceTable)


def _shipped() -> PriceTable:
    with _cache_lock:
        table = _cache.get("shipped")
        if table is None:
            table = _cache["shipped"] = PriceTable.shipped()
        return table


def default_table() -> PriceTable:
    """plait's table with the user's file over it (cached until the file changes)."""
    path = user_prices_path()
    try:
        stat = path.stat()
        key: tuple[Any, ...] = (str(path), stat.st_mtime_ns, stat.st_size)
    except OSError:
        key = (str(path), None, None)
    with _cache_lock:
        hit = _cache.get("default")
        if hit is not None and hit[0] == key:
            return hit[1]
    table = PriceTable.load()
    with _cache_lock:
        _cache["default"] = (key, table)
    return table


def cost_usd(
    model: str,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int = 0,
    *,
    table: PriceTable | None = None,
) -> float | None:
    """Dollars for one call; None when the model's price is unknown."""
    return (table or default_table()).cost_usd(model, input_tokens, output_tokens, cached_tokens)


def worst_case_usd(
    model: str, prompt_tokens_estimate: int, max_tokens: int | None, *, table: PriceTable | None = None
) -> float | None:
    """The most one call can cost (see :meth:`PriceTable.worst_case_usd`)."""
    return (table or default_table()).worst_case_usd(model, prompt_tokens_estimate, max_tokens)


# ---------------------------------------------------------------------------
# token estimates

_SEGMENT = re.compile(
    r"""
     (?P<ascii>[A-Za-z]+)
    |(?P<cjk>[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff])
    |(?P<word>[^\W\d_]+)
    |(?P<digits>\d+)
    |(?P<newlines>\n+)
    |(?P<indent>[ \t]{2,})
    |(?P<space>\s)
    |(?P<punct>[!-/:-@\[-`{-~]+)
    |(?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


def estimate_tokens(text: str) -> int:
    """About how many tokens ``text`` is for current OpenAI models (see the
    module documentation for the rule and its error)."""
    if not text:
        return 0
    n = 0.0
    for match in _SEGMENT.finditer(text):
        kind = match.lastgroup
        size = match.end() - match.start()
        if kind == "ascii":
            n += 1.0 if size <= 9 else 1.0 + (size - 9) / 5.0
        elif kind == "cjk":
            n += 0.75
        elif kind == "word":
            n += 1.0 + (size - 1) / 5.0
        elif kind == "digits":
            n += math.ceil(size / 3)
        elif kind in ("newlines", "indent"):
            n += 1.0
        elif kind == "punct":
            n += 1.0 if size == 1 else 0.5 * size
        elif kind == "other":
            n += len(match.group().encode("utf-8")) / 3.0
    return max(1, round(n))


def estimate_prompt_tokens(prompt: str, system: str | None = None) -> int:
    """:func:`estimate_tokens` of a chat request, with the messages' framing."""
    total = estimate_tokens(prompt) + _MESSAGE_OVERHEAD + _REPLY_PRIMING
    if system:
        total += estimate_tokens(system) + _MESSAGE_OVERHEAD
    return total


def prompt_tokens_bound(prompt: str, system: str | None = None) -> int:
    """A count the real prompt tokens cannot exceed (its UTF-8 bytes plus the
    framing), for budget reservations that must never be short."""
    total = len(prompt.encode("utf-8")) + _MESSAGE_OVERHEAD_BOUND + _REPLY_PRIMING
    if system:
        total += len(system.encode("utf-8")) + _MESSAGE_OVERHEAD_BOUND
    return total


# ---------------------------------------------------------------------------
# validation

Problem = tuple[str, str, str]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def validate_prices(block: Any, path: str = "prices", *, known: Iterable[str] | None = None) -> list[Problem]:
    """Problems in a prices object (a workflow's ``prices`` or a prices.json), as
    (message, json_path, hint). With ``known`` (the ids already priced), a new
    model must give ``input`` and ``output``."""
    example = '{"models": {"my-model": {"input": 1.0, "output": 4.0}}}'
    if not isinstance(block, Mapping):
        return [(f"prices must be an object, got {type(block).__name__}", path, f"for example {example}")]
    problems: list[Problem] = []
    models = block.get("models")
    stray = [k for k in block if k not in _TOP_FIELDS]
    if stray and models is None and all(isinstance(block[k], Mapping) for k in stray):
        return [(
            "model prices go under 'models'",
            path,
            f'write {{"models": {{"{stray[0]}": {{...}}}}}} (prices per 1M tokens)',
        )]
    for key in stray:
        problems.append((f"unknown field '{key}'", f"{path}.{key}", did_you_mean(key, _TOP_FIELDS) or "the fields are " + ", ".join(_TOP_FIELDS)))
    currency = block.get("currency")
    if currency is not None and currency != "USD":
        problems.append((f"prices are in USD, got currency {currency!r}", f"{path}.currency", "convert them to dollars"))
    as_of = block.get("as_of")
    if as_of is not None and (not isinstance(as_of, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", as_of)):
        problems.append((f"'as_of' must be a date YYYY-MM-DD, got {as_of!r}", f"{path}.as_of", "the day the prices were read"))
    if models is None:
        return problems
    if not isinstance(models, Mapping):
        return [*problems, (f"'models' must be an object, got {type(models).__name__}", f"{path}.models", f"for example {example}")]
    known_ids = set(known or ())
    for model_id, entry in models.items():
        where = f"{path}.models.{model_id}"
        if not isinstance(model_id, str) or not model_id.strip():
            problems.append(("a model id must be a non-empty string", f"{path}.models", f"for example {example}"))
            continue
        if not isinstance(entry, Mapping):
            problems.append((f"the prices of '{model_id}' must be an object, got {type(entry).__name__}", where, 'for example {"input": 1.0, "output": 4.0}'))
            continue
        for key, value in entry.items():
            fpath = f"{where}.{key}"
            if key not in MODEL_FIELDS:
                problems.append((f"unknown field '{key}' for model '{model_id}'", fpath, did_you_mean(str(key), MODEL_FIELDS) or "the fields are " + ", ".join(MODEL_FIELDS)))
            elif key in ("input", "output") and (not _number(value) or value < 0):
                problems.append((f"'{key}' of '{model_id}' must be a number of dollars per 1M tokens, got {value!r}", fpath, f'0 or more, e.g. "{key}": 2.5'))
            elif key == "cached" and value is not None and (not _number(value) or value < 0):
                problems.append((f"'cached' of '{model_id}' must be dollars per 1M tokens or null, got {value!r}", fpath, "null when the model has no cache price"))
            elif key == "max_output" and value is not None and (not _number(value) or value < 1 or int(value) != value):
                problems.append((f"'max_output' of '{model_id}' must be a whole number of tokens, got {value!r}", fpath, "for example 16384"))
            elif key == "aliases" and (not isinstance(value, list) or not all(isinstance(a, str) and a for a in value)):
                problems.append((f"'aliases' of '{model_id}' must be a list of names, got {value!r}", fpath, 'for example ["4o"]'))
            elif key in ("provider", "note") and value is not None and not isinstance(value, str):
                problems.append((f"'{key}' of '{model_id}' must be a string, got {value!r}", fpath, ""))
            elif key == "long_context" and value is not None:
                problems.extend(_long_context_problems(model_id, value, fpath))
        if known is not None and model_id not in known_ids:
            missing = [k for k in ("input", "output") if k not in entry]
            if missing:
                problems.append((
                    f"new model '{model_id}' needs {' and '.join(repr(m) for m in missing)}",
                    where,
                    "prices are dollars per 1M tokens, e.g. {\"input\": 1.0, \"output\": 4.0}",
                ))
    return problems


def _long_context_problems(model_id: str, value: Any, path: str) -> list[Problem]:
    hint = 'for example {"above": 200000, "input": 2.5, "output": 15}'
    if not isinstance(value, Mapping):
        return [(f"'long_context' of '{model_id}' must be an object", path, hint)]
    problems: list[Problem] = []
    for key in value:
        if key not in _LONG_FIELDS:
            problems.append((f"unknown field '{key}' in 'long_context' of '{model_id}'", f"{path}.{key}", "the fields are " + ", ".join(_LONG_FIELDS)))
    for key in ("above", "input", "output"):
        if key not in value:
            problems.append((f"'long_context' of '{model_id}' needs '{key}'", path, hint))
        elif not _number(value[key]) or value[key] < 0:
            problems.append((f"'{key}' in 'long_context' of '{model_id}' must be a number, got {value[key]!r}", f"{path}.{key}", hint))
    cached = value.get("cached")
    if cached is not None and (not _number(cached) or cached < 0):
        problems.append((f"'cached' in 'long_context' of '{model_id}' must be a number or null", f"{path}.cached", hint))
    return problems


__all__ = [
    "MODEL_FIELDS",
    "LongContext",
    "Price",
    "PriceTable",
    "cost_usd",
    "default_table",
    "estimate_prompt_tokens",
    "estimate_tokens",
    "prompt_tokens_bound",
    "user_prices_path",
    "validate_prices",
    "worst_case_usd",
]
