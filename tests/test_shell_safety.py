"""The attack matrix (issue 9): many command shapes x many hostile values, through the real CLI.

Every shape is one batch node over every payload, in its own folder. A payload
that ran would create the canary file ``pwned`` there. For each shape the test
checks that no canary exists and that each value either reached the command as
data (the command printed it back exactly), or failed the item with plait's
check for an evaluating position, or that the workflow was refused before
anything ran.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Run = Callable[..., Any]
Write = Callable[..., str]

LONG = "x" * 150_000 + "$(touch pwned)"  # past the 128 KiB an environment string may hold
JSON_VALUE = {"k": "$(touch pwned)", "n": [1, "'; touch pwned; '"], "s": "a[$(touch pwned)]"}
PAYLOADS: list[Any] = [
    "a[$(touch pwned)]",
    "$(touch pwned)",
    "`touch pwned`",
    "; touch pwned",
    "'; touch pwned; '",
    '"; touch pwned; "',
    "x\ntouch pwned\n",
    "-va[$(touch pwned)]",
    "([0]=$(touch pwned))",
    "a[$(touch pwned)]=1",
    "[0]=$(touch pwned)",
    "x) touch pwned;; *)",
    "ünïcödé ✓ $(touch pwned)",
    LONG,
    JSON_VALUE,
    "a\x00$(touch pwned)",
    "--output=pwned",
    "$HOME * ~",
    "7",
    "plain_name",
]
INTEGER_OK = {"7"}
NAME_OK = {"plain_name"}


def render(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


def same(v: str) -> str:
    return v


@dataclass
class Shape:
    command: str
    kind: str  # "data", "integer", "name", "compound", "operand"
    want: Callable[[str], str] | None = same  # stdout for a value that got through
    params: dict[str, Any] | None = None
    #: hands the value to another program's argv or environment, which the system
    #: limits to 128 KiB a string: the long payload fails there with E2BIG
    external: bool = False


def first_line(v: str) -> str:
    return v.split("\n")[0].strip(" \t")


DATA = [
    Shape("printf '%s' ${item}", "data"),
    Shape("printf '%s' \"${item}\"", "data"),
    Shape("printf '%s' '${item}'", "data"),
    Shape("printf '%s' $'[${item}]'", "data", lambda v: f"[{v}]"),
    Shape("printf '%s' \"<${item}>\" '<${item}>' [${item}]", "data", lambda v: f"<{v}><{v}>[{v}]"),
    Shape("printf '%s' ${item}${item}", "data", lambda v: v + v),
    # pflow's nested index template: one value, whatever the item holds (gen.result is the items)
    Shape("printf '%s' ${gen.result[${__index__}]}", "data"),
    Shape("printf '%s' \"<${gen.result[${__index__}]}>\" x${gen.result[${__index__}]}", "data",
          lambda v: f"<{v}>x{v}"),
    Shape("x=${item}; printf '%s' \"$x\"", "data"),
    Shape("x=${item} y=1; printf '%s' \"$x\"", "data"),
    Shape("f() { local x=${item}; printf '%s' \"$x\"; }; f", "data"),
    Shape("export E=${item}; printf '%s' \"$E\"", "data"),
    Shape("X=${item} bash -c 'printf \"%s\" \"$X\"'", "data", external=True),
    Shape("arr=(${item} end); printf '%s|' \"${arr[@]}\"", "data", lambda v: f"{v}|end|"),
    Shape("declare -A m; m[${item}]=1; printf '%s' \"${!m[@]}\"", "data"),
    Shape("declare -A m=([${item}]=v); printf '%s' \"${!m[@]}\"", "data"),
    Shape("cat <<EOF\nvalue=${item}\nEOF", "data", lambda v: f"value={v}\n"),
    Shape("cat <<-EOF\n\t${item}\n\tEOF", "data", lambda v: f"{v}\n"),
    Shape("cat <<< ${item}", "data", lambda v: f"{v}\n"),
    Shape("printf '%s' \"$(printf '%s' ${item})\"", "data", lambda v: v.rstrip("\n")),
    Shape("printf '%s' `printf x`${item}", "data", lambda v: "x" + v),
    Shape("cat < <(printf '%s' ${item})", "data"),
    Shape("printf '%s' ${item} | cat", "data"),
    Shape("printf '%s' ${item} > out${__index__}.txt && cat out${__index__}.txt", "data"),
    Shape("for x in ${item}; do printf '%s' \"$x\"; done", "data"),
    Shape("for x in a ${item}; do printf '%s|' \"$x\"; done", "data", lambda v: f"a|{v}|"),
    Shape("select x in ${item}; do break; done < /dev/null 2>/dev/null; printf '%s' ok", "data", lambda v: "\nok"),
    Shape("case ${item} in *) printf '%s' ${item};; esac", "data"),
    Shape("case x in ${item}) printf no;; *) printf '%s' other;; esac", "data", lambda v: "other"),
    Shape("case y in x) eval 'echo no';; *) printf '%s' ${item};; esac", "data"),
    Shape("[[ ${item} == x ]] || printf '%s' ${item}", "data"),
    Shape("[[ x == ${item} ]] || printf '%s' ${item}", "data"),
    Shape("[[ -n ${item} ]] && printf '%s' ${item}", "data"),
    Shape("[[ ${item} =~ ^nomatch$ ]] || printf '%s' ${item}", "data"),
    Shape("test ${item} = x || printf '%s' ${item}", "data"),
    Shape("if true; then printf '%s' ${item}; fi", "data"),
    Shape("while true; do printf '%s' ${item}; break; done", "data"),
    Shape("for ((i=0; i<1; i++)); do printf '%s' ${item}; done", "data"),
    Shape("{ printf '%s' ${item}; }", "data"),
    Shape("( printf '%s' ${item} )", "data"),
    Shape("f() { printf '%s' \"$1\"; }; f ${item}", "data"),
    Shape("printf '%s' ${item} # a comment with ${item} in it", "data"),
    Shape("echo $(echo)# eval ${item}", "data", lambda v: f"# eval {v}\n"),
    Shape("printf '%s' \"${UNSET_PLAIT:-${item}}\"", "data"),
    Shape("printf '%s' ${UNSET_PLAIT:-${item}}", "data"),
    Shape("s=abc; printf '%s' \"${s/${item}/Z}\"", "data", lambda v: "abc"),
    Shape("bash -c 'printf \"%s\" \"$1\"' _ ${item}", "data", external=True),
    Shape("sh -c 'printf \"%s\" \"$1\"' sh ${item}", "data", external=True),
    Shape("env V=${item} sh -c 'printf \"%s\" \"$V\"'", "data", external=True),
    Shape("timeout 5 printf '%s' ${item}", "data", external=True),
    Shape("command printf '%s' ${item}", "data"),
    Shape("find . -maxdepth 0 -exec printf '%s' ${item} \\;", "data", external=True),
    Shape("awk 'BEGIN { printf \"%s\", ARGV[1] }' ${item}", "data", external=True),
    Shape("read -r line <<< ${item}; printf '%s' \"$line\"", "data", first_line),
    # (the herestring adds a newline, so a value ending in one gives an empty last line)
    Shape("mapfile -t lines <<< ${item}; printf '%s|' \"${lines[@]}\"", "data",
          lambda v: "".join(f"{x}|" for x in v.split("\n"))),
    Shape("./show ${item}", "data", external=True),
    Shape("./show x${item}y", "data", lambda v: f"x{v}y", external=True),
    Shape("printf '%s' ${item} > ${item}.txt 2>/dev/null; printf '%s' done", "data", lambda v: "done"),
    Shape("declare -a arr=${item}; printf '%s' \"$${arr[0]}\"", "compound"),
    Shape("declare -a arr=(${item}); printf '%s' \"$${arr[0]}\"", "data"),
    Shape("f() { local -a arr=(${item} z); printf '%s' \"$${arr[0]}\"; }; f", "data"),
    Shape("sort ${item} < /dev/null", "operand", None, {"not_options": ["${item}"]}),
]

INTEGER = [
    Shape("echo $(( ${item} + 1 ))", "integer", lambda v: "8\n"),
    Shape('echo $(( "${item}" + 1 ))', "integer", lambda v: "8\n"),
    Shape("echo $[${item}+1]", "integer", lambda v: "8\n"),
    Shape("(( ${item} > 1 )) && echo big", "integer", lambda v: "big\n"),
    Shape("if((${item} > 0)); then echo pos; fi", "integer", lambda v: "pos\n"),
    Shape("i=0; while((i<${item})); do i=$((i+1)); done; echo $i", "integer", lambda v: "7\n"),
    Shape("for((i=0;i<${item};i++)); do :; done; echo $i", "integer", lambda v: "7\n"),
    Shape("a=(x y z); echo \"[$${a[${item}]}]\"", "integer", lambda v: "[]\n"),
    Shape("a[${item}]=z; echo $${a[7]}", "integer", lambda v: "z\n"),
    Shape("a=(x); a+=([${item}]=z); echo $${a[7]}", "integer", lambda v: "z\n"),
    Shape("unset a[${item}]; echo ok", "integer", lambda v: "ok\n"),
    Shape("read -r a[${item}] <<< z; echo $${a[7]}", "integer", lambda v: "z\n"),
    Shape("declare \"a[${item}]=z\"; echo $${a[7]}", "integer", lambda v: "z\n"),
    Shape("s=abcdefghij; echo ${s:${item}}", "integer", lambda v: "hij\n"),
    Shape("s=abcdefghij; echo ${s:1:${item}}", "integer", lambda v: "bcdefgh\n"),
    Shape("a=(1 2 3 4 5 6 7 8 9); echo ${a[@]:${item}}", "integer", lambda v: "8 9\n"),
    Shape("[[ ${item} -eq 7 ]] && echo seven", "integer", lambda v: "seven\n"),
    Shape("[[ ${item}0 -eq 70 ]] && echo seventy", "integer", lambda v: "seventy\n"),
    Shape("[[ ${item} \\\n -eq 7 ]] && echo seven", "integer", lambda v: "seven\n"),
    Shape('[[ 1 -lt "${item}" ]] && echo yes', "integer", lambda v: "yes\n"),
    Shape("let n=${item}+1; echo $n", "integer", lambda v: "8\n"),
    Shape('let "n = ${item} * 2"; echo $n', "integer", lambda v: "14\n"),
    Shape("declare -i n=${item}; echo $n", "integer", lambda v: "7\n"),
    Shape("declare -i n; n=${item}; echo $n", "integer", lambda v: "7\n"),
    Shape("declare -i n; read -r n <<< ${item}; echo $n", "integer", lambda v: "7\n"),
    Shape("f() { local -i n=${item}; echo $n; }; f", "integer", lambda v: "7\n"),
    Shape("seq 9 | sed -n \"$(( ${item} ))p\"", "integer", lambda v: "7\n"),
]

NAME = [
    Shape("read -r ${item} <<< z; echo ok", "name", lambda v: "ok\n"),
    Shape("printf -v ${item} x; echo ok", "name", lambda v: "ok\n"),
    Shape("declare ${item}=1; echo ok", "name", lambda v: "ok\n"),
    Shape("f() { local ${item}; }; f; echo ok", "name", lambda v: "ok\n"),
    Shape("export ${item}=1; echo ok", "name", lambda v: "ok\n"),
    Shape("unset ${item}; echo ok", "name", lambda v: "ok\n"),
    Shape("[[ -v ${item} ]] || echo unset", "name", lambda v: "unset\n"),
    Shape("test -v ${item} || echo unset", "name", lambda v: "unset\n"),
    Shape("[ -v ${item} ] || echo unset", "name", lambda v: "unset\n"),
    Shape("mapfile -t ${item} < /dev/null; echo ok", "name", lambda v: "ok\n"),
    Shape("declare -n r=${item}; echo ok", "name", lambda v: "ok\n"),
    Shape("getopts ab ${item} -a; echo ok", "name", lambda v: "ok\n"),
]

REFUSED = [
    ("eval ${item}", "`eval` runs its arguments"),
    ('eval "echo ${item}"', "`eval` runs its arguments"),
    ("case x in x) eval ${item};; esac", "`eval` runs its arguments"),
    ("f() { eval ${item}; }; f", "`eval` runs its arguments"),
    ("\\eval ${item}", "`eval` runs its arguments"),
    ("'eval' ${item}", "`eval` runs its arguments"),
    ('e""val ${item}', "`eval` runs its arguments"),
    ("time -p eval ${item}", "`eval` runs its arguments"),
    ("coproc eval ${item}", "`eval` runs its arguments"),
    ("command eval ${item}", "`eval` runs its arguments"),
    ("builtin eval ${item}", "`eval` runs its arguments"),
    ("cat <<A:B\nx\nA:B\neval ${item}", "`eval` runs its arguments"),
    ('eval "$(printf %s ${item})"', "`eval` runs its arguments"),
    ("trap ${item} EXIT", "`trap` runs"),
    ("trap 'echo ${item}' EXIT", "`trap` runs"),
    ("alias x=${item}", "an alias is shell code"),
    ("compgen -W ${item}", "`compgen`"),
    ("source ${item}", "`source` runs the file"),
    (". ${item}", "`.` runs the file"),
    ("bash -c ${item}", "`bash -c` string is shell code"),
    ('sh -c "echo ${item}"', "`sh -c` string is shell code"),
    ("bash -ec ${item}", "`bash -c` string is shell code"),
    ("bash <<< ${item}", "reads its program from this input"),
    ("bash <<EOF\n${item}\nEOF", "reads its program from this input"),
    ("printf '%s' ${item} | bash", "reads its program from its input"),
    ("bash ${item}", "`bash` runs the script"),
    ("python3 -c ${item}", "program text would run as python3 code"),
    ("awk \"BEGIN { print ${item} }\"", "program text would run as awk code"),
    ("sed \"s/a/${item}/\"", "program text would run as sed code"),
    ("${item}", "the command name"),
    ('"${item}" x', "the command name"),
    ("./${item}", "the command name"),
    ("$(printf %s ${item}) x", "the command name"),
    ("sudo ${item}", "an option of `sudo` or the command it runs"),
    ("env ${item}", "an option of `env` or the command it runs"),
    ("xargs -0 ${item}", "an option of `xargs` or the command it runs"),
    ("find . -exec ${item} \\;", "the command of `find -exec`"),
    ("nohup sh -c ${item}", "`sh -c` string is shell code"),
    ("printf ${item}", "the format of printf"),
    ("mapfile -C ${item} x", "`mapfile -C` runs a callback"),
    ('declare -a x="(${item})"', "quoted array assignment"),
    ("cat <<'EOF'\n${item}\nEOF", "quoted heredoc"),
    ("echo \\${item}", "right after a backslash"),
    ("for ${item} in a; do :; done", "bash syntax plait cannot read"),
    ("$cmd ${item}", "only known at run time"),
    ("ssh host ls ${item}", "remote shell"),
]

SHOW = "#!/bin/sh\nprintf '%s' \"$1\"\n"


def test_attack_matrix(plait: Run, workflow: Write, tmp_path: Path) -> None:
    shapes = DATA + INTEGER + NAME
    gen = {
        "id": "gen",
        "type": "code",
        "params": {"code": "result = payloads", "inputs": {"payloads": PAYLOADS}},
    }
    nodes: list[dict[str, Any]] = [gen]
    for k, shape in enumerate(shapes):
        folder = tmp_path / f"s{k:02d}"
        folder.mkdir()
        (folder / "show").write_text(SHOW)
        (folder / "show").chmod(0o755)
        nodes.append(
            {
                "id": f"s{k:02d}",
                "type": "shell",
                "params": {"command": shape.command, "cwd": str(folder), "strip_newline": False, **(shape.params or {})},
                "batch": {"items": "${gen.result}", "error_handling": "continue", "parallel": True, "max_concurrent": 4},
            }
        )
    wf = {"nodes": nodes, "outputs": {f"s{k:02d}": {"source": f"${{s{k:02d}.results}}"} for k in range(len(shapes))}}
    r = plait("run", "-o", "json", workflow(wf))
    assert r.code == 0, r
    outputs = r.json["outputs"]
    problems = []
    for k, shape in enumerate(shapes):
        folder = tmp_path / f"s{k:02d}"
        if (folder / "pwned").exists():
            problems.append(f"{shape.command!r}: a payload ran")
        for result, payload in zip(outputs[f"s{k:02d}"], PAYLOADS, strict=True):
            v = render(payload)
            got = result.get("stdout")
            error = result.get("error") or ""
            if "\x00" in v:
                expected_error = "must be" if shape.kind in ("integer", "name") else "NUL character"
            elif shape.kind == "integer" and v not in INTEGER_OK:
                expected_error = "must be an integer"
            elif shape.kind == "name" and v not in NAME_OK:
                expected_error = "must be"
            elif shape.kind == "compound" and v.startswith("(") and v.endswith(")"):
                expected_error = "looks like an array assignment"
            elif shape.kind == "operand" and v.startswith("-"):
                expected_error = "would be read as an option"
            elif shape.external and v == LONG:
                expected_error = "Argument list too long"
            else:
                expected_error = ""
            if expected_error:
                if expected_error not in error:
                    problems.append(f"{shape.command!r} <- {v[:40]!r}: wanted {expected_error!r}, got {(error or got)[:120]!r}")
            elif shape.want is not None and (error or got != shape.want(v)):
                problems.append(f"{shape.command!r} <- {v[:40]!r}: got {(error or got)[:120]!r}")
    assert not problems, "\n".join(problems)
    assert len(shapes) + len(REFUSED) >= 60 and len(PAYLOADS) >= 12


def test_attack_matrix_refused_shapes(plait: Run, workflow: Write, tmp_path: Path) -> None:
    # Refused before anything runs: one workflow holds them all, `validate` names each one.
    nodes = [
        {"id": f"r{k:02d}", "type": "shell", "params": {"command": command}, "batch": {"items": PAYLOADS}}
        for k, (command, _) in enumerate(REFUSED)
    ]
    path = workflow({"nodes": nodes})
    r = plait("validate", path)
    assert r.code == 2, r
    problems = []
    for k, (command, message) in enumerate(REFUSED):
        lines = [line for line in r.stderr.splitlines() if f"nodes[{k}].params.command" in line]
        if not lines or message not in lines[0] or "command line " not in lines[0]:
            problems.append(f"{command!r}: wanted {message!r}, got {lines}")
    assert not problems, "\n".join(problems)
    r = plait("run", path)
    assert r.code == 2, r
    assert not (tmp_path / "pwned").exists()
