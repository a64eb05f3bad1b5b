"""Shared test helpers: run the real CLI (in this process, or in a fresh one), write workflow files.

Two tiers:

* ``plait`` (the fixture) and :func:`run_inprocess` call the CLI's ``main()``
  in this process, with its own argv, working directory, environment, stdin,
  stdout and stderr: the same code path as the installed command, without a
  Python start-up per call. Most behaviour tests use it.
* :func:`run_cli` starts ``python -m plait`` in a subprocess, for what only a
  real process shows: signals, kill -9, start-up cost, the two README commands.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


class Result:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code = code
        self.stdout = stdout
        self.stderr = stderr

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)

    def __repr__(self) -> str:
        return f"<exit {self.code}\nstdout: {self.stdout}\nstderr: {self.stderr}>"


def plait_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PLAIT_LLM_MODEL", None)
    if extra:
        env.update(extra)
    return env


def _default_signals() -> None:
    # A child started from a shell that ignores SIGINT (CI in the background)
    # would inherit the ignore; the tests want plait's own handling.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def popen_cli(*args: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen[str]:
    """``python -m plait ARGS`` as a live process (for signal and kill tests)."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("stdin", subprocess.DEVNULL)
    kw.setdefault("text", True)
    return subprocess.Popen(
        [sys.executable, "-m", "plait", *args],
        env=plait_env(env),
        preexec_fn=_default_signals,
        **kw,
    )


def run_cli(
    *args: str,
    cwd: Path | str | None = None,
    input: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> Result:
    """``python -m plait ARGS`` in a fresh process."""
    proc = subprocess.run(
        [sys.executable, "-m", "plait", *args],
        cwd=cwd,
        input=input,
        capture_output=True,
        text=True,
        env=plait_env(env),
        timeout=timeout,
        stdin=None if input is not None else subprocess.DEVNULL,
        preexec_fn=_default_signals,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


class _Stream(io.TextIOWrapper):
    """A captured stdout/stderr: text over bytes (``.buffer`` works), never a terminal."""

    def __init__(self, data: bytes = b"") -> None:
        super().__init__(io.BytesIO(data), encoding="utf-8", errors="backslashreplace", write_through=True)

    def isatty(self) -> bool:
        return False

    def text(self) -> str:
        self.flush()
        raw = self.buffer
        assert isinstance(raw, io.BytesIO)
        return raw.getvalue().decode("utf-8", errors="replace")


@contextlib.contextmanager
def _environment(env: dict[str, str] | None) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.pop("PLAIT_LLM_MODEL", None)
    if env:
        os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_inprocess(
    *args: str,
    cwd: Path | str | None = None,
    input: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,  # accepted for run_cli's signature; pytest-timeout bounds the test
) -> Result:
    """The CLI's ``main()`` in this process, as if ``plait ARGS`` had been typed."""
    from plait.cli import main

    out, err = _Stream(), _Stream()
    stdin = _Stream((input or "").encode("utf-8"))
    saved = (sys.argv, sys.stdin, sys.stdout, sys.stderr, os.getcwd())
    code = 0
    with _environment(env):
        try:
            if cwd is not None:
                os.chdir(cwd)
            sys.argv = ["plait", *args]
            sys.stdin, sys.stdout, sys.stderr = stdin, out, err
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.argv, sys.stdin, sys.stdout, sys.stderr = saved[:4]
            os.chdir(saved[4])
    return Result(code, out.text(), err.text())


@pytest.fixture(autouse=True)
def _records_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run records go to the test's own folder, never to the user's."""
    monkeypatch.setenv("PLAIT_HOME", str(tmp_path.parent / f"{tmp_path.name}-plait-home"))


@pytest.fixture
def plait(tmp_path: Path) -> Callable[..., Result]:
    """Run `plait ARGS...` in tmp_path (the working directory of the test), in this process."""

    def _run(*args: str, **kw: Any) -> Result:
        kw.setdefault("cwd", tmp_path)
        return run_inprocess(*args, **kw)

    return _run


@pytest.fixture
def plait_process(tmp_path: Path) -> Callable[..., Result]:
    """Run `plait ARGS...` in tmp_path, in a fresh Python process."""

    def _run(*args: str, **kw: Any) -> Result:
        kw.setdefault("cwd", tmp_path)
        return run_cli(*args, **kw)

    return _run


@pytest.fixture
def workflow(tmp_path: Path) -> Callable[..., str]:
    """Write a workflow (dict → JSON, str → as is) into tmp_path and return its path."""
    counter = iter(range(10_000))

    def _write(content: Any, name: str | None = None) -> str:
        path = tmp_path / (name or f"wf{next(counter)}.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else json.dumps(content, indent=2))
        return str(path)

    return _write
