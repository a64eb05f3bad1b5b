"""Where a ``code`` node's Python runs: long-lived worker threads, one run's pool of them.

Why threads that outlive an item. The timeout needs the code off the item's
own thread (so the item can fail at the deadline even while the code is
blocked in C), but starting a thread per item cost ~0.3 ms, most of the node's
price. A worker is started once and then fed item after item; handing an item
over is a byte down a pipe and getting it back a lock release. A worker is interrupted
(``PyThreadState_SetAsyncExc``) only when an item's time is up or the run is
cancelled, and is then retired: it leaves the pool and ends once the
exception lands, and the next item gets a fresh worker. The pool is a per-run
resource, so its idle workers end when the run ends.

What a reused thread could leak from item to item, and what is done about it:
each item's code runs in a fresh ``contextvars.Context`` (``decimal``
settings and other context variables start from their defaults, as in a new
thread); its own namespace and copies of its inputs come from the node.
``threading.local`` values that a library keeps are per worker, not per item.

Capturing output. From a run's first code item to the run's end (and while a
retired worker may still be running code), ``sys.stdout`` and ``sys.stderr``
are a router that looks up the calling thread: a worker that runs an item
writes into that item's buffers (made on its first write, so silent code pays
nothing for them); every other thread writes straight through to the stream
that was there before, so the process's own output is never redirected. When
the run ends the router is removed and ``sys.stdout`` is exactly what it was.

Working directory. On Linux each worker unshares its filesystem attributes
from the process (``unshare(CLONE_FS)``, no privilege needed): an
``os.chdir`` (or ``os.umask``) in the code moves only that worker and the
threads and subprocesses it starts, never the process, its other threads or
other items; after each item the worker goes back to where it started. Where
that is not available (other systems, a seccomp policy that forbids it) the
worker restores the process's directory after each item, and parallel items
may see one another's ``chdir`` while they run.
"""

from __future__ import annotations

import contextvars
import io
import os
import sys
import threading
import time
from types import CodeType
from typing import Any

# How often a waiting item looks at the run's cancel flag.
CANCEL_POLL_SECONDS = 0.05

# Task phases; changed only under the worker's lock.
_WAITING, _RUNNING, _FINISHED = 0, 1, 2


class CodeTimeout(BaseException):
    """Raised inside a worker whose item's time is up.

    A ``BaseException``, so the usual ``except Exception`` in user code does not
    swallow it.
    """


# ---------------------------------------------------------------------------
# one item


class Task:
    """One item's code and namespace, its output, and what became of it.

    Its stdout and stderr are text streams over bytes (so code that writes
    ``sys.stdout.buffer`` works too), each made on the first write.
    """

    __slots__ = ("_err", "_out", "abandoned", "code", "error", "interrupted", "namespace", "phase")

    def __init__(self, code: CodeType, namespace: dict[str, Any]) -> None:
        self.code = code
        self.namespace = namespace
        self.error: BaseException | None = None
        self.phase = _WAITING
        self.abandoned = False  # the item stopped waiting: the worker retires afterwards
        self.interrupted = False  # CodeTimeout was sent into the worker
        self._out: io.TextIOWrapper | None = None
        self._err: io.TextIOWrapper | None = None

    def stream(self, name: str) -> io.TextIOWrapper:
        if name == "stdout":
            if self._out is None:
                self._out = _new_stream()
            return self._out
        if self._err is None:
            self._err = _new_stream()
        return self._err

    @property
    def wrote(self) -> bool:
        return self._out is not None or self._err is not None

    def text(self) -> tuple[str, str]:
        """What the code wrote to stdout and stderr."""
        return _read_stream(self._out), _read_stream(self._err)


def _new_stream() -> io.TextIOWrapper:
    return io.TextIOWrapper(
        io.BytesIO(), encoding="utf-8", errors="backslashreplace", newline="\n", write_through=True
    )


def _read_stream(stream: io.TextIOWrapper | None) -> str:
    if stream is None:
        return ""
    raw = stream.buffer
    assert isinstance(raw, io.BytesIO)
    return raw.getvalue().decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------
# routing sys.stdout and sys.stderr


class _StreamRouter:
    """Stands in for ``sys.stdout`` or ``sys.stderr`` while code runs."""

    def __init__(self, name: str, real: Any, local: threading.local) -> None:
        self._name = name
        self._real = real
        self._local = local

    def _target(self) -> Any:
        task = getattr(self._local, "task", None)
        if task is None:
            return self._real
        return task.stream(self._name)

    def write(self, text: str) -> int:
        target = self._target()
        if target is None:  # no console at all (pythonw)
            return len(text)
        result: int = target.write(text)
        return result

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        target = self._target()
        if target is not None:
            target.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target(), name)


class _Router:
    """Installs the stream routers while at least one item's code is running."""

    def __init__(self) -> None:
        self.local = threading.local()
        self._lock = threading.Lock()
        self._active = 0
        # Every router ever installed stays referenced here, and is reused for
        # the same underlying stream. CPython 3.11's print() holds only a
        # borrowed reference to sys.stdout while it writes, so a stream object
        # freed by swapping sys.stdout under a printing thread crashes the
        # process (seen here: a segfault). Kept alive, a swapped-out router
        # stays valid and simply passes the rest of that print through.
        self._routers: dict[tuple[str, int], _StreamRouter] = {}

    def _wrap(self, name: str, stream: Any) -> _StreamRouter:
        key = (name, id(stream))
        router = self._routers.get(key)
        if router is None:
            router = self._routers[key] = _StreamRouter(name, stream, self.local)
        return router

    def enter(self) -> None:
        with self._lock:
            self._active += 1
            self._install()

    def _install(self) -> None:
        # Checked every time, not only on the first entry: something else
        # (a test harness, a progress display) may have replaced the stream
        # since; then the router goes on top of that.
        if type(sys.stdout) is not _StreamRouter:
            sys.stdout = self._wrap("stdout", sys.stdout)
        if type(sys.stderr) is not _StreamRouter:
            sys.stderr = self._wrap("stderr", sys.stderr)

    def check(self) -> None:
        """Put the routers back on top if something replaced them since ``enter``."""
        if type(sys.stdout) is not _StreamRouter or type(sys.stderr) is not _StreamRouter:
            with self._lock:
                if self._active:
                    self._install()

    def leave(self) -> None:
        with self._lock:
            self._active -= 1
            if self._active:
                return
            # Restore only a router that is still the one installed; if someone
            # wrapped it meanwhile, they will restore it, and it passes through.
            out, err = sys.stdout, sys.stderr
            if type(out) is _StreamRouter:
                sys.stdout = out._real
            if type(err) is _StreamRouter:
                sys.stderr = err._real


router = _Router()


# ---------------------------------------------------------------------------
# the workers


class _Worker:
    def __init__(self, number: int, own_cwd: bool) -> None:
        self._own_cwd = own_cwd
        # Handing a task over: one byte down a pipe. os.write lets go of the
        # GIL before it wakes the worker, which can then take the GIL at once;
        # a lock released under the GIL wakes a thread that must go back to
        # sleep until the GIL is free (measured: ~10 us a hand-off, not ~20).
        # `done` is held while the task is not finished.
        try:
            self._wake_r, self._wake_w = os.pipe()
            self._go: threading.Lock | None = None
        except OSError:  # out of descriptors: a lock still works
            self._wake_r = self._wake_w = -1
            self._go = threading.Lock()
            self._go.acquire()
        self.done = threading.Lock()
        self.done.acquire()
        self.lock = threading.Lock()  # guards the task's phase against the interrupt
        self.task: Task | None = None
        self.thread = threading.Thread(target=self._main, name=f"plait-code-{number}", daemon=True)
        self.thread.start()

    def wake(self) -> None:
        if self._go is None:
            os.write(self._wake_w, b"\0")
        else:
            self._go.release()

    def _main(self) -> None:
        home = _Home(self._own_cwd)
        local = router.local
        go, wake_r, done = self._go, self._wake_r, self.done
        owns_pipe = go is None
        try:
            while True:
                if go is None:
                    try:
                        os.read(wake_r, 1)
                    except OSError:
                        # An item's code closed the pipe (os.closerange?): the
                        # numbers may name someone else's files by now, so they
                        # are left alone, and this worker ends.
                        owns_pipe = False
                        return
                else:
                    go.acquire()
                task = self.task
                if task is None:  # the pool is closing
                    return
                self.task = None
                own = home.fd is not None
                if not own:
                    home.note()
                local.task = task
                try:
                    self._run(task)
                finally:
                    local.task = None
                    if not own:  # the process's directory: back before the item returns
                        home.restore()
                    done.release()
                if own:
                    # The worker's own directory, seen by no one else: put back
                    # while the item's thread already goes on (an fchdir lets
                    # go of the GIL), before the next task.
                    home.restore()
                if task.abandoned:
                    router.leave()  # held for this retired worker by the item that gave up on it
                    return
        finally:
            home.close()
            if owns_pipe:
                os.close(wake_r)
                os.close(self._wake_w)

    def _run(self, task: Task) -> None:
        lock = self.lock
        try:
            try:
                with lock:
                    if task.abandoned:
                        return
                    task.phase = _RUNNING
                # A fresh context per item: context variables (decimal's
                # settings among them) start from their defaults, as in a new thread.
                contextvars.Context().run(exec, task.code, task.namespace)
            finally:
                with lock:
                    task.phase = _FINISHED
                    if task.interrupted:
                        # Cancel an interrupt that was sent but not yet delivered,
                        # so it cannot go off in the worker's own code below.
                        raise_in_thread(threading.get_ident(), None)
        except CodeTimeout:
            if not task.interrupted:  # the code raised it itself
                task.error = CodeTimeout("CodeTimeout raised by the code")
        except BaseException as exc:
            task.error = exc


class WorkerPool:
    """The idle code workers of one run; ``run`` hands an item to one and waits."""

    def __init__(self, own_cwd: bool = True) -> None:
        """``own_cwd=False``: workers share the process's directory even where they
        could have their own (the way it is on other systems)."""
        self._own_cwd = own_cwd
        self._idle: list[_Worker] = []
        self._count = 0
        self._closed = False
        self._lock = threading.Lock()
        # The router stays for the whole run rather than going in and out with
        # every item: installing and removing it cost ~3 us an item, and while
        # it is in place every thread but a busy worker writes straight
        # through to the stream it replaced.
        router.enter()

    def _take(self) -> _Worker:
        try:
            return self._idle.pop()  # atomic under the GIL; LIFO keeps few workers warm
        except IndexError:
            with self._lock:
                self._count += 1
                number = self._count
            return _Worker(number, self._own_cwd)

    def _give(self, worker: _Worker) -> None:
        if self._closed:
            worker.wake()  # with no task: it ends
        else:
            self._idle.append(worker)

    def run(self, task: Task, timeout: float | None, cancelled: threading.Event | None) -> str | None:
        """Run the task's code; return why it was stopped, or None when it finished."""
        worker = self._take()
        worker.task = task
        router.check()
        worker.wake()
        try:
            reason = _wait(worker.done, timeout, cancelled)
        except BaseException:  # a second Ctrl-C in the waiting thread
            self._stop(worker, task)
            raise
        if reason is None:
            self._give(worker)
            return None
        if self._stop(worker, task):
            return reason
        return None  # it finished as time ran out

    def _stop(self, worker: _Worker, task: Task) -> bool:
        """Give up on the task: interrupt its code and retire the worker. False when
        the code had finished after all (the worker is then back in the pool)."""
        with worker.lock:
            if task.phase != _FINISHED:
                task.abandoned = True  # the worker retires; the next item gets a new one
                router.enter()  # its code may still print until it stops; it leaves then
                if task.phase == _RUNNING:
                    task.interrupted = raise_in_thread(worker.thread.ident, CodeTimeout)
                return True
        worker.done.acquire()  # only its cleanup was left
        self._give(worker)
        return False

    def close(self) -> None:
        """End the idle workers (at the end of the run). Retired ones end on their own."""
        if self._closed:
            return
        self._closed = True
        router.leave()
        while True:
            try:
                worker = self._idle.pop()
            except IndexError:
                return
            worker.wake()


def _wait(done: threading.Lock, timeout: float | None, cancelled: threading.Event | None) -> str | None:
    """Wait for a worker's ``done``: None when it came, else why the wait ended."""
    if timeout is None and cancelled is None:
        done.acquire()
        return None
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        wait = CANCEL_POLL_SECONDS if cancelled is not None else -1.0
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return timed_out(timeout)
            wait = remaining if wait < 0 else min(wait, remaining)
        if done.acquire(True, wait):
            return None
        if cancelled is not None and cancelled.is_set():
            return "cancelled: the run is stopping"


def timed_out(timeout: float | None) -> str:
    """Why an item whose code took too long failed."""
    return f"timed out after {timeout:g}s (the 'timeout' param)"


def raise_in_thread(thread_id: int | None, exc_type: type[BaseException] | None) -> bool:
    """Schedule ``exc_type`` in a thread (None clears it). False where unsupported."""
    if thread_id is None:
        return False
    import ctypes  # only when a timeout fires

    try:
        set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
    except AttributeError:  # not CPython
        return False
    # No argtypes on purpose: None must reach C as NULL ("clear"), not as Py_None.
    arg = None if exc_type is None else ctypes.py_object(exc_type)
    return bool(set_async_exc(ctypes.c_ulong(thread_id), arg))


# ---------------------------------------------------------------------------
# the working directory


_CLONE_FS = 0x200  # <sched.h>


def _unshare_cwd() -> bool:
    """Give the calling thread its own working directory (Linux). False where that fails."""
    if not sys.platform.startswith("linux"):
        return False
    unshare = getattr(os, "unshare", None)  # Python 3.12+
    if unshare is not None:
        try:
            unshare(getattr(os, "CLONE_FS", _CLONE_FS))
            return True
        except OSError:
            return False
    global _libc
    try:
        if _libc is None:
            import ctypes  # only once a code node runs

            _libc = ctypes.CDLL(None, use_errno=True)
        return bool(_libc.unshare(_CLONE_FS) == 0)
    except (OSError, AttributeError):
        return False


_libc: Any = None


class _Home:
    """Where a worker goes back to after each item."""

    __slots__ = ("_path", "fd")

    def __init__(self, own_cwd: bool) -> None:
        """Made in the worker's own thread, when it starts."""
        self.fd: int | None = None
        self._path: str | None = None
        if own_cwd and _unshare_cwd():
            # The worker's own directory, a copy of the process's: one fchdir
            # after each item puts it back, with no comparison needed.
            flags = getattr(os, "O_PATH", os.O_RDONLY) | getattr(os, "O_DIRECTORY", 0)
            try:
                self.fd = os.open(".", flags)
            except OSError:  # the directory is gone or unreadable: compare by path below
                pass

    def restore(self) -> None:
        # Never raises: the item's waiter is released right after this.
        try:
            if self.fd is not None:
                os.fchdir(self.fd)
            elif self._path is not None and os.getcwd() != self._path:
                # Shared with the process: put back only a directory the code moved.
                os.chdir(self._path)
        except OSError:
            pass

    def note(self) -> None:
        """Before an item, in the fallback: remember the process's directory."""
        try:
            self._path = os.getcwd()
        except OSError:
            self._path = None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
