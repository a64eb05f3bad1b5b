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
==============  ==========================  ===============================

The shell expands a variable once and never evaluates the result, so
``$(rm -rf ~)`` or ``"; rm -rf ~; "`` in a value is printed, not run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from typing import Any

from plait.nodes.base import ItemContext, NodeError, Output, Param, PlaitNode, TemplatedText

_SHELL = shutil.which("bash") or "/bin/sh"
_VAR = "PLAIT_V"


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


def build_script(parts: tuple[tuple[str, Any], ...]) -> tuple[str, dict[str, str]]:
    """Turn a templated command into (script, variables) with values kept as data."""
    out: list[str] = []
    env: dict[str, str] = {}
    # Quoting contexts as a stack: 'u' unquoted at top level, 'u(' inside $( ),
    # 'u`' inside backticks, 'd' double quotes, 's' single quotes, 'a' $'...'.
    stack = ["u"]
    for kind, value in parts:
        if kind == "value":
            name = f"{_VAR}{len(env)}"
            env[name] = _render(value)
            ctx = stack[-1][0]
            if ctx == "u":
                out.append(f'"${{{name}}}"')
            elif ctx == "d":
                out.append(f"${{{name}}}")
            elif ctx == "s":
                out.append(f"'\"${{{name}}}\"'")
            else:
                out.append(f"'\"${{{name}}}\"$'")
            continue
        text: str = value
        out.append(text)
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
            elif ch == "\\":
                i += 1
            elif ctx == "d":
                if ch == '"':
                    stack.pop()
                elif ch == "$" and text.startswith("$(", i):
                    stack.append("u(")
                    i += 1
                elif ch == "`":
                    stack.append("u`")
            else:  # unquoted, possibly inside $( ) or ``
                if ch == "'":
                    stack.append("s")
                elif ch == '"':
                    stack.append("d")
                elif ch == "$" and text.startswith("$'", i):
                    stack.append("a")
                    i += 1
                elif ch == "$" and text.startswith("$(", i):
                    stack.append("u(")
                    i += 1
                elif ch == "(" and ctx == "u(":
                    stack.append("u(")
                elif ch == ")" and ctx == "u(" and len(stack) > 1:
                    stack.pop()
                elif ch == "`":
                    if ctx == "u`":
                        stack.pop()
                    else:
                        stack.append("u`")
            i += 1
    return "".join(out), env


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
        try:
            proc = subprocess.Popen(
                [_SHELL, "-c", script],
                stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=p["cwd"] or None,
                env=env,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise NodeError(f"working directory not found: {p['cwd']}", retryable=False)
        except NotADirectoryError:
            raise NodeError(f"cwd is not a folder: {p['cwd']}", retryable=False)
        out, err = self._communicate(proc, data, timeout, cancelled)
        stdout = out.decode("utf-8", errors="replace")
        stderr = err.decode("utf-8", errors="replace")
        outputs = {"stdout": stdout, "stderr": stderr, "exit_code": proc.returncode}
        if proc.returncode != 0 and not p["ignore_errors"]:
            detail = stderr.strip()[-500:] or stdout.strip()[-200:]
            raise NodeError(
                f"command exited with code {proc.returncode}" + (f": {detail}" if detail else ""),
                outputs=outputs,
            )
        return outputs

    @staticmethod
    def _communicate(
        proc: subprocess.Popen[bytes], data: bytes | None, timeout: float | None, cancelled: Any
    ) -> tuple[bytes, bytes]:
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        first = True
        while True:
            wait = 0.25
            if deadline is not None:
                wait = min(wait, max(deadline - time.monotonic(), 0.0))
            try:
                out, err = proc.communicate(input=data if first else None, timeout=wait)
                return out, err
            except subprocess.TimeoutExpired:
                first = False
                if cancelled.is_set():
                    _kill(proc)
                    raise NodeError("command stopped: the run was interrupted", retryable=False)
                if deadline is not None and time.monotonic() >= deadline:
                    _kill(proc)
                    raise NodeError(f"command timed out after {timeout} s", retryable=True)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    # The command runs in its own session: kill its whole process group, so a
    # pipeline or a background child does not outlive it.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()
