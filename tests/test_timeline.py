"""`plait timeline RUN -o FILE.html`: a self-contained page that draws the run,
checked in a real headless Debian chromium (skipped only where it is absent)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Result

Plait = Callable[..., Result]
Workflow = Callable[..., str]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# item 5 fails on its first attempt and then succeeds; item 9 fails for good
COMMAND = (
    "sleep 0.05; if [ ${item} -eq 9 ]; then echo 'out of cheese' >&2; exit 4; fi; "
    "if [ ${item} -eq 5 ] && [ ! -e retried ]; then touch retried; exit 1; fi; echo ${item}"
)
WORKFLOW = {
    "nodes": [
        {"id": "prepare", "type": "shell", "params": {"command": "sleep 0.05"}},
        {
            "id": "fetch",
            "type": "shell",
            "params": {"command": COMMAND},
            "batch": {
                "items": list(range(12)),
                "parallel": True,
                "max_concurrent": 3,
                "error_handling": "continue",
                "max_retries": 2,
                "retry_wait": 0.01,
            },
        },
        {"id": "report", "type": "shell", "params": {"command": "echo done"}},
    ]
}
ATTEMPTS = 1 + 14 + 1  # prepare; 12 items, two of them twice; report


@pytest.fixture
def drawn(plait: Plait, workflow: Workflow, tmp_path: Path) -> tuple[str, Path]:
    run = plait("run", workflow(WORKFLOW), "-o", "json")
    assert run.code == 0, run
    out = tmp_path / "pictures" / "run.html"
    result = plait("timeline", run.json["run_id"][:5], "-o", str(out))
    assert result.code == 0, result
    assert result.stdout == f"wrote {out} (run {run.json['run_id']}, {ATTEMPTS} item attempts)\n"
    return run.json["run_id"], out


def test_the_timeline_is_one_self_contained_file(drawn: tuple[str, Path]) -> None:
    run_id, out = drawn
    page = out.read_text()
    assert page.startswith("<!doctype html>")
    assert f"run <span class=\"rid\">{run_id}</span>" in page
    # nothing to fetch: no external scripts, styles, images or fonts
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and "url(http" not in page
    data = json.loads(
        re.search(r'<script type="application/json" id="plait-data">(.*?)</script>', page, re.S)
        .group(1)  # type: ignore[union-attr]
        .replace("<\\/", "</")
    )
    assert [n["id"] for n in data["nodes"]] == ["prepare", "fetch", "report"]
    assert len(data["items"]["t0"]) == ATTEMPTS
    assert "command exited with code 4: out of cheese" in data["errors"]
    # the failed item is listed under the chart with its error
    assert "fetch[9]" in page and "command exited with code 4: out of cheese" in page


def test_timeline_of_last_run_goes_to_a_default_file(plait: Plait, workflow: Workflow, tmp_path: Path) -> None:
    run = plait("run", workflow({"nodes": [{"id": "a", "type": "shell", "params": {"command": "true"}}]}), "-o", "json")
    result = plait("timeline", "last")
    assert result.code == 0, result
    assert (tmp_path / f"timeline-{run.json['run_id']}.html").exists()


def test_timeline_of_an_unknown_run_says_so(plait: Plait, workflow: Workflow) -> None:
    plait("run", workflow({"nodes": [{"id": "a", "type": "shell", "params": {"command": "true"}}]}))
    result = plait("timeline", "nope")
    assert result.code == 2
    assert "no run with id 'nope'" in result.stderr


def chromium(*args: str, url: str) -> str:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                *args,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_chromium_draws_a_bar_per_attempt_lanes_and_node_bands(drawn: tuple[str, Path]) -> None:
    _, out = drawn
    dom = chromium("--window-size=1400,900", "--dump-dom", url=out.as_uri())
    bars = re.findall(r'<rect class="bar s(\d)" data-k="(\d+)"', dom)
    assert len(bars) == ATTEMPTS, dom[:3000]
    assert len({k for _, k in bars}) == ATTEMPTS
    statuses = sorted(int(s) for s, _ in bars)
    assert statuses.count(1) == 1  # item 9 failed
    assert statuses.count(2) == 2  # item 9's first attempt and item 5's were retried
    assert statuses.count(0) == ATTEMPTS - 3
    assert re.search(rf'<div id="chart"[^>]*data-bars="{ATTEMPTS}"', dom)
    lanes = re.findall(r'<text class="lanelabel"[^>]*>slot (\d+)</text>', dom)
    assert lanes == ["0", "1", "2"]
    bands = re.findall(r'<rect class="band" data-node="(\d)"', dom)
    assert bands == ["0", "1", "2"]
    assert "items in flight" in dom


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_a_link_to_an_item_opens_its_details(drawn: tuple[str, Path]) -> None:
    _, out = drawn
    dom = chromium("--window-size=1400,900", "--dump-dom", url=out.as_uri() + "#fetch[9]")
    tip = re.search(r'<div id="tip"[^>]*>(.*?)</div>\s*<script', dom, re.S)
    assert tip, dom[-3000:]
    text = re.sub(r"<[^>]+>", " ", tip.group(1))
    assert "fetch · item #9" in text
    assert "attempt" in text and "2 of 2" in text
    assert "out of cheese" in text
    assert len(re.findall(r'<rect class="hl" x="[-\d]', dom)) == 2  # both attempts outlined


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_the_timeline_renders_to_a_picture(drawn: tuple[str, Path], tmp_path: Path) -> None:
    _, out = drawn
    png = tmp_path / "shot.png"
    chromium("--window-size=1400,900", f"--screenshot={png}", url=out.as_uri())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000  # a drawn page, not a blank one
