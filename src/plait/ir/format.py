"""The one declaration of the workflow format's fields: names, types, defaults, limits, docs.

Validation (:mod:`plait.ir.validate`), the JSON Schema (:mod:`plait.ir.schema`),
the model's defaults (:mod:`plait.ir.model`), the runtime and the reference
tables in docs/format.md all read these tables, so a default is stated here
and nowhere else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

_REQUIRED = object()  # marks a field without a default


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # boolean | integer | number | string | object | array | any | a name of its own ("items")
    default: Any = None
    doc: str = ""
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    extension: bool = False  # beyond pflow's format
    hint: str = ""  # shown beside a value out of range

    def check(self, value: Any) -> str | None:
        """What is wrong with ``value`` for this field (a phrase), or None. Only plain types."""
        if self.choices:
            if value not in self.choices:
                return f"must be {_one_of(self.choices)}, not {value!r}"
            return None
        t = self.type
        if t == "boolean":
            return None if isinstance(value, bool) else f"must be true or false, not {value!r}"
        if t == "string":
            return None if isinstance(value, str) else f"must be a string, not {value!r}"
        if t == "object":
            return None if isinstance(value, dict) else f"must be an object, not {value!r}"
        if t in ("integer", "number"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                return f"must be {'an integer' if t == 'integer' else 'a number'}, not {value!r}"
            if t == "integer" and not isinstance(value, int):
                return f"must be an integer, not {value!r}"
            if isinstance(value, float) and not math.isfinite(value):
                return f"must be a finite number, not {value!r}"
            if t == "number" and isinstance(value, int) and abs(value) >= 2**1023:
                return "must be a number a float can hold, not an integer that large"
            if self.minimum is not None and value < self.minimum:
                return f"must be at least {_num(self.minimum)}, not {value!r}"
            if self.maximum is not None and value > self.maximum:
                return f"must be at most {_num(self.maximum)}, not {value!r}"
        return None

    def describe_default(self) -> str:
        if self.required:
            return "required"
        if self.default is None:
            return "none"
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        if isinstance(self.default, str):
            return f'"{self.default}"'
        return _num(self.default)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _one_of(choices: tuple[str, ...]) -> str:
    quoted = [f"'{c}'" for c in choices]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f" or {quoted[-1]}"


class Fields:
    """An ordered table of fields, by name."""

    def __init__(self, *fields: Field) -> None:
        self.fields = fields
        self.by_name = {f.name: f for f in fields}

    def __iter__(self) -> Any:
        return iter(self.fields)

    def __getitem__(self, name: str) -> Field:
        return self.by_name[name]

    def default(self, name: str) -> Any:
        return self.by_name[name].default

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.by_name)


ERROR_POLICIES = ("fail_fast", "continue")
BACKOFFS = ("fixed", "exponential")

BATCH = Fields(
    Field("items", "items", required=True,
          doc="a template that resolves to a list, an inline list (its elements may hold templates), "
          "or a source read as the batch goes: `{\"from\": \"issues.jsonl\"}` (docs/streaming.md)"),
    Field("as", "string", "item", doc="the name of the item in templates: `${item}`"),
    Field("parallel", "boolean", False, doc="run items concurrently"),
    Field("max_concurrent", "integer", 10, minimum=1, doc="items in flight at most, when parallel"),
    Field("error_handling", "string", "fail_fast", choices=ERROR_POLICIES,
          doc="`fail_fast` stops at the first failed item; `continue` runs every item"),
    Field("max_retries", "integer", 1, minimum=1,
          doc="total attempts per item, as pflow counts them: 1 = no retry",
          hint="max_retries counts total attempts: 1 means no retry, 3 means up to three tries"),
    Field("retry_wait", "number", 0, minimum=0, doc="seconds between attempts"),
    Field("retry_backoff", "string", "fixed", choices=BACKOFFS, extension=True,
          doc="`exponential` doubles `retry_wait` each retry, with jitter and a cap of 60 s"),
    Field("max_failures", "integer", None, minimum=0, extension=True,
          doc="with `continue`: abort once more items than this have failed"),
    Field("max_failure_rate", "number", None, minimum=0, maximum=1, extension=True,
          doc="with `continue`: abort once more than this share of all items have failed",
          hint="0.1 means: abort once more than 10% of the items have failed"),
    Field("executor", "string", "auto", extension=True,
          doc="where items run: `auto`, `sequential`, `threads`, `async`, or an installed executor"),
    Field("results", "object", None, extension=True,
          doc="write results to a file as items finish: `{\"to\": \"out.jsonl\"}` (docs/streaming.md)"),
    Field("group", "integer", None, minimum=1, extension=True,
          doc="hand each execution a list of up to this many items (`${item}` is the list)"),
    Field("group_bytes", "integer", None, minimum=1, extension=True,
          doc="with `group`: also end a group before its items' JSON passes this many bytes"),
)

RETRY = Fields(
    Field("max", "integer", 1, minimum=1, doc="total attempts: 1 = no retry",
          hint="retry.max counts total attempts: 1 means no retry, 3 means up to three tries"),
    Field("wait", "number", 0, minimum=0, doc="seconds between attempts"),
    Field("backoff", "string", "fixed", choices=BACKOFFS,
          doc="`exponential` doubles the wait each retry, with jitter and a cap of 60 s"),
)

# pflow's top-level fields. `$schema`, `name` and `metadata` are descriptive and
# change nothing. The other three are read (ir/validate.py): the value that is
# plait's own behaviour is accepted, any other is refused as not supported.
COMPAT_TOP = ("mappings", "enable_namespacing", "template_resolution_mode", "$schema", "name", "metadata")
# A node's `parameters` is pflow's other name for `params` (both given: an error).
COMPAT_NODE = ("parameters",)
# Node fields pflow users write (or its markdown lifts out of params) that plait
# does not do yet: each is refused by name, with what to write instead.
UNSUPPORTED_NODE = {
    "loop": "loop with an edge whose action is not 'default' back to an earlier node (it stops at a "
    "visit limit), or run the node once per item with 'batch'",
    "approval": "split the workflow in two at the point of approval and run the second part after review",
    "prompt_cache": "remove it; an llm node keeps its answers across runs with 'cache' (docs/format.md)",
    "prewarm": "remove it; plait opens what a node needs when the node first runs",
}

TOP = Fields(
    Field("ir_version", "string", "0.1.0", doc="semver; majors 0 and 1 are read"),
    Field("description", "string", "", doc="prose"),
    Field("inputs", "object", None, doc="`{name: input}`"),
    Field("outputs", "object", None, doc="`{name: {source, description?, type?}}`"),
    Field("nodes", "array", required=True, doc="at least one node"),
    Field("edges", "array", None, doc="`{from, to, action?}`; without edges nodes run in the listed order"),
    Field("start_node", "string", None, doc="the first node; default: the first listed"),
    Field("executor", "string", "auto", extension=True, doc="the executor for this workflow's batches"),
    Field("max_parallel_nodes", "integer", 4, minimum=1, extension=True,
          doc="nodes of independent branches that run at the same time; 1 runs one node at a time",
          hint="1 runs the nodes one after another; plait run --max-parallel-nodes N overrides it"),
    Field("fail_on_item_errors", "boolean", False, extension=True,
          doc="a run whose batch items failed (status `partial`) exits 1, as with `--strict`"),
    Field("limits", "object", None, extension=True,
          doc="named rate limiters, `{name: {rps, rpm, tpm, concurrency, burst}}`, shared by the whole run "
          "(docs/limits.md)"),
    Field("budget", "object", None, extension=True,
          doc="the most the run may spend: `{\"usd\": 5}`; it stops with status `budget` before going over"),
    Field("prices", "object", None, extension=True,
          doc="price overrides for this workflow's runs, in the shape of `prices.json` (docs/limits.md)"),
)

NODE = Fields(
    Field("id", "string", required=True, doc="unique; `^[A-Za-z_][A-Za-z0-9_-]{0,63}$`"),
    Field("type", "string", required=True, doc="a registered node type (`plait nodes`)"),
    Field("purpose", "string", "", doc="prose"),
    Field("params", "object", None, doc="the node type's params"),
    Field("batch", "object", None, doc="run once per item (see the batch table)"),
    Field("retry", "object", None, extension=True, doc="retries for the node itself: `{max, wait, backoff}`"),
    Field("cache", "any", None, extension=True,
          doc="keep successful results across runs: `true`, `false`, or `{\"ttl\": \"7d\"}` (on for `llm` nodes)"),
    Field("rate", "any", None, extension=True,
          doc="the limiter of this node's calls: a name from `limits`, or `false` for none "
          "(default: one per model or host)"),
    Field("budget", "object", None, extension=True,
          doc="the most this node may spend: `{\"usd\": 1}`, inside the run's budget"),
)

EDGE = Fields(
    Field("from", "string", required=True),
    Field("to", "string", required=True),
    Field("action", "string", "default"),
)

INPUT = Fields(
    Field("type", "string", "any", doc="string, number, integer, boolean, object, array or any"),
    Field("required", "boolean", True),
    Field("default", "any", None),
    Field("description", "string", ""),
    Field("stdin", "boolean", False, doc="this input takes piped standard input (one input at most)"),
)

OUTPUT = Fields(
    Field("source", "any", required=True, doc="a template, e.g. `${node.stdout}`"),
    Field("description", "string", ""),
    Field("type", "string", None),
)

LIMITS = Fields(
    Field("rps", "number", None, minimum=0, doc="requests per second"),
    Field("rpm", "number", None, minimum=0, doc="requests per minute"),
    Field("tpm", "number", None, minimum=0,
          doc="model tokens per minute (prompt estimate + `max_tokens`, reconciled after each call)"),
    Field("concurrency", "integer", None, minimum=1, doc="calls in flight at once (the ceiling of the adaptive window)"),
    Field("burst", "number", 1, minimum=0, doc="seconds of each rate that may be used at once"),
)

TABLES = {"batch": BATCH, "retry": RETRY, "workflow": TOP, "node": NODE, "input": INPUT, "limits": LIMITS}


def markdown_table(fields: Fields) -> str:
    """The reference table of one part of the format, as docs/format.md shows it."""
    lines = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for f in fields:
        kind = " or ".join(f"`{c}`" for c in f.choices) if f.choices else f.type
        doc = f.doc + (" *(extension)*" if f.extension else "")
        lines.append(f"| `{f.name}` | {kind} | {f.describe_default()} | {doc} |")
    return "\n".join(lines)



def reference_tables() -> str:
    """The batch, retry and limiter tables exactly as docs/format.md holds them (`plait schema --markdown`)."""
    out = []
    for title, fields in (("batch", BATCH), ("retry", RETRY), ("limits", LIMITS)):
        out.append(f"<!-- {title} fields: generated by `plait schema --markdown` -->\n{markdown_table(fields)}\n")
    return "\n".join(out)
