"""Shell node benchmarks (issue 9: shell values are data).

Run: python benchmarks/bench_shell.py [--quick]

Per-item cost through the real CLI: the batch node's duration as the run reports
it (``-o json``), divided by N, so start-up is left out. The floor is a bare
``subprocess.run([bash, "-c", ...], capture_output=True)`` loop in this process,
measured in the same run, interleaved with the plait runs (best of 5 each).
Also shown: what the bash-grammar analysis costs (once per distinct command),
and what a ``preexec_fn`` (the usual way to set PR_SET_PDEATHSIG) would cost per
command by taking away the vfork path.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
import time

from _common import ROOT, run_workflow, table

QUICK = "--quick" in sys.argv
BASH = shutil.which("bash") or "/bin/sh"


def batch(command: str, n: int) -> dict:
    return {
        "inputs": {"n": {"type": "integer"}},
        "nodes": [
            {"id": "gen", "type": "code", "params": {"code": "result = list(range(n))", "inputs": {"n": "${n}"}}},
            {"id": "s", "type": "shell", "params": {"command": command}, "batch": {"items": "${gen.result}"}},
        ],
        "outputs": {"count": {"source": "${s.success_count}"}},
    }


def plait_ms(raw: dict, n: int) -> float:
    # the batch node's own duration as the run reports it: the whole per-item path
    # (templates, the node, the engine) without the CLI's start-up and its noise
    _, out = run_workflow(raw, f"n={n}")
    assert out["outputs"] == {"count": n}, out["outputs"]
    return out["nodes"]["s"]["duration_ms"] / n


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def plait_cpu_ms(raw: dict, n: int) -> float:
    """CPU (user + sys) of plait and everything it started, per item, start-up taken out."""
    c0 = _cpu(resource.RUSAGE_CHILDREN)
    run_workflow(raw, f"n={n}")
    c1 = _cpu(resource.RUSAGE_CHILDREN)
    run_workflow(raw, "n=0")
    c2 = _cpu(resource.RUSAGE_CHILDREN)
    return ((c1 - c0) - (c2 - c1)) / n * 1e3


def floor_cpu_ms(argv_of: object, n: int) -> float:
    s0, c0 = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    floor_ms(argv_of, n)
    return ((_cpu(resource.RUSAGE_SELF) - s0) + (_cpu(resource.RUSAGE_CHILDREN) - c0)) / n * 1e3


def floor_ms(argv_of: object, n: int, **kw: object) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        subprocess.run(argv_of(i), capture_output=True, check=True, **kw)  # type: ignore[operator, call-overload]
    return (time.perf_counter() - t0) / n * 1e3


def best(fn: object, repeat: int = 3) -> float:
    return min(fn() for _ in range(repeat))  # type: ignore[operator]


def main() -> None:
    sys.path.insert(0, str(ROOT / "src"))
    n = 300 if QUICK else 1_000
    cases = [
        ("`echo ${item}` (bash, value as data)", "echo ${item}", lambda i: [BASH, "-c", f"echo {i}"]),
        (
            "`printf '%s' \"${item}\" | wc -c` (bash, pipeline)",
            "printf '%s' \"${item}\" | wc -c",
            lambda i: [BASH, "-c", f"printf '%s' \"{i}\" | wc -c"],
        ),
        ("`basename x${item}` (plain words: run without bash)", "basename x${item}", lambda i: [BASH, "-c", f"basename x{i}"]),
    ]
    rows = []
    cpu_rows: list[list[str]] = []
    for label, command, argv_of in cases:
        raw = batch(command, n)
        got: list[float] = []
        floors: list[float] = []
        for _ in range(5):  # interleaved, so a busy moment hits both
            got.append(plait_ms(raw, n))
            floors.append(floor_ms(argv_of, n))
        p, f = min(got), min(floors)
        goal = 1.15
        rows.append([label, f"{p:.3f} ms", f"{f:.3f} ms", f"{p / f:.2f}x", f"≤ {goal}x", "yes" if p / f <= goal else "NO"])
        pc = min(plait_cpu_ms(raw, n) for _ in range(3))
        fc = min(floor_cpu_ms(argv_of, n) for _ in range(3))
        cpu_rows.append([label, f"{pc:.3f} ms", f"{fc:.3f} ms", f"{pc / fc:.2f}x"])
    table(
        f"Shell node, wall per item ({n:,} items, sequential; floor: subprocess.run of bash -c; best of 5, interleaved)",
        ["command", "plait", "floor", "÷ floor", "goal", "met"],
        rows,
    )
    table(
        "The same, CPU per item (user + sys of every process involved; steadier on a busy machine; best of 3)",
        ["command", "plait", "floor", "÷ floor"],
        cpu_rows,
    )

    # The analysis: tree-sitter's import (once per process) and one parse per distinct command.
    code = (
        "import time\n"
        "from plait.nodes import shell_syntax as s\n"
        "t=time.perf_counter()\n"
        "a=s.analyse(('for f in ', '; do cat \"$f\" | grep -c ', ' > \"$f.n\"; done'))\n"
        "t1=time.perf_counter()\n"
        "k=200\n"
        "for i in range(k): s._Analyser(('echo ', ' | tr a-z A-Z > ', str(i))).run()\n"
        "t2=time.perf_counter()\n"
        "for i in range(k*50): s.analyse(('echo ', ' | tr a-z A-Z > ', '0'))\n"
        "t3=time.perf_counter()\n"
        "print((t1-t)*1e3, (t2-t1)/k*1e6, (t3-t2)/(k*50)*1e6)\n"
    )
    first, parse_us, cached_us = map(
        float,
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONPATH": str(ROOT / "src")}
        ).stdout.split(),
    )
    table(
        "Bash-grammar analysis",
        ["measure", "time"],
        [
            ["first analysis in a process (imports tree-sitter + grammar)", f"{first:.1f} ms"],
            ["one more distinct command (parse + judge)", f"{parse_us:.0f} µs"],
            ["the same command again (cached; every batch item)", f"{cached_us:.2f} µs"],
        ],
    )

    # Why no preexec_fn: it takes Popen off the vfork path, for every command.
    import plait.cli
    import plait.runtime  # noqa: F401

    m = 300 if QUICK else 1_000
    argv = ["/bin/true"] if shutil.which("true") == "/bin/true" else [shutil.which("true") or "true"]
    plain = best(lambda: floor_ms(lambda i: argv, m, process_group=0))
    hooked = best(lambda: floor_ms(lambda i: argv, m, process_group=0, preexec_fn=_noop))
    table(
        "Starting a command (`true`), per command",
        ["how", "time"],
        [
            ["Popen, vfork path (what plait does; a helper process covers kill -9)", f"{plain:.3f} ms"],
            ["Popen with a preexec_fn (for PR_SET_PDEATHSIG): fork path", f"{hooked:.3f} ms ({hooked / plain:.2f}x)"],
        ],
    )


def _noop() -> None:
    pass


if __name__ == "__main__":
    main()
