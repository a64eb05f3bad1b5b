"""The llm node's own cost (issue "Streaming batches", point 7) and what loading llm costs.

Run: python benchmarks/bench_llm.py [--quick] [--per-item]  (--per-item: table 1 only)

1. Per item, sequential, on the offline ``echo`` model of llm-echo: a batch of N
   items through ``plait.run`` (N items minus 0 items, so start-up is out),
   beside the floor measured in the same process: a bare loop over the ``llm``
   library making the same calls the node makes (``model.prompt(text,
   stream=True)``, ``.text()``, ``.usage()``). Also shown, to say where the
   difference goes: a minimal custom node with the llm node's declaration
   whose exec makes just those calls (so plait.run ÷ floor for a node that
   costs nothing of its own: the engine's share), the same batch of the
   ``echo`` *node* (the engine alone, no llm call in between), and the llm
   node's prep → exec → post called directly with the runtime's real
   services, less the floor (the node's own share); and the llm node with its
   cache on, answering every item from the cache. The llm node runs with
   ``"cache": false`` elsewhere, so it makes the floor's calls. CPU time of the process (``time.process_time``),
   not wall: the machine is shared, and the work is CPU-bound; every figure is
   the best of R interleaved rounds, each after a ``gc.collect()``.
2. Loading: fresh processes (best of 5, wall) for ``import llm``; llm finding
   the ``echo`` model as llm itself does it (its plugins load, and the OpenAI
   plugin imports ``openai``); the same through the llm node's loader (which
   defers ``openai`` until a call needs it); and a one-item ``echo`` workflow
   through the CLI, with ``openai`` imported first (what the node cost before)
   and without.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, env, table

QUICK = "--quick" in sys.argv
N = 300 if QUICK else 2000
ROUNDS = 3 if QUICK else 9

sys.path.insert(0, str(ROOT / "src"))

PROMPT = "Classify this message: item ${item}"


# A node that makes the bare loop's calls and nothing else, declared as the llm node is.
MINIMAL_NODE = """
from plait.nodes.base import PlaitNode
from plait.nodes.llm import LlmNode
from plait.nodes.llm_models import load_llm

MODEL = load_llm().get_model("echo")


class BareLlmNode(PlaitNode):
    type_name = "bare-llm"
    param_specs = LlmNode.param_specs
    output_specs = LlmNode.output_specs

    def prep(self, shared):
        return shared.params["prompt"]

    def exec(self, prompt):
        response = MODEL.prompt(prompt, stream=True)
        text, usage = response.text(), response.usage()
        return {"response": text, "llm_usage": {"model": "echo", "input_tokens": usage.input, "output_tokens": usage.output}}
"""
NODES: list[str] = []


def batch(node_type: str, cache: bool = False) -> dict[str, Any]:
    params = {"prompt": PROMPT, "model": "echo"} if node_type != "echo" else {"prompt": PROMPT}
    # The llm type caches by default; here every round would then answer from
    # the cache of the first, which is not the call the floor makes.
    node = {"id": "n", "type": node_type, "params": params, "batch": {"items": "${items}"}, "cache": cache}
    return {"inputs": {"items": {"type": "array"}}, "nodes": [node]}


def per_item_plait(node_type: str, n: int, cache: bool = False) -> float:
    import plait

    wf = batch(node_type, cache)
    gc.collect()
    t0 = time.process_time()
    result = plait.run(wf, inputs={"items": list(range(n))}, executor="sequential", nodes=NODES)
    full = time.process_time() - t0
    assert result.ok, result
    gc.collect()
    t0 = time.process_time()
    plait.run(wf, inputs={"items": []}, executor="sequential", nodes=NODES)
    empty = time.process_time() - t0
    return (full - empty) / n * 1e6


def per_item_bare(n: int) -> float:
    from plait.nodes.llm_models import load_llm

    model = load_llm().get_model("echo")
    texts = [PROMPT.replace("${item}", str(i)) for i in range(n)]
    keep = []
    gc.collect()
    t0 = time.process_time()
    for text in texts:
        response = model.prompt(text, stream=True)
        keep.append((response.text(), response.usage()))
    return (time.process_time() - t0) / n * 1e6


def per_item_node(n: int) -> float:
    from plait.nodes.base import ItemContext
    from plait.nodes.llm import LlmNode
    from plait.nodes.registry import Registry
    from plait.runtime.events import EventBus
    from plait.runtime.services import RunServices

    services = RunServices(Registry(), EventBus(), None)
    node = LlmNode("n")
    defaults = {p.name: p.default for p in LlmNode.param_specs}
    params = [dict(defaults, prompt=PROMPT.replace("${item}", str(i)), model="echo") for i in range(n)]
    keep = []
    gc.collect()
    t0 = time.process_time()
    for i, p in enumerate(params):
        ctx = ItemContext("n", i, p, services)
        prep = node.prep(ctx)
        node.post(ctx, prep, node.exec(prep))
        keep.append(ctx.outputs)
    return (time.process_time() - t0) / n * 1e6


def per_item_table(tmp: str) -> None:
    os.environ["PLAIT_HOME"] = str(Path(tmp) / "home")  # the cached row's entries go here
    node_file = Path(tmp) / "bare_llm_node.py"
    node_file.write_text(MINIMAL_NODE)
    NODES.append(str(node_file))
    # warm: llm loaded, the model resolved, code paths compiled
    per_item_plait("bare-llm", 20)
    per_item_plait("llm", 20)
    per_item_plait("echo", 20)
    per_item_bare(20)
    per_item_node(20)
    per_item_plait("llm", N, cache=True)  # the cache holds every prompt from here on
    best: dict[str, float] = {}
    for _ in range(ROUNDS):
        for name, fn in (
            ("bare", lambda: per_item_bare(N)),
            ("plait", lambda: per_item_plait("llm", N)),
            ("minimal", lambda: per_item_plait("bare-llm", N)),
            ("engine", lambda: per_item_plait("echo", N)),
            ("node", lambda: per_item_node(N)),
            ("cached", lambda: per_item_plait("llm", N, cache=True)),
        ):
            value = fn()
            best[name] = min(best.get(name, value), value)
    bare = best["bare"]
    rows = [
        ["bare llm loop (the floor)", f"{bare:.1f}", "1.00"],
        ["plait.run, llm node, echo model", f"{best['plait']:.1f}", f"{best['plait'] / bare:.2f}"],
        ["plait.run, a node making only the floor's calls", f"{best['minimal']:.1f}", f"{best['minimal'] / bare:.2f}"],
        ["plait.run, echo node (the engine, no llm call)", f"{best['engine']:.1f}", ""],
        ["llm node's own share (prep/exec/post direct - floor)", f"{best['node'] - bare:.1f}", ""],
        ["plait.run, llm node, cache on (answers from the cache)", f"{best['cached']:.1f}", f"{best['cached'] / bare:.2f}"],
    ]
    table(
        f"llm node per item, sequential, {N} items, best of {ROUNDS} (CPU µs per item; goal: plait ÷ floor ≤ 1.3)",
        ["measure", "µs/item", "÷ floor"],
        rows,
    )


def fresh_process_s(code: str, repeat: int = 5, tmp: str | None = None) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env(), capture_output=True, cwd=tmp)
        best = min(best, time.perf_counter() - t0)
    return best


def loading_table() -> None:
    repeat = 3 if QUICK else 5
    with tempfile.TemporaryDirectory() as tmp:
        wf = Path(tmp) / "wf.json"
        wf.write_text(json.dumps({"nodes": [{"id": "a", "type": "llm", "params": {"prompt": "hi", "model": "echo"}}]}))
        cli = f"import sys, runpy; sys.argv = ['plait', 'run', {str(wf)!r}, '-q', '--no-record']; runpy.run_module('plait', run_name='__main__')"
        rows = []
        python = fresh_process_s("pass", repeat)
        rows.append(["python start-up", f"{python:.2f}", ""])
        llm_import = fresh_process_s("import llm", repeat)
        rows.append(["import llm", f"{llm_import:.2f}", ""])
        eager = fresh_process_s("import llm; llm.get_model('echo')", repeat)
        deferred = fresh_process_s("from plait.nodes.llm_models import load_llm; load_llm().get_model('echo')", repeat)
        rows.append(["llm finds 'echo' (its plugins load; openai imported)", f"{eager:.2f}", "before"])
        rows.append(["the node's loader finds 'echo' (openai deferred)", f"{deferred:.2f}", "after"])
        before = fresh_process_s("import openai; " + cli, repeat, tmp)
        after = fresh_process_s(cli, repeat, tmp)
        rows.append(["plait run, one echo llm node, openai imported", f"{before:.2f}", "before"])
        rows.append(["plait run, one echo llm node", f"{after:.2f}", "after"])
    table(f"loading llm, fresh processes, best of {repeat} (wall s)", ["measure", "s", ""], rows)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as scratch:
        per_item_table(scratch)
    if "--per-item" not in sys.argv:
        loading_table()
