"""The docs that are generated from code stay in step with it."""

from __future__ import annotations

from pathlib import Path

from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]


def test_the_node_reference_in_docs_matches_the_declarations():
    r = run_cli("nodes", "--markdown")
    assert r.code == 0, r
    current = (ROOT / "docs" / "nodes.md").read_text()
    assert r.stdout == current, "docs/nodes.md is stale: run `plait nodes --markdown > docs/nodes.md`"


def test_the_readme_opens_with_the_two_commands_and_ci_calls_the_test_one():
    lines = (ROOT / "README.md").read_text().splitlines()
    block = lines[lines.index("```sh") + 1 : lines.index("```sh") + 3]
    assert block[0].startswith("make example") and block[1].startswith("make test")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\nmake test\n" in ci
