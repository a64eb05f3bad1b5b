"""The async executor relaxes the collector's middle generation while a batch runs, and only then."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

import plait

NODE = '''
import gc
from plait.nodes.base import Output, Param, PlaitNode


class GcNode(PlaitNode):
    type_name = "gcseen"
    description = "Reports the collector's thresholds while it runs."
    param_specs = (Param("value", "any"),)
    output_specs = (Output("threshold", "array"),)

    def exec(self, prep_res):
        return {"threshold": list(gc.get_threshold())}

    async def exec_async(self, prep_res):
        return {"threshold": list(gc.get_threshold())}
'''


@pytest.fixture
def node_file(tmp_path: Path) -> str:
    path = tmp_path / "gc_node.py"
    path.write_text(NODE)
    return str(path)


@pytest.fixture
def thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield (700, 10, 10)
    gc.set_threshold(*before)


def _batch(executor_parallel: bool = True) -> dict[str, object]:
    return {
        "nodes": [
            {
                "id": "g",
                "type": "gcseen",
                "params": {"value": "${item}"},
                "batch": {"items": [1, 2, 3], "parallel": executor_parallel, "max_concurrent": 3},
            }
        ]
    }


def test_an_async_batch_collects_the_middle_generation_less_often_and_puts_it_back(
    node_file: str, thresholds: tuple[int, int, int]
) -> None:
    result = plait.run(_batch(), executor="async", nodes=[node_file])
    assert result.ok, result.errors
    seen = {tuple(r["threshold"]) for r in result.outputs["results"]}
    assert seen == {(700, 100, 10)}
    assert gc.get_threshold() == thresholds


def test_other_executors_leave_the_collector_alone(node_file: str, thresholds: tuple[int, int, int]) -> None:
    result = plait.run(_batch(), executor="threads", nodes=[node_file])
    assert result.ok, result.errors
    assert {tuple(r["threshold"]) for r in result.outputs["results"]} == {thresholds}


def test_thresholds_set_by_the_program_are_kept(node_file: str, thresholds: tuple[int, int, int]) -> None:
    gc.set_threshold(500, 400, 20)  # already above the async batch's: not lowered
    result = plait.run(_batch(), executor="async", nodes=[node_file])
    assert result.ok, result.errors
    assert {tuple(r["threshold"]) for r in result.outputs["results"]} == {(500, 400, 20)}
    assert gc.get_threshold() == (500, 400, 20)
