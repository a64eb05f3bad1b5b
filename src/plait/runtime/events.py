"""Typed events: the runtime emits, subscribers (progress, run records, traces)
listen. Adding a subscriber touches no runtime code.

Every event says *where* it happened with a :class:`Location`: the enclosing
sub-workflow steps (``(node id, item index)`` pairs, outermost first) and the
node it is about. A consumer asks ``loc.top_level`` or ``loc.top`` instead of
parsing ids; ``str(loc)`` is the one spelling for people and the records
(``each[0]/hi``).

Kinds (one class each), with the fields they carry besides ``at`` (epoch seconds):

* :class:`RunStarted` / :class:`RunFinished` — a run (``path`` is empty for the
  top-level run, the enclosing steps for a sub-workflow's)
* :class:`NodeStarted` / :class:`NodeFinished` — one visit of a node
* :class:`BatchStarted` — a batch node's items are known
* :class:`ItemStarted`, :class:`ItemFinished`, :class:`ItemRetried`,
  :class:`ItemFailed`, :class:`ItemInterrupted` — one attempt at one item (a
  node without a batch is one item with ``index`` None)
* :class:`UsageRecorded` — one call to a paid service (tokens, cost)
* :class:`RunWarning` — something the user should know that does not stop the run

Events come from worker threads; the bus serialises delivery with a lock, so a
subscriber sees one event at a time. A subscriber that raises is detached and
reported once (``EventBus.on_subscriber_error``); it never fails or hangs a run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plait.ir.model import Workflow

Step = tuple[str, int | None]  # (node id, item index or None)


@dataclass(frozen=True, slots=True)
class Location:
    """A node, through the sub-workflows that enclose it."""

    node_id: str
    path: tuple[Step, ...] = ()
    #: ``str(loc)``, made once
    key: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        steps = [f"{n}[{i}]" if i is not None else n for n, i in self.path]
        object.__setattr__(self, "key", "/".join([*steps, self.node_id]))

    @property
    def top_level(self) -> bool:
        return not self.path

    @property
    def top(self) -> Step:
        """The top-level node (and item) this happened under."""
        return self.path[0] if self.path else (self.node_id, None)

    def child(self, index: int | None) -> tuple[Step, ...]:
        """The path of a sub-workflow run by item ``index`` of this node."""
        return (*self.path, (self.node_id, index))

    def __str__(self) -> str:
        return self.key


def _now() -> float:
    return time.time()


@dataclass(slots=True)
class Event:
    at: float = field(default_factory=_now, kw_only=True)

    @property
    def kind(self) -> str:
        return _KINDS[type(self)]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if value is None or name in _NOT_SHOWN:
                continue
            out[name] = str(value) if isinstance(value, Location) else value
        return out


_NOT_SHOWN = frozenset(("item", "outputs", "workflow", "record"))


@dataclass(slots=True)
class RunStarted(Event):
    run_id: str
    workflow: Workflow | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    path: tuple[Step, ...] = ()
    fingerprints: dict[str, str] = field(default_factory=dict)  # node id -> fingerprint
    resumed_from: str | None = None  # the run this one resumes
    #: what the batch reading standard input reads: the path of `--items FILE`, "-" for
    #: piped items, None when no batch reads it
    items_from: str | None = None

@dataclass(slots=True)
class RunFinished(Event):
    run_id: str
    status: str
    duration_ms: float
    errors: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)
    path: tuple[Step, ...] = ()


@dataclass(slots=True)
class NodeStarted(Event):
    loc: Location
    type: str
    batch: bool = False


@dataclass(slots=True)
class BatchStarted(Event):
    loc: Location
    total: int | None  # items (not groups)
    parallel: bool = False
    max_concurrent: int = 1
    #: batch.group: each item event's ``item`` is a list of items, and stands for
    #: that many of ``total`` (a malformed record, failing alone, for one)
    grouped: bool = False
    #: a resume's results file already held this many of the items (their rows were
    #: kept, so they do not run or send item events): reused, ``carried_failed`` of
    #: them failed rows kept as they were (--only-unfinished)
    carried: int = 0
    carried_failed: int = 0


def items_in(item: Any) -> int:
    """The items an item event of a grouped batch stands for: its list's length (a
    malformed record, which fails alone, is one)."""
    return len(item) if type(item) is list else 1


@dataclass(slots=True)
class NodeFinished(Event):
    loc: Location
    status: str
    duration_ms: float
    error: str | None = None
    index: int | None = None  # the item that failed the node, if one did
    counts: dict[str, int] | None = None  # a batch's count, success_count, error_count


@dataclass(slots=True)
class ItemStarted(Event):
    loc: Location
    index: int | None
    attempt: int
    slot: int


@dataclass(slots=True)
class ItemFinished(Event):
    """The item succeeded (its final outcome). ``reused`` names the run whose
    recorded result it is (resume), and ``record`` its recorded row there
    (rowid, preview, outputs as stored JSON text); ``cached`` says it came
    from the item cache."""

    loc: Location
    index: int | None
    attempt: int
    slot: int
    duration_ms: float
    item: Any = None
    outputs: dict[str, Any] | None = None
    key: str | None = None
    action: str = "default"
    reused: str | None = None
    cached: bool = False
    record: tuple[int, str | None, str] | None = None


@dataclass(slots=True)
class ItemRetried(Event):
    """This attempt failed; another follows after ``wait_s``."""

    loc: Location
    index: int | None
    attempt: int
    slot: int
    duration_ms: float
    error: str
    wait_s: float = 0.0
    #: a rate-limit answer (429/503): retried apart from max_retries, not a failure
    throttled: bool = False


@dataclass(slots=True)
class ItemFailed(Event):
    """The item failed for good (its final outcome)."""

    loc: Location
    index: int | None
    attempt: int
    slot: int
    duration_ms: float
    error: str
    item: Any = None
    outputs: dict[str, Any] | None = None
    key: str | None = None
    reused: str | None = None


@dataclass(slots=True)
class ItemInterrupted(Event):
    """The attempt had no outcome when the batch stopped: it was running when the
    run was interrupted, or waiting for a retry when the batch stopped
    (``reason`` is the stop's: ``interrupted``, ``fail_fast``, ...)."""

    loc: Location
    index: int | None
    attempt: int
    slot: int
    duration_ms: float = 0.0
    reason: str = "interrupted"


@dataclass(slots=True)
class UsageRecorded(Event):
    loc: Location
    index: int | None
    ledger: str = "llm"
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float | None = None


@dataclass(slots=True)
class RunWarning(Event):
    """Something the user should know that does not stop the run (a resource that ran short)."""

    loc: Location | None
    message: str


_KINDS: dict[type, str] = {
    RunStarted: "run_started",
    RunFinished: "run_finished",
    NodeStarted: "node_started",
    BatchStarted: "batch_started",
    NodeFinished: "node_finished",
    ItemStarted: "item_started",
    ItemFinished: "item_finished",
    ItemRetried: "item_retried",
    ItemFailed: "item_failed",
    ItemInterrupted: "item_interrupted",
    UsageRecorded: "usage",
    RunWarning: "warning",
}

Subscriber = Callable[[Event], None]


class EventBus:
    """Fan events out to subscribers. Cheap when nobody listens.

    A subscriber may ask for some kinds only (``subscribe(fn, kinds=(...))``);
    the runtime asks ``wants(kind)`` before building an event nobody would
    receive. A subscriber that raises is detached at once and reported once
    through ``on_subscriber_error(subscriber, exception)`` (the CLI prints a
    warning); the event still reaches the other subscribers and the run goes on.
    """

    def __init__(self, on_subscriber_error: Callable[[Subscriber, BaseException], None] | None = None) -> None:
        self._subscribers: tuple[tuple[Subscriber, frozenset[type] | None], ...] = ()
        #: event kind -> its subscribers (only kinds somebody listens to)
        self.listening: dict[type, tuple[Subscriber, ...]] = {}
        self._lock = threading.Lock()
        self.on_subscriber_error = on_subscriber_error
        self.failures: list[tuple[Subscriber, BaseException]] = []

    @property
    def active(self) -> bool:
        return bool(self._subscribers)

    def wants(self, kind: type) -> bool:
        return kind in self.listening  # the per-item path reads ``listening`` directly

    def subscribe(self, subscriber: Subscriber, kinds: Iterable[type] | None = None) -> None:
        with self._lock:
            self._subscribers = (*self._subscribers, (subscriber, None if kinds is None else frozenset(kinds)))
            self._index()

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            self._subscribers = tuple(s for s in self._subscribers if s[0] is not subscriber)
            self._index()

    def _index(self) -> None:
        by_kind: dict[type, tuple[Subscriber, ...]] = {}
        for kind in _KINDS:
            subs = tuple(fn for fn, kinds in self._subscribers if kinds is None or kind in kinds)
            if subs:
                by_kind[kind] = subs
        self.listening = by_kind

    def emit(self, event: Event) -> None:
        subscribers = self.listening.get(type(event))
        if not subscribers:
            return
        with self._lock:
            for subscriber in subscribers:
                try:
                    subscriber(event)
                except Exception as exc:  # a broken display or writer must not break the run
                    self._detach(subscriber, exc)

    def _detach(self, subscriber: Subscriber, exc: BaseException) -> None:
        # Called with the lock held: the tables are replaced, the loop over the old tuple goes on.
        if not any(s[0] is subscriber for s in self._subscribers):
            return  # already detached (it raised on an event in flight)
        self._subscribers = tuple(s for s in self._subscribers if s[0] is not subscriber)
        self._index()
        self.failures.append((subscriber, exc))
        report = self.on_subscriber_error
        if report is not None:
            try:
                report(subscriber, exc)
            except Exception:
                pass
