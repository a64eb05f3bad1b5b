"""Progress on stderr: a live bar on a terminal, plain lines elsewhere, and
stdout left to the result — through the real CLI, in a pseudo-terminal for the
live display (its final screen read with the pyte terminal emulator)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import termios
import time
from collections.abc import Callable
from typing import Any

import pyte

from conftest import Result, popen_cli

Plait = Callable[..., Result]
Workflow = Callable[..., str]
COLUMNS, LINES = 110, 30


def two_nodes(count: int, command: str = "sleep 0.05; echo ${item}", **batch: Any) -> dict[str, Any]:
    return {
        "nodes": [
            {
                "id": "work",
                "type": "shell",
                "params": {"command": command},
                "batch": {"items": list(range(count)), "parallel": True, "max_concurrent": 2, **batch},
            },
            {"id": "after", "type": "shell", "params": {"command": "echo the result"}},
        ]
    }


def run_in_terminal(path: str, *args: str, cwd: str) -> tuple[int, str, bytes]:
    """Run plait with stderr on a pseudo-terminal; (exit code, stdout, raw terminal bytes)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
    proc = popen_cli(
        "run", path, *args, cwd=cwd, stderr=slave, text=False,
        env={"TERM": "xterm-256color", "COLUMNS": str(COLUMNS)},
    )
    os.close(slave)
    raw = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.05)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            raw += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    assert proc.stdout is not None
    stdout = proc.stdout.read().decode()
    return proc.wait(timeout=30), stdout, raw


def final_screen(raw: bytes) -> list[str]:
    screen = pyte.Screen(COLUMNS, LINES)
    pyte.ByteStream(screen).feed(raw)
    return [line.rstrip() for line in screen.display if line.strip()]


def test_a_terminal_shows_a_live_bar_then_one_line_per_node(workflow: Workflow, tmp_path: Any) -> None:
    code, stdout, raw = run_in_terminal(workflow(two_nodes(16)), cwd=str(tmp_path))
    assert code == 0
    assert stdout == "the result\n"
    text = raw.decode(errors="replace")
    assert "\x1b[" in text  # drawn, not printed
    # the bar was on screen while the batch ran: done/total, rate and ETA
    frames = re.findall(r"(\d+)/16\S*\s+(?:\x1b\[[\d;]*m)*\s*([\d.]+/s)", text)
    assert frames, text
    assert "ETA" in text
    # ... and is gone afterwards: what stays is one line per node
    screen = final_screen(raw)
    assert len(screen) == 2, screen
    assert re.fullmatch(r"✓ work  16 items, \d+(\.\d)? (ms|s)", screen[0]), screen
    assert re.fullmatch(r"✓ after  \d+(\.\d)? (µs|ms|s)", screen[1]), screen


def test_a_terminal_shows_failures_in_the_bar_and_the_failed_node(workflow: Workflow, tmp_path: Any) -> None:
    wf = two_nodes(10, "sleep 0.05; test ${item} -ne 4", error_handling="continue")
    wf["nodes"][1]["params"]["command"] = "exit 3"
    code, stdout, raw = run_in_terminal(workflow(wf), cwd=str(tmp_path))
    assert code == 1
    assert stdout == ""
    assert "1 failed" in raw.decode(errors="replace")
    screen = final_screen(raw)
    assert re.fullmatch(r"⚠ work  10 items, 1 failed, \S+ m?s", screen[0]), screen
    assert re.fullmatch(r"✗ after  failed, \S+ \S+", screen[1]), screen
    assert screen[2] == "error: node 'after' failed: command exited with code 3"


def test_without_a_terminal_progress_is_plain_lines_one_per_node(plait: Plait, workflow: Workflow) -> None:
    result = plait("run", workflow(two_nodes(6)))
    assert result.code == 0, result
    assert result.stdout == "the result\n"
    assert "\x1b" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2, lines
    assert re.fullmatch(r"✓ work  6 items, \S+ m?s", lines[0])
    assert re.fullmatch(r"✓ after  \S+ \S+", lines[1])


def test_a_long_batch_without_a_terminal_prints_a_summary_now_and_then(
    plait: Plait, workflow: Workflow
) -> None:
    result = plait("run", workflow(two_nodes(24, "sleep 0.1")), env={"PLAIT_PROGRESS_EVERY": "0.3"})
    assert result.code == 0, result
    assert "\x1b" not in result.stderr
    summaries = [line for line in result.stderr.splitlines() if line.startswith("work: ")]
    assert len(summaries) >= 2, result.stderr
    for line in summaries:
        assert re.fullmatch(r"work: \d+/24 items, [\d.]+/s, ETA \d+s", line), line
    counts = [int(line.split()[1].split("/")[0]) for line in summaries]
    assert counts == sorted(counts) and counts[-1] < 24
    assert result.stderr.splitlines()[-2].startswith("✓ work  24 items")


def test_a_grouped_batch_counts_items_not_groups(plait: Plait, workflow: Workflow) -> None:
    wf = two_nodes(24, "sleep 0.2", group=4)  # 6 groups, 2 at a time
    result = plait("run", workflow(wf), env={"PLAIT_PROGRESS_EVERY": "0.15"})
    assert result.code == 0, result
    summaries = [line for line in result.stderr.splitlines() if line.startswith("work: ")]
    counts = [int(line.split()[1].split("/")[0]) for line in summaries]
    assert counts and all(c % 4 == 0 for c in counts) and max(counts) >= 8, result.stderr
    assert all(line.split()[1].endswith("/24") for line in summaries)
    assert result.stderr.splitlines()[-2].startswith("✓ work  24 items")


def test_quiet_silences_progress(plait: Plait, workflow: Workflow) -> None:
    result = plait("run", workflow(two_nodes(3)), "-q")
    assert result.code == 0
    assert result.stderr == ""
    assert result.stdout == "the result\n"


def test_json_output_stays_alone_on_stdout(plait: Plait, workflow: Workflow) -> None:
    result = plait("run", workflow(two_nodes(3)), "-o", "json")
    assert result.code == 0
    assert result.json["status"] == "success"
    assert len(result.stderr.splitlines()) == 2
