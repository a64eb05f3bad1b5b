"""The error hierarchy.

Two families matter to a user: the workflow (or the command line) is wrong, exit 2;
the run failed, exit 1. Each error carries *where* (file, node, param, JSON path,
item index) and a *hint*; rendering them is the CLI's job.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The choice ``name`` most likely misspells, or None when nothing is close."""
    import difflib  # only when something is wrong

    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A ' Did you mean 'x'?' suffix, or '' when nothing is close."""
    close = closest(name, choices)
    return f"did you mean '{close}'?" if close else ""


@dataclass
class Problem:
    """One thing wrong with a workflow, found before anything ran."""

    message: str
    path: str = ""  # JSON path inside the workflow, e.g. nodes[2].batch.as
    hint: str = ""
    node_id: str | None = None
    param: str | None = None
    line: int | None = None
    column: int | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"message": self.message, "path": self.path}
        for key in ("hint", "node_id", "param", "line", "column"):
            value = getattr(self, key)
            if value not in (None, ""):
                out[key] = value
        return out


class PlaitError(Exception):
    """Base of every error plait reports to a user."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str = "", file: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.file = file


class UsageError(PlaitError):
    """The command line is wrong (unknown input, a value of the wrong type...)."""

    exit_code = 2


class WorkflowInvalid(PlaitError):
    """The workflow cannot run: every problem found, each with its JSON path."""

    exit_code = 2

    def __init__(self, problems: list[Problem], *, file: str | None = None) -> None:
        count = len(problems)
        super().__init__(
            f"workflow is invalid: {count} problem{'s' if count != 1 else ''}", file=file
        )
        self.problems = problems


class RunFailed(PlaitError):
    """The workflow was valid but a node failed and nothing handled it."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        node_id: str | None = None,
        index: int | None = None,
        hint: str = "",
    ) -> None:
        super().__init__(message, hint=hint)
        self.node_id = node_id
        self.index = index


class Interrupted(PlaitError):
    """SIGINT or SIGTERM stopped the run."""

    exit_code = 130
