"""shell: run a command with bash.

Template values reach the shell as data, never as code. The command's template
skeleton is parsed with a real bash grammar (see :mod:`plait.nodes.shell_syntax`)
once per distinct command; each ``${...}`` becomes a reference to a shell
variable that holds the value, written to suit where it stands:

==============  ==========================  ===============================
context         the template becomes        why
==============  ==========================  ===============================
unquoted        ``"${PLAIT_V0}"``           one word, no globbing/splitting
"double"        ``${PLAIT_V0}``             already one word
'single'        ``'"${PLAIT_V0}"'``         close, expand as data, reopen
$'ansi-c'       ``'"${PLAIT_V0}"$'``        the same for ANSI-C quoting
heredoc body    ``${PLAIT_V0}``             expanded, quotes would show
arithmetic      ``${PLAIT_V0}``             only if the value is an integer
==============  ==========================  ===============================

The values travel in an unlinked in-memory file that a short prologue reads
into ``PLAIT_V0``... before the command starts, never in the command text (nor
in the environment or argv: any size works, and nothing leaks to other users or
to child processes), and bash expands a variable once without evaluating the
result. Where bash
*does* evaluate a variable's contents (arithmetic, subscripts, variable names)
the value must be an integer or a name, checked per item; where a value would
be code (``eval``, ``bash -c``, the command name...) the workflow is refused.
"""

from __future__ import annotations

import functools
import mmap
import os
import re
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from plait.nodes import shell_syntax as syntax
from plait.nodes.base import ItemContext, NodeError, Output, Param, PlaitNode, TemplatedText

_SHELL = shutil.which("bash") or "/bin/sh"
DEFAULT_MAX_OUTPUT = 64 * 1024 * 1024
# One argv string may hold at most 128 KiB: a plain-words command with a bigger
# value goes through bash, which gets its values from a file.
_ARG_MAX = 64 * 1024

# Like GNU make, a command made only of plain words is run directly, without a
# shell in between: it behaves the same and saves a bash start-up per item
# (~1 ms, which adds up across a batch). Anything that a shell would interpret
# (quotes, $, globs, redirections, ~, newlines...) or whose first word is a
# builtin or keyword goes through bash as usual.
PLAIN_CHARS = syntax.PLAIN_CHARS
_SHELL_WORDS = frozenset(
    """alias bg bind break builtin caller cd command compgen complete compopt continue coproc
    declare dirs disown do done echo elif else enable esac eval exec exit export false fc fg fi
    for function getopts hash help history if in jobs kill let local logout mapfile popd printf
    pushd pwd read readarray readonly return select set shift shopt source suspend test then time
    times trap true type typeset ulimit umask unalias unset until wait while""".split()
)
_which_cache: dict[tuple[str, str], str | None] = {}


def _program(word: str, env: dict[str, str] | None) -> str | None:
    """The program a plain first word runs without bash, or None when bash is needed."""
    if word in _SHELL_WORDS or "=" in word:
        return None
    environ = env or os.environ
    if "BASH_ENV" in environ or f"BASH_FUNC_{word}%%" in environ:
        return None  # bash would source a file first, or call an exported function
    path = environ.get("PATH", os.defpath)
    key = (word, path)
    if key not in _which_cache:
        _which_cache[key] = shutil.which(word, path=path)
    program = _which_cache[key]
    if program is None or not os.path.isabs(program):
        # let bash say "command not found" (exit 127), or search a relative
        # PATH entry from the command's own directory
        return None
    return program


def direct_argv(script: str, env: dict[str, str] | None) -> list[str] | None:
    """The argv to exec a command without templates without a shell, or None."""
    if not script or not PLAIN_CHARS.issuperset(script):
        return None
    words = script.split()
    if not words:
        return None
    program = _program(words[0], env)
    return None if program is None else [program, *words[1:]]


def _bash_pwd(cwd: str | None, env: dict[str, str] | None) -> str | None:
    """The PWD bash would export to a command run in ``cwd``, if the inherited one is wrong."""
    inherited = (env or os.environ).get("PWD")
    try:
        if inherited and os.path.isabs(inherited) and os.path.samefile(inherited, cwd or "."):
            return None
        return os.path.realpath(cwd or ".")
    except OSError:
        return None  # a missing cwd: starting the command reports it


def _render(value: Any) -> str:
    # Same rendering as any template embedded in text (kept local: nodes depend
    # only on the contract).
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        import json

        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _short(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def check_value(slot: syntax.Slot, text: str) -> None:
    """Refuse a value that bash would evaluate where it stands."""
    kind = slot.check
    if kind is None:
        return
    if kind == syntax.INTEGER:
        if not syntax.INTEGER_RE.fullmatch(text):
            raise NodeError(
                f"a template value used in {slot.where} must be an integer, got {_short(text)}: "
                "bash evaluates the text there, and $(...) inside an array subscript would run",
                retryable=False,
            )
    elif kind == syntax.NAME:
        if not syntax.NAME_RE.fullmatch(text):
            raise NodeError(
                f"a template value used as {slot.where} must be a plain name (letters, digits, _), "
                f"got {_short(text)}",
                retryable=False,
            )
    elif kind == syntax.NAME_PART:
        if not syntax.NAME_PART_RE.fullmatch(text):
            raise NodeError(
                f"a template value inside {slot.where} must be letters, digits or _, got {_short(text)}",
                retryable=False,
            )
    elif kind == syntax.NOT_COMPOUND and text.startswith("(") and text.endswith(")"):
        raise NodeError(
            f"a template value in {slot.where} looks like an array assignment {_short(text)}, which "
            "bash would evaluate; assign it with a plain name=value statement instead",
            retryable=False,
        )


def _literals_of(parts: tuple[tuple[str, Any], ...]) -> tuple[tuple[str, ...], list[Any]]:
    literals = [""]
    values = []
    for kind, value in parts:
        if kind == "value":
            values.append(value)
            literals.append("")
        else:
            literals[-1] += value
    return tuple(literals), values


def _literals_of_raw(command: str) -> tuple[tuple[str, ...], list[str], list[tuple[int, int]]]:
    """Split a command as written (``${...}`` templates, ``$${...}`` escapes) like the compiler does.

    Returns the literals, the template texts, and anchors (skeleton offset, raw
    offset) to turn a skeleton position back into one in the text as written.
    """
    from plait.templates import scan

    literals = [""]
    templates: list[str] = []
    anchors: list[tuple[int, int]] = [(0, 0)]
    skel = 0
    for start, end, piece in scan(command):
        if isinstance(piece, str):
            literals[-1] += piece
            skel += len(piece)
            if len(piece) != end - start:  # an escape: one '$' fewer than written
                anchors.append((skel, end))
        else:
            anchors.append((skel, start))
            templates.append(piece.text)
            literals.append("")
            skel += len(f"${{{syntax.VAR}{len(templates) - 1}}}")
            anchors.append((skel, end))
    return tuple(literals), templates, anchors


def _raw_position(command: str, anchors: list[tuple[int, int]], offset: int) -> tuple[int, int]:
    raw = 0
    for skel_at, raw_at in anchors:
        if skel_at <= offset:
            raw = raw_at + (offset - skel_at)
        else:
            break
    raw = min(raw, len(command))
    line = command.count("\n", 0, raw) + 1
    column = raw - (command.rfind("\n", 0, raw) + 1) + 1
    return line, column


_NOT_FOUND_RE = re.compile(r"^(?:.*?: )?(?:line \d+: )?(.+?): (command not found|No such file or directory)$", re.M)


def _exit_message(code: int, stdout: str, stderr: str) -> str:
    if code == 127:
        found = _NOT_FOUND_RE.findall(stderr)
        if found:
            name, why = found[-1]
            hint = (
                "check the spelling, and that it is installed and on PATH (or give its full path)"
                if why == "command not found"
                else "check the path (relative paths start from the node's cwd)"
            )
            return f"command not found: {name} ({why}; exit code 127); {hint}"
    detail = stderr.strip()[-500:] or stdout.strip()[-200:]
    message = f"command exited with code {code}" + (f": {detail}" if detail else "")
    if "Argument list too long" in stderr:
        message += (
            "; the system limits one argument or environment variable given to a program to "
            "128 KiB: pass big values on stdin or in a file"
        )
    return message


class ShellNode(PlaitNode):
    type_name = "shell"
    description = "Run a bash command; template values are passed as data, never as code."
    param_specs = (
        Param("command", "string", required=True, description="the command (bash)", keep_parts=True),
        Param("stdin", "any", description="text for standard input (objects and lists as JSON)"),
        Param("cwd", "string", description="working directory"),
        Param("env", "object", default={}, description="extra environment variables"),
        Param("timeout", "number", default=None, description="seconds before the command is killed"),
        Param("ignore_errors", "boolean", default=False, description="a non-zero exit is not a failure"),
        Param(
            "strip_newline",
            "boolean",
            default=True,
            description="remove the trailing newlines of stdout (as pflow does); stderr is kept as is",
        ),
        Param(
            "max_output_bytes",
            "integer",
            default=DEFAULT_MAX_OUTPUT,
            description="most bytes kept per stream (stdout, stderr); past it the command is "
            "stopped and the item fails; null for no limit",
        ),
        Param(
            "not_options",
            "array",
            default=[],
            description='templates whose values must not start with "-", e.g. ["${dir}"], so a '
            "value cannot turn into an option of the command",
        ),
    )
    output_specs = (
        Output("stdout", "string", "standard output"),
        Output("stderr", "string", "standard error"),
        Output("exit_code", "integer", "the exit status"),
    )
    primary_output = "stdout"

    @classmethod
    def warm_up(cls, services: Any) -> None:
        # At run start, before a wide batch takes every thread the system allows.
        try:
            _watchdog.start()
        except RuntimeError:
            pass  # each command tries again, and fails alone with a clear message
        _reaper.start()

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> list[tuple[str, str | None]]:
        problems: list[tuple[str, str | None]] = []
        command = params.get("command")
        if isinstance(command, str) and "${" in command:
            literals, templates, anchors = _literals_of_raw(command)
            if templates:
                analysis = syntax.analyse(literals)  # also warms the cache for the run
                starts = syntax.skeleton_of(literals)[1]
                for problem in analysis.problems:
                    line, column = _raw_position(command, anchors, problem.offset)
                    message = problem.message
                    if problem.offset in starts:
                        which = f" ({templates[starts.index(problem.offset)]})"
                    else:
                        which = ""
                        near = command.split("\n")[line - 1][column - 1 : column + 19]
                        message = message.replace(syntax.SYNTAX_ERROR, f"{syntax.SYNTAX_ERROR} at `{near}`", 1)
                    problems.append((f"command line {line}, column {column}{which}: {message}", "command"))
        not_options = params.get("not_options")
        if isinstance(not_options, list):
            from plait.templates import TEMPLATE_RE

            for entry in not_options:
                m = TEMPLATE_RE.fullmatch(entry) if isinstance(entry, str) else None
                if m is None or m.group(1):
                    problems.append(
                        (f'not_options takes templates such as "${{dir}}", not {entry!r}', "not_options")
                    )
                elif not isinstance(command, str) or entry not in command:
                    problems.append((f"not_options names {entry}, which the command does not use", "not_options"))
        limit = params.get("max_output_bytes")
        if isinstance(limit, int) and not isinstance(limit, bool) and limit <= 0:
            problems.append(("max_output_bytes must be a positive number of bytes (or null)", "max_output_bytes"))
        return problems

    def prep(self, shared: ItemContext) -> Any:
        return shared.params, shared.services.cancelled

    def exec(self, prep_res: Any) -> dict[str, Any]:
        p, cancelled = prep_res
        command = p["command"]
        for value in p.get("not_options") or ():
            text = _render(value)
            if text.startswith("-"):
                raise NodeError(
                    f"the value {_short(text)} starts with '-' and would be read as an option "
                    "(the template is listed in not_options)",
                    retryable=False,
                )
        values: list[str] = []
        analysis: syntax.Analysis | None = None
        if isinstance(command, TemplatedText):
            literals, raw_values = _literals_of(command.parts)
            analysis = syntax.analyse(literals)
            if analysis.problems:
                raise NodeError(analysis.problems[0].message, retryable=False)
            for slot, value in zip(analysis.slots, raw_values, strict=True):
                text = _render(value)
                check_value(slot, text)
                if "\0" in text:
                    raise NodeError(
                        "a template value holds a NUL character, which bash cannot keep in a variable; "
                        "pass such data through `stdin` or a file",
                        retryable=False,
                    )
                values.append(text)
            script = analysis.script
        else:
            script = str(command)
        extra_env = p["env"] or {}
        env: dict[str, str] | None = None
        if extra_env:
            env = dict(os.environ)
            for k, v in extra_env.items():
                env[str(k)] = _render(v)

        argv: list[str] | None = None
        if analysis is None:
            argv = direct_argv(script, env)
        elif analysis.words is not None and all(len(v) <= _ARG_MAX for v in values):
            program = _program(analysis.words[0][0], env)  # type: ignore[arg-type]
            if program is not None:
                argv = [program] + [
                    "".join(piece if isinstance(piece, str) else values[piece] for piece in word)
                    for word in analysis.words[1:]
                ]
        if argv is not None:
            pwd = _bash_pwd(p["cwd"], env)
            if pwd is not None:
                env = {**(env or os.environ), "PWD": pwd}
        values_fd = None
        if argv is None and values:
            values_fd = _values_file(values)
            argv = [_SHELL, "-c", _prologue(len(values)) + script, _SHELL, str(values_fd)]
        try:
            return self._run(p, cancelled, argv, script, env, values_fd)
        finally:
            if values_fd is not None:
                os.close(values_fd)

    def _run(
        self,
        p: dict[str, Any],
        cancelled: Any,
        argv: list[str] | None,
        script: str,
        env: dict[str, str] | None,
        values_fd: int | None,
    ) -> dict[str, Any]:
        stdin = p["stdin"]
        data = None if stdin is None else _render(stdin).encode()
        timeout = p["timeout"]
        limit = p.get("max_output_bytes")

        def start(args: list[str]) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                args,
                stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=p["cwd"] or None,
                env=env,
                pass_fds=() if values_fd is None else (values_fd,),
                # its own process group (so a timeout can kill the whole pipeline);
                # unlike start_new_session this keeps the fast vfork path
                process_group=0,
            )

        try:
            _watchdog.start()  # before the command: one that could not be stopped must not start
        except RuntimeError as exc:
            raise NodeError(
                f"cannot start the thread that enforces timeouts and interrupts ({exc}): "
                "lower the batch's max_concurrent, or raise the system's limit on threads"
            ) from None
        # the helper that kills it if plait dies runs before it does: a kill -9 of
        # plait while that helper started would leave the command running
        _reaper.start()
        try:
            try:
                proc = start(argv or [_SHELL, "-c", script])
            except OSError as e:
                if argv is None or e.errno == 7 or values_fd is not None:
                    raise
                # What exec refuses, bash may still run (a script without #!) or
                # report the way a user expects (exit 127 for a file gone since).
                proc = start([_SHELL, "-c", script])
        except FileNotFoundError:
            raise NodeError(f"working directory not found: {p['cwd']}", retryable=False)
        except NotADirectoryError:
            raise NodeError(f"cwd is not a folder: {p['cwd']}", retryable=False)
        except PermissionError:
            raise NodeError(f"permission denied entering the working directory {p['cwd']}", retryable=False)
        except OSError as e:
            if e.errno == 7:  # E2BIG
                raise NodeError(
                    "the command's environment is too big to start it (the `env` param's values, "
                    "or the inherited environment); pass big data through `stdin` or a file",
                    retryable=False,
                )
            raise
        slot = _reaper.add(proc.pid)
        watch = _watchdog.watch(proc, timeout, cancelled)
        try:
            out, err, over = _communicate(proc, data, limit)
        finally:
            _watchdog.forget(watch)
            _reaper.remove(slot)
        if watch.reason == "cancelled":
            raise NodeError("command stopped: the run was interrupted", retryable=False)
        if watch.reason == "timeout":
            raise NodeError(f"command timed out after {timeout} s", retryable=True)
        if over:
            raise NodeError(
                f"the command's {over} passed max_output_bytes ({_size(limit)}), so it was stopped; "
                f"raise max_output_bytes (e.g. {2 * (limit or 0)}) or null for no limit, "
                "or have the command write big output to a file",
                retryable=False,
            )
        stdout = out.decode("utf-8", errors="replace")
        stderr = err.decode("utf-8", errors="replace")
        # A signal death reads as a shell would report it (128 + signal number).
        code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
        outputs = {
            "stdout": stdout.rstrip("\n") if p.get("strip_newline", True) else stdout,
            "stderr": stderr,
            "exit_code": code,
        }
        if code != 0 and not p["ignore_errors"]:
            raise NodeError(_exit_message(code, stdout, stderr), outputs=outputs)
        return outputs


def _size(n: int | None) -> str:
    if n is None:
        return "no limit"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


@functools.cache
def _prologue(n: int) -> str:
    """Script text that reads n NUL-ended values from the file descriptor given as $1."""
    reads = "".join(f"IFS= read -r -d '' {syntax.VAR}{i};" for i in range(n))
    return f'{{ {reads} }} <&"$1";PLAIT_FD=$1;exec {{PLAIT_FD}}<&-;unset PLAIT_FD;set --;'


def _values_file(values: list[str]) -> int:
    """An unlinked in-memory file holding the values, for the script to read first.

    Not the environment: it costs a full copy and encoding per command, holds at
    most 128 KiB a value and 2 MiB in all, and every child of the script would
    inherit it. Not argv either: anyone on the machine can read a command line.
    """
    data = b"".join(v.encode("utf-8", "surrogateescape") + b"\0" for v in values)
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("plait-values", os.MFD_CLOEXEC)
    else:
        with tempfile.TemporaryFile() as f:
            fd = os.dup(f.fileno())
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _communicate(
    proc: subprocess.Popen[bytes], data: bytes | None, limit: int | None
) -> tuple[bytes, bytes, str | None]:
    """Feed stdin, read stdout and stderr; stop (and kill the command) once a stream passes ``limit``."""
    chunks: dict[int, list[bytes]] = {}
    sizes: dict[int, int] = {}
    names: dict[int, str] = {}
    over: str | None = None
    with selectors.PollSelector() as sel:
        assert proc.stdout is not None and proc.stderr is not None
        for stream, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr")):
            fd = stream.fileno()
            chunks[fd], sizes[fd], names[fd] = [], 0, name
            sel.register(fd, selectors.EVENT_READ)
        view = memoryview(data) if data is not None else None
        sent = 0
        in_fd = -1
        if proc.stdin is not None:
            if view is not None and len(view):
                in_fd = proc.stdin.fileno()
                os.set_blocking(in_fd, False)
                sel.register(in_fd, selectors.EVENT_WRITE)
            else:
                proc.stdin.close()
        while sel.get_map():
            for key, _ in sel.select():
                fd = key.fd
                if fd == in_fd and view is not None and proc.stdin is not None:
                    try:
                        sent += os.write(fd, view[sent : sent + 65536])
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:
                        sent = len(view)
                    if sent >= len(view):
                        sel.unregister(fd)
                        proc.stdin.close()
                    continue
                block = os.read(fd, 65536)
                if not block:
                    sel.unregister(fd)
                    continue
                chunks[fd].append(block)
                sizes[fd] += len(block)
                if limit is not None and sizes[fd] > limit:
                    over = names[fd]
                    break
            if over:
                break
        if over:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    if proc.stdin is not None and not proc.stdin.closed:
        try:
            proc.stdin.close()
        except OSError:
            pass
    proc.stdout.close()
    proc.stderr.close()
    proc.wait()
    out_fd, err_fd = list(chunks)
    out = b"".join(chunks[out_fd])
    err = b"".join(chunks[err_fd])
    if over:
        out, err = out[: limit or None], err[: limit or None]
    return out, err, over


class _Reaper:
    """Kills the process groups of running commands when plait dies, even by kill -9.

    A small helper process waits for the end of a pipe that only plait holds; when
    plait goes away it wakes up and kills every process group still listed in a
    memory page it shares with plait. Listing a command is a store into that page,
    so a command costs no system call and no wake-up of the helper.
    (PR_SET_PDEATHSIG would need a preexec hook, which costs the fast vfork path,
    and reaches only the direct child, not a pipeline or a background job.)
    """

    SLOTS = 4096
    CODE = (
        "import mmap,os,signal,struct,sys\n"
        "for s in (signal.SIGINT,signal.SIGTERM,signal.SIGHUP,signal.SIGQUIT,signal.SIGPIPE):\n"
        " signal.signal(s,signal.SIG_IGN)\n"
        "while os.read(0,4096): pass\n"
        "page=mmap.mmap(int(sys.argv[1]),0,mmap.MAP_SHARED,mmap.PROT_READ)\n"
        "for (pg,) in struct.iter_unpack('q',page):\n"
        " if pg>0:\n"
        "  try: os.killpg(pg,signal.SIGKILL)\n"
        "  except OSError: pass\n"
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._page: mmap.mmap | None = None
        self._pid: int | None = None
        self._free: list[int] = []
        self._broken = False

    def _ensure(self) -> mmap.mmap | None:
        if self._page is not None and self._pid == os.getpid():
            return self._page
        if self._broken:
            return None
        try:
            with tempfile.TemporaryFile() as f:
                f.truncate(self.SLOTS * 8)
                page = mmap.mmap(f.fileno(), self.SLOTS * 8)
                helper = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", self.CODE, str(f.fileno())],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    pass_fds=(f.fileno(),),
                    process_group=0,  # away from the terminal's Ctrl-C
                )
        except (OSError, ValueError):
            self._broken = True
            return None
        self._helper = helper  # its stdin stays open as long as plait lives
        self._free = list(range(self.SLOTS))
        self._page = page
        self._pid = os.getpid()
        return page

    def start(self) -> None:
        """Start the helper now if it is not running (add starts it otherwise)."""
        if self._page is not None and self._pid == os.getpid():
            return
        with self._lock:
            self._ensure()

    def add(self, pgid: int) -> int | None:
        with self._lock:
            page = self._ensure()
            if page is None or not self._free:
                return None
            slot = self._free.pop()
        struct.pack_into("q", page, slot * 8, pgid)
        return slot

    def remove(self, slot: int | None) -> None:
        if slot is None or self._page is None:
            return
        struct.pack_into("q", self._page, slot * 8, 0)
        with self._lock:
            self._free.append(slot)


_reaper = _Reaper()


class _Watch:
    __slots__ = ("cancelled", "deadline", "proc", "reason")

    def __init__(self, proc: subprocess.Popen[bytes], deadline: float | None, cancelled: Any) -> None:
        self.proc = proc
        self.deadline = deadline
        self.cancelled = cancelled
        self.reason: str | None = None


class _Watchdog:
    """One thread that kills commands past their timeout or when the run stops.

    Waiting with ``communicate(timeout=...)`` would poll the child's exit with
    sleeps (about 1 ms lost per command); a blocking read plus this watchdog
    costs nothing per command.
    """

    TICK = 0.05

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: set[_Watch] = set()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (once); RuntimeError when the system has no thread left."""
        with self._lock:
            if self._thread is None:
                t = threading.Thread(target=self._loop, name="plait-shell-watchdog", daemon=True)
                t.start()
                self._thread = t  # only once it runs: a failed start is tried again

    def watch(self, proc: subprocess.Popen[bytes], timeout: float | None, cancelled: Any) -> _Watch:
        w = _Watch(proc, None if timeout is None else time.monotonic() + float(timeout), cancelled)
        with self._lock:
            self._watches.add(w)
        return w

    def forget(self, w: _Watch) -> None:
        with self._lock:
            self._watches.discard(w)

    def _loop(self) -> None:
        while True:
            time.sleep(self.TICK)
            now = time.monotonic()
            with self._lock:
                due = [
                    w
                    for w in self._watches
                    if w.reason is None
                    and (w.cancelled.is_set() or (w.deadline is not None and now >= w.deadline))
                ]
            for w in due:
                w.reason = "cancelled" if w.cancelled.is_set() else "timeout"
                # The command runs in its own process group: kill all of it, so
                # a pipeline or a background child does not outlive it.
                try:
                    os.killpg(w.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


_watchdog = _Watchdog()
