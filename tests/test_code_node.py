"""The code node: inline Python with its inputs as variables and ``result`` as output.

The first half drives the node the way the runtime does (``prep`` / ``exec`` /
``post`` with an ``ItemContext``), batches included (one node instance, items on
a thread pool); the second half runs real workflows through ``python -m plait run``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import direct
import plait
from direct import DirectServices
from plait.errors import WorkflowInvalid
from plait.nodes._code_worker import Task, WorkerPool, raise_in_thread
from plait.nodes.base import NodeError
from plait.nodes.code import CodeNode, straight_line
from plait.runtime.services import RunServices


@pytest.fixture
def services() -> Iterator[DirectServices]:
    services = DirectServices()
    yield services
    services.close()  # ends the run's idle code workers, as a run's end does


def code_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("plait-code-")]


def wait_for_code_threads_to_end(services: RunServices, timeout: float = 5.0) -> list[str]:
    """End the run (its idle workers end) and wait for every code worker to be gone,
    retired ones included."""
    services.close()
    deadline = time.monotonic() + timeout
    while True:
        alive = code_threads()
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.01)


# ---------------------------------------------------------------------------
# inputs and result



def run_item(
    services: RunServices,
    params: dict[str, Any],
    node: CodeNode | None = None,
    index: int | None = None,
) -> dict[str, Any]:
    return direct.run_item(node or CodeNode("calc"), services, params, index)


def failure(services: RunServices, params: dict[str, Any], node: CodeNode | None = None) -> NodeError:
    return direct.failure(node or CodeNode("calc"), services, params)


def test_inputs_are_variables_and_result_is_the_output(services):
    out = run_item(services, {"code": "result = a * b", "inputs": {"a": 6, "b": 7}})

    assert out == {"result": 42, "stdout": "", "stderr": ""}


def test_result_keeps_its_json_shape(services):
    code = "result = {'names': [p['name'] for p in people], 'count': len(people), 'ok': True}"
    people = [{"name": "Ada"}, {"name": "Grace"}]

    out = run_item(services, {"code": code, "inputs": {"people": people}})

    assert out["result"] == {"names": ["Ada", "Grace"], "count": 2, "ok": True}


def test_code_that_sets_no_result_gives_null(services):
    assert run_item(services, {"code": "x = 1"})["result"] is None


def test_tuples_and_sets_become_lists(services):
    out = run_item(services, {"code": "result = {'t': (1, 2), 's': {3, 1, 2}, 1: 'one'}"})

    assert out["result"] == {"t": [1, 2], "s": [1, 2, 3], "1": "one"}


def test_a_result_that_is_not_json_data_is_a_clear_error(services):
    err = failure(
        services, {"code": "import datetime\nresult = {'when': datetime.date(2024, 1, 2)}"}
    )

    assert "result['when'] is a date" in err.message
    assert "not JSON data" in err.message
    assert not err.retryable


def test_imports_functions_and_classes_work(services):
    code = (
        "import math\n"
        "from dataclasses import dataclass\n"
        "@dataclass\n"
        "class Point:\n"
        "    x: float\n"
        "    y: float\n"
        "def dist(p):\n"
        "    return math.hypot(p.x, p.y)\n"
        "result = dist(Point(3, 4))\n"
    )

    assert run_item(services, {"code": code})["result"] == 5.0


def test_a_main_guard_runs_like_a_script(services):
    code = "def main():\n    return 'ran'\nif __name__ == '__main__':\n    result = main()"

    assert run_item(services, {"code": code})["result"] == "ran"


def test_changing_an_input_in_place_does_not_change_the_callers_data(services):
    shared = {"items": [3, 1, 2]}

    out = run_item(
        services,
        {
            "code": "data['items'].sort()\ndata['new'] = 1\nresult = data",
            "inputs": {"data": shared},
        },
    )

    assert out["result"] == {"items": [1, 2, 3], "new": 1}
    assert shared == {"items": [3, 1, 2]}


def test_sys_exit_zero_ends_the_code_early_without_failing(services):
    out = run_item(services, {"code": "import sys\nresult = 'early'\nsys.exit(0)\nresult = 'late'"})

    assert out["result"] == "early"


def test_sys_exit_with_an_error_code_fails(services):
    err = failure(services, {"code": "import sys\nsys.exit(3)"})

    assert err.message.startswith("line 2: SystemExit: the code called sys.exit(3)")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"code": ""}, "'code' is empty"),
        ({"code": 5}, "'code' must be a string of Python, got int"),
        ({"code": "x", "inputs": [1]}, "'inputs' must be an object"),
        ({"code": "x", "inputs": {"my-var": 1}}, "'inputs' key 'my-var' is not a Python variable"),
        ({"code": "x", "inputs": {"class": 1}}, "'inputs' key 'class' is not a Python variable"),
        ({"code": "x", "inputs": {"__builtins__": {}}}, "names starting with '__' are reserved"),
        ({"code": "x", "timeout": 0}, "'timeout' must be a positive number"),
        ({"code": "x", "timeout": "soon"}, "'timeout' must be a positive number"),
    ],
)
def test_bad_params_are_refused(services, params, message):
    err = failure(services, params)

    assert message in err.message
    assert not err.retryable


# ---------------------------------------------------------------------------
# stdout and stderr


def test_prints_are_captured_as_stdout_and_stderr(services):
    code = (
        "import sys\n"
        "print('hello', name)\n"
        "print('careful', file=sys.stderr)\n"
        "sys.stdout.write('no newline')\n"
        "sys.stdout.buffer.write(b' bytes too')\n"
    )

    out = run_item(services, {"code": code, "inputs": {"name": "Ada"}})

    assert out["stdout"] == "hello Ada\nno newline bytes too"
    assert out["stderr"] == "careful\n"


def test_prints_of_libraries_the_code_calls_are_captured(services):
    code = (
        "import pprint, traceback\n"
        "pprint.pprint({'a': 1})\n"
        "try:\n"
        "    1 / 0\n"
        "except ZeroDivisionError:\n"
        "    traceback.print_exc()\n"
    )

    out = run_item(services, {"code": code})

    assert out["stdout"] == "{'a': 1}\n"
    assert out["stderr"].endswith("ZeroDivisionError: division by zero\n")


def test_each_item_of_a_parallel_batch_gets_exactly_its_own_output(services):
    node = CodeNode("calc")  # one instance for the batch, as the runtime does
    code = "import sys\nprint(i)\nprint('err', i, file=sys.stderr)\nresult = i * i"

    def item(i: int) -> dict[str, Any]:
        return run_item(services, {"code": code, "inputs": {"i": i}}, node, i)

    with ThreadPoolExecutor(max_workers=20) as pool:
        outs = list(pool.map(item, range(200)))

    assert [o["stdout"] for o in outs] == [f"{i}\n" for i in range(200)]
    assert [o["stderr"] for o in outs] == [f"err {i}\n" for i in range(200)]
    assert [o["result"] for o in outs] == [i * i for i in range(200)]


def test_the_process_output_is_never_redirected(services, capsys):
    """While items run and print, other threads' prints still reach the real stdout;
    when the run ends, sys.stdout and sys.stderr are the very objects they were."""
    stdout_before, stderr_before = sys.stdout, sys.stderr
    node = CodeNode("calc")
    code = "import time\nprint('item', i)\ntime.sleep(0.05)\nprint('item', i, 'done')"
    started = threading.Event()

    def item(i: int) -> dict[str, Any]:
        started.set()
        return run_item(services, {"code": code, "inputs": {"i": i}}, node, i)

    with ThreadPoolExecutor(max_workers=10) as pool:
        futures = [pool.submit(item, i) for i in range(10)]
        started.wait()
        time.sleep(0.02)  # items are mid-way
        print("from the main thread")
        print("main thread error", file=sys.stderr)
        outs = [f.result() for f in futures]

    captured = capsys.readouterr()
    assert captured.out == "from the main thread\n"
    assert captured.err == "main thread error\n"
    assert [o["stdout"] for o in outs] == [f"item {i}\nitem {i} done\n" for i in range(10)]
    services.close()
    assert (sys.stdout, sys.stderr) == (stdout_before, stderr_before)


def test_output_printed_before_an_error_is_kept(services):
    err = failure(services, {"code": "print('step 1')\nraise ValueError('bad input')"})

    assert err.outputs is not None
    assert err.outputs["stdout"] == "step 1\n"


# ---------------------------------------------------------------------------
# errors name the line


def test_an_exception_names_the_line_and_shows_it(services):
    code = "total = 0\nfor n in [1, 2]:\n    total += n + x\nresult = total"

    err = failure(services, {"code": code})

    assert err.message == "line 3: NameError: name 'x' is not defined\n    3 | total += n + x"
    assert not err.retryable


def test_an_exception_inside_a_function_names_the_line_in_the_function(services):
    code = "def first(xs):\n    return xs[0]\n\nresult = first([])\n"

    err = failure(services, {"code": code})

    assert err.message.startswith("line 2: IndexError: list index out of range")
    assert "    2 | return xs[0]" in err.message


def test_an_exception_in_a_library_names_the_codes_own_line(services):
    err = failure(services, {"code": "import json\n\nresult = json.loads('{oops')"})

    assert err.message.startswith("line 3: JSONDecodeError: ")
    assert "    3 | result = json.loads('{oops')" in err.message


def test_the_traceback_goes_to_stderr_with_the_source_lines(services):
    code = "def f():\n    raise RuntimeError('boom')\nf()"

    err = failure(services, {"code": code})

    assert err.outputs is not None
    stderr = err.outputs["stderr"]
    assert stderr.startswith("Traceback (most recent call last):\n")
    assert 'File "<plait code: calc>", line 3, in <module>\n    f()' in stderr
    assert "line 2, in f\n    raise RuntimeError('boom')" in stderr
    assert stderr.endswith("RuntimeError: boom\n")
    assert "plait/nodes/code.py" not in stderr  # no frames of plait's own


def test_a_syntax_error_names_the_line_and_points_at_it(services):
    err = failure(services, {"code": "x = 1\nif x > 0\n    result = x"})

    assert err.message == "line 2: SyntaxError: expected ':'\n    2 | if x > 0\n      |         ^"
    assert not err.retryable


def test_the_same_code_is_compiled_once_for_all_items(services):
    node = CodeNode("calc")
    code = "result = i"

    for i in range(50):
        run_item(services, {"code": code, "inputs": {"i": i}}, node, i)
    first = node._compiled[code]
    run_item(services, {"code": code, "inputs": {"i": 0}}, node, 0)

    assert list(node._compiled) == [code]
    assert node._compiled[code] is first


# ---------------------------------------------------------------------------
# timeout


def test_a_runaway_loop_times_out_and_is_stopped(services):
    started = time.monotonic()

    err = failure(services, {"code": "n = 0\nwhile True:\n    n += 1", "timeout": 0.2})

    assert time.monotonic() - started < 2
    assert err.message == "timed out after 0.2s (the 'timeout' param)"
    assert err.retryable
    assert wait_for_code_threads_to_end(services) == []  # the loop was really stopped


def test_a_timed_out_item_fails_at_the_deadline_and_runs_no_further_line(services, tmp_path):
    marker = tmp_path / "marker"
    code = "import time\nprint('before')\ntime.sleep(0.6)\nopen(path, 'w').write('ran')"
    started = time.monotonic()

    err = failure(services, {"code": code, "inputs": {"path": str(marker)}, "timeout": 0.1})

    # A blocking call cannot be interrupted, but the item does not wait for it ...
    assert time.monotonic() - started < 0.5
    assert err.outputs is not None
    assert err.outputs["stdout"] == "before\n"
    # ... and the code is stopped as soon as the call returns.
    assert wait_for_code_threads_to_end(services) == []
    assert not marker.exists()


def test_code_that_catches_exception_is_still_stopped_by_the_timeout(services):
    code = "while True:\n    try:\n        sum(range(1000))\n    except Exception:\n        pass"

    err = failure(services, {"code": code, "timeout": 0.1})

    assert "timed out" in err.message
    assert wait_for_code_threads_to_end(services) == []


def test_timeout_null_means_no_limit(services):
    assert run_item(services, {"code": "result = 1", "timeout": None})["result"] == 1


def test_a_cancelled_run_stops_waiting_for_the_code(services):
    threading.Timer(0.1, services.cancelled.set).start()
    started = time.monotonic()

    err = failure(services, {"code": "while True:\n    pass", "timeout": 30})

    assert time.monotonic() - started < 2
    assert err.message.startswith("cancelled")
    assert wait_for_code_threads_to_end(services) == []


# ---------------------------------------------------------------------------
# whole workflows through the CLI


@pytest.fixture
def run_workflow(plait: Callable[..., Any], workflow: Callable[..., str]) -> Callable[..., Any]:
    def _run(ir: dict[str, Any], *args: str) -> Any:
        return plait("run", workflow(ir), *args, "--output-format", "json")

    return _run


def test_cli_code_node_computes_from_inputs_and_templates(run_workflow):
    ir = {
        "inputs": {"words": {"type": "array"}},
        "nodes": [
            {
                "id": "count",
                "type": "code",
                "params": {
                    "code": "result = {w: len(w) for w in words}\nprint(len(words), 'words')",
                    "inputs": {"words": "${words}"},
                },
            }
        ],
        "outputs": {"lengths": {"source": "${count.result}"}, "log": {"source": "${count.stdout}"}},
    }

    result = run_workflow(ir, 'words=["plait", "is", "fast"]')

    assert result.code == 0, result
    assert result.json["outputs"] == {
        "lengths": {"plait": 5, "is": 2, "fast": 4},
        "log": "3 words\n",
    }


def test_cli_parallel_batch_of_200_items_each_print_their_own_index(run_workflow):
    ir = {
        "nodes": [
            {"id": "numbers", "type": "code", "params": {"code": "result = list(range(200))"}},
            {
                "id": "show",
                "type": "code",
                "params": {"code": "print(n)\nresult = n * 2", "inputs": {"n": "${item}"}},
                "batch": {"items": "${numbers.result}", "parallel": True, "max_concurrent": 20},
            },
        ],
        "outputs": {"batch": {"source": "${show}"}},
    }

    result = run_workflow(ir)

    assert result.code == 0, result
    results = result.json["outputs"]["batch"]["results"]
    assert [r["stdout"] for r in results] == [f"{i}\n" for i in range(200)]
    assert [r["result"] for r in results] == [i * 2 for i in range(200)]
    # and nothing the items printed leaked into plait's own output
    assert result.json["outputs"]["batch"]["count"] == 200
    assert "199\n" not in result.stderr


def test_cli_error_names_the_line(run_workflow):
    ir = {"nodes": [{"id": "calc", "type": "code", "params": {"code": "a = 1\nb = 2\nc = a + d"}}]}

    result = run_workflow(ir)

    assert result.code == 1, result
    message = result.json["errors"][0]["message"]
    assert message == "line 3: NameError: name 'd' is not defined\n    3 | c = a + d"


def test_cli_timeout_fails_the_run(run_workflow):
    ir = {
        "nodes": [
            {
                "id": "spin",
                "type": "code",
                "params": {"code": "while True:\n    pass", "timeout": 0.3},
            }
        ]
    }
    started = time.monotonic()

    result = run_workflow(ir)

    assert result.code == 1, result
    assert "timed out after 0.3s" in result.json["errors"][0]["message"]
    assert time.monotonic() - started < 10


def test_cli_code_result_feeds_a_batch(run_workflow, tmp_path: Path):
    ir = {
        "nodes": [
            {
                "id": "plan",
                "type": "code",
                "params": {"code": "result = [{'name': n, 'size': len(n)} for n in ['a', 'bbb']]"},
            },
            {
                "id": "label",
                "type": "code",
                "params": {
                    "code": "result = f\"{row['name']}:{row['size']}\"",
                    "inputs": {"row": "${item}"},
                },
                "batch": {"items": "${plan.result}"},
            },
        ],
        "outputs": {"labels": {"source": "${label.results}"}},
    }

    result = run_workflow(ir)

    assert result.code == 0, result
    assert [r["result"] for r in result.json["outputs"]["labels"]] == ["a:1", "bbb:3"]


# ---------------------------------------------------------------------------
# the workers items run on


THREAD_NAME = "import threading\nresult = threading.current_thread().name"


def test_items_reuse_a_worker_and_a_timed_out_worker_is_replaced(services):
    node = CodeNode("calc")

    names = {run_item(services, {"code": THREAD_NAME}, node, i)["result"] for i in range(20)}
    failed = failure(services, {"code": "import sys\nsys.exit(3)"}, node)
    after_exit = run_item(services, {"code": THREAD_NAME}, node)["result"]
    timed_out = failure(services, {"code": "while True:\n    pass", "timeout": 0.1}, node)
    after_timeout = run_item(services, {"code": THREAD_NAME}, node)["result"]

    assert len(names) == 1  # one worker served every item, one after another
    assert "sys.exit(3)" in failed.message
    assert {after_exit} == names  # a failing item does not cost its worker
    assert "timed out" in timed_out.message
    assert after_timeout not in names  # the interrupted worker left the pool
    assert wait_for_code_threads_to_end(services) == []


def test_each_item_starts_with_fresh_context_variables(services):
    node = CodeNode("calc")
    code = (
        "import decimal\n"
        "before = decimal.getcontext().prec\n"
        "decimal.getcontext().prec = 5\n"
        "result = [before, str(decimal.Decimal(1) / decimal.Decimal(3))]"
    )

    first = run_item(services, {"code": code}, node, 0)["result"]
    second = run_item(services, {"code": code}, node, 1)["result"]

    assert first == second == [28, "0.33333"]


def test_the_process_keeps_its_output_streams_between_runs(services):
    stdout_before = sys.stdout
    run_item(services, {"code": "print('captured')"})
    services.close()
    assert sys.stdout is stdout_before

    other = DirectServices()  # a second run on the same streams
    try:
        out = run_item(other, {"code": "print('again')"})
    finally:
        other.close()

    assert out["stdout"] == "again\n"
    assert sys.stdout is stdout_before



def test_an_interrupt_of_the_waiting_thread_stops_the_code_too(services):
    """A second Ctrl-C lands in the thread that waits for the item: the code must
    not go on spinning in its worker."""
    started, raised = threading.Event(), []
    node = CodeNode("calc")

    def item() -> None:
        try:
            run_item(services, {"code": "started.set()\nwhile True:\n    pass", "inputs": {"started": started}}, node)
        except KeyboardInterrupt:
            raised.append(True)

    waiter = threading.Thread(target=item)
    waiter.start()
    assert started.wait(5)
    assert raise_in_thread(waiter.ident, KeyboardInterrupt)
    waiter.join(5)

    assert raised == [True]
    assert wait_for_code_threads_to_end(services) == []

# ---------------------------------------------------------------------------
# the working directory

CHDIR = "import os\nos.chdir(where)\nresult = os.getcwd()"
OWN_CWD = sys.platform.startswith("linux")


def test_a_chdir_in_the_code_is_undone_when_the_item_returns(services, tmp_path):
    before = os.getcwd()

    out = run_item(services, {"code": CHDIR, "inputs": {"where": str(tmp_path)}})
    err = failure(services, {"code": "import os\nos.chdir(where)\nraise ValueError('after chdir')", "inputs": {"where": str(tmp_path)}})

    assert out["result"] == os.path.realpath(tmp_path)
    assert "after chdir" in err.message
    assert os.getcwd() == before


@pytest.mark.parametrize("own_cwd", [True, False], ids=["own-directory", "shared-directory"])
def test_every_item_starts_in_the_process_directory(tmp_path, own_cwd):
    """Both ways a worker can keep its directory: its own (Linux) or the process's, put back."""
    if own_cwd and not OWN_CWD:
        pytest.skip("a worker has its own working directory on Linux only")
    compiled = compile(
        "import os\nstart = os.getcwd()\nos.chdir(where)\nmoved = os.getcwd()", "<test>", "exec"
    )
    pool = WorkerPool(own_cwd=own_cwd)
    try:
        seen = []
        for i in range(3):
            target = tmp_path / f"d{i}"
            target.mkdir()
            task = Task(compiled, {"where": str(target)})
            assert pool.run(task, 5.0, None) is None
            assert task.error is None
            seen.append((task.namespace["start"], task.namespace["moved"]))
    finally:
        pool.close()

    assert [s for s, _ in seen] == [os.getcwd()] * 3
    assert [m for _, m in seen] == [os.path.realpath(tmp_path / f"d{i}") for i in range(3)]


@pytest.mark.skipif(not OWN_CWD, reason="a worker has its own working directory on Linux only")
def test_while_code_runs_its_chdir_moves_neither_the_process_nor_other_items(services, tmp_path):
    node = CodeNode("calc")
    moved, checked = threading.Event(), threading.Event()
    mover = (
        "import os\n"
        "os.chdir(where)\n"
        "moved.set()\n"
        "checked.wait(5)\n"
        "result = os.getcwd()"
    )
    watcher = "import os\nmoved.wait(5)\nresult = os.getcwd()\nchecked.set()"
    before = os.getcwd()
    events = {"moved": moved, "checked": checked}

    with ThreadPoolExecutor(max_workers=2) as pool:
        a = pool.submit(run_item, services, {"code": mover, "inputs": {"where": str(tmp_path), **events}}, node, 0)
        b = pool.submit(run_item, services, {"code": watcher, "inputs": events}, node, 1)
        assert moved.wait(5)
        process_cwd_meanwhile = os.getcwd()
        outs = [a.result(timeout=10), b.result(timeout=10)]

    assert process_cwd_meanwhile == before
    assert outs[0]["result"] == os.path.realpath(tmp_path)
    assert outs[1]["result"] == before


def test_cli_a_code_nodes_chdir_does_not_move_later_nodes_paths(run_workflow, tmp_path: Path):
    (tmp_path / "elsewhere").mkdir()
    ir = {
        "nodes": [
            {"id": "move", "type": "code", "params": {"code": CHDIR, "inputs": {"where": "elsewhere"}}},
            {
                "id": "moves",
                "type": "code",
                "params": {"code": "import os\nos.makedirs(d)\n" + CHDIR, "inputs": {"d": "${item}", "where": "${item}"}},
                "batch": {"items": ["b0", "b1", "b2", "b3"], "parallel": True, "max_concurrent": 4},
            },
            {"id": "where", "type": "shell", "params": {"command": "pwd; ls"}},
            {"id": "note", "type": "write-file", "params": {"file_path": "note.txt", "content": "${move.result}"}},
            {"id": "last", "type": "code", "params": {"code": "import os\nresult = os.getcwd()"}},
        ],
        "outputs": {
            "moved_to": {"source": "${move.result}"},
            "batch": {"source": "${moves.results}"},
            "pwd": {"source": "${where.stdout}"},
            "written": {"source": "${note.path}"},
            "last": {"source": "${last.result}"},
        },
    }

    result = run_workflow(ir)

    assert result.code == 0, result
    out = result.json["outputs"]
    home = os.path.realpath(tmp_path)
    assert out["moved_to"] == os.path.join(home, "elsewhere")
    assert [r["result"] for r in out["batch"]] == [os.path.join(home, f"b{i}") for i in range(4)]
    assert out["pwd"].splitlines()[0] == home
    assert out["written"] == os.path.join(home, "note.txt")
    assert (tmp_path / "note.txt").read_text() == os.path.join(home, "elsewhere")
    assert not (tmp_path / "elsewhere" / "note.txt").exists()
    assert out["last"] == home


# ---------------------------------------------------------------------------
# requires


def code_node(requires: Any, code: str = "result = 1") -> dict[str, Any]:
    return {"nodes": [{"id": "calc", "type": "code", "params": {"code": code, "requires": requires}}]}


def test_installed_requirements_pass_and_are_not_imported(tmp_path, monkeypatch):
    package = tmp_path / "plait_probe_pkg"
    package.mkdir()
    marker = tmp_path / "imported"
    (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (package / "sub.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    check = plait.validate(
        code_node(["json", "os.path", "xml.etree.ElementTree", "plait_probe_pkg", "plait_probe_pkg.sub", "PyYAML"])
    )

    assert check.ok, check.problems
    assert not marker.exists()  # looked up, never imported
    assert "plait_probe_pkg" not in sys.modules


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "plait_no_such_module",
            "'requires' needs 'plait_no_such_module', which is not installed for the Python that runs plait",
        ),
        ("sklearn", "-m pip install scikit-learn"),  # the package of a module with another name
        ("json.no_such_part", "-m pip install json"),
        ("pandas>=2", "'requires' entry 'pandas>=2' is not a module name; write the name only ('pandas')"),
        (5, "'requires' lists module names as strings, not int (5)"),
    ],
)
def test_a_missing_requirement_refuses_the_workflow_with_a_pip_hint(entry, message):
    check = plait.validate(code_node(["json", entry]))

    assert not check.ok
    assert len(check.problems) == 1
    problem = check.problems[0]
    assert message in problem.message
    assert problem.path == "nodes[0].params.requires"
    if isinstance(entry, str) and entry.isidentifier():
        assert f"{sys.executable} -m pip install" in problem.message


def test_cli_refuses_to_run_code_that_needs_a_missing_module(run_workflow, tmp_path):
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').close()\nimport plait_no_such_module"

    result = run_workflow(code_node(["plait_no_such_module"], code))

    assert result.code == 2, result
    assert "pip install plait_no_such_module" in result.stdout + result.stderr
    assert not marker.exists()  # refused before anything ran


def test_a_templated_requirement_is_checked_when_the_item_runs(run_workflow):
    ir = {
        "inputs": {"need": {"type": "string"}},
        "nodes": [{"id": "calc", "type": "code", "params": {"code": "result = 1", "requires": ["json", "${need}"]}}],
        "outputs": {"r": {"source": "${calc.result}"}},
    }

    good = run_workflow(ir, "need=email.mime")
    bad = run_workflow(ir, "need=plait_no_such_module")

    assert good.code == 0, good
    assert good.json["outputs"]["r"] == 1
    assert bad.code == 1, bad
    assert "pip install plait_no_such_module" in bad.json["errors"][0]["message"]


# ---------------------------------------------------------------------------
# straight-line code runs in the item's own thread

@pytest.mark.parametrize(
    ("source", "inline"),
    [
        ("result = x * 2", True),
        ("result = {'id': row['id'], 'ok': n > 0, 'tag': f'{n:>4}'}", True),
        ("if __name__ == '__main__':\n    result = 1\nelse:\n    result = 2", True),
        ("try:\n    result = a / b\nexcept ZeroDivisionError:\n    result = None", True),
        ("a, *rest = x\nresult = rest[::2]", True),
        ("raise ValueError", True),
        ("result = len(x)", False),  # a call
        ("result = x.upper()", False),  # a method call
        ("print(x)", False),
        ("import os\nresult = os.getcwd()", False),
        ("while True:\n    pass", False),
        ("for i in x:\n    pass", False),
        ("result = [i for i in x]", False),
        ("def f():\n    return 1\nresult = 1", False),
        ("result = lambda: 1", False),
        ("class A:\n    pass", False),
        ("with x:\n    pass", False),
        ("result = 2 ** n", False),  # huge results from small operands
        ("result = 1 << n", False),
        ("x **= 2", False),
        ("raise KeyboardInterrupt", False),  # what stops a run stays a worker's error
        ("e = BaseException\nraise e", False),
        ("raise __builtins__.__dict__['GeneratorExit']", False),
    ],
)
def test_which_code_runs_in_the_items_own_thread(source, inline):
    assert straight_line(compile(source, "<test>", "exec")) is inline


def test_straight_line_code_with_json_inputs_starts_no_worker(services):
    node = CodeNode("calc")
    outs = [run_item(services, {"code": "result = {'double': x * 2, 'rows': rows}", "inputs": {"x": i, "rows": [{"a": [i]}]}}, node, i) for i in range(5)]

    assert [o["result"]["double"] for o in outs] == [0, 2, 4, 6, 8]
    assert outs[3]["result"]["rows"] == [{"a": [3]}]
    assert all(o["stdout"] == "" and o["stderr"] == "" for o in outs)
    assert code_threads() == []


def test_an_input_that_is_not_json_data_keeps_the_code_on_a_worker(services):
    class Loud:
        def __mul__(self, other: Any) -> str:
            print("multiplied")
            return "done"

    out = run_item(services, {"code": "result = x * 2", "inputs": {"x": Loud()}})

    assert out == {"result": "done", "stdout": "multiplied\n", "stderr": ""}  # its print was captured
    assert code_threads() != []  # a worker ran it
    assert wait_for_code_threads_to_end(services) == []


def test_straight_line_code_changes_only_its_own_copy_of_the_inputs(services):
    shared = {"items": [3, 1, 2]}

    out = run_item(services, {"code": "data['items'][0] = 9\ndata['new'] = 1\nresult = data", "inputs": {"data": shared}})

    assert out["result"] == {"items": [9, 1, 2], "new": 1}
    assert shared == {"items": [3, 1, 2]}
    assert code_threads() == []


def test_errors_of_straight_line_code_read_as_a_workers(services):
    err = failure(services, {"code": "a = 1\nresult = a / b", "inputs": {"b": 0}})
    exited = run_item(services, {"code": "result = 'early'\nraise SystemExit\nresult = 'late'"})

    assert err.message == "line 2: ZeroDivisionError: division by zero\n    2 | result = a / b"
    assert not err.retryable
    assert err.outputs is not None
    assert err.outputs["result"] is None
    assert err.outputs["stderr"].startswith("Traceback (most recent call last):\n")
    assert "plait/nodes/code.py" not in err.outputs["stderr"]
    assert "    result = a / b\nZeroDivisionError: division by zero\n" in err.outputs["stderr"]
    assert exited["result"] == "early"
    assert code_threads() == []


def test_straight_line_code_that_outlasts_its_timeout_fails_as_timed_out(services):
    # Straight-line, but one operation on a large value takes far longer than 0.1 ms.
    err = failure(services, {"code": "s = x * 20_000_000\nresult = len", "inputs": {"x": "ab"}, "timeout": 0.0001})

    assert err.message == "timed out after 0.0001s (the 'timeout' param)"
    assert err.retryable
    assert err.outputs == {"result": None, "stdout": "", "stderr": ""}
    assert code_threads() == []


def test_a_syntax_error_in_code_as_written_is_found_before_anything_runs(tmp_path):
    marker = tmp_path / "ran"
    workflow = {
        "nodes": [
            {"id": "first", "type": "write-file", "params": {"file_path": str(marker), "content": "x"}},
            {"id": "calc", "type": "code", "params": {"code": "x = 1\nif x > 0\n    result = x"}},
        ]
    }

    check = plait.validate(workflow)

    assert not check.ok
    (problem,) = check.problems
    assert problem.path == "nodes[1].params.code"
    assert problem.message == "line 2: SyntaxError: expected ':'\n    2 | if x > 0\n      |         ^"
    with pytest.raises(WorkflowInvalid) as refused:
        plait.run(workflow)
    assert [p.path for p in refused.value.problems] == ["nodes[1].params.code"]
    assert not marker.exists()  # refused whole: the first node did not run either
    # code holding a template is compiled once it is resolved, at run time
    templated = {"nodes": [{"id": "calc", "type": "code", "params": {"code": "result = '${x}' +"}}],
                 "inputs": {"x": {"type": "string", "default": "a"}}}
    assert plait.validate(templated).ok
