"""Shared test helpers: run the real CLI in a subprocess, write workflow files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


class Result:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

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


def run_cli(
    *args: str,
    cwd: Path | str | None = None,
    input: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> Result:
    proc = subprocess.run(
        [sys.executable, "-m", "plait", *args],
        cwd=cwd,
        input=input,
        capture_output=True,
        text=True,
        env=plait_env(env),
        timeout=timeout,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    return Result(proc)


@pytest.fixture
def plait(tmp_path: Path) -> Callable[..., Result]:
    """Run `plait ARGS...` in tmp_path (the working directory of the test)."""

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
