"""The ``dask`` executor: a batch's attempts run on a Dask distributed cluster.

Installed with ``pip install 'plait[dask]'`` and registered through the
``plait.executors`` entry-point group. ``--executor dask`` (or a batch's
``"executor": "dask"``) picks it; the cluster is the scheduler at
``--scheduler`` / ``PLAIT_DASK_SCHEDULER``, else a local cluster started for the
run and closed at its end (docs/dask.md). Dask is imported only here, and only
when a batch runs on it.

What crosses the wire is plain data, never a compiled node (those hold
closures and locks):

* once per batch, a *job spec* (a task of its own, fetched by every worker that
  runs a chunk): the workflow's IR,
  the node's id, the values its templates read, the source of ``--nodes`` files;
  the first chunk on a worker compiles the node there and keeps it (by the
  job's key) for the chunks that follow;
* a chunk task carries ``(index, item, attempt number)`` triples and brings back
  each attempt's :class:`~plait.runtime.items.Outcome` as its state (a tuple of
  plain values; the item stays here) and the events the driver listens to that
  happened inside the item (a sub-workflow's, usage).

Secrets never travel: ``${env.X}`` resolves on the worker, from its environment.

Batch semantics stay in the driver (:mod:`plait.runtime.driver`): order,
retries (Dask's own are off), fail_fast and the failure limits, events,
records. This executor only batches attempts into chunks: a chunk runs its
attempts one after another through the same per-item path as every other
executor (:func:`plait.runtime.items.run_attempt`); its size grows until a chunk
takes about :data:`TARGET_CHUNK_S` and shrinks again when few attempts are left,
so the tail is shared out. At most two chunks per worker thread are in flight
(``max_concurrent``, when smaller than the cluster, bounds them instead), so the
scheduler holds a bounded number of tasks however long the batch is.

Stopping: ``cancel_pending`` drops the attempts not yet sent, raises a flag that
chunks on the workers read before each attempt (a chunk that had started
finishes the attempt it is running and drops the rest), and cancels the chunks
the scheduler has not handed to a worker. An interrupt also sets the worker-side
``cancelled`` flag, so attempts in progress stop as they do in this process.

A worker that dies mid-chunk: Dask runs the chunk again on another worker (up to
``distributed.scheduler.allowed-failures`` times), so each attempt still comes
back exactly once — but the attempts the dead worker had run happen twice:
side effects may repeat. A chunk that keeps killing workers is split into
single attempts, so only the attempt that does it fails.
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import tempfile
import threading
import time
import uuid
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields, replace
from functools import partial
from hashlib import sha256
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plait.errors import UsageError
from plait.nodes.base import ItemContext, Usage
from plait.runtime.events import ItemStarted, Location, UsageRecorded
from plait.runtime.items import Attempt, Outcome

if TYPE_CHECKING:
    from plait.runtime.executors import Job
    from plait.runtime.services import RunServices

log = logging.getLogger(__name__)

ENV_SCHEDULER = "PLAIT_DASK_SCHEDULER"
ENV_WORKERS = "PLAIT_DASK_WORKERS"  # a local cluster's worker processes (default: one per core)
ENV_THREADS = "PLAIT_DASK_THREADS"  # threads per worker of a local cluster (default 1)
ENV_TIMEOUT = "PLAIT_DASK_TIMEOUT"  # seconds to reach the scheduler and see a worker (default 30)

#: how long one chunk should take on a worker
TARGET_CHUNK_S = 1.0
#: the least work worth a chunk, once an item's time is known: a chunk costs a
#: few milliseconds of its own, so the tail is not cut finer than this
MIN_CHUNK_S = 0.05
#: the most attempts in one chunk (a chunk's results are held whole in memory)
MAX_CHUNK = 2048
#: the most attempts the driver keeps in flight for one batch, whatever the cluster's size
MAX_WINDOW = 65536
#: how much larger than the largest chunk timed so far the next one may be
GROWTH = 4
#: chunks in flight per worker thread: one running, one waiting to start
CHUNKS_PER_THREAD = 2
#: threads fetching chunks' results at once
FETCHERS = 4
#: compiled jobs a worker keeps (a driver that died never says it is done)
MAX_WORKER_JOBS = 8


def factory(slots: int, name: str) -> Any:
    """The ``plait.executors`` entry point: ``slots`` is the batch's ``max_concurrent``
    (1 for a sequential batch)."""
    if getattr(_in_chunk, "active", False):
        # A batch inside a sub-workflow that is itself an item on a worker: it runs
        # there, on threads, rather than starting a cluster inside a worker.
        from plait.runtime.executors import make_executor

        return make_executor("auto", parallel=slots > 1, slots=slots, job_name=name)

    try:
        import distributed  # noqa: F401  (the batch runs on it: now is when it is imported)
    except ImportError as exc:
        raise UsageError(
            f"the dask executor needs Dask's distributed package, which cannot be imported ({exc})",
            hint="pip install 'plait[dask]'",
        ) from None
    return DaskExecutor(slots, name=name, address=os.environ.get(ENV_SCHEDULER) or None)


# -- the connection to a cluster, shared by the batches of a run


class _Connection:
    """A client (and the local cluster it started, if any), counted by its users."""

    def __init__(self, key: str, client: Any, cluster: Any = None) -> None:
        self.key = key
        self.client = client
        self.cluster = cluster
        self.users = 0

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()


_connections: dict[str, _Connection] = {}
_connections_lock = threading.Lock()


def _timeout() -> float:
    raw = os.environ.get(ENV_TIMEOUT, "30")
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{ENV_TIMEOUT}={raw!r} is not a number of seconds", hint=f"for example {ENV_TIMEOUT}=30")
    return max(0.1, value)


def _count(variable: str, default: int) -> int:
    raw = os.environ.get(variable)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"{variable}={raw!r} must be a whole number of at least 1", hint=f"for example {variable}=2")
    return value


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _open(address: str | None) -> _Connection:
    from distributed import Client, LocalCluster

    timeout = _timeout()
    if address is None:
        workers, threads = _count(ENV_WORKERS, _cores()), _count(ENV_THREADS, 1)
        # Processes, one thread each by default: code and shell items are CPU-bound
        # or hold the GIL; I/O-bound batches are better off on `threads` or `async`.
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=threads,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",  # its HTTP server runs anyway: on a free port, here only
            silence_logs=logging.ERROR,
        )
        try:
            client = Client(cluster, set_as_default=False, direct_to_workers=True)
        except BaseException:
            cluster.close()
            raise
        return _Connection("local", client, cluster)
    _probe(address, timeout)
    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise UsageError(
            f"cannot reach the Dask scheduler at {address}: {type(exc).__name__}: {exc}",
            hint=f"check --scheduler (or {ENV_SCHEDULER}); start one with `dask scheduler`",
        ) from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        client.close()
        raise UsageError(
            f"the Dask scheduler at {address} has no workers (waited {timeout:g} s: {exc})",
            hint=f"start some with `dask worker {address}`",
        ) from None
    return _Connection(address, client)


def _probe(address: str, timeout: float) -> None:
    """A TCP scheduler that refuses the connection, or a host that does not resolve,
    is said so at once: the client itself retries until its whole timeout (30 s)."""
    import socket

    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(address)
        host, port = parse_host_port(location)
    except (ValueError, TypeError):
        return  # the client says what is wrong with it
    if scheme != "tcp" or not port:
        return
    why = None
    try:
        socket.create_connection((host, port), timeout=min(timeout, 5.0)).close()
    except ConnectionRefusedError:
        why = "nothing listens there (connection refused)"
    except socket.gaierror as exc:
        why = f"the host {host!r} does not resolve ({exc.strerror})"
    except OSError:
        return  # slow, or filtered: left to the client and its timeout
    if why is not None:
        raise UsageError(
            f"cannot reach the Dask scheduler at {address}: {why}",
            hint=f"check --scheduler (or {ENV_SCHEDULER}); start one with `dask scheduler`",
        )


def _acquire(address: str | None) -> _Connection:
    key = address or "local"
    with _connections_lock:
        conn = _connections.get(key)
        if conn is None:
            conn = _connections[key] = _open(address)
        conn.users += 1
        return conn


def _release(conn: _Connection) -> None:
    with _connections_lock:
        conn.users -= 1
        if conn.users > 0:
            return
        if _connections.get(conn.key) is conn:
            del _connections[conn.key]
    try:
        conn.close()
    except Exception as exc:  # the run is over: a cluster that will not close cleanly is only logged
        log.warning("closing the Dask connection %s failed: %s", conn.key, exc)


# -- the driver's side


class _Chunk:
    __slots__ = ("attempts", "cancelled", "future", "isolated", "key")

    def __init__(self, key: str, attempts: list[Attempt], isolated: bool) -> None:
        self.key = key
        self.attempts = attempts
        self.isolated = isolated  # one attempt of a chunk that killed workers, run alone
        self.cancelled = False  # cancelled by us before a worker took it
        self.future: Any = None


class DaskExecutor:
    """Runs a batch's attempts in chunks on a Dask cluster (see the module's text)."""

    def __init__(self, slots: int, name: str = "plait", address: str | None = None) -> None:
        self._requested = max(1, slots)
        self._name = name
        self._address = address
        self._slots: int | None = None
        self._conn: _Connection | None = None
        self._client: Any = None
        self._job: Job | None = None
        self._key = uuid.uuid4().hex
        self._spec: Any = None  # the scattered job spec (a Dask future)
        self._seq = 0
        self._buffer: deque[Attempt] = deque()  # submitted, not yet in a chunk
        self._isolate: deque[Attempt] = deque()  # to be sent alone
        self._hunting = 0  # isolated chunks in flight
        self._chunks: dict[str, _Chunk] = {}  # in flight
        self._done: queue.SimpleQueue[tuple[_Chunk, Any, BaseException | None]] = queue.SimpleQueue()
        self._ready: deque[tuple[Outcome, list[Any] | None]] = deque()
        self._stopped = False
        self._interrupted = False
        self._fetchers: ThreadPoolExecutor | None = None
        self._closed = False
        # chunk sizing
        self._window = 1  # chunks in flight at most
        self._max_chunk = 1
        self._size = 1
        self._seen = 1  # the largest chunk timed so far: growth is at most GROWTH times that
        self._least = 1  # the smallest chunk worth sending (MIN_CHUNK_S of work)
        self._per_item: float | None = None
        # (worker address) -> first slot of its lanes, in the order workers are seen
        self._lanes: dict[str, int] = {}
        self._next_lane = 0

    # -- sizing: the driver reads ``slots`` once, before start()

    @property
    def slots(self) -> int:
        if self._slots is None:
            self._connect()
        assert self._slots is not None
        return self._slots

    @slots.setter
    def slots(self, value: int) -> None:
        self._slots = value

    def _connect(self) -> None:
        conn = self._conn = _acquire(self._address)
        self._client = conn.client
        threads = sum(conn.client.nthreads().values()) or 1
        if self._requested <= 1:  # sequential: one attempt at a time, in order
            self._window, self._max_chunk, self._slots = 1, 1, 1
            return
        # At most ``max_concurrent`` attempts run at once: one per chunk running.
        if self._requested < threads:
            self._window = self._requested
        else:
            self._window = CHUNKS_PER_THREAD * threads
        self._max_chunk = max(1, min(MAX_CHUNK, MAX_WINDOW // (2 * self._window)))
        # The driver keeps 2 x slots attempts in flight: the chunks' worth, and as
        # many again waiting here, so a chunk that lands is replaced at once by a full one.
        from plait.runtime.driver import WINDOW_FACTOR

        self._slots = max(2, 2 * self._window * self._max_chunk // WINDOW_FACTOR)

    def start(self, job: Job) -> None:
        if self._conn is None:
            self._connect()
        assert self._conn is not None
        self._job = job
        services = job.services
        # The run holds the connection until it ends, so its later batches reuse
        # the cluster; a local cluster is closed with the run's resources.
        address = self._address
        services.root.resource(f"plait.executors.dask:{address or 'local'}", partial(_acquire, address), _release)
        try:
            try:
                payload = pickle.dumps(job_spec(job, self._key), pickle.HIGHEST_PROTOCOL)
            except (TypeError, ValueError, AttributeError, pickle.PicklingError) as exc:
                raise UsageError(
                    f"node '{job.node.id}' cannot run on the dask executor: what it reads cannot be "
                    f"sent to the workers ({type(exc).__name__}: {exc})",
                    hint="run it with --executor threads",
                ) from None
            # A task, not scattered data: should every worker holding it die, the
            # scheduler makes it again from this payload instead of failing the chunks.
            self._spec = self._client.submit(
                _unpickle, payload, key=f"plait-spec-{self._key}", pure=False, retries=0
            )
        except BaseException:
            self.close()  # the driver calls close() only once start() has returned
            raise

    # -- the seam

    def submit(self, attempt: Attempt) -> None:
        if self._stopped:
            self._ready.append((Outcome.dropped(attempt), None))
            return
        buffer = self._buffer
        buffer.append(attempt)
        if len(buffer) >= self._size and self._room_for_a_full_chunk():
            self._send([buffer.popleft() for _ in range(self._size)])

    def next_outcome(self, timeout: float | None = None) -> Outcome | None:
        if not self._interrupted and self._job is not None and self._job.services.cancelled.is_set():
            self._interrupt()
        buffer = self._buffer
        if buffer and len(buffer) >= self._size and self._room_for_a_full_chunk():
            self._send([buffer.popleft() for _ in range(self._size)])
        if self._ready:
            return self._deliver()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._fill()
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                chunk, result, error = self._done.get(timeout=left)
            except queue.Empty:
                return None
            self._absorb(chunk, result, error)
            if self._ready:
                return self._deliver()
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def _room_for_a_full_chunk(self) -> bool:
        return len(self._chunks) < self._window and not (self._hunting or self._isolate)

    def cancel_pending(self) -> None:
        if self._job is not None and self._job.services.cancelled.is_set():
            self._interrupt()
        if self._stopped:
            return
        self._stopped = True
        for attempt in (*self._isolate, *self._buffer):
            self._ready.append((Outcome.dropped(attempt), None))
        self._isolate.clear()
        self._buffer.clear()
        if not self._chunks:
            return
        self._signal("stop")
        # Chunks a worker has not taken yet never start: cancel them. A chunk taken
        # after this look reads the stop flag first and drops its attempts itself.
        try:
            processing = {key for keys in self._client.processing().values() for key in keys}
        except Exception:
            return
        # (A finished one is left alone too: its results are real, and on their way.)
        waiting = [
            c for c in self._chunks.values()
            if c.key not in processing and c.future is not None and c.future.status == "pending"
        ]
        for chunk in waiting:
            chunk.cancelled = True
        if waiting:
            try:
                self._client.cancel([c.future for c in waiting])
            except Exception:
                for chunk in waiting:
                    chunk.cancelled = False

    def close(self) -> None:
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is None:
            return
        client = self._client
        try:
            flying = [c.future for c in self._chunks.values() if c.future is not None]
            if flying:  # abandoned after an interrupt
                client.cancel(flying)
            self._chunks.clear()
            if self._spec is not None:
                # Both flags up: chunks still running stop, and every worker's watcher
                # returns from its wait for good (a wait left open on the scheduler
                # is logged as an error when that scheduler closes).
                self._signal("stop")
                self._signal("interrupt")
                client.run(_forget, self._key, on_error="ignore")
                self._spec.release()
                self._spec = None
                from distributed import Event

                for which in ("stop", "interrupt"):
                    Event(_event_name(self._key, which), client=client).clear()
        except Exception as exc:  # the cluster may be gone; the batch's results are in already
            log.warning("cleaning up a Dask batch failed: %s", exc)
        finally:
            if self._fetchers is not None:
                self._fetchers.shutdown(wait=False, cancel_futures=True)
            _release(conn)

    # -- chunks out

    def _send(self, attempts: list[Attempt], isolated: bool = False) -> None:
        self._seq += 1
        key = f"plait-chunk-{self._key}-{self._seq}"
        chunk = _Chunk(key, attempts, isolated)
        self._hunting += isolated
        # Pickled here, so Dask does not walk every item looking for futures in it
        # (that walk cost more than the rest of the driver's work per item).
        payload = pickle.dumps([(a.index, a.item, a.number) for a in attempts], pickle.HIGHEST_PROTOCOL)
        self._chunks[key] = chunk
        future = self._client.submit(_run_chunk, self._spec, payload, key=key, pure=False, retries=0)
        chunk.future = future
        future.add_done_callback(partial(self._landed, chunk))

    def _landed(self, chunk: _Chunk, future: Any) -> None:  # on Dask's one callback thread
        # Fetching a result is a round trip to the cluster; done on that thread they
        # queue up behind one another, so a few threads of our own fetch them at once.
        if self._closed:
            return
        if self._fetchers is None:
            self._fetchers = ThreadPoolExecutor(FETCHERS, thread_name_prefix=f"plait-dask-fetch-{self._name}")
        try:
            self._fetchers.submit(self._fetch, chunk, future)
        except RuntimeError:  # closed: the batch is over
            pass

    def _fetch(self, chunk: _Chunk, future: Any) -> None:
        try:
            result = future.result()
        except BaseException as exc:
            self._done.put((chunk, None, exc))
        else:
            self._done.put((chunk, result, None))
        finally:
            future.release()  # the scheduler forgets the task now, not when this object is collected

    def _fill(self) -> None:
        """Send what is waiting while there is room; when little is left (the end
        of the batch, or a driver waiting for retries), share it out in smaller chunks."""
        if self._isolate or self._hunting:
            # Looking for an attempt that kills workers: one at a time, nothing beside
            # it, so a worker it kills takes no other attempt's chances with it.
            if self._isolate and not self._hunting:
                self._send([self._isolate.popleft()], isolated=True)
            return
        while len(self._chunks) < self._window:
            buffer = self._buffer
            if not buffer:
                return
            share = -(-len(buffer) // self._window)
            n = min(len(buffer), self._size, max(share, self._least))
            self._send([buffer.popleft() for _ in range(n)])

    # -- outcomes back

    def _absorb(self, chunk: _Chunk, result: Any, error: BaseException | None) -> None:
        if self._chunks.pop(chunk.key, None) is None:
            return  # given up already (close after an interrupt)
        chunk.future = None
        self._hunting -= chunk.isolated
        attempts = chunk.attempts
        if error is not None:
            self._chunk_failed(chunk, error)
            return
        address, lane, elapsed, packed = result
        slot = self._slot(address, lane)
        ran = 0
        ready = self._ready
        for attempt, one in zip(attempts, packed, strict=True):
            if one is None:  # the chunk stopped before this attempt
                ready.append((Outcome.dropped(attempt, slot), None))
                continue
            ran += 1
            state, events = one
            out = Outcome.__new__(Outcome)
            out.__setstate__(state)  # every field the worker's per-item path set
            out.item = attempt.item  # not sent back: this process has it
            out.slot = slot
            ready.append((out, events))
        if ran == len(attempts) and not self._stopped:
            self._learn(ran, elapsed)

    def _chunk_failed(self, chunk: _Chunk, error: BaseException) -> None:
        from distributed.scheduler import KilledWorker

        if chunk.cancelled or (self._stopped and _is_cancelled(error)):
            for attempt in chunk.attempts:
                self._ready.append((Outcome.dropped(attempt), None))
            return
        if isinstance(error, KilledWorker) and len(chunk.attempts) > 1 and not self._stopped:
            # Find the attempt that kills workers: each goes again on its own.
            self._isolate.extend(chunk.attempts)
            return
        if isinstance(error, KilledWorker):
            message = (
                f"the Dask worker running this item died, as often as Dask allows ({error}); "
                "side effects of the item may have happened more than once"
            )
            retryable = False
        elif _is_cancelled(error):
            message = "the Dask scheduler dropped this item's task (was the cluster restarted?)"
            retryable = True
        else:
            message = f"dask: {type(error).__name__}: {error}"
            retryable = True
        for attempt in chunk.attempts:
            out = Outcome(attempt.index, attempt.item, attempt.number, 0, time.time())
            out.error = message
            out.retryable = retryable
            self._ready.append((out, None))

    def _learn(self, n: int, elapsed: float) -> None:
        per = elapsed / n
        est = self._per_item
        self._per_item = per if est is None else 0.7 * est + 0.3 * per
        self._seen = max(self._seen, n)
        per = max(self._per_item, 1e-7)
        # Growth is bounded by what was seen: a few quick first items must not
        # put a thousand slow ones into one chunk.
        self._size = max(1, min(int(TARGET_CHUNK_S / per), self._max_chunk, GROWTH * self._seen))
        self._least = max(1, min(self._size, int(MIN_CHUNK_S / per)))

    def _slot(self, address: str, lane: tuple[int, int]) -> int:
        first = self._lanes.get(address)
        if first is None:
            first = self._lanes[address] = self._next_lane
            self._next_lane += lane[1]
        return first + lane[0]

    def _deliver(self) -> Outcome:
        out, events = self._ready.popleft()
        if out.cancelled:
            return out
        job = self._job
        assert job is not None
        services = job.services
        bus = services.bus
        if ItemStarted in bus.listening:
            bus.emit(ItemStarted(services.location(job.node.id), out.index, out.attempt, out.slot, at=out.started))
        if events:
            for event in events:
                _replay(services, job.node.id, out, event)
        return out

    # -- stopping

    def _signal(self, which: str) -> None:
        from distributed import Event

        try:
            Event(_event_name(self._key, which), client=self._client).set()
        except Exception as exc:
            log.warning("could not tell the Dask workers to %s: %s", which, exc)

    def _interrupt(self) -> None:
        self._interrupted = True
        if self._chunks:
            self._signal("stop")
            self._signal("interrupt")


def _is_cancelled(error: BaseException) -> bool:
    import asyncio
    import concurrent.futures

    return isinstance(error, asyncio.CancelledError | concurrent.futures.CancelledError)


def _event_name(key: str, which: str) -> str:
    return f"plait-{which}-{key}"


# -- what a job is, as plain data


def job_spec(job: Job, key: str) -> dict[str, Any]:
    """Everything a worker needs to run the batch's items, as plain data."""
    from plait import __version__

    workflow = job.workflow
    if workflow is None or workflow.workflow.raw is None:
        raise UsageError(
            f"node '{job.node.id}' cannot run on the dask executor: its workflow's IR is not known",
            hint="run it with --executor threads",
        )
    services = job.services
    registry = services.registry
    node_files = list(getattr(registry, "node_files", {}).items())
    spec = workflow.workflow.node(job.node.id)
    roots = template_roots(spec.params)
    base = {root: job.base[root] for root in sorted(roots) if root in job.base}
    kinds = {kind.__name__ for kind in services.bus.listening} | {UsageRecorded.__name__}
    return {
        "key": key,
        "plait": __version__,
        "run_id": services.run_id,
        "node": job.node.id,
        "ir": _without_items(workflow.workflow.raw),
        "file": workflow.file,
        "directory": services.workflow_dir,
        "stack": list(services.stack),
        "base": base,
        "node_files": node_files,
        "events": sorted(kinds),
    }


def _without_items(raw: Any) -> Any:
    """The IR with its batches' literal item lists left out: a worker gets its
    items in chunks, and compiling a million inline items once per worker would
    cost more than running them."""
    nodes = raw.get("nodes") if isinstance(raw, dict) else None
    if not isinstance(nodes, list):
        return raw
    out = []
    for node in nodes:
        batch = node.get("batch") if isinstance(node, dict) else None
        if isinstance(batch, dict) and isinstance(batch.get("items"), list) and batch["items"]:
            node = {**node, "batch": {**batch, "items": []}}
        out.append(node)
    return {**raw, "nodes": out}


def template_roots(value: Any) -> set[str]:
    """The roots (inputs, node ids) the templates in a node's params read: the
    only values of the run a worker is sent. ``env`` is read on the worker."""
    from plait.templates import find_refs

    roots: set[str] = set()
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if "${" in v:
                roots.update(ref.root for ref in find_refs(v))
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list | tuple):
            stack.extend(v)
    roots.discard("env")
    return roots


def _replay(services: RunServices, node_id: str, out: Outcome, event: Any) -> None:
    """An event from inside an item on a worker, told in this process as if it had happened here."""
    prefix = services.path
    if isinstance(event, UsageRecorded):
        usage = Usage(
            model=event.model,
            input_tokens=event.input_tokens,
            output_tokens=event.output_tokens,
            cached_tokens=event.cached_tokens,
            cost_usd=event.cost_usd,
            kind=event.ledger,
        )
        ctx = ItemContext(node_id, out.index, {}, services, out.attempt)
        if not event.loc.path:  # the batch's node itself: exactly what the node did on the worker
            services.record_usage(ctx, usage)
            return
        # Inside a sub-workflow: every level from this batch up counts it.
        level: RunServices | None = services
        while level is not None:
            level.ledger.add(ctx.node_id, usage)
            if level.parent is None:
                break
            level, ctx = level.parent
    if prefix:
        changes: dict[str, Any] = {}
        for f in fields(event):
            value = getattr(event, f.name)
            if isinstance(value, Location):
                changes[f.name] = Location(value.node_id, (*prefix, *value.path))
            elif f.name == "path" and isinstance(value, tuple):
                changes[f.name] = (*prefix, *value)
        event = replace(event, **changes)
    services.bus.emit(event)


# -- the workers' side


class _WorkerJob:
    """One batch, set up on one worker process: the node compiled, its services, its flags."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.key: str = spec["key"]
        self.error: str | None = None
        self.stopping = threading.Event()
        self.forgotten = False
        self.active = 0
        self.lock = threading.Lock()
        self.lanes: dict[str, list[int]] = {}
        self.collecting: dict[int | None, list[Any]] = {}
        self.services: Any = None
        self.node: Any = None
        self.base: dict[str, Any] = spec["base"]
        try:
            self._set_up(spec)
        except Exception as exc:
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            problems = getattr(exc, "problems", None)  # the workflow does not compile here
            if problems:
                message += ": " + "; ".join(f"{p.path}: {p.message}" if p.path else p.message for p in problems)
            self.error = f"the Dask worker could not set node '{spec['node']}' up: {message}"

    def _set_up(self, spec: dict[str, Any]) -> None:
        from plait import __version__
        from plait.nodes.registry import Registry
        from plait.runtime import events
        from plait.runtime.compile import compile_raw
        from plait.runtime.events import EventBus
        from plait.runtime.services import RunServices

        if spec["plait"] != __version__:
            raise RuntimeError(
                f"this worker has plait {__version__} and the run plait {spec['plait']}: "
                "install the same version on the workers"
            )
        registry = Registry()
        for path, source in spec["node_files"]:
            registry.load_path(_node_file(path, source))
        compiled = compile_raw(spec["ir"], registry, file=spec["file"])
        self.node = compiled.nodes[spec["node"]]
        bus = EventBus()
        kinds = [getattr(events, name) for name in spec["events"] if hasattr(events, name)]
        bus.subscribe(self._collect, kinds=kinds)
        services = RunServices(registry, bus, spec["directory"], run_id=spec["run_id"])
        services.stack = tuple(spec["stack"])
        self.services = services
        try:
            self._watch()
        except Exception as exc:  # items still run; only stopping them early is lost
            log.warning("plait: cannot follow the driver's stop flag on this worker: %s", exc)

    def _watch(self) -> None:
        """Follow the driver's stop and interrupt flags from a thread of our own."""
        from distributed import Event, get_client

        client = get_client()
        stop = Event(_event_name(self.key, "stop"), client=client)
        interrupt = Event(_event_name(self.key, "interrupt"), client=client)

        def watch() -> None:
            while not self.forgotten:
                try:
                    if not self.stopping.is_set():
                        if stop.wait(timeout=1.0):
                            self.stopping.set()
                    elif interrupt.wait(timeout=1.0):
                        self.services.cancelled.set()
                        return
                except Exception:  # the scheduler is gone: nothing will come
                    return

        threading.Thread(target=watch, name=f"plait-dask-watch-{self.key[:8]}", daemon=True).start()

    def _collect(self, event: Any) -> None:
        loc = getattr(event, "loc", None)
        path = loc.path if loc is not None else getattr(event, "path", ())
        if path:
            index = path[0][1]
        elif isinstance(event, UsageRecorded):
            index = event.index
        else:  # the batch's own item events: the driver tells those
            return
        bucket = self.collecting.get(index)
        if bucket is not None:
            bucket.append(event)

    def lane(self, address: str, nthreads: int) -> int:
        with self.lock:
            free = self.lanes.get(address)
            if free is None:
                free = self.lanes[address] = list(range(nthreads - 1, -1, -1))
            self.active += 1
            return free.pop() if free else nthreads + self.active

    def give_back(self, address: str, lane: int, nthreads: int) -> None:
        with self.lock:
            if lane < nthreads:
                self.lanes[address].append(lane)
            self.active -= 1
            closing = self.forgotten and self.active == 0
        if closing:
            self.close()

    def close(self) -> None:
        if self.services is not None:
            services, self.services = self.services, None
            services.cancelled.set()
            services.close()

    def run(self, attempts: list[tuple[int | None, Any, int]], lane: int) -> list[Any]:
        if self.error is not None:
            failed = []
            for index, _item, number in attempts:
                out = Outcome(index, None, number, lane, time.time())
                out.error, out.retryable = self.error, False
                failed.append((out.__getstate__(), None))
            return failed
        packed: list[Any] = []
        _in_chunk.active = True
        try:
            self._run(attempts, lane, packed)
        finally:
            _in_chunk.active = False
        return packed

    def _run(self, attempts: list[tuple[int | None, Any, int]], lane: int, packed: list[Any]) -> None:
        from plait.runtime.items import run_attempt

        node, base, services = self.node, self.base, self.services
        stopping, collecting = self.stopping, self.collecting
        for index, item, number in attempts:
            if stopping.is_set():
                packed.append(None)
                continue
            bucket: list[Any] = []
            collecting[index] = bucket
            out = run_attempt(node, base, services, Attempt(index, item, number), lane)
            del collecting[index]
            if out.cancelled:  # interrupted before it began
                packed.append(None)
                continue
            out.item = None  # the driver has it: not sent back
            packed.append((out.__getstate__(), bucket or None))


_in_chunk = threading.local()  # set while this thread runs a chunk's attempts
_worker_jobs: OrderedDict[str, _WorkerJob] = OrderedDict()
_worker_lock = threading.Lock()


def _worker_job(spec: dict[str, Any]) -> _WorkerJob:
    key = spec["key"]
    with _worker_lock:
        job = _worker_jobs.get(key)
        if job is not None:
            return job
        job = _worker_jobs[key] = _WorkerJob(spec)  # other chunks of it wait for this compile
        evicted = []
        while len(_worker_jobs) > MAX_WORKER_JOBS:
            evicted.append(_worker_jobs.popitem(last=False)[1])
    for old in evicted:
        _retire(old)
    return job


def _retire(job: _WorkerJob) -> None:
    with job.lock:
        job.forgotten = True
        idle = job.active == 0
    if idle:
        # Closing resources may block (a pool draining): never on the worker's event loop.
        threading.Thread(target=job.close, name="plait-dask-close", daemon=True).start()


def _forget(key: str) -> None:
    """Run on every worker when the batch is over (``Client.run``)."""
    with _worker_lock:
        job = _worker_jobs.pop(key, None)
    if job is not None:
        job.stopping.set()
        _retire(job)


def _unpickle(payload: bytes) -> Any:
    """The job spec task: on whichever worker runs it; the others fetch its result."""
    return pickle.loads(payload)


def _run_chunk(spec: dict[str, Any], payload: bytes) -> tuple[Any, ...]:
    """One Dask task: a chunk of attempts (pickled ``(index, item, attempt number)``
    triples), run one after another on this worker thread."""
    from distributed import get_worker

    attempts: list[tuple[int | None, Any, int]] = pickle.loads(payload)
    worker = get_worker()
    address, nthreads = worker.address, worker.state.nthreads
    job = _worker_job(spec)
    lane = job.lane(address, nthreads)
    try:
        t0 = time.perf_counter()
        packed = job.run(attempts, lane)
        elapsed = time.perf_counter() - t0
    finally:
        job.give_back(address, lane, nthreads)
    return address, (lane, nthreads), elapsed, packed


def _node_file(path: str, source: str) -> Path:
    """A ``--nodes`` file on this worker: the driver's own path when it holds the
    same source (a shared filesystem), else a copy of the source made here."""
    original = Path(path)
    try:
        if original.is_file() and original.read_text(encoding="utf-8") == source:
            return original
    except OSError:
        pass
    digest = sha256(source.encode("utf-8")).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / f"plait-nodes-{digest}"
    target = folder / original.name
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        partial_file = folder / f".{original.name}.{os.getpid()}.{threading.get_ident()}"
        partial_file.write_text(source, encoding="utf-8")
        partial_file.replace(target)
    return target

