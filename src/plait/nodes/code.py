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

Where it runs. The code runs in a worker thread of the run's pool
(:mod:`plait.nodes._code_worker`) while the item waits for it at most
``timeout`` seconds (or until the run is cancelled). A worker serves item
after item, so an item costs two lock hand-offs rather than a new thread.

Straight-line code runs in the item's own thread instead: code that makes no
call, has no loop, imports nothing and defines no function or class (``result
= x * 2``, ``result = {"id": row["id"], "ok": n > 0}``) cannot print, block,
wait or move the working directory, and ends after a bounded number of steps;
with inputs that are plain JSON data no Python code but its own runs. The two
hand-offs to a worker cost more than such code itself (tens of µs against
one), so it skips them. Its result, errors and tracebacks are those of a
worker; a run that takes longer than ``timeout`` (arithmetic on huge values)
still fails as timed out, though only once the operation in progress ends.
``**`` and ``<<`` (whose results can be astronomically large) and any mention
of the exceptions that stop a run (``KeyboardInterrupt``, ``__builtins__``...)
keep code on a worker. The check is made once per compiled source.

Capturing output per item. ``contextlib.redirect_stdout`` swaps ``sys.stdout``
for the whole process, so in a parallel batch every item's prints would land in
whichever buffer was installed last, and the CLI's own output would vanish into
them. Giving the code its own ``print`` would miss ``sys.stdout.write`` and
every library that prints. So while any code runs, ``sys.stdout`` and
``sys.stderr`` are a router that sends a worker's writes to its item's buffers
and every other thread's straight to the stream that was there before; it is
removed again as soon as no code runs, leaving ``sys.stdout`` exactly as it
was found. Limits: output the code sends around Python's ``sys``
(``os.write(1, ...)``, a subprocess writing to the inherited descriptor, C
extensions) and prints from threads the code starts itself are not captured.

Timeout. Python cannot kill a thread, and a subprocess per item costs ~6 ms
even with ``python -I -S`` (measured), too slow for a batch of thousands. When
time is up the item fails at once, and ``CodeTimeout`` is raised inside the
worker (``PyThreadState_SetAsyncExc``), which then leaves the pool. That stops
pure-Python work (loops, computations) at its next line, but not a call
blocked in C (``time.sleep``, a socket read, a huge regex): such a worker
lingers in the background until the call returns and is then stopped before
it runs another line; a daemon thread never delays the process's exit. Code
that catches ``BaseException`` and carries on cannot be stopped at all.

Working directory. The code may ``os.chdir``: on Linux the move is the
worker's own and never the process's (see the worker module); elsewhere the
process's directory is put back when the item ends.

``requires``. The modules the code needs, as in pflow (where the list is
documentation only): here each one is looked up when the workflow is
validated, without importing it, and a missing one refuses the workflow with
the ``pip install`` that fixes it. Nothing is ever installed.
"""

from __future__ import annotations

import builtins
import contextvars
import json
import keyword
import re
import sys
import threading
import time
import traceback
from types import CodeType, TracebackType
from typing import Any, NamedTuple

from plait.nodes import _code_worker as worker
from plait.nodes.base import ItemContext, NodeError, Output, Param, PlaitNode

DEFAULT_TIMEOUT = 30.0

# Distinct sources kept compiled per node instance.
_COMPILE_CACHE_SIZE = 32

# Results that are JSON data as they are.
_PLAIN = (type(None), str, int, float, bool)
_CONTAINERS = (dict, list)

# The per-run resource key of the worker pool.
_POOL_KEY = "code.workers"

CodeTimeout = worker.CodeTimeout


class CodeRun(NamedTuple):
    """Everything ``exec`` needs, taken from the item's params in ``prep``.

    A named tuple: made for every item, and a frozen dataclass costs twice as much.
    """

    source: str
    inputs: dict[str, Any]
    timeout: float | None
    cancelled: threading.Event | None
    services: Any  # the run's services: the worker pool is made on first need


class Program(NamedTuple):
    """A compiled source, and whether it runs in the item's own thread."""

    code: CodeType
    inline: bool


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
            description="Python source; it reads its inputs as variables and sets `result`. "
            "Code without templates is compiled when the workflow is validated: a syntax error stops the run before anything runs",
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
        Param(
            "requires",
            "array",
            default=[],
            description=(
                "Modules the code imports that must be installed, e.g. [\"yaml\", \"numpy\"]; "
                "checked before the run (never installed)"
            ),
        ),
    )
    output_specs = (
        Output("result", "any", "The value the code assigned to `result` (null if none)"),
        Output("stdout", "string", "What the code printed"),
        Output("stderr", "string", "What the code wrote to sys.stderr, and its traceback"),
    )

    def __init__(self, node_id: str = "", max_retries: int = 1, wait: float = 0.0) -> None:
        super().__init__(node_id=node_id, max_retries=max_retries, wait=wait)
        self._compiled: dict[str, Program] = {}
        self._compile_lock = threading.Lock()
        self._filename = f"<plait code: {node_id}>" if node_id else "<plait code>"
        # Input names already checked, as a tuple of the keys in order.
        self._good_names: tuple[str, ...] | None = None

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> list[tuple[str, str | None]]:
        problems: list[tuple[str, str | None]] = []
        source = params.get("code")
        # Code given as it is (no template in it) is compiled now: a syntax error is
        # found before anything runs. The compiled code is not kept; the run compiles it again.
        if isinstance(source, str) and source.strip() and "${" not in source:
            try:
                compile(source, "<code>", "exec", dont_inherit=True)
            except SyntaxError as exc:
                problems.append((_syntax_message(exc, source.splitlines()), "code"))
            except ValueError as exc:
                problems.append((f"'code' cannot be compiled: {exc}", "code"))
        requires = params.get("requires")
        if isinstance(requires, list):  # else absent, or a template resolved at run time
            problems += [(message, "requires") for message in missing_requirements(requires, static=True)]
        return problems

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
        names = tuple(inputs)
        if names != self._good_names:  # the same keys item after item: checked once
            for name in names:
                _check_variable_name(name)
            self._good_names = names

        timeout = p.get("timeout", DEFAULT_TIMEOUT)
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
                raise _invalid(
                    f"'timeout' must be a positive number of seconds (or null), got {timeout!r}"
                )
            timeout = float(timeout)

        requires = p.get("requires")
        if requires:
            if not isinstance(requires, list):
                raise _invalid(f"'requires' must be a list of module names, got {type(requires).__name__}")
            missing = missing_requirements(requires)
            if missing:
                raise _invalid("; ".join(missing))

        services = shared.services
        return CodeRun(source, inputs, timeout, services.cancelled, services)

    def exec(self, prep_res: CodeRun) -> dict[str, Any]:
        run = prep_res
        program = self._compiled.get(run.source) or self._compile(run.source)
        namespace: dict[str, Any] = {"__builtins__": builtins, "__name__": "__main__"}
        inline = program.inline
        for name, value in run.inputs.items():
            kind = type(value)
            if kind in _PLAIN:
                namespace[name] = value
            elif isinstance(value, dict | list):
                namespace[name] = copied = _copy_data(value)
                if inline and not (kind in _CONTAINERS and _plain(copied)):
                    inline = False
            else:  # not JSON data: its methods could run any Python
                namespace[name] = value
                inline = False

        if inline:
            error, stopped_because = self._run_inline(program.code, namespace, run.timeout)
            stdout = stderr = ""
        else:
            pool = run.services.resource(_POOL_KEY, worker.WorkerPool, worker.WorkerPool.close)
            task = worker.Task(program.code, namespace)
            stopped_because = pool.run(task, run.timeout, run.cancelled)
            stdout, stderr = task.text() if task.wrote else ("", "")
            error = task.error

        if stopped_because is not None:
            raise NodeError(
                stopped_because,
                outputs={"result": None, "stdout": stdout, "stderr": stderr},
                retryable=stopped_because.startswith("timed out"),
            )
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
        result = namespace.get("result")
        try:
            if type(result) not in _PLAIN:
                result = _json_data(result, "result")
        except TypeError as exc:
            raise NodeError(
                str(exc),
                outputs={"result": None, "stdout": stdout, "stderr": stderr},
                retryable=False,
            )
        return {"result": result, "stdout": stdout, "stderr": stderr}

    # -- compiling and reporting -------------------------------------------

    def _compile(self, source: str) -> Program:
        program = self._compiled.get(source)
        if program is not None:
            return program
        try:
            code = compile(source, self._filename, "exec", dont_inherit=True)
        except SyntaxError as exc:
            raise _invalid(_syntax_message(exc, source.splitlines()))
        except ValueError as exc:  # e.g. a NUL character in the source
            raise _invalid(f"'code' cannot be compiled: {exc}")
        program = Program(code, straight_line(code))
        with self._compile_lock:
            if len(self._compiled) >= _COMPILE_CACHE_SIZE:
                self._compiled.pop(next(iter(self._compiled)))
            self._compiled[source] = program
        return program

    def _run_inline(
        self, code: CodeType, namespace: dict[str, Any], timeout: float | None
    ) -> tuple[BaseException | None, str | None]:
        """Straight-line code in this thread: (its error, why it was stopped)."""
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            # A fresh context, as on a worker: context variables start from their defaults.
            contextvars.Context().run(exec, code, namespace)
        except (Exception, SystemExit) as exc:  # SystemExit: `raise SystemExit`, judged as sys.exit()
            error = exc
        # Anything else (KeyboardInterrupt, the CLI's Interrupt) came from outside:
        # such code cannot name those exceptions (see straight_line), so it goes on up.
        if timeout is not None and time.perf_counter() - started > timeout:
            return error, worker.timed_out(timeout)
        return error, None

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
# requires


# Modules whose package on PyPI has another name, for the install hint.
_PACKAGE_OF = {
    "attr": "attrs",
    "bs4": "beautifulsoup4",
    "cv2": "opencv-python",
    "dateutil": "python-dateutil",
    "docx": "python-docx",
    "dotenv": "python-dotenv",
    "jwt": "PyJWT",
    "PIL": "Pillow",
    "serial": "pyserial",
    "sklearn": "scikit-learn",
    "yaml": "PyYAML",
}

# A module path (``yaml``, ``google.protobuf``) or a distribution name (``scikit-learn``).
_REQUIREMENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*|[A-Za-z0-9][A-Za-z0-9._-]*")

# Requirements found installed; a missing one is looked up again next time
# (it may have been installed since).
_found: set[str] = set()


def missing_requirements(requires: list[Any], *, static: bool = False) -> list[str]:
    """One message per entry of ``requires`` that is not installed (or not a name).

    ``static``: the raw workflow, where an entry may still be a ``${...}`` template.
    """
    problems = []
    for entry in requires:
        if entry in _found:
            continue
        if not isinstance(entry, str):
            problems.append(
                f"'requires' lists module names as strings, not {type(entry).__name__} ({entry!r})"
            )
            continue
        name = entry.strip()
        if static and "${" in name:
            continue
        if not _REQUIREMENT_RE.fullmatch(name):
            base = re.split(r"[^A-Za-z0-9._-]", name, maxsplit=1)[0]
            problems.append(
                f"'requires' entry {entry!r} is not a module name; write the name only"
                + (f" ({base!r})" if base else "")
                + ", versions are not checked"
            )
            continue
        if _installed(name):
            _found.add(entry)
            continue
        top = name.split(".")[0]
        package = _PACKAGE_OF.get(top, top)
        problems.append(
            f"'requires' needs '{name}', which is not installed for the Python that runs plait "
            f"({sys.executable}); install it with: {sys.executable} -m pip install {package}"
        )
    return problems


def _installed(name: str) -> bool:
    """Whether ``name`` can be imported (or is an installed distribution), importing nothing."""
    if all(part.isidentifier() for part in name.split(".")) and _module_found(name):
        return True
    # Not a module: maybe the distribution's name ("scikit-learn", "PyYAML").
    from importlib import metadata

    try:
        metadata.distribution(name)
    except (metadata.PackageNotFoundError, ValueError):
        return False
    return True


def _module_found(name: str) -> bool:
    import importlib.machinery
    import importlib.util

    if name in sys.modules:
        return True
    parts = name.split(".")
    try:
        # find_spec of a dotted name would import its parents; a top-level
        # name is only looked up.
        spec = importlib.util.find_spec(parts[0])
        for i in range(1, len(parts)):
            if spec is None:
                return False
            parent = ".".join(parts[:i])
            if parent in sys.modules:  # imported already: its own finder knows best
                spec = importlib.util.find_spec(".".join(parts[: i + 1]))
                continue
            locations = spec.submodule_search_locations
            if locations is None:  # a module, not a package: it has no submodules on disk
                return False
            spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: i + 1]), list(locations))
    except (ImportError, ValueError):
        return False
    return spec is not None


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


# Opcodes that keep code on a worker: calls, loops and iteration, imports,
# `with`, nested functions and classes, generators and awaiting.
_WORKER_OPS = frozenset((
    "PRECALL", "CALL_FUNCTION_EX", "IMPORT_NAME", "IMPORT_FROM", "IMPORT_STAR", "BEFORE_WITH",
    "BEFORE_ASYNC_WITH", "LOAD_BUILD_CLASS", "MAKE_FUNCTION", "GET_ITER", "FOR_ITER", "GET_AITER",
    "GET_ANEXT", "GET_AWAITABLE", "GET_YIELD_FROM_ITER", "YIELD_VALUE", "SEND", "SETUP_WITH",
))
# Operators whose result can be far larger than their operands (2 ** 10 ** 9).
_HUGE_OPS = frozenset(("**", "<<", "**=", "<<="))
# Names through which straight-line code could raise what stops a run, rather
# than an error of its own.
_RUN_STOPPERS = frozenset((
    "__builtins__", "BaseException", "BaseExceptionGroup", "GeneratorExit", "KeyboardInterrupt",
))


def straight_line(code: CodeType) -> bool:
    """Whether compiled code may run in the item's own thread (see the module's doc)."""
    import dis  # once per distinct source

    if any(isinstance(const, CodeType) for const in code.co_consts):
        return False
    if not _RUN_STOPPERS.isdisjoint(code.co_names):
        return False
    for ins in dis.get_instructions(code):
        name = ins.opname
        if name in _WORKER_OPS or name.startswith("CALL") or "JUMP_BACKWARD" in name:
            return False
        if name == "BINARY_OP" and ins.argrepr in _HUGE_OPS:
            return False
    return True


def _plain(value: Any) -> bool:
    """Whether a copied input is JSON data all the way down (keys included)."""
    if type(value) is dict:
        return all(type(k) in _PLAIN and _plain(v) for k, v in value.items())
    if type(value) is list:
        return all(_plain(v) for v in value)
    return type(value) in _PLAIN


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
