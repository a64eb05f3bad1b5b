"""The shell node (SPEC §8): template values reach bash as data, never as code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import plait_env, run_cli

Run = Callable[..., Any]
Write = Callable[..., str]

NASTY = "a$(touch pwned);touch pwned2;'x\"; touch pwned3; \""

# The same value standing in every quoting context of a command.
CONTEXTS = {
    "unquoted": "echo ${v}",
    "double": 'echo "${v}"',
    "single": "echo '${v}'",
    "subst": "echo $(echo ${v})",
    "subst_double": 'echo "$(echo "${v}")"',
    "backticks": "echo `echo ${v}`",
    "ansi_c": "echo $'>\\t'${v}$'<${v}>'",
    "default": "echo ${UNSET_PLAIT_VAR:-${v}}",
    "mixed": "echo \"[${v}]\" '[${v}]' [${v}]",
}
EXPECTED = {
    "unquoted": NASTY,
    "double": NASTY,
    "single": NASTY,
    "subst": NASTY,
    "subst_double": NASTY,
    "backticks": NASTY,
    "ansi_c": f">\t{NASTY}<{NASTY}>",
    "default": NASTY,
    "mixed": f"[{NASTY}] [{NASTY}] [{NASTY}]",
}


def no_pwned(tmp_path: Path) -> None:
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("pwned")) == []


def sh(node_id: str, command: str, **params: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "shell", "params": {"command": command, **params}}


def test_value_from_an_input_is_printed_in_every_context(
    plait: Run, workflow: Write, tmp_path: Path
) -> None:
    wf = {
        "inputs": {"v": {"type": "string"}},
        "nodes": [sh(name, command) for name, command in CONTEXTS.items()],
        "outputs": {name: {"source": f"${{{name}.stdout}}"} for name in CONTEXTS},
    }
    r = plait("run", "-o", "json", workflow(wf), f"v={NASTY}")
    assert r.code == 0, r
    assert r.json["outputs"] == EXPECTED  # strip_newline (default) took echo's newline
    no_pwned(tmp_path)


def test_value_from_a_batch_item_is_printed_in_every_context(
    plait: Run, workflow: Write, tmp_path: Path
) -> None:
    wf = {
        "nodes": [
            {**sh(name, command.replace("${v}", "${item}")), "batch": {"items": [NASTY, "plain"]}}
            for name, command in CONTEXTS.items()
        ],
        "outputs": {name: {"source": f"${{{name}.results}}"} for name in CONTEXTS},
    }
    r = plait("run", "-o", "json", workflow(wf))
    assert r.code == 0, r
    for name, text in EXPECTED.items():
        results = r.json["outputs"][name]
        assert results[0]["stdout"] == text, name
        assert results[1]["stdout"] == text.replace(NASTY, "plain"), name
    no_pwned(tmp_path)


def test_value_from_another_nodes_output(plait: Run, workflow: Write, tmp_path: Path) -> None:
    # The value arrives the way an HTTP response would: as another node's output.
    wf = {
        "nodes": [
            {"id": "src", "type": "echo", "params": {"payload": {"name": NASTY}}},
            sh("use", "printf '%s|%s' ${src.payload.name} \"${src.payload.name}\""),
        ]
    }
    r = plait("run", workflow(wf))
    assert r.code == 0, r
    assert r.stdout == f"{NASTY}|{NASTY}\n"
    no_pwned(tmp_path)


@pytest.mark.parametrize(
    "value",
    [
        "$(touch pwned)",
        "`touch pwned`",
        "'; touch pwned; '",
        '"; touch pwned; "',
        "$HOME ${HOME}",
        "*",
        "a  b\tc",
        "line1\nline2",
        "\\n \\\\ \\",
        "ünïcödé ✓",
        "",
        "}{)(][",
    ],
)
def test_values_keep_every_character(plait: Run, workflow: Write, tmp_path: Path, value: str) -> None:
    (tmp_path / "somefile").write_text("")  # a glob that expanded would show it
    wf = {
        "inputs": {"v": {"type": "string"}},
        "nodes": [sh("p", "printf '<%s>' ${v} \"${v}\" '${v}'")],
    }
    r = plait("run", workflow(wf), f"v={value}")
    assert r.code == 0, r
    assert r.stdout == f"<{value}>" * 3 + "\n"
    no_pwned(tmp_path)


def test_whole_value_list_and_object_render_as_json(plait: Run, workflow: Write) -> None:
    wf = {
        "inputs": {"data": {"type": "object"}},
        "nodes": [sh("p", "printf '%s' ${data}")],
    }
    r = plait("run", workflow(wf), 'data={"a": [1, true, null]}')
    assert r.code == 0, r
    assert r.stdout == '{"a": [1, true, null]}\n'


# -- shell syntax is left to bash -----------------------------------------------------


def test_shell_parameter_expansion_reaches_bash(plait: Run, workflow: Write) -> None:
    wf = {"nodes": [sh("p", "arr=(a b c); echo ${HOME:-x} ${#arr[@]} ${UNSET_PLAIT_VAR:-dflt}")]}
    r = plait("run", workflow(wf), env={"HOME": "/home/tester"})
    assert r.code == 0, r
    assert r.stdout == "/home/tester 3 dflt\n"


def test_double_dollar_passes_a_shell_variable(plait: Run, workflow: Write) -> None:
    wf = {"nodes": [sh("p", "X=inner; echo $${X} $X")]}
    r = plait("run", workflow(wf))
    assert r.code == 0, r
    assert r.stdout == "inner inner\n"


def test_env_template_passes_the_value(plait: Run, workflow: Write) -> None:
    wf = {"nodes": [sh("p", "echo ${env.PLAIT_TEST_SECRET}")]}
    r = plait("run", workflow(wf), env={"PLAIT_TEST_SECRET": "$(touch pwned)"})
    assert r.code == 0, r
    assert r.stdout == "$(touch pwned)\n"


def test_comment_with_a_quote_does_not_confuse_later_values(plait: Run, workflow: Write) -> None:
    wf = {
        "inputs": {"v": {"type": "string"}},
        "nodes": [sh("p", "echo start # it's a comment\necho ${v}")],
    }
    r = plait("run", workflow(wf), "v=x y")
    assert r.code == 0, r
    assert r.stdout == "start\nx y\n"


def test_heredoc_body_gets_the_value_as_is(plait: Run, workflow: Write, tmp_path: Path) -> None:
    wf = {
        "inputs": {"v": {"type": "string"}},
        "nodes": [sh("p", "cat <<EOF\nvalue: ${v}\nit's fine\nEOF\necho after ${v}")],
    }
    r = plait("run", workflow(wf), f"v={NASTY}")
    assert r.code == 0, r
    assert r.stdout == f"value: {NASTY}\nit's fine\nafter {NASTY}\n"
    no_pwned(tmp_path)


def test_template_in_a_quoted_heredoc_is_refused(plait: Run, workflow: Write) -> None:
    wf = {"inputs": {"v": {}}, "nodes": [sh("p", "cat <<'EOF'\n${v}\nEOF")]}
    r = plait("run", workflow(wf), "v=x")
    assert r.code == 2  # refused when the workflow is checked, before anything runs
    assert "command line 2, column 1 (${v})" in r.stderr
    assert "quoted heredoc" in r.stderr


# -- arithmetic evaluates text: only integers may go there --------------------------

ARITHMETIC = [
    "echo $(( ${v} + 1 ))",
    'echo $(( "${v}" + 1 ))',
    "(( ${v} > 1 )); echo done",
    "a=(x y z); echo $${a[${v}]}",
    "s=abcdef; echo ${s:${v}}",
    "[[ ${v} -eq 1 ]]; echo done",
    '[[ 1 -lt "${v}" ]]; echo done',
    "a[${v}]=1; echo done",
    "a=(x y); a+=([${v}]=z); echo done",
    "a=(x y z); echo ${a[@]:${v}}",
    'let "n = ${v}"; echo done',
    "declare -i n=${v}; echo done",
]


@pytest.mark.parametrize("command", ARITHMETIC)
def test_arithmetic_refuses_a_value_that_is_not_an_integer(
    plait: Run, workflow: Write, tmp_path: Path, command: str
) -> None:
    wf = {"inputs": {"v": {"type": "string"}}, "nodes": [sh("p", command)]}
    r = plait("run", workflow(wf), "v=a[$(touch pwned)]")
    assert r.code == 1, r
    assert "must be an integer" in r.stderr
    no_pwned(tmp_path)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("echo $(( ${v} + 1 ))", "3"),
        ("(( ${v} > 1 )) && echo big", "big"),
        ("a=(x y z); echo $${a[${v}]}", "z"),
        ("s=abcdef; echo ${s:${v}}", "cdef"),
        ("[[ ${v} -eq 2 ]] && echo two", "two"),
        ("[[ ${v} == 2 ]] && echo string-compare", "string-compare"),
        ("a[${v}]=z; echo $${a[2]}", "z"),
        ("a=(x y z); echo ${a[@]:${v}}", "z"),
        ("let n=${v}+1; echo $n", "3"),
    ],
)
def test_arithmetic_accepts_integers(plait: Run, workflow: Write, command: str, expected: str) -> None:
    wf = {"inputs": {"v": {"type": "integer"}}, "nodes": [sh("p", command)]}
    r = plait("run", workflow(wf), "v=2")
    assert r.code == 0, r
    assert r.stdout == expected + "\n"


def test_string_comparison_in_double_brackets_takes_any_value(
    plait: Run, workflow: Write, tmp_path: Path
) -> None:
    wf = {"inputs": {"v": {}}, "nodes": [sh("p", '[[ ${v} == "x" ]] || echo "no: ${v}"')]}
    r = plait("run", workflow(wf), f"v={NASTY}")
    assert r.code == 0, r
    assert r.stdout == f"no: {NASTY}\n"
    no_pwned(tmp_path)


@pytest.mark.parametrize(
    "command",
    [
        "eval ${v}",
        'eval "echo ${v}"',
        "trap 'echo ${v}' EXIT",
        "echo $(eval ${v})",
        "x=1 2>/dev/null eval ${v}",
        "echo 2>&1 && eval ${v}",
    ],
)
def test_a_value_given_to_eval_or_trap_is_refused(
    plait: Run, workflow: Write, tmp_path: Path, command: str
) -> None:
    wf = {"inputs": {"v": {"type": "string"}}, "nodes": [sh("p", command)]}
    r = plait("run", workflow(wf), "v=touch pwned")
    assert r.code == 2, r  # refused when the workflow is checked, before anything runs
    assert "so a value there would run as shell code" in r.stderr
    no_pwned(tmp_path)


@pytest.mark.parametrize("command", ["test -v ${v} || echo unset", "[ -v ${v} ] || echo unset"])
def test_a_value_after_test_v_must_be_a_name(
    plait: Run, workflow: Write, tmp_path: Path, command: str
) -> None:
    wf = {"inputs": {"v": {"type": "string"}}, "nodes": [sh("p", command)]}
    r = plait("run", workflow(wf), "v=a[$(touch pwned)]")
    assert r.code == 1, r
    assert "must be a plain name" in r.stderr
    no_pwned(tmp_path)
    r = plait("run", workflow(wf), "v=NO_SUCH_PLAIT_VAR")
    assert r.code == 0, r
    assert r.stdout == "unset\n"


def test_eval_as_a_plain_word_is_only_text(plait: Run, workflow: Write, tmp_path: Path) -> None:
    wf = {"inputs": {"v": {"type": "string"}}, "nodes": [sh("p", 'echo eval ${v} "; eval" ${v}')]}
    r = plait("run", workflow(wf), "v=$(touch pwned)")
    assert r.code == 0, r
    assert r.stdout == "eval $(touch pwned) ; eval $(touch pwned)\n"
    no_pwned(tmp_path)


# -- params -----------------------------------------------------------------------------


def test_stdin(plait: Run, workflow: Write) -> None:
    wf = {
        "inputs": {"text": {"type": "string"}},
        "nodes": [
            sh("count", "wc -l", stdin="${text}"),
            sh("json", "cat", stdin={"k": [1, 2]}),
        ],
        "outputs": {"lines": {"source": "${count.stdout}"}, "json": {"source": "${json.stdout}"}},
    }
    r = plait("run", "-o", "json", workflow(wf), "text=a\nb\nc\n")
    assert r.code == 0, r
    assert r.json["outputs"]["lines"].strip() == "3"
    assert r.json["outputs"]["json"] == '{"k": [1, 2]}'


def test_without_stdin_the_command_reads_nothing(plait: Run, workflow: Write) -> None:
    r = plait("run", workflow({"nodes": [sh("p", "cat; echo end")]}), input="should not be read")
    assert r.code == 0, r
    assert r.stdout == "end\n"


def test_cwd(plait: Run, workflow: Write, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    r = plait("run", workflow({"nodes": [sh("p", "pwd", cwd="sub")]}))
    assert r.code == 0, r
    assert Path(r.stdout.strip()).resolve() == (tmp_path / "sub").resolve()


def test_missing_cwd_is_a_clear_failure(plait: Run, workflow: Write) -> None:
    r = plait("run", workflow({"nodes": [sh("p", "pwd", cwd="nowhere")]}))
    assert r.code == 1
    assert "working directory not found: nowhere" in r.stderr


def test_env(plait: Run, workflow: Write) -> None:
    wf = {
        "inputs": {"who": {"type": "string"}},
        "nodes": [sh("p", 'echo "$GREETING $WHO $N"', env={"GREETING": "hello", "WHO": "${who}", "N": 3})],
    }
    r = plait("run", workflow(wf), "who=$(touch pwned)")
    assert r.code == 0, r
    assert r.stdout == "hello $(touch pwned) 3\n"


def test_the_process_environment_is_inherited(plait: Run, workflow: Write) -> None:
    r = plait("run", workflow({"nodes": [sh("p", "echo $PLAIT_TEST_INHERIT")]}), env={"PLAIT_TEST_INHERIT": "yes"})
    assert r.stdout == "yes\n"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_timeout_kills_the_whole_process_group(plait: Run, workflow: Write, tmp_path: Path) -> None:
    wf = {"nodes": [sh("slow", "sleep 30 & echo $! > child.pid; sleep 30", timeout=0.5)]}
    started = time.monotonic()
    r = plait("run", workflow(wf))
    assert time.monotonic() - started < 10
    assert r.code == 1
    assert "timed out after 0.5 s" in r.stderr
    child = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the background child outlived the timeout"


def test_timeout_as_a_template(plait: Run, workflow: Write) -> None:
    wf = {"inputs": {"t": {"type": "number"}}, "nodes": [sh("slow", "sleep 5", timeout="${t}")]}
    r = plait("run", workflow(wf), "t=0.2")
    assert r.code == 1
    assert "timed out" in r.stderr


def test_non_zero_exit_fails_with_stderr_in_the_message(plait: Run, workflow: Write) -> None:
    r = plait("run", workflow({"nodes": [sh("bad", "echo out; echo 'disk is full' >&2; exit 7")]}))
    assert r.code == 1
    assert "bad" in r.stderr
    assert "exited with code 7" in r.stderr
    assert "disk is full" in r.stderr
    assert "Traceback" not in r.stderr


def test_non_zero_exit_without_stderr_shows_stdout(plait: Run, workflow: Write) -> None:
    r = plait("run", workflow({"nodes": [sh("bad", "echo what went wrong; exit 2")]}))
    assert r.code == 1
    assert "what went wrong" in r.stderr


def test_ignore_errors(plait: Run, workflow: Write) -> None:
    wf = {
        "nodes": [
            sh("soft", "echo partial; echo warn >&2; exit 5", ignore_errors=True),
            sh("next", "echo code=${soft.exit_code} err=${soft.stderr}"),
        ]
    }
    r = plait("run", workflow(wf))
    assert r.code == 0, r
    assert r.stdout == "code=5 err=warn\n"  # `next` printed stderr's newline, then strip_newline took it


def test_command_not_found(plait: Run, workflow: Write) -> None:
    for command in ("no-such-command-plait --flag", "echo x | no-such-command-plait"):
        r = plait("run", workflow({"nodes": [sh("p", command)]}))
        assert r.code == 1
        assert "command not found: no-such-command-plait (command not found; exit code 127)" in r.stderr
        assert "installed and on PATH" in r.stderr


def test_plain_commands_and_pipelines(plait: Run, workflow: Write, tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("")
    (tmp_path / "a.txt").write_text("")
    wf = {"nodes": [sh("ls", "ls"), sh("pipe", "ls *.txt | sort -r | head -n 1")]}
    r = plait("run", "-o", "json", workflow(wf))
    assert r.code == 0, r
    assert r.json["outputs"]["stdout"] == "b.txt"


def test_exit_code_output_on_success(plait: Run, workflow: Write) -> None:
    r = plait("run", "-o", "json", workflow({"nodes": [sh("p", "true")]}))
    assert r.json["outputs"] == {"stdout": "", "stderr": "", "exit_code": 0}


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups")
def test_commands_run_in_their_own_process_group(plait: Run, workflow: Write) -> None:
    r = plait("run", workflow({"nodes": [sh("p", "ps -o pgid= -p $$; ps -o pgid= -p $PPID")]}))
    assert r.code == 0, r
    own, parent = r.stdout.split()
    assert own != parent


def test_stepping_into_json_a_shell_node_printed(plait: Run, workflow: Write) -> None:
    wf = {
        "nodes": [
            sh("gen", """echo '{"items": [{"name": "first"}, {"name": "second"}]}'"""),
            sh("use", "echo ${gen.stdout.items[1].name} of ${gen.stdout.items}"),
        ]
    }
    r = plait("run", workflow(wf))
    assert r.code == 0, r
    assert r.stdout == 'second of [{"name": "first"}, {"name": "second"}]\n'


# -- plain commands run without bash, and must behave as under bash ---------------------


def test_plain_command_runs_a_script_without_a_shebang(plait: Run, workflow: Write, tmp_path: Path) -> None:
    tool = tmp_path / "tool"
    tool.write_text('echo "no shebang: $1"\n')
    tool.chmod(0o755)
    r = plait("run", workflow({"nodes": [sh("p", "./tool here")]}))
    assert r.code == 0, r
    assert r.stdout == "no shebang: here\n"


def test_plain_command_sees_its_directory_in_pwd(plait: Run, workflow: Write, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    wf = {
        "nodes": [sh("here", "printenv PWD"), sh("sub", "printenv PWD", cwd="sub")],
        "outputs": {"here": {"source": "${here.stdout}"}, "sub": {"source": "${sub.stdout}"}},
    }
    # the CLI starts in tmp_path while PWD still names the test runner's folder
    r = plait("run", "-o", "json", workflow(wf), env={"PWD": str(Path.cwd())})
    assert r.code == 0, r
    assert r.json["outputs"] == {"here": str(tmp_path.resolve()), "sub": str((tmp_path / "sub").resolve())}


def test_plain_command_removed_during_the_run_is_not_found(
    plait: Run, workflow: Write, tmp_path: Path
) -> None:
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\necho ran\n")
    tool.chmod(0o755)
    wf = {"nodes": [sh("first", "./tool"), sh("rm", "rm tool"), sh("again", "./tool")]}
    r = plait("run", workflow(wf))
    assert r.code == 1, r
    assert "127" in r.stderr and "No such file or directory" in r.stderr
    assert "working directory" not in r.stderr


def test_plain_command_calls_an_exported_bash_function(plait: Run, workflow: Write) -> None:
    # `export -f ls` in the user's shell: bash calls the function, not /bin/ls
    r = plait("run", workflow({"nodes": [sh("p", "ls -l")]}), env={"BASH_FUNC_ls%%": "() {  echo function $1\n}"})
    assert r.code == 0, r
    assert r.stdout == "function -l\n"


# -- output: newlines, and a cap on how much is kept ---------------------------------------


def test_strip_newline(plait: Run, workflow: Write) -> None:
    wf = {
        "nodes": [
            sh("strip", "printf 'a b \\n\\n'; printf 'warn\\n' >&2"),
            sh("keep", "printf 'a\\n\\n'", strip_newline=False),
            sh("name", "touch ${strip.stdout}.txt && ls *.txt"),
        ],
        "outputs": {
            "strip": {"source": "${strip.stdout}"},
            "err": {"source": "${strip.stderr}"},
            "keep": {"source": "${keep.stdout}"},
            "name": {"source": "${name.stdout}"},
        },
    }
    r = plait("run", "-o", "json", workflow(wf))
    assert r.code == 0, r
    assert r.json["outputs"] == {"strip": "a b ", "err": "warn\n", "keep": "a\n\n", "name": "a b .txt"}


def test_output_past_max_output_bytes_stops_the_command(plait: Run, workflow: Write) -> None:
    wf = {
        "nodes": [
            sh("fits", "head -c 1000 /dev/zero | tr '\\0' x", max_output_bytes=1000),
            sh("endless", "yes", max_output_bytes=100_000),
            sh("err", "yes >&2", max_output_bytes=2048),
        ],
        "outputs": {"n": {"source": "${fits.stdout}"}},
    }
    for node in wf["nodes"][1:]:
        node["batch"] = {"items": [1], "error_handling": "continue"}
    wf["outputs"] = {
        "n": {"source": "${fits.stdout}"},
        "endless": {"source": "${endless.errors}"},
        "err": {"source": "${err.errors}"},
    }
    r = plait("run", "-o", "json", workflow(wf), timeout=30)
    assert r.code == 0, r
    out = r.json["outputs"]
    assert out["n"] == "x" * 1000
    assert "stdout passed max_output_bytes (100000 bytes)" in out["endless"][0]["error"]
    assert "raise max_output_bytes" in out["endless"][0]["error"]
    assert "stderr passed max_output_bytes (2 KiB)" in out["err"][0]["error"]


def test_max_output_bytes_must_be_positive(plait: Run, workflow: Write) -> None:
    r = plait("validate", workflow({"nodes": [sh("p", "true", max_output_bytes=0)]}))
    assert r.code == 2
    assert "max_output_bytes must be a positive number" in r.stderr


# -- values of any size ---------------------------------------------------------------------


def test_values_of_any_size(plait: Run, workflow: Write, tmp_path: Path) -> None:
    big = "$(touch pwned) " + "é" * 300_000  # 600 KB: far past what the environment holds
    (tmp_path / "big.json").write_text(__import__("json").dumps({"a": big, "b": big[:70_000], "c": "small"}))
    wf = {
        "inputs": {"d": {"type": "object"}},
        "nodes": [
            sh("r", "cat big.json"),
            sh(
                "use",
                "printf '%s' ${r.stdout.a} | wc -c; printf '%s' \"${r.stdout.b}\" | wc -c; "
                "cat <<EOF | wc -c\n${r.stdout.a}${r.stdout.c}\nEOF\n[[ ${r.stdout.a} == ${r.stdout.a} ]] && echo same",
            ),
        ],
    }
    r = plait("run", workflow(wf), 'd={}')
    assert r.code == 0, r
    assert r.stdout.split() == [str(len(big.encode())), str(len(big[:70_000].encode())), str(len(big.encode()) + 6), "same"]
    no_pwned(tmp_path)


def test_a_nul_in_a_value_is_a_clear_failure(plait: Run, workflow: Write) -> None:
    wf = {"nodes": [{**sh("p", "printf '%s' ${item}"), "batch": {"items": ["a\u0000b"]}}]}
    r = plait("run", workflow(wf))
    assert r.code == 1
    assert "NUL character" in r.stderr


# -- what validation says -------------------------------------------------------------------


def test_refusals_name_the_line_and_column(plait: Run, workflow: Write) -> None:
    wf = {
        "inputs": {"v": {}},
        "nodes": [
            sh("a", "echo ok\nif true; then\n  bash -c \"ls ${v}\"\nfi"),
            sh("b", "echo $${x} ${v}\necho 'unclosed ${v}"),
            sh("c", "echo $${HOME} ${v}; ${v} --version"),
        ],
    }
    r = plait("validate", workflow(wf))
    assert r.code == 2, r
    assert "nodes[0].params.command: command line 3, column 15 (${v}): the `bash -c` string is shell code" in r.stderr
    assert "nodes[1].params.command: command line 2, column 6: bash syntax plait cannot read at `'unclosed ${v}`" in r.stderr
    assert "nodes[2].params.command: command line 1, column 21 (${v}): a template as (part of) the command name" in r.stderr


def test_not_options_refuses_a_value_that_looks_like_an_option(
    plait: Run, workflow: Write, tmp_path: Path
) -> None:
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "file").write_text("")
    node = sh("f", "find ${item} -name file", not_options=["${item}"])
    node["batch"] = {"items": ["keep", "-delete"], "error_handling": "continue"}
    wf = {"nodes": [node], "outputs": {"r": {"source": "${f.results}"}}}
    r = plait("run", "-o", "json", workflow(wf))
    assert r.code == 0, r
    first, second = r.json["outputs"]["r"]
    assert first["stdout"] == "keep/file"
    assert "starts with '-' and would be read as an option" in second["error"]
    assert (tmp_path / "keep" / "file").exists()
    bad = plait("validate", workflow({"nodes": [sh("f", "ls ${x}", not_options=["x", "${y}"])], "inputs": {"x": {}}}))
    assert bad.code == 2
    assert "not_options takes templates such as \"${dir}\", not 'x'" in bad.stderr
    assert "not_options names ${y}, which the command does not use" in bad.stderr


def test_tree_sitter_is_imported_only_for_commands_with_templates(workflow: Write, tmp_path: Path) -> None:
    env = {"PYTHONPROFILEIMPORTTIME": "1"}
    plain = run_cli("run", workflow({"nodes": [sh("p", "echo hi; ls > /dev/null")]}), cwd=tmp_path, env=env)
    assert plain.code == 0, plain
    assert "tree_sitter" not in plain.stderr
    templated = run_cli("run", workflow({"inputs": {"v": {}}, "nodes": [sh("p", "echo ${v}")]}), "v=1", cwd=tmp_path, env=env)
    assert templated.code == 0, templated
    assert "tree_sitter_bash" in templated.stderr


# -- commands die with plait -----------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _wait_for(check: Callable[[], Any], seconds: float = 30) -> Any:
    # generous: it returns as soon as the check holds, and a loaded machine is slow to start processes
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.02)
    return check()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize(
    "command",
    ["sleep 30", "echo $$ > pids; sleep 31 & echo $! >> pids; sleep 32"],
    ids=["run-without-bash", "bash-with-a-background-child"],
)
def test_commands_die_with_plait_even_on_kill_9(workflow: Write, tmp_path: Path, command: str) -> None:
    path = workflow({"nodes": [sh("slow", command)]})
    proc = subprocess.Popen(
        [sys.executable, "-m", "plait", "run", path],
        cwd=tmp_path,
        env=plait_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if command == "sleep 30":
            pids = _wait_for(lambda: [c for c in _children(proc.pid) if _comm(c) == "sleep"])
        else:
            pids = _wait_for(lambda: _pids(tmp_path / "pids"))
        assert pids, "the command did not start"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    assert _wait_for(lambda: not any(_alive(p) for p in pids)), "left running after plait was killed"


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _pids(path: Path) -> list[int]:
    try:
        found = [int(x) for x in path.read_text().split()]
    except (OSError, ValueError):
        return []
    return found if len(found) == 2 else []
