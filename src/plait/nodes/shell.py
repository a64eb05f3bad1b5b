"""shell: run a command with bash.

Template values reach the shell as data, never as code. The command's text is
scanned for its quoting context; each ``${...}`` becomes a reference to an
environment variable that holds the value, written to suit where it stands:

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

The shell expands a variable once and never evaluates the result, so
``$(rm -rf ~)`` or ``"; rm -rf ~; "`` in a value is printed, not run.

Arithmetic is the exception: bash evaluates the text of an arithmetic
expression, and ``a[$(cmd)]`` there runs ``cmd`` even when it came from a
variable. So a value inside ``$(( ))``, ``(( ))``, ``$[ ]``, an array index
(``${a[i]}``, ``a[i]=v``, ``(... [i]=v)``), a ``${x:offset:length}``, an
argument of ``let`` or ``declare -i``, or beside ``-eq``/``-lt``/... in ``[[ ]]``
must be an integer, and a value after ``[[ -v`` or ``test -v`` a plain name;
anything else fails the node. A value passed to ``eval`` or ``trap`` would be
run as code, so it fails the node as well. Text that reaches code or arithmetic
indirectly (a variable set from a value, a command's output as in
``$(( $(cat f) ))``, ``bash -c`` or ``ssh`` given a value as their script) is
the command's own business: check it first, e.g. ``[[ $n =~ ^[0-9]+$ ]]``, and
hand ``sh -c`` a value as ``"$1"``. A template in a quoted heredoc
(``<<'EOF'``) would stay literal, so it fails the node too. The scanner does not
follow ``case`` patterns inside ``$( )``: a value after one may be split into
words there (still never run).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from typing import Any

from plait.nodes.base import ItemContext, NodeError, Output, Param, PlaitNode, TemplatedText

_SHELL = shutil.which("bash") or "/bin/sh"
_VAR = "PLAIT_V"

# Like GNU make, a command made only of plain words is run directly, without a
# shell in between: it behaves the same and saves a bash start-up per item
# (~1 ms, which adds up across a batch). Anything that a shell would interpret
# (quotes, $, globs, redirections, ~, newlines...) or whose first word is a
# builtin or keyword goes through bash as usual.
_PLAIN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -_./,:+@%=")
_SHELL_WORDS = frozenset(
    """alias bg bind break builtin caller cd command compgen complete compopt continue coproc
    declare dirs disown do done echo elif else enable esac eval exec exit export false fc fg fi
    for function getopts hash help history if in jobs kill let local logout mapfile popd printf
    pushd pwd read readarray readonly return select set shift shopt source suspend test then time
    times trap true type typeset ulimit umask unalias unset until wait while""".split()
)
_which_cache: dict[tuple[str, str], str | None] = {}


def direct_argv(script: str, env: dict[str, str] | None) -> list[str] | None:
    """The argv to exec without a shell, or None when the shell is needed."""
    if not script or not _PLAIN_CHARS.issuperset(script):
        return None
    words = script.split()
    if not words or words[0] in _SHELL_WORDS or "=" in words[0]:
        return None
    environ = env or os.environ
    if "BASH_ENV" in environ or f"BASH_FUNC_{words[0]}%%" in environ:
        return None  # bash would source a file first, or call an exported function
    path = environ.get("PATH", os.defpath)
    key = (words[0], path)
    if key not in _which_cache:
        _which_cache[key] = shutil.which(words[0], path=path)
    program = _which_cache[key]
    if program is None or not os.path.isabs(program):
        # let bash say "command not found" (exit 127), or search a relative
        # PATH entry from the command's own directory
        return None
    return [program, *words[1:]]


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


# Where a template value stands in the command, as a stack of contexts:
#   u  unquoted (top level)     c  inside $( ) or ( )     b  inside `backticks`
#   d  "double quotes"          s  'single quotes'        a  $'ANSI-C quotes'
#   p  inside ${ } (the shell's own parameter expansion)  k  a # comment
#   t  inside [[ ]]             h  an expanding heredoc   H  a quoted heredoc
#   A  $(( )) or (( ))          P  ( ) inside arithmetic
#   S  a [subscript] or $[ ]    O  ${x:offset:length}
_ARITHMETIC = frozenset("APSO")
_TEST = frozenset("t")
_DOUBLE = frozenset("d")
_COMMAND = frozenset("ucbh")  # contexts that start afresh: arithmetic above them does not count
_WORD_START = frozenset(" \t\n;&|()")
_INTEGER_RE = re.compile(r"\s*[-+]?(?:0[xX][0-9a-fA-F]+|[0-9]+)\s*")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The ${name or ${name[subscript] before a ':' that starts a substring offset.
_PARAM_NAME_RE = re.compile(r"\$\{!?[A-Za-z0-9_@*]+(?:\[[^\]]*\])?$")
# A word that may be an assignment's name, up to a '[' that opens its subscript.
_ASSIGN_NAME_RE = re.compile(r"(?:^|[\s;&|()`])(?:[A-Za-z_][A-Za-z0-9_]*)?$")
# The command a value is an argument of: keywords, assignments and redirections skipped.
_COMMAND_NAME_RE = re.compile(
    r"\s*(?:(?:if|then|else|elif|do|while|until|time|!|\{|command|builtin)\s+)*"
    r"(?:(?:[A-Za-z_][A-Za-z0-9_]*(?:\[[^\]]*\])?\+?=|&?[0-9]*[<>]+[&|]?\s*)\S*\s+)*(\S+)\s"
)
# Builtins that run their argument as code.
_EVALUATING = frozenset(("eval", "trap"))
_DECLARING = frozenset(("declare", "typeset", "local", "export", "readonly"))
_INTEGER_OPTION_RE = re.compile(r"\s-[A-Za-z]*i[A-Za-z]*(?=\s)")
_TEST_V_RE = re.compile(r"\s-v\s+[\"']*$")
# [[ a -eq b ]] evaluates both sides as arithmetic; [[ -v name ]] evaluates a subscript.
_TEST_BEFORE_RE = re.compile(r"-(eq|ne|lt|le|gt|ge|v)\s+[\"']*$")
_TEST_AFTER_RE = re.compile(r"[\"']*\s+-(?:eq|ne|lt|le|gt|ge)\b")
_HEREDOC_RE = re.compile(r"<<(-?)[ \t]*((?:'[^'\n]*'|\"[^\"\n]*\"|\\?[A-Za-z0-9_.-])+)")


def _in(stack: list[str], kinds: frozenset[str]) -> bool:
    """Whether one of ``kinds`` encloses the current position within the same command."""
    for ctx in reversed(stack):
        if ctx in kinds:
            return True
        if ctx in _COMMAND:
            return False
    return False


def _must_be_integer(value: str) -> None:
    # bash evaluates arithmetic recursively and expands $( ) inside an array
    # subscript, so a value like a[$(rm -rf ~)] would run there even as data.
    if not _INTEGER_RE.fullmatch(value):
        shown = value if len(value) <= 60 else value[:57] + "..."
        raise NodeError(
            "a template value used in shell arithmetic ($(( )), (( )), [[ -eq ]], an array "
            f"index or an offset) must be an integer, got {shown!r}",
            retryable=False,
        )


def _check_command(stack: list[str], cmd_at: dict[int, int], before: str, value: str) -> None:
    """Refuse a value that the command it is an argument of would run or evaluate."""
    depth = len(stack) - 1
    while stack[depth] not in _COMMAND:
        depth -= 1
    if stack[depth] == "h":
        return  # a heredoc body is the command's input, not its arguments
    m = _COMMAND_NAME_RE.match(before, cmd_at.get(depth, 0))
    if not m:
        return  # the value is (part of) the command word itself
    command = m.group(1)
    if command in _EVALUATING:
        raise NodeError(
            f"a template value passed to `{command}` would run as shell code; "
            "let the command read it as data instead (for example from a variable)",
            retryable=False,
        )
    if command == "let" or (command in _DECLARING and _INTEGER_OPTION_RE.search(before, m.end(1))):
        _must_be_integer(value)
    elif command in ("test", "[") and _TEST_V_RE.search(before, m.end(1)) and not _NAME_RE.fullmatch(value):
        raise NodeError(
            f"a template value used as a variable name in {command} -v must be a plain name, got {value!r}",
            retryable=False,
        )


def _assigns(skeleton: str, pos: int) -> bool:
    """Whether the '[' at ``pos`` opens a subscript closed by ``]=`` or ``]+=``."""
    depth = 0
    for j in range(pos, len(skeleton)):
        c = skeleton[j]
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
            if not depth:
                return skeleton.startswith(("=", "+="), j + 1)
        elif c == "\n":
            break
    return False


def build_script(parts: tuple[tuple[str, Any], ...]) -> tuple[str, dict[str, str]]:
    """Turn a templated command into (script, variables) with values kept as data."""
    out: list[str] = []
    out_len = 0  # len("".join(out))
    # the command with each value as one NUL, to look ahead past values
    skeleton = "".join("\0" if kind == "value" else value for kind, value in parts)
    src_at = 0  # where the current part starts in skeleton
    cmd_at = {0: 0}  # by stack depth: where the current simple command starts in out
    env: dict[str, str] = {}
    stack = ["u"]
    heredocs: list[tuple[str, bool, bool]] = []  # waiting for the next line: (word, quoted, strip tabs)
    tests: list[tuple[int, str]] = []  # values inside [[ ]]: (position in out, value)
    prev = "\n"  # the character before the current position, for word starts
    last = len(parts) - 1
    for part_no, (kind, value) in enumerate(parts):
        if kind == "value":
            name = f"{_VAR}{len(env)}"
            text = env[name] = _render(value)
            ctx = stack[-1]
            if ctx == "H":
                raise NodeError(
                    "a template inside a quoted heredoc (<<'EOF') would stay literal text; "
                    "use an unquoted delimiter (<<EOF) to pass the value",
                    retryable=False,
                )
            if _in(stack, _TEST):
                tests.append((len(out), text))
            _check_command(stack, cmd_at, "".join(out), text)
            if _in(stack, _ARITHMETIC):
                _must_be_integer(text)
                out.append(f"${{{name}}}")
            elif ctx in ("d", "h"):
                out.append(f"${{{name}}}")
            elif ctx == "s":
                out.append(f"'\"${{{name}}}\"'")
            elif ctx == "a":
                out.append(f"'\"${{{name}}}\"$'")
            else:
                out.append(f'"${{{name}}}"')
            out_len += len(out[-1])
            src_at += 1
            prev = "x"
            continue
        text = value
        out.append(text)
        base = out_len
        i, n = 0, len(text)
        while i < n:
            ch = text[i]
            ctx = stack[-1]
            if ctx == "s":
                if ch == "'":
                    stack.pop()
            elif ctx == "a":
                if ch == "\\":
                    i += 1
                elif ch == "'":
                    stack.pop()
            elif ctx == "k":
                if ch == "\n":
                    stack.pop()
                    continue  # the newline ends the command line too
            elif ch == "\n" and ctx in ("h", "H"):
                line_end = text.find("\n", i + 1)
                line = text[i + 1 : n if line_end < 0 else line_end]
                word, _, strip = heredocs[0]
                if (line.lstrip("\t") if strip else line) == word and (line_end >= 0 or part_no == last):
                    stack.pop()
                    heredocs.pop(0)
                    i = n if line_end < 0 else line_end
                    continue  # the newline after the delimiter may start another heredoc
            elif ctx == "H":
                pass
            elif ch == "\\":
                i += 1
            elif text.startswith("$((", i):
                stack.append("A")
                i += 2
            elif text.startswith("$(", i):
                stack.append("c")
                i += 1
                cmd_at[len(stack) - 1] = base + i + 1
            elif text.startswith("${", i):
                stack.append("p")
                i += 1
            elif text.startswith("$[", i):
                stack.append("S")
                i += 1
            elif ch == "`":
                if ctx == "b":
                    stack.pop()
                else:
                    stack.append("b")
                    cmd_at[len(stack) - 1] = base + i + 1
            elif ctx == "h":
                pass
            elif ctx == "d":
                if ch == '"':
                    stack.pop()
            elif ch == '"':
                stack.append("d")
            elif ch == "'" and (ctx in "ucbt" or (ctx == "p" and not _in(stack[:-1], _DOUBLE))):
                stack.append("s")  # (inside "${x:-'a'}" a single quote is plain text)
            elif ctx in _ARITHMETIC:
                if ch == "(":
                    stack.append("P")
                elif ch == "[":
                    stack.append("S")
                elif ch == ")" and ctx == "A":
                    stack.pop()
                    i += 1  # the second ')' of '))'
                elif (ch == ")" and ctx == "P") or (ch == "]" and ctx == "S"):
                    stack.pop()
                elif ch == "}" and ctx == "O":
                    stack.pop()
                    stack.pop()  # the ${ it belongs to
            elif ctx == "p":
                if ch == "}":
                    stack.pop()
                elif ch == "[":
                    stack.append("S")
                elif (
                    ch == ":"
                    and text[i + 1 : i + 2] not in ("-", "=", "?", "+")
                    and _PARAM_NAME_RE.search("".join(out[:-1]) + text[:i])
                ):
                    stack.append("O")
            elif ctx == "t" and text.startswith("]]", i):
                stack.pop()
                i += 1
            elif ch == "#" and prev in _WORD_START and ctx != "t":
                stack.append("k")
            elif ch == "$" and text.startswith("$'", i):
                stack.append("a")
                i += 1
            elif ch == "(" and text.startswith("((", i) and prev in _WORD_START and ctx != "t":
                stack.append("A")
                i += 1
            elif ch == "(" and ctx != "t":
                stack.append("c")
                cmd_at[len(stack) - 1] = base + i + 1
            elif ch == ")" and ctx == "c":
                stack.pop()
            elif text.startswith("[[", i) and prev in _WORD_START:
                stack.append("t")
                i += 1
            elif (
                ch == "["
                and ctx in "ucb"
                and _ASSIGN_NAME_RE.search("".join(out[:-1]) + text[:i])
                and _assigns(skeleton, src_at + i)
            ):
                stack.append("S")  # a[i]=v or (... [i]=v): the subscript is arithmetic
            elif text.startswith("<<", i) and not text.startswith("<<<", i):
                m = _HEREDOC_RE.match(text, i)
                if m:
                    word = m.group(2)
                    quoted = any(q in word for q in "'\"\\")
                    for q in "'\"\\":
                        word = word.replace(q, "")
                    heredocs.append((word, quoted, m.group(1) == "-"))
                    i = m.end() - 1
            elif ch == "\n" and heredocs and ctx in ("u", "c", "b"):
                stack.append("H" if heredocs[0][1] else "h")
                continue  # look at the first body line from this newline
            if (
                ch in ";&|\n"
                and ctx in "ucb"
                and not (ch in "&|" and (prev in "<>" or text.startswith("&>", i)))  # >&2, &>f, >|f
            ):
                cmd_at[len(stack) - 1] = base + i + 1
            prev = text[i] if i < n else prev
            i += 1
        out_len += n
        src_at += n
    script = "".join(out)
    for k, text in tests:
        before = _TEST_BEFORE_RE.search("".join(out[:k]))
        if before and before.group(1) == "v":
            if not _NAME_RE.fullmatch(text):
                raise NodeError(
                    f"a template value used as a variable name in [[ -v ]] must be a plain name, got {text!r}",
                    retryable=False,
                )
        elif before or _TEST_AFTER_RE.match("".join(out[k + 1 :])):
            _must_be_integer(text)
    return script, env


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
    )
    output_specs = (
        Output("stdout", "string", "standard output"),
        Output("stderr", "string", "standard error"),
        Output("exit_code", "integer", "the exit status"),
    )
    primary_output = "stdout"

    def prep(self, shared: ItemContext) -> Any:
        return shared.params, shared.services.cancelled

    def exec(self, prep_res: Any) -> dict[str, Any]:
        p, cancelled = prep_res
        command = p["command"]
        extra: dict[str, str] = {}
        if isinstance(command, TemplatedText):
            script, extra = build_script(command.parts)
        else:
            script = str(command)
        env = None
        if extra or p["env"]:
            env = dict(os.environ)
            for k, v in (p["env"] or {}).items():
                env[str(k)] = _render(v)
            env.update(extra)
        stdin = p["stdin"]
        data = None if stdin is None else _render(stdin).encode()
        timeout = p["timeout"]
        argv = direct_argv(script, env) if not extra else None
        if argv is not None:
            pwd = _bash_pwd(p["cwd"], env)
            if pwd is not None:
                env = {**(env or os.environ), "PWD": pwd}

        def start(args: list[str]) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                args,
                stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=p["cwd"] or None,
                env=env,
                # its own process group (so a timeout can kill the whole pipeline);
                # unlike start_new_session this keeps the fast vfork path
                process_group=0,
            )

        try:
            try:
                proc = start(argv or [_SHELL, "-c", script])
            except OSError:
                if argv is None:
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
        watch = _watchdog.watch(proc, timeout, cancelled)
        try:
            out, err = proc.communicate(input=data)
        finally:
            _watchdog.forget(watch)
        if watch.reason == "cancelled":
            raise NodeError("command stopped: the run was interrupted", retryable=False)
        if watch.reason == "timeout":
            raise NodeError(f"command timed out after {timeout} s", retryable=True)
        stdout = out.decode("utf-8", errors="replace")
        stderr = err.decode("utf-8", errors="replace")
        # A signal death reads as a shell would report it (128 + signal number).
        code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
        outputs = {"stdout": stdout, "stderr": stderr, "exit_code": code}
        if code != 0 and not p["ignore_errors"]:
            detail = stderr.strip()[-500:] or stdout.strip()[-200:]
            raise NodeError(
                f"command exited with code {code}" + (f": {detail}" if detail else ""),
                outputs=outputs,
            )
        return outputs

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
    sleeps (about 1 ms lost per command); a blocking ``communicate()`` plus
    this watchdog costs nothing per command.
    """

    TICK = 0.05

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: set[_Watch] = set()
        self._thread: threading.Thread | None = None

    def watch(self, proc: subprocess.Popen[bytes], timeout: float | None, cancelled: Any) -> _Watch:
        w = _Watch(proc, None if timeout is None else time.monotonic() + float(timeout), cancelled)
        with self._lock:
            self._watches.add(w)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="plait-shell-watchdog", daemon=True)
                self._thread.start()
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
