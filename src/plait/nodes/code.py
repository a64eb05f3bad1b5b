"""The ``code`` node: a few lines of inline Python per run (or per batch item).

The code sees each entry of ``inputs`` as a variable and sets ``result``; what
it prints comes back as ``stdout`` and ``stderr``. It runs in this process with
the user's rights, like the ``shell`` node: a convenience, not a sandbox.

Compiling. The source is compiled once per node instance (cached by source, a
few distinct sources at most, since a templated ``code`` may differ per item),
never once per item.

Isolation. Each item gets its own namespace and its own copy of the lists and
dicts in ``inputs``: items of a parallel batch often receive the same upstream
list, and one item sorting it in place must not reorder it under another.

Capturing output per item. ``contextlib.redirect_stdout`` swaps ``sys.stdout``
for the whole process, so in a parallel batch every item's prints would land in
whichever buffer was installed last, and the CLI's own output would vanish into
them. Giving the code its own ``print`` would miss ``sys.stdout.write`` and
every library that prints. So instead, while any code runs, ``sys.stdout`` and
``sys.stderr`` are a small router that looks up the *calling thread*: a thread
running an item's code writes into that item's buffers, every other thread
writes straight through to the stream that was there before — the process's
own output is never redirected. The router is removed again as soon as no code
is running, leaving ``sys.stdout`` exactly as it was found. Limits: output the
code sends around Python's ``sys`` (``os.write(1, ...)``, a subprocess writing
to the inherited descriptor, C extensions) and prints from threads the code
starts itself are not captured.

Timeout. Python cannot kill a thread, and a subprocess per item costs ~6 ms
even with ``python -I -S`` (measured; a thread costs ~0.1 ms), too slow for a
batch of thousands. So each item's code runs in a fresh daemon thread while the
item waits for it at most ``timeout`` seconds (or until the run is cancelled).
When time is up the item fails at once, and ``CodeTimeout`` is raised inside
the code's thread (``PyThreadState_SetAsyncExc``). That stops pure-Python work
(loops, computations) at its next line, but not a call blocked in C
(``time.sleep``, a socket read, a huge regex): such a thread lingers in the
background until the call returns and is then stopped before it runs another
line; a daemon thread never delays the process's exit. Code that catches
``BaseException`` and carries on cannot be stopped at all.
"""

from __future__ import annotations

import builtins
import io
import json
import keyword
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from types import CodeType, TracebackType
from typing import Any

from plait.nodes.base import ItemContext, NodeError, Output, Param, PlaitNode

DEFAULT_TIMEOUT = 30.0

# Distinct sources kept compiled per node instance.
_COMPILE_CACHE_SIZE = 32

# How often a waiting item looks at the run's cancel flag.
_CANCEL_POLL_SECONDS = 0.05


class CodeTimeout(BaseException):
    """Raised inside a code thread whose time is up.

    A ``BaseException``, so the usual ``except Exception`` in user code does not
    swallow it.
    """


@dataclass(frozen=True, slots=True)
class CodeRun:
    """Everything ``exec`` needs, taken from the item's params in ``prep``."""

    source: str
    inputs: dict[str, Any]
    timeout: float | None
    cancelled: threading.Event | None
    label: str  # node id and item index, for thread names


class CodeNode(PlaitNode):
    """Run inline Python: inputs become variables, ``result`` becomes the output."""

    type_name = "code"
    description = "Run inline Python: inputs are variables, set `result`; prints are captured"
    primary_output = "result"

    param_specs = (
        Param(
            "code",
            "string",
            required=True,
            description="Python source; it reads its inputs as variables and sets `result`",
        ),
        Param(
            "inputs",
            "object",
            default={},
            description="Variables for the code: {name: value}; values may be templates",
        ),
        Param(
            "timeout",
            "number",
            default=DEFAULT_TIMEOUT,
            description="Seconds the code may run; null for no limit",
        ),
    )
    output_specs = (
        Output("result", "any", "The value the code assigned to `result` (null if none)"),
        Output("stdout", "string", "What the code printed"),
        Output("stderr", "string", "What the code wrote to sys.stderr, and its traceback"),
    )

    def __init__(self, node_id: str = "", max_retries: int = 1, wait: float = 0.0) -> None:
        super().__init__(node_id=node_id, max_retries=max_retries, wait=wait)
        self._compiled: dict[str, CodeType] = {}
        self._compile_lock = threading.Lock()
        self._filename = f"<plait code: {node_id}>" if node_id else "<plait code>"

    def prep(self, shared: ItemContext) -> CodeRun:
        p = shared.params
        source = p.get("code")
        if not isinstance(source, str):
            raise _invalid(f"'code' must be a string of Python, got {type(source).__name__}")
        if not source.strip():
            raise _invalid("'code' is empty")

        inputs = p.get("inputs")
        if inputs is None:
            inputs = {}
        if not isinstance(inputs, dict):
            raise _invalid(
                f"'inputs' must be an object of name: value, got {type(inputs).__name__}"
            )
        for name in inputs:
            _check_variable_name(name)

        timeout = p.get("timeout", DEFAULT_TIMEOUT)
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
                raise _invalid(
                    f"'timeout' must be a positive number of seconds (or null), got {timeout!r}"
                )
            timeout = float(timeout)

        label = shared.node_id or self.node_id or "code"
        if shared.index is not None:
            label = f"{label}[{shared.index}]"
        return CodeRun(
            source=source,
            inputs=inputs,
            timeout=timeout,
            cancelled=getattr(shared.services, "cancelled", None),
            label=label,
        )

    def exec(self, prep_res: CodeRun) -> dict[str, Any]:
        run = prep_res
        code = self._compile(run.source)
        namespace: dict[str, Any] = {"__builtins__": builtins, "__name__": "__main__"}
        namespace.update({name: _copy_data(value) for name, value in run.inputs.items()})

        state = _CodeThread(code, namespace, name=f"plait-code-{run.label}")
        stopped_because = state.run(run.timeout, run.cancelled)
        stdout, stderr = state.capture.text()

        if stopped_because is not None:
            raise NodeError(
                stopped_because,
                outputs={"result": None, "stdout": stdout, "stderr": stderr},
                retryable=stopped_because.startswith("timed out"),
            )
        error = state.error
        if isinstance(error, SystemExit) and error.code in (None, 0):
            error = None  # sys.exit() / sys.exit(0): the code finished early, on purpose
        if error is not None:
            lines = run.source.splitlines()
            stderr += self._format_traceback(error, lines)
            raise NodeError(
                self._error_message(error, lines),
                outputs={"result": None, "stdout": stdout, "stderr": stderr},
                retryable=False,
            )
        try:
            result = _json_data(namespace.get("result"), "result")
        except TypeError as exc:
            raise NodeError(
                str(exc),
                outputs={"result": None, "stdout": stdout, "stderr": stderr},
                retryable=False,
            )
        return {"result": result, "stdout": stdout, "stderr": stderr}

    # -- compiling and reporting -------------------------------------------

    def _compile(self, source: str) -> CodeType:
        code = self._compiled.get(source)
        if code is not None:
            return code
        try:
            code = compile(source, self._filename, "exec", dont_inherit=True)
        except SyntaxError as exc:
            raise _invalid(_syntax_message(exc, source.splitlines()))
        except ValueError as exc:  # e.g. a NUL character in the source
            raise _invalid(f"'code' cannot be compiled: {exc}")
        with self._compile_lock:
            if len(self._compiled) >= _COMPILE_CACHE_SIZE:
                self._compiled.pop(next(iter(self._compiled)))
            self._compiled[source] = code
        return code

    def _user_frames(self, tb: TracebackType | None) -> list[traceback.FrameSummary]:
        frames = traceback.extract_tb(tb)
        starts = [i for i, f in enumerate(frames) if f.filename == self._filename]
        return frames[starts[0] :] if starts else []

    def _error_message(self, error: BaseException, lines: list[str]) -> str:
        what = _exception_text(error)
        own = [f for f in self._user_frames(error.__traceback__) if f.filename == self._filename]
        if not own or own[-1].lineno is None:
            return what
        lineno = own[-1].lineno
        return f"line {lineno}: {what}\n{_show_line(lines, lineno)}"

    def _format_traceback(self, error: BaseException, lines: list[str]) -> str:
        frames = []
        for f in self._user_frames(error.__traceback__):
            if f.filename == self._filename and f.lineno is not None:
                text = lines[f.lineno - 1] if 0 < f.lineno <= len(lines) else ""
                f = traceback.FrameSummary(
                    f.filename, f.lineno, f.name, lookup_line=False, line=text.strip()
                )
            frames.append(f)
        return (
            "Traceback (most recent call last):\n"
            + "".join(traceback.format_list(frames))
            + "".join(traceback.format_exception_only(type(error), error))
        )


# ---------------------------------------------------------------------------
# running one item's code in its own thread


@dataclass(eq=False)
class _Capture:
    """One item's stdout and stderr.

    Text streams over bytes, so code that writes ``sys.stdout.buffer`` works too.
    """

    stdout: io.TextIOWrapper = field(default_factory=lambda: _new_stream())
    stderr: io.TextIOWrapper = field(default_factory=lambda: _new_stream())

    def text(self) -> tuple[str, str]:
        return _read_stream(self.stdout), _read_stream(self.stderr)


def _new_stream() -> io.TextIOWrapper:
    return io.TextIOWrapper(
        io.BytesIO(), encoding="utf-8", errors="backslashreplace", newline="\n", write_through=True
    )


def _read_stream(stream: io.TextIOWrapper) -> str:
    raw = stream.buffer
    assert isinstance(raw, io.BytesIO)
    return raw.getvalue().decode("utf-8", errors="replace")


class _CodeThread:
    def __init__(self, code: CodeType, namespace: dict[str, Any], *, name: str) -> None:
        self.code = code
        self.namespace = namespace
        self.capture = _Capture()
        self.error: BaseException | None = None
        self.done = threading.Event()
        # `phase` goes starting -> running -> finished, under `lock`, so the
        # waiter interrupts only a thread that is inside the user's code: not
        # one still starting (the exception would escape the thread's own
        # handlers), not one already past it.
        self.lock = threading.Lock()
        self.phase = "starting"
        self.abandoned = False  # the waiter gave up before the code began
        self.interrupted = False
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)

    def run(self, timeout: float | None, cancelled: threading.Event | None) -> str | None:
        """Run the code; return why it was stopped, or None when it finished."""
        _router.enter()
        try:
            self.thread.start()
        except BaseException:
            _router.leave()
            raise
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                reason = f"timed out after {timeout:g}s (the 'timeout' param)"
                break
            wait = remaining
            if cancelled is not None:
                wait = _CANCEL_POLL_SECONDS if wait is None else min(wait, _CANCEL_POLL_SECONDS)
            if self.done.wait(wait):
                return None
            if cancelled is not None and cancelled.is_set():
                reason = "cancelled: the run is stopping"
                break
        with self.lock:
            if self.phase == "starting":
                self.abandoned = True
                return reason
            if self.phase == "running":
                self.interrupted = _raise_in_thread(self.thread.ident, CodeTimeout)
                return reason
        self.done.wait()  # it finished just now; only its cleanup is left
        return None

    def _main(self) -> None:
        _router.local.capture = self.capture
        try:
            try:
                with self.lock:
                    if self.abandoned:
                        return
                    self.phase = "running"
                exec(self.code, self.namespace)
            finally:
                with self.lock:
                    self.phase = "finished"
                    if self.interrupted:
                        # Cancel an interrupt that was sent but not yet delivered,
                        # so it cannot go off in the cleanup below.
                        _raise_in_thread(threading.get_ident(), None)
        except CodeTimeout:
            pass  # the waiter has reported it already
        except BaseException as exc:
            self.error = exc
        finally:
            _router.local.capture = None
            _router.leave()
            self.done.set()


def _raise_in_thread(thread_id: int | None, exc_type: type[BaseException] | None) -> bool:
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


class _StreamRouter:
    """Stands in for ``sys.stdout`` or ``sys.stderr`` while code runs (see the module doc)."""

    def __init__(self, name: str, real: Any, local: threading.local) -> None:
        self._name = name
        self._real = real
        self._local = local

    def _target(self) -> Any:
        capture = getattr(self._local, "capture", None)
        if capture is None:
            return self._real
        return capture.stdout if self._name == "stdout" else capture.stderr

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
    """Installs the stream routers while at least one code thread is alive."""

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
            # Checked every time, not only on the first entry: something else
            # (a test harness, a progress display) may have replaced the stream
            # since; then the router goes on top of that.
            if not isinstance(sys.stdout, _StreamRouter):
                sys.stdout = self._wrap("stdout", sys.stdout)
            if not isinstance(sys.stderr, _StreamRouter):
                sys.stderr = self._wrap("stderr", sys.stderr)

    def leave(self) -> None:
        with self._lock:
            self._active -= 1
            if self._active:
                return
            # Restore only a router that is still the one installed; if someone
            # wrapped it meanwhile, they will restore it, and it passes through.
            out, err = sys.stdout, sys.stderr
            if isinstance(out, _StreamRouter):
                sys.stdout = out._real
            if isinstance(err, _StreamRouter):
                sys.stderr = err._real


_router = _Router()


# ---------------------------------------------------------------------------
# helpers


def _invalid(message: str) -> NodeError:
    return NodeError(message, retryable=False)


def _check_variable_name(name: Any) -> None:
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise _invalid(
            f"'inputs' key {name!r} is not a Python variable name "
            "(letters, digits and _, not starting with a digit, not a keyword)"
        )
    if name.startswith("__"):
        raise _invalid(f"'inputs' key {name!r}: names starting with '__' are reserved")


def _copy_data(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_data(v) for v in value]
    return value


def _json_data(value: Any, path: str) -> Any:
    """``value`` as JSON-shaped data (tuples and sets become lists), else TypeError."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if isinstance(key, str):
                name = key
            elif key is None or isinstance(key, bool | int | float):
                name = json.dumps(key)  # the key JSON would write: 1 -> "1", True -> "true"
            else:
                raise TypeError(
                    f"{path} has a key of type {type(key).__name__} ({key!r}); "
                    "JSON object keys are strings"
                )
            out[name] = _json_data(item, f"{path}[{key!r}]")
        return out
    if isinstance(value, list | tuple):
        return [_json_data(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, set | frozenset):
        try:
            items = sorted(value)
        except TypeError:
            items = list(value)
        return [_json_data(item, f"{path}[{i}]") for i, item in enumerate(items)]
    raise TypeError(
        f"{path} is a {type(value).__name__} ({_preview(repr(value))}), which is not JSON data; "
        "set result to strings, numbers, booleans, None, lists and dicts (e.g. str(value))"
    )


def _exception_text(error: BaseException) -> str:
    text = str(error)
    if isinstance(error, SystemExit):
        text = f"the code called sys.exit({error.code!r})"
        return f"SystemExit: {text}"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _syntax_message(exc: SyntaxError, lines: list[str]) -> str:
    what = f"{type(exc).__name__}: {exc.msg}"
    if not exc.lineno:
        return what
    shown = _show_line(lines, exc.lineno)
    if shown and exc.offset and exc.offset > 0:
        line = lines[exc.lineno - 1]
        stripped = len(line) - len(line.lstrip())
        margin = " " * (4 + len(str(exc.lineno)))
        caret = " " * max(0, exc.offset - 1 - stripped) + "^"
        shown += f"\n{margin} | {caret}"
    return f"line {exc.lineno}: {what}" + (f"\n{shown}" if shown else "")


def _show_line(lines: list[str], lineno: int) -> str:
    if not 0 < lineno <= len(lines):
        return ""
    return f"    {lineno} | {lines[lineno - 1].strip()}"


def _preview(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
