"""Custom node types, both ways in: `--nodes FILE` and the `plait.nodes` entry point.

The node used here is the complete example of docs/custom-nodes.md, taken from
the page itself, so the documented example is the one proven to work.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path

import pytest

from conftest import SRC

DOC = Path(__file__).resolve().parents[1] / "docs" / "custom-nodes.md"


def doc_block(lang: str, containing: str) -> str:
    blocks = re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)
    matches = [b for b in blocks if containing in b]
    assert matches, f"no ```{lang} block with {containing!r} in {DOC}"
    return matches[0]


SLUGIFY = doc_block("python", "class SlugifyNode")
USE = json.loads(doc_block("json", '"type": "slugify"'))


@pytest.fixture
def node_file(tmp_path: Path) -> str:
    path = tmp_path / "plugins" / "slugify_node.py"
    path.parent.mkdir()
    path.write_text(SLUGIFY)
    return str(path)


# --- --nodes FILE ---------------------------------------------------------


def test_nodes_file_types_are_listed_with_their_source(node_file, plait):
    r = plait("nodes", "--nodes", node_file)
    assert r.code == 0, r
    assert "slugify" in r.stdout
    r = plait("nodes", "slugify", "--nodes", node_file)
    assert r.code == 0, r
    assert "Turn text into a lowercase URL slug." in r.stdout
    assert "slugify_node.py" in r.stdout
    assert 'separator: string (default "-")' in r.stdout
    r = plait("nodes", "--json", "--nodes", node_file)
    decl = next(d for d in r.json if d["type"] == "slugify")
    assert [p["name"] for p in decl["params"]] == ["text", "separator", "max_length"]
    assert [o["name"] for o in decl["outputs"]] == ["slug", "words"]


def test_the_documented_workflow_runs_a_parallel_batch_of_the_custom_node(
    node_file, workflow, plait
):
    wf = workflow(USE)
    titles = ["Hello, World!", "Ça va?", "  plait: fast   workflows "] * 5
    r = plait("run", wf, f"titles={json.dumps(titles)}", "--nodes", node_file, "-o", "json", "-q")
    assert r.code == 0, r
    results = r.json["outputs"]["results"]
    assert [x["slug"] for x in results] == ["hello_world", "ca_va", "plait_fast_workflows"] * 5
    assert [x["words"] for x in results] == [2, 2, 3] * 5


def test_a_node_that_runs_last_prints_its_primary_output(node_file, workflow, plait):
    wf = workflow({"nodes": [{"id": "s", "type": "slugify", "params": {"text": "Ünïcode Títle"}}]})
    r = plait("run", wf, "--nodes", node_file, "-q")
    assert r.code == 0, r
    assert r.stdout == "unicode-title\n"


def test_custom_params_are_validated_like_built_ins(node_file, workflow, plait):
    wf = workflow(
        {
            "nodes": [
                {"id": "s", "type": "slugify", "params": {"txt": "x", "max_length": "long"}},
                {"id": "after", "type": "echo", "params": {"v": "${s.slg}"}},
            ]
        }
    )
    r = plait("validate", wf, "--nodes", node_file)
    assert r.code == 2, r
    assert "unknown param 'txt' for node type 'slugify'" in r.stderr
    assert "did you mean 'text'?" in r.stderr
    assert "(a required param, missing)" in r.stderr and "missing required param" not in r.stderr
    assert "param 'max_length' of node 's' must be integer" in r.stderr
    assert "no output 'slg'" in r.stderr and "did you mean 'slug'?" in r.stderr


def test_a_node_error_from_a_custom_node_fails_the_run_with_its_message(node_file, workflow, plait):
    wf = workflow({"nodes": [{"id": "s", "type": "slugify", "params": {"text": "!!!"}}]})
    r = plait("run", wf, "--nodes", node_file, "-q")
    assert r.code == 1, r
    assert "node 's' failed: nothing to slugify in '!!!'" in r.stderr


@pytest.mark.parametrize("parallel", [False, True], ids=["single", "parallel-batch"])
def test_a_custom_node_that_calls_sys_exit_fails_its_item_and_the_run_ends(tmp_path, workflow, plait, parallel):
    path = tmp_path / "exits_node.py"
    path.write_text(
        "import sys\n"
        "from plait.nodes.base import PlaitNode\n\n"
        "class ExitsNode(PlaitNode):\n"
        "    type_name = 'exits'\n"
        "    description = 'Calls sys.exit, as some libraries do.'\n\n"
        "    def exec(self, p):\n"
        "        sys.exit(4)\n"
    )
    node: dict = {"id": "x", "type": "exits", "params": {}}
    if parallel:
        node["batch"] = {"items": [1, 2, 3], "parallel": True, "max_concurrent": 2}
    r = plait("run", workflow({"nodes": [node]}), "--nodes", str(path), "-q", timeout=20)
    assert r.code == 1, r
    assert "node 'x' failed: " in r.stderr and "SystemExit: 4" in r.stderr


def test_without_nodes_the_type_is_unknown_with_a_pointer(workflow, plait):
    wf = workflow({"nodes": [{"id": "s", "type": "slugify", "params": {"text": "x"}}]})
    r = plait("validate", wf)
    assert r.code == 2, r
    assert "unknown node type 'slugify'" in r.stderr


def test_a_nodes_folder_loads_every_file_in_it(tmp_path, node_file, workflow, plait):
    (tmp_path / "plugins" / "shout_node.py").write_text(
        "from plait.nodes.base import Output, Param, PlaitNode\n\n"
        "class ShoutNode(PlaitNode):\n"
        "    type_name = 'shout'\n"
        "    description = 'Upper-case text.'\n"
        "    param_specs = (Param('text', 'string', required=True),)\n"
        "    output_specs = (Output('text', 'string'),)\n"
        "    primary_output = 'text'\n\n"
        "    def exec(self, p):\n"
        "        return {'text': p['text'].upper()}\n"
    )
    wf = workflow(
        {
            "nodes": [
                {"id": "s", "type": "slugify", "params": {"text": "Big News Today"}},
                {"id": "loud", "type": "shout", "params": {"text": "${s.slug}"}},
            ]
        }
    )
    r = plait("run", wf, "--nodes", str(tmp_path / "plugins"), "-q")
    assert r.code == 0, r
    assert r.stdout == "BIG-NEWS-TODAY\n"


def test_a_nodes_file_that_does_not_import_is_a_usage_error(tmp_path, workflow, plait):
    bad = tmp_path / "bad.py"
    bad.write_text("import not_a_module_anywhere\n")
    wf = workflow({"nodes": [{"id": "e", "type": "echo", "params": {"v": 1}}]})
    r = plait("run", wf, "--nodes", str(bad), "-q")
    assert r.code == 2, r
    assert "bad.py" in r.stderr and "not_a_module_anywhere" in r.stderr


# --- the plait.nodes entry point --------------------------------------------


def install_offline(project: Path, site: Path) -> None:
    """Install a package the way pip leaves it: the module plus a .dist-info whose
    entry_points.txt comes from the project's pyproject.toml (no network, no build)."""
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    name, version = meta["name"], meta["version"]
    for module in project.glob("*.py"):
        (site / module.name).write_text(module.read_text())
    dist = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, entries in meta.get("entry-points", {}).items():
        lines.append(f"[{group}]")
        lines += [f"{key} = {value}" for key, value in entries.items()]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def plugin_env(tmp_path: Path) -> dict[str, str]:
    project = tmp_path / "plait-slugify"
    project.mkdir()
    (project / "pyproject.toml").write_text(doc_block("toml", "plait.nodes"))
    (project / "plait_slugify.py").write_text(SLUGIFY)
    site = tmp_path / "site-packages"
    site.mkdir()
    install_offline(project, site)
    return {"PYTHONPATH": f"{SRC}{os.pathsep}{site}"}


def test_an_installed_plugin_is_listed_with_its_package(plugin_env, plait_process):
    r = plait_process("nodes", "slugify", env=plugin_env)
    assert r.code == 0, r
    assert "Turn text into a lowercase URL slug." in r.stdout
    assert "entry point (plait-slugify)" in r.stdout
    r = plait_process("nodes", env=plugin_env)
    assert r.code == 0, r
    assert "slugify" in r.stdout and "shell" in r.stdout


def test_an_installed_plugin_runs_and_validates_with_no_nodes_option(plugin_env, workflow, plait_process):
    wf = workflow(USE)
    r = plait_process("run", wf, 'titles=["One Two", "Three"]', "-o", "json", "-q", env=plugin_env)
    assert r.code == 0, r
    assert [x["slug"] for x in r.json["outputs"]["results"]] == ["one_two", "three"]

    bad = workflow({"nodes": [{"id": "s", "type": "slugify", "params": {"texts": "x"}}]})
    r = plait_process("validate", bad, env=plugin_env)
    assert r.code == 2, r
    assert "unknown param 'texts'" in r.stderr and "did you mean 'text'?" in r.stderr


def test_a_broken_plugin_only_fails_the_workflows_that_use_it(tmp_path, workflow, plait_process):
    site = tmp_path / "site-packages"
    dist = site / "plait_broken-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plait-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[plait.nodes]\nbroken = plait_broken_missing:BrokenNode\n"
    )
    env = {"PYTHONPATH": f"{SRC}{os.pathsep}{site}"}

    fine = workflow({"nodes": [{"id": "e", "type": "echo", "params": {"v": "ok"}}]})
    r = plait_process("run", fine, "-q", env=env)
    assert r.code == 0, r

    uses = workflow({"nodes": [{"id": "b", "type": "broken", "params": {}}]})
    r = plait_process("run", uses, "-q", env=env)
    assert r.code == 2, r
    assert "node type 'broken' could not be loaded from plait_broken_missing:BrokenNode" in r.stderr


def test_an_entry_point_cannot_replace_a_built_in(tmp_path, workflow, plait_process):
    site = tmp_path / "site-packages"
    dist = site / "plait_evil-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plait-evil\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[plait.nodes]\nshell = plait_evil:Evil\n")
    env = {"PYTHONPATH": f"{SRC}{os.pathsep}{site}"}
    wf = workflow(
        {"nodes": [{"id": "s", "type": "shell", "params": {"command": "echo real shell"}}]}
    )
    r = plait_process("run", wf, "-q", env=env)
    assert r.code == 0, r
    assert r.stdout == "real shell\n"
