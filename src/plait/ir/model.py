"""The plain typed model of a validated workflow."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from plait.ir.format import BATCH, RETRY, TOP

TYPE_ALIASES = {
    "str": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "dict": "object",
    "list": "array",
}
INPUT_TYPES = ("string", "number", "integer", "boolean", "object", "array", "any")


def value_type(value: Any) -> str:
    """The JSON type name of a value, as messages and declarations spell it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def fits(value: Any, type_: str) -> bool:
    """Whether a value matches a declared type (``"integer|string"`` allows either)."""
    actual = value_type(value)
    return any(t in ("any", actual) or (t == "number" and actual == "integer") for t in type_.split("|"))


@dataclass
class InputSpec:
    name: str
    type: str = "any"
    required: bool = True
    default: Any = None
    has_default: bool = False
    description: str = ""
    stdin: bool = False


@dataclass
class OutputSpec:
    name: str
    source: Any
    description: str = ""
    type: str | None = None


@dataclass
class BatchSpec:
    items: Any
    alias: str = BATCH.default("as")
    parallel: bool = BATCH.default("parallel")
    max_concurrent: int = BATCH.default("max_concurrent")
    error_handling: str = BATCH.default("error_handling")
    max_retries: int = BATCH.default("max_retries")  # total attempts
    retry_wait: float = BATCH.default("retry_wait")
    retry_backoff: str = BATCH.default("retry_backoff")
    max_failures: int | None = BATCH.default("max_failures")
    max_failure_rate: float | None = BATCH.default("max_failure_rate")
    executor: str = BATCH.default("executor")
    results: dict[str, Any] | None = None  # BATCH["results"]: no sink unless one is given
    group: int | None = BATCH.default("group")
    group_bytes: int | None = BATCH.default("group_bytes")
    #: the fields the workflow wrote (the rest are defaults)
    given: frozenset[str] = frozenset()


@dataclass
class RetrySpec:
    max: int = RETRY.default("max")  # total attempts
    wait: float = RETRY.default("wait")
    backoff: str = RETRY.default("backoff")
    given: frozenset[str] = frozenset()


@dataclass
class NodeSpec:
    id: str
    type: str
    params: dict[str, Any]
    position: int
    purpose: str = ""
    batch: BatchSpec | None = None
    retry: RetrySpec | None = None
    cache: bool | None = None  # None: the node type's default
    cache_ttl: float | None = None
    #: the limiter of the node's calls: a name from the workflow's limits, False for
    #: none, None for the default one (per model, per host)
    rate: str | bool | None = None
    budget_usd: float | None = None


@dataclass
class Edge:
    source: str
    target: str
    action: str = "default"


@dataclass
class Workflow:
    nodes: list[NodeSpec]
    edges: list[Edge] = field(default_factory=list)
    inputs: dict[str, InputSpec] = field(default_factory=dict)
    outputs: dict[str, OutputSpec] = field(default_factory=dict)
    ir_version: str = "0.1.0"
    description: str = ""
    start_node: str | None = None
    file: str | None = None
    executor: str = TOP.default("executor")
    fail_on_item_errors: bool = TOP.default("fail_on_item_errors")
    max_parallel_nodes: int = TOP.default("max_parallel_nodes")
    limits: dict[str, Any] | None = None  # {name: {rps, rpm, tpm, concurrency, burst}}
    budget_usd: float | None = None
    prices: dict[str, Any] | None = None  # prices.json's shape, over the user's table
    raw: Any = None  # the plain data the workflow was built from

    def node(self, node_id: str) -> NodeSpec:
        for spec in self.nodes:
            if spec.id == node_id:
                return spec
        raise KeyError(node_id)
