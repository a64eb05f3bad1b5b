"""A call that reports its usage in more than one part (two record_usage in one
exec): the limiter and the budget settle with the sum, the ledger counts each part."""

from __future__ import annotations

from pathlib import Path

import pytest

import plait

NODE = '''
from plait.nodes.base import Demand, Output, PlaitNode, Usage


class TwoParts(PlaitNode):
    type_name = "two-parts"
    output_specs = (Output("costs", "array", "what each part cost"),)

    def prep(self, shared):
        return shared

    def demand(self, ctx):
        # the worst case is $0.02: 10 tokens in, 10 out
        return Demand("house", tokens=20, model="house", input_tokens=10, max_output_tokens=10)

    def exec(self, ctx):
        first = ctx.services.record_usage(ctx, Usage("house", 10, 10))  # $0.02
        second = ctx.services.record_usage(ctx, Usage("house", 5, 5))  # $0.01
        return {"costs": [first.cost_usd, second.cost_usd]}
'''

PRICES = {"models": {"house": {"input": 1000.0, "output": 1000.0, "max_output": 64}}}


@pytest.mark.parametrize("executor", ["sequential", "threads"])
def test_a_call_in_two_parts_is_settled_and_counted_whole(tmp_path: Path, monkeypatch, executor):
    monkeypatch.setenv("PLAIT_HOME", str(tmp_path / "home"))
    node_file = tmp_path / "two_parts.py"
    node_file.write_text(NODE)
    batch = {"items": [1, 2, 3, 4, 5, 6], "max_concurrent": 1}
    wf = {
        "budget": {"usd": 0.1},
        "prices": PRICES,
        "nodes": [{"id": "n", "type": "two-parts", "batch": batch}],
    }

    result = plait.run(wf, executor=executor, nodes=[node_file])

    # $0.03 spent per item: after three, $0.09 + the next worst case of $0.02 does not
    # fit in $0.10 (with only the first part settled, five items would have run)
    assert result.nodes["n"].items == (6, 3, 0)
    assert "$0.09 spent" in (result.nodes["n"].error or "")
    assert [r["costs"] for r in result.values["n"]["results"]] == [[0.02, 0.01]] * 3  # each part priced
    assert result.llm_usage == {"calls": 6, "input_tokens": 45, "output_tokens": 45, "cost_usd": 0.09}
