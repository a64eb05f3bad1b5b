"""The dask executor on real LocalClusters: threads for speed, worker processes
where it matters (nothing but plain data crosses, environments differ, a worker
can be killed). The batch semantics themselves are the conformance suite's."""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import plait
from conftest import Result, plait_env, popen_cli
from plait.runtime.events import Event, ItemFinished, NodeStarted, RunStarted

pytest.importorskip("distributed")

import dask_cluster

HERE = Path(__file__).parent
PROBE = str(HERE / "probe_nodes.py")
DASK_NODES = str(HERE / "dask_nodes.py")


@pytest.fixture(scope="session", autouse=True)
def _dask_cluster_closed() -> Iterator[None]:
    yield
    dask_cluster.close_shared()


@pytest.fixture
def threads_cluster() -> Iterator[Any]:
    """The session's thread cluster, with plait pointed at it."""
    cluster = dask_cluster.shared_threads()
    with dask_cluster.scheduler(cluster.scheduler_address):
        yield cluster


@pytest.fixture(scope="module")
def processes() -> Iterator[Any]:
    """Two worker processes of one thread each, with an environment of their own."""
    import logging

    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address="127.0.0.1:0",
        silence_logs=logging.CRITICAL,
        env={"PLAIT_TEST_SECRET": "from-the-worker"},
    )
    client = Client(cluster, set_as_default=False)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture
def on_processes(processes: Any) -> Iterator[Any]:
    with dask_cluster.scheduler(processes.scheduler.address):
        yield processes


def batch(items: list[Any], node: dict[str, Any], **options: Any) -> dict[str, Any]:
    return {
        "nodes": [
            {**node, "id": node.get("id", "b"), "batch": {"items": items, "parallel": True, "max_concurrent": 8, **options}}
        ]
    }


def without_timing(outputs: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(outputs))
    out["batch_metadata"].pop("timing")
    return out


# -- what Dask costs a run that does not use it


def test_dask_is_imported_only_by_a_batch_that_runs_on_it(tmp_path: Path) -> None:
    script = """
import io, json, sys
from contextlib import redirect_stdout
from plait._entry import main
sys.argv = ["plait", "--version"]
with redirect_stdout(io.StringIO()):
    main()
after_version = sorted(m for m in sys.modules if m.split(".")[0] in ("dask", "distributed"))
import plait
wf = {"nodes": [{"id": "e", "type": "echo", "params": {"v": "${item}"},
                 "batch": {"items": [1, 2, 3], "parallel": True, "executor": "auto"}}]}
assert plait.run(wf).ok
check = plait.validate({**wf, "executor": "dask"})
assert check.ok, check.problems
after_run = sorted(m for m in sys.modules if m.split(".")[0] in ("dask", "distributed"))
print(json.dumps([after_version, after_run]))
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=plait_env(), cwd=tmp_path, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [[], []]


def test_without_dask_installed_the_dask_executor_says_how_to_get_it(tmp_path: Path) -> None:
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(batch([1], {"type": "echo", "params": {"v": "${item}"}})))
    script = f"""
import sys
class Hidden:  # as if Dask were not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("dask", "distributed"):
            raise ModuleNotFoundError(f"No module named {{name!r}}")
sys.meta_path.insert(0, Hidden())
sys.argv = ["plait", "run", {str(wf)!r}, "--executor", "dask", "--no-record"]
from plait._entry import main
main()
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=plait_env(), cwd=tmp_path, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    assert "the dask executor needs Dask's distributed package" in proc.stderr
    assert "pip install 'plait[dask]'" in proc.stderr


# -- the same batch, the same answers


def _mixed(tmp: Path) -> dict[str, Any]:
    # Successes, a node error, a raised exception, a flaky item that succeeds on its
    # third try, a template reading an input and another node's output.
    items = [
        {"v": i, "fail": i == 3, "boom": i == 5, "flaky": 2 if i == 7 else 0, "marker": str(tmp / f"m{i}")}
        for i in range(12)
    ]
    return {
        "inputs": {"greeting": {"type": "string", "default": "hi"}},
        "nodes": [
            {"id": "first", "type": "echo", "params": {"word": "${greeting}"}},
            {
                "id": "b",
                "type": "probe",
                "params": {
                    "value": "${first.word}-${item.v}",
                    "fail": "${item.fail}",
                    "boom": "${item.boom}",
                    "fail_times": "${item.flaky}",
                    "marker": "${item.marker}",
                },
                "batch": {
                    "items": items,
                    "parallel": True,
                    "max_concurrent": 4,
                    "max_retries": 3,
                    "error_handling": "continue",
                },
            },
        ],
        "edges": [{"from": "first", "to": "b"}],
    }


def test_threads_and_dask_give_the_same_results_and_errors(threads_cluster: Any, tmp_path: Path) -> None:
    answers = {}
    for executor in ("threads", "dask"):
        for marker in tmp_path.glob("m*"):  # the flaky item fails twice again
            marker.unlink()
        events: list[Event] = []
        result = plait.run(_mixed(tmp_path), executor=executor, nodes=[PROBE], on_event=events.append)
        assert result.status == "partial", result.errors  # finished, with the failed items recorded
        finished = sorted((e.index, e.attempt) for e in events if isinstance(e, ItemFinished) and e.loc.node_id == "b")
        answers[executor] = (without_timing(result.outputs), finished)
    assert answers["threads"] == answers["dask"]
    outputs = answers["dask"][0]
    assert [e["index"] for e in outputs["errors"]] == [3, 5]
    assert outputs["errors"][1]["error"] == "RuntimeError: boom hi-5"
    assert outputs["results"][7]["attempts"] == 3


def test_fail_fast_cancels_what_has_not_started(threads_cluster: Any, tmp_path: Path) -> None:
    from distributed import Client

    items = [{"v": i, "f": i == 5, "s": 0.0 if i == 5 else 0.05} for i in range(400)]
    wf = batch(
        items,
        {"type": "probe", "params": {"value": "${item.v}", "fail": "${item.f}", "sleep": "${item.s}",
                                     "log": str(tmp_path / "log.txt")}},
    )
    result = plait.run(wf, executor="dask", nodes=[PROBE])
    assert result.status == "failed"
    assert result.errors[0]["index"] == 5
    started = [line for line in (tmp_path / "log.txt").read_text().splitlines() if line.startswith("start")]
    assert len(started) < 100
    with Client(threads_cluster.scheduler_address, set_as_default=False) as client:
        # No chunk was left queued on the scheduler, nor its result kept.
        assert dask_cluster.plait_tasks(client) == {}


def test_chunks_grow_and_the_scheduler_holds_only_a_few_at_a_time(threads_cluster: Any) -> None:
    from distributed import Client, get_task_stream

    seen: list[int] = []
    done = threading.Event()
    with Client(threads_cluster.scheduler_address, set_as_default=False) as client:

        def sample() -> None:
            deadline = time.monotonic() + 60
            while not done.is_set() and time.monotonic() < deadline:
                held = dask_cluster.plait_tasks(client)
                # Waiting or running; a finished one is only held until its result is read.
                seen.append(sum(state != "memory" for state in held.values()))
                time.sleep(0.005)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        wf = batch(list(range(20_000)), {"type": "echo", "params": {"v": "${item}"}})
        try:
            with get_task_stream(client) as stream:
                result = plait.run(wf, executor="dask")
        finally:
            done.set()
            sampler.join(timeout=5)
        keys = {t["key"] for t in stream.data if str(t["key"]).startswith("plait-chunk-")}
    assert result.ok
    assert [r["v"] for r in result.outputs["results"]] == list(range(20_000))
    # 4 worker threads, two chunks each at most; 20,000 items in far fewer tasks than items.
    assert max(seen) <= 8
    assert len(keys) < 400


# -- worker processes: plain data only, their own environment


class _PlainOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"not plain data: {module}.{name}")


def test_what_is_shipped_is_plain_data(tmp_path: Path) -> None:
    from plait.nodes.registry import Registry
    from plait.runtime.compile import compile_raw
    from plait.runtime.executors import Job
    from plait.runtime.executors.dask import job_spec
    from plait.runtime.services import RunServices

    registry = Registry()
    registry.load_path(PROBE)
    raw = {
        "nodes": [
            {"id": "big", "type": "echo", "params": {"rows": "${huge}"}},
            {"id": "b", "type": "probe", "params": {"value": "${item}-${small}-${env.HOME}"},
             "batch": {"items": list(range(1000)), "parallel": True}},
        ],
        "inputs": {"small": {"type": "string"}, "huge": {"type": "array"}},
    }
    compiled = compile_raw(raw, registry)
    services = RunServices(registry)
    base = {"small": "s", "huge": list(range(10_000)), "big": {"rows": [1, 2]}}
    job = Job(node=compiled.nodes["b"], base=base, services=services, run=lambda a, s: None, workflow=compiled)  # type: ignore[arg-type,return-value]
    spec = job_spec(job, "k")
    _PlainOnly(io.BytesIO(pickle.dumps(spec))).load()  # raises on anything but builtins
    assert spec["base"] == {"small": "s"}  # only what the node's templates read; env stays behind
    assert spec["ir"]["nodes"][1]["batch"]["items"] == []  # items go in chunks
    assert spec["node_files"][0][0] == str(Path(PROBE).resolve())


def test_env_templates_resolve_from_the_workers_environment(on_processes: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLAIT_TEST_SECRET", "from-the-driver")
    wf = batch([1, 2, 3], {"type": "code", "params": {
        "code": "import os\nresult = [secret, os.getpid()]", "inputs": {"secret": "${env.PLAIT_TEST_SECRET}"}}})
    result = plait.run(wf, executor="dask")
    assert result.ok, result.errors
    values = [r["result"] for r in result.outputs["results"]]
    assert {v[0] for v in values} == {"from-the-worker"}
    assert os.getpid() not in {v[1] for v in values}  # it ran in the worker processes


def test_custom_nodes_load_on_the_workers_even_when_the_file_is_gone(on_processes: Any, tmp_path: Path) -> None:
    node_file = tmp_path / "my_nodes.py"
    node_file.write_text((HERE / "dask_nodes.py").read_text())

    def remove_file(event: Event) -> None:
        # The driver has loaded it; the workers have not seen it yet.
        if isinstance(event, NodeStarted) and node_file.exists():
            node_file.unlink()

    wf = batch([1, 2, 3, 4], {"type": "usage-probe", "params": {"tokens": "${item}"}})
    result = plait.run(wf, executor="dask", nodes=[node_file], on_event=remove_file)
    assert not node_file.exists()
    assert result.ok, result.errors
    assert [r["tokens"] for r in result.outputs["results"]] == [1, 2, 3, 4]
    assert os.getpid() not in {r["pid"] for r in result.outputs["results"]}
    # Usage recorded on the workers reaches the batch's and the run's ledgers.
    expected = {"calls": 4, "input_tokens": 10, "output_tokens": 20, "cost_usd": 0.004}
    assert result.outputs["batch_metadata"]["llm_usage"] == expected
    assert result.llm_usage == expected


def test_a_node_that_cannot_be_set_up_on_a_worker_fails_its_batch_saying_why(
    on_processes: Any, tmp_path: Path
) -> None:
    node_file = tmp_path / "picky_nodes.py"
    source = (HERE / "dask_nodes.py").read_text().replace("from __future__ import annotations\n", "")
    node_file.write_text(
        "import os\n"
        "if os.environ.get('PLAIT_TEST_SECRET') == 'from-the-worker':\n"
        "    raise ImportError('this library is not installed on the workers')\n" + source
    )
    wf = batch([1, 2], {"type": "usage-probe", "params": {"tokens": "${item}"}})
    result = plait.run(wf, executor="dask", nodes=[node_file])
    assert result.status == "failed"
    message = result.errors[0]["message"]
    assert "the Dask worker could not set node 'b' up" in message
    assert "this library is not installed on the workers" in message


def test_a_batch_of_sub_workflows_tells_their_events_and_usage(on_processes: Any) -> None:
    child = {
        "inputs": {"n": {"type": "integer"}},
        "nodes": [
            {"id": "u", "type": "usage-probe", "params": {"tokens": "${n}"}},
            # A batch asking for dask inside an item on a worker runs there, on threads.
            {"id": "inner", "type": "echo", "params": {"v": "${item}"},
             "batch": {"items": [1, 2], "parallel": True, "executor": "dask"}},
        ],
        "edges": [{"from": "u", "to": "inner"}],
        "outputs": {"tokens": {"source": "${u.tokens}"}, "inner": {"source": "${inner.success_count}"}},
    }
    wf = batch([1, 2, 3], {"type": "workflow", "params": {"workflow_ir": child, "inputs": {"n": "${item}"}}})
    events: list[Event] = []
    result = plait.run(wf, executor="dask", nodes=[DASK_NODES], on_event=events.append)
    assert result.ok, result.errors
    assert [(r["tokens"], r["inner"]) for r in result.outputs["results"]] == [(1, 2), (2, 2), (3, 2)]
    assert result.llm_usage["input_tokens"] == 6
    nested = sorted(str(e.loc) for e in events if isinstance(e, ItemFinished) and e.loc.path)
    assert nested == ["b[0]/inner"] * 2 + ["b[0]/u"] + ["b[1]/inner"] * 2 + ["b[1]/u"] + ["b[2]/inner"] * 2 + ["b[2]/u"]
    assert sorted(e.path for e in events if isinstance(e, RunStarted) and e.path) == [
        (("b", 0),), (("b", 1),), (("b", 2),)
    ]


def test_the_command_line_points_at_a_scheduler(processes: Any, plait: Callable[..., Result], tmp_path: Path) -> None:
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(batch([1, 2, 3], {"type": "usage-probe", "params": {"tokens": "${item}"}})))
    res = plait("run", str(wf), "--scheduler", processes.scheduler.address, "--nodes", DASK_NODES, "-o", "json", "-q")
    assert res.code == 0, res
    out = res.json
    assert [r["tokens"] for r in out["outputs"]["results"]] == [1, 2, 3]
    assert out["llm_usage"]["input_tokens"] == 6
    shown = plait("show", "last", "--json")
    assert shown.code == 0, shown


def test_an_unreachable_scheduler_is_a_clear_error(plait: Callable[..., Result], tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(batch([1], {"type": "echo", "params": {"v": "${item}"}})))
    res = plait("run", str(wf), "--scheduler", f"tcp://127.0.0.1:{port}", env={"PLAIT_DASK_TIMEOUT": "0.5"})
    assert res.code == 2, res
    assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}" in res.stderr
    # a refused connection is said at once by a probe (the client retries for its whole
    # timeout, 30 s by default, and then says only that it timed out)
    res = plait("run", str(wf), "--scheduler", f"127.0.0.1:{port}", env={"PLAIT_DASK_TIMEOUT": "30"})
    assert res.code == 2, res
    assert "nothing listens there (connection refused)" in res.stderr
    assert "PLAIT_DASK_SCHEDULER" in res.stderr


def test_without_a_scheduler_a_local_cluster_runs_the_run_and_is_closed(tmp_path: Path) -> None:
    import psutil

    wf = batch([1, 2], {"type": "code", "params": {"code": "import os\nresult = os.getpid()"}})
    wf["nodes"].append(
        {"id": "again", "type": "code", "params": {"code": "import os\nresult = os.getpid()"},
         "batch": {"items": [1], "parallel": True, "executor": "dask"}}
    )
    wf["edges"] = [{"from": "b", "to": "again"}]
    os.environ.pop("PLAIT_DASK_SCHEDULER", None)
    os.environ["PLAIT_DASK_WORKERS"] = "1"
    try:
        result = plait.run(wf, executor="dask")
    finally:
        os.environ.pop("PLAIT_DASK_WORKERS", None)
    assert result.ok, result.errors
    pids = {r["result"] for r in result.values["b"]["results"]} | {r["result"] for r in result.values["again"]["results"]}
    assert len(pids) == 1 and os.getpid() not in pids  # one worker process, the same for both batches
    from plait.runtime.executors import dask as dask_executor

    assert dask_executor._connections == {}
    worker = next(iter(pids))
    deadline = time.monotonic() + 10
    while True:  # the run's end closed the cluster: its worker process is gone
        try:
            gone = psutil.Process(worker).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            gone = True
        if gone or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert gone


def test_ctrl_c_stops_the_items_running_on_worker_processes(processes: Any, tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    wf = tmp_path / "wf.json"
    # Items that would sleep a minute unless the run is cancelled on the worker too.
    wf.write_text(json.dumps(batch(list(range(8)), {"type": "probe", "params": {
        "value": "${item}", "sleep": 60, "log": str(log)}}, max_concurrent=2)))
    proc = popen_cli("run", str(wf), "--scheduler", processes.scheduler.address, "--nodes", PROBE, "-q", cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while not (log.exists() and log.read_text().count("start") >= 2) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert log.exists(), proc.stderr
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    # Both items that were running stopped sleeping and ended, long before their minute.
    deadline = time.monotonic() + 20
    while log.read_text().count("end") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = log.read_text().splitlines()
    assert sum(line.startswith("start") for line in lines) == 2
    assert sum(line.startswith("end") for line in lines) == 2


# -- a worker dies mid-batch


def test_a_worker_killed_mid_batch_has_its_items_run_elsewhere(on_processes: Any, tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    code = (
        "import os, time\n"
        "with open(log, 'a') as f: f.write(f'start {i} {os.getpid()}\\n')\n"
        "time.sleep(0.25)\n"
        "with open(log, 'a') as f: f.write(f'end {i} {os.getpid()}\\n')\n"
        "result = i * 10"
    )
    wf = batch(list(range(16)), {"type": "code", "params": {"code": code, "inputs": {"i": "${item}", "log": str(log)}}},
               max_concurrent=4)
    workers = set(on_processes.run(os.getpid).values())
    killed: list[tuple[int, int]] = []

    def kill_one_mid_item() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            lines = log.read_text().splitlines() if log.exists() else []
            ended = {line.split()[1] for line in lines if line.startswith("end")}
            for line in lines:
                word, index, pid = line.split()
                if word == "start" and index not in ended and int(pid) in workers:
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append((int(index), int(pid)))
                    return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one_mid_item, daemon=True)
    killer.start()
    result = plait.run(wf, executor="dask")
    killer.join(timeout=5)
    assert killed, "no item was seen running"
    assert result.ok, result.errors
    results = result.outputs["results"]
    assert [r["index"] for r in results] == list(range(16))  # each exactly once
    assert [r["result"] for r in results] == [i * 10 for i in range(16)]
    index, pid = killed[0]
    runs = [line.split()[2] for line in log.read_text().splitlines() if line.startswith(f"start {index} ")]
    assert runs[0] == str(pid) and len(runs) == 2 and runs[1] != str(pid)  # its side effect happened twice


def test_an_item_that_kills_its_worker_fails_alone() -> None:
    import logging

    import dask
    from distributed import LocalCluster

    # Dask gives up on a task at the first worker it kills (the default is the third).
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0",
            silence_logs=logging.CRITICAL,
        )
    try:
        code = "import os, time\ntime.sleep(0.01)\nif i == 30:\n    os._exit(1)\nresult = i"
        wf = batch(list(range(40)), {"type": "code", "params": {"code": code, "inputs": {"i": "${item}"}}},
                   error_handling="continue")
        with dask_cluster.scheduler(cluster.scheduler_address):
            result = plait.run(wf, executor="dask")
    finally:
        cluster.close()
    assert result.status == "partial", result.errors
    out = result.outputs
    assert [e["index"] for e in out["errors"]] == [30]
    assert "the Dask worker running this item died" in out["errors"][0]["error"]
    # The items that shared its chunk were run again on their own, and succeeded.
    assert [r["result"] for r in out["results"] if r["index"] != 30] == [i for i in range(40) if i != 30]
