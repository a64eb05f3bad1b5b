"""Where each template of a shell command stands, read from a real bash grammar.

The command's *skeleton* (its literal text with a placeholder ``${PLAIT_Vn}`` per
template) is parsed with tree-sitter's bash grammar once per distinct skeleton;
the same skeleton serves every item of a batch. Each placeholder is then judged
by the syntax around it, against an allowlist:

- **data** positions, where bash expands a variable once and never reads the
  result as code: an argument of a simple command, a double-quoted string, a
  heredoc body, the right side of an assignment, a ``for ... in`` list, a
  ``case`` subject or pattern, a redirection target, a parameter expansion's
  default or pattern. The value is passed as a variable reference, quoted to
  suit the spot.
- **evaluating** positions, where bash reads the variable's *contents* as an
  arithmetic expression or a variable name (and runs ``$(...)`` found in an
  array subscript there): arithmetic in every form, subscripts, ``[[ -eq ]]``
  and friends, ``${x:offset:length}``, ``let``, ``declare -i`` and variables
  given the integer attribute, the name operands of ``read``, ``printf -v``,
  ``mapfile``, ``unset``, ``declare``, ``test -v``... Values there must be an
  integer (or a plain name) and are checked per item.
- **code** positions, refused before the run: the command name, the arguments of
  ``eval``, ``trap``, ``alias``, ``source``..., a ``bash -c``/``python -c``
  string, a script that a shell or an interpreter reads, a ``printf`` format,
  the command run by a wrapper (``sudo``, ``xargs``, ``find -exec``...).
- anything else is refused, naming the position.

Nothing here imports tree-sitter until a command with templates is analysed.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

VAR = "PLAIT_V"

# how a slot's reference is written into the script
QUOTED = "quoted"  # "${PLAIT_V0}": one word, no splitting or globbing
BARE = "bare"  # ${PLAIT_V0}: inside "double quotes", a heredoc body or arithmetic
SINGLE = "single"  # '"${PLAIT_V0}"': close the 'single quotes', expand, reopen
ANSI = "ansi"  # '"${PLAIT_V0}"$': the same for $'ANSI-C quotes'
DROP = "drop"  # inside a # comment: bash ignores it

# what a slot's value must be (checked per item); None: any text
INTEGER = "integer"
NAME = "name"  # a variable name
NAME_PART = "name_part"  # letters, digits and _ (the rest of a name)
NOT_COMPOUND = "not_compound"  # not "(...)", that declare would read as an array

_FORMS = {
    QUOTED: '"${{{}}}"',
    BARE: "${{{}}}",
    SINGLE: "'\"${{{}}}\"'",
    ANSI: "'\"${{{}}}\"$'",
    DROP: "",
}
# Characters no shell would read specially: a command made only of these (and
# templates) can be run without bash.
PLAIN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -_./,:+@%=")
INTEGER_RE = re.compile(r"\s*[-+]?(?:0[xX][0-9a-fA-F]+|[0-9]+)\s*")
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
NAME_PART_RE = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True)
class Slot:
    form: str
    check: str | None  # INTEGER, NAME, NAME_PART, NOT_COMPOUND or None
    where: str  # the position, for messages: "inside $(( ))"


@dataclass(frozen=True)
class Problem:
    message: str
    offset: int  # where in the skeleton (characters)


@dataclass(frozen=True)
class Analysis:
    slots: tuple[Slot, ...]
    problems: tuple[Problem, ...]
    script: str  # the command with every template written as a variable reference
    #: for a command made only of plain words: each word as literal text and slot numbers
    words: tuple[tuple[str | int, ...], ...] | None


def skeleton_of(literals: tuple[str, ...]) -> tuple[str, list[int]]:
    """The command text with a placeholder per template, and where each one starts."""
    out = [literals[0]]
    starts = []
    pos = len(literals[0])
    for i, lit in enumerate(literals[1:]):
        ph = f"${{{VAR}{i}}}"
        starts.append(pos)
        out.append(ph)
        out.append(lit)
        pos += len(ph) + len(lit)
    return "".join(out), starts


SYNTAX_ERROR = "bash syntax plait cannot read"
_cache: dict[tuple[str, ...], Analysis] = {}
_lock = threading.Lock()
_parse_lock = threading.Lock()
_parser: Any = None


def analyse(literals: tuple[str, ...]) -> Analysis:
    """The analysis of a command given as the literal texts around its templates (cached)."""
    found = _cache.get(literals)
    if found is None:
        found = _Analyser(literals).run()
        with _lock:
            if len(_cache) > 4096:
                _cache.clear()  # commands are written by hand: only a runaway fills this
            _cache[literals] = found
    return found


def _parse(text: bytes) -> Any:
    global _parser
    # one parser, used by one thread at a time (parallel items may meet a new command together)
    with _parse_lock:
        if _parser is None:
            import tree_sitter
            import tree_sitter_bash

            _parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_bash.language()))
        return _parser.parse(text)


# -- commands and what they do with their arguments ---------------------------------------

_SHELLS = frozenset("bash sh dash zsh ksh ksh93 mksh ash yash rbash lksh posh fish".split())
# Commands that run an argument as shell code (or make it run later).
_RUNS_ARGS = {
    "eval": "`eval` runs its arguments as shell code",
    "trap": "`trap` runs its argument as shell code when the signal comes",
    "alias": "an alias is shell code",
    "compgen": "`compgen` expands its word lists as shell code",
    "complete": "`complete` keeps shell code to run later",
    "bind": "`bind -x` runs shell code",
    "fc": "`fc` runs an editor and the edited commands",
    "enable": "`enable -f` loads a shared library",
    "hash": "`hash -p` decides which program a name runs",
    "watch": "`watch` runs its arguments through `sh -c`",
    "su": "`su` gives its arguments to a shell",
    "runuser": "`runuser` gives its arguments to a shell",
    "ssh": "`ssh` hands the remote command to the remote shell, which reads it as code",
}
_DECLARE_WORDS = frozenset(("declare", "typeset", "local", "export", "readonly"))


@dataclass(frozen=True)
class _Interp:
    """An interpreter's options, as far as knowing which word is code."""

    code: frozenset[str]  # options followed by code (-c, -e)
    code_files: frozenset[str]  # options followed by a file or module of code
    takes_arg: frozenset[str]  # other options followed by their own argument
    program_operand: bool  # without a code option, the first operand is the program text (awk, sed)


def _interp(code: str = "", files: str = "", args: str = "", program: bool = False) -> _Interp:
    return _Interp(frozenset(code.split()), frozenset(files.split()), frozenset(args.split()), program)


_INTERPS = {
    "python": _interp("-c", "-m", "-W -X"),
    "perl": _interp("-e -E", "-M -m", "-I -x"),
    "ruby": _interp("-e", "-r", "-I -C -E"),
    "node": _interp("-e --eval -p --print", "-r --require --import", ""),
    "php": _interp("-r", "-f", "-c -d"),
    "lua": _interp("-e", "-l", ""),
    "Rscript": _interp("-e", "", ""),
    "osascript": _interp("-e", "", ""),
    "tclsh": _interp(),
    "awk": _interp("", "-f --file", "-v -F --assign --field-separator", program=True),
    "sed": _interp("-e --expression", "-f --file", "-l", program=True),
}
_INTERP_ALIASES = {
    "nodejs": "node",
    "gawk": "awk",
    "mawk": "awk",
    "nawk": "awk",
    "gsed": "sed",
    "luajit": "lua",
    "pypy": "python",
    "pypy3": "python",
    "wish": "tclsh",
}
_PYTHON_RE = re.compile(r"python[0-9.]*")


def _interp_for(name: str) -> _Interp | None:
    if _PYTHON_RE.fullmatch(name):
        return _INTERPS["python"]
    return _INTERPS.get(_INTERP_ALIASES.get(name, name))


@dataclass(frozen=True)
class _Wrapper:
    takes_arg: frozenset[str]
    refuse: frozenset[str]  # options whose argument (or what follows) is shell code
    positionals: int  # operands before the command (timeout's duration)


def _wrapper(args: str = "", refuse: str = "", positionals: int = 0) -> _Wrapper:
    return _Wrapper(frozenset(args.split()), frozenset(refuse.split()), positionals)


# Commands that run another command given in their arguments.
_WRAPPERS = {
    "command": _wrapper(),
    "builtin": _wrapper(),
    "exec": _wrapper("-a"),
    "time": _wrapper(),
    "coproc": _wrapper(),
    "nohup": _wrapper(),
    "nice": _wrapper("-n --adjustment"),
    "env": _wrapper("-u --unset -C --chdir", "-S --split-string"),
    "timeout": _wrapper("-s --signal -k --kill-after", positionals=1),
    "sudo": _wrapper("-u -g -C -D -h -p -r -t -U -T", "-s -i --shell --login"),
    "doas": _wrapper("-u -C", "-s"),
    "xargs": _wrapper("-a -d -E -I -L -n -P -s --arg-file --delimiter --max-args --max-procs"),
    "setsid": _wrapper(),
    "stdbuf": _wrapper("-i -o -e"),
    "ionice": _wrapper("-c -n"),
    "chrt": _wrapper(positionals=1),
    "taskset": _wrapper(positionals=1),
    "flock": _wrapper("-w -E --timeout --conflict-exit-code", "-c --command", positionals=1),
    "chroot": _wrapper("--userspec --groups", positionals=1),
    "unbuffer": _wrapper(),
    "busybox": _wrapper(),
}

_AS_DATA = (
    "give the value to a command as an argument instead (a script reads it as \"$1\"); "
    "if running it is really meant, put it in the `env` param and write \"$NAME\" yourself"
)

# what a word of a command is: ("data" | INTEGER | NAME... | "name" | "refuse", detail)
Role = tuple[str, str | None]
_DATA: Role = ("data", None)


def _refuse(why: str) -> tuple[str, str]:
    return ("refuse", why)


def _check(kind: str, where: str) -> tuple[str, str]:
    return (kind, where)


# -- the analyser -------------------------------------------------------------------------

_BOUNDARIES = frozenset(("command_substitution", "process_substitution"))
_STRUCTURAL = frozenset(
    """program list pipeline negated_command subshell compound_statement if_statement
    elif_clause else_clause while_statement do_group function_definition case_item
    redirected_statement heredoc_redirect variable_assignments""".split()
)
_ARITH_OPS = frozenset(("-eq", "-ne", "-lt", "-le", "-gt", "-ge"))
_DEFAULT_OPS = frozenset(("-", ":-", "=", ":=", "+", ":+", "?", ":?"))
_PATTERN_OPS = frozenset(("/", "//", "/#", "/%", "#", "##", "%", "%%", "^", "^^", ",", ",,"))
_EXPR = frozenset(
    """binary_expression unary_expression ternary_expression parenthesized_expression
    postfix_expression""".split()
)


class _Analyser:
    def __init__(self, literals: tuple[str, ...]) -> None:
        self.literals = literals
        self.text, self.starts = skeleton_of(literals)
        self.src = self.text.encode()
        # character offset -> byte offset, for the placeholders
        self.byte_starts = [len(self.text[:s].encode()) for s in self.starts]
        self.problems: list[Problem] = []
        self.int_names: set[str] = set()
        self.array_names: set[str] = set()
        self.assoc_names: set[str] = set()
        self.roles: dict[int, list[Role]] = {}

    # the text of a node
    def t(self, node: Any) -> str:
        return self.src[node.start_byte : node.end_byte].decode("utf-8", errors="replace")

    def char_offset(self, byte_offset: int) -> int:
        return len(self.src[:byte_offset].decode("utf-8", errors="replace"))

    def run(self) -> Analysis:
        n = len(self.starts)
        tree = _parse(self.src)
        root = tree.root_node
        if root.has_error:
            bad = _first_error(root)
            at = self.char_offset(bad.start_byte) if bad is not None else 0
            while at < len(self.text) - 1 and self.text[at] in " \t":
                at += 1
            self.problems.append(
                Problem(
                    SYNTAX_ERROR + ": a command with templates must parse, so plait can tell where each "
                    "value goes; fix the syntax, or keep the script in a file and pass values as arguments",
                    at,
                )
            )
            return Analysis((), tuple(self.problems), self.text, None)
        self._collect_attributes(root)
        slots = []
        for i in range(n):
            slots.append(self._slot(root, i))
        script = self._emit(slots)
        words = self._plain_words() if not self.problems else None
        return Analysis(tuple(slots), tuple(self.problems), script, words)

    def _emit(self, slots: list[Slot]) -> str:
        out = [self.literals[0]]
        for i, slot in enumerate(slots):
            out.append(_FORMS[slot.form].format(f"{VAR}{i}"))
            out.append(self.literals[i + 1])
        return "".join(out)

    def _plain_words(self) -> tuple[tuple[str | int, ...], ...] | None:
        if not all(PLAIN_CHARS.issuperset(lit) for lit in self.literals):
            return None
        words: list[list[str | int]] = [[]]
        for i, lit in enumerate(self.literals):
            for j, chunk in enumerate(re.split(r"[ \t]+", lit)):
                if j:
                    words.append([])
                if chunk:
                    words[-1].append(chunk)
            if i < len(self.starts):
                words[-1].append(i)
        result = tuple(tuple(w) for w in words if w)
        if not result or not all(isinstance(p, str) for p in result[0]):
            return None
        return result

    # -- attributes given by declare & co, anywhere in the command

    def _collect_attributes(self, root: Any) -> None:
        stack = [root]
        while stack:
            node = stack.pop()
            stack.extend(node.children)
            if node.type == "declaration_command":
                flags = ""
                for child in node.children[1:]:
                    text = self.t(child)
                    if child.type == "word" and text[:1] in "-+":
                        flags += text[1:] if text[:1] == "-" else ""
                    name = self._declared_name(child)
                    if name is None:
                        continue
                    if "i" in flags:
                        self.int_names.add(name)
                    if "a" in flags or "A" in flags:
                        self.array_names.add(name)
                    if "A" in flags:
                        self.assoc_names.add(name)
            elif node.type == "variable_assignment":
                name_node = node.children[0]
                value = node.children[-1] if node.child_count >= 3 else None
                if name_node.type == "subscript":
                    self.array_names.add(self.t(name_node.children[0]))
                elif value is not None and value.type == "array":
                    self.array_names.add(self.t(name_node))
            elif node.type == "command":
                name = self._command_name(node)
                if name in ("read", "mapfile", "readarray"):
                    args = node.children_by_field_name("argument")
                    for k, arg in enumerate(args):
                        if name == "read" and self._static(arg) not in ("-a",):
                            continue
                        target = args[k + 1] if name == "read" and k + 1 < len(args) else arg
                        target_name = self._static(target)
                        if target_name and NAME_RE.fullmatch(target_name):
                            self.array_names.add(target_name)

    def _declared_name(self, node: Any) -> str | None:
        if node.type == "variable_name":
            return self.t(node)
        if node.type == "variable_assignment":
            first = node.children[0]
            if first.type == "subscript":
                first = first.children[0]
            return self.t(first)
        return None

    # -- one placeholder

    def _slot(self, root: Any, i: int) -> Slot:
        start = self.byte_starts[i]
        end = start + len(f"${{{VAR}{i}}}".encode())
        node = root.descendant_for_byte_range(start, end)
        offset = self.starts[i]
        form = QUOTED
        checks: list[tuple[str, str]] = []

        def refuse(why: str) -> Slot:
            self.problems.append(Problem(why, offset))
            return Slot(QUOTED, None, why)

        def integer_already() -> bool:
            # an integer is inert anywhere, even in code: sed -n "$(( ${n} ))p"
            return any(kind == INTEGER for kind, _ in checks)

        backslash = "a template right after a backslash: the backslash would change how bash reads it; remove it"
        before = self.src[node.start_byte : start]
        escaped = (len(before) - len(before.rstrip(b"\\"))) % 2 == 1
        if node.type == "expansion" and node.end_byte == end and not before.strip(b" \t"):
            pass  # (tree-sitter may count blanks before a ${ into the expansion)
        elif node.type == "raw_string":
            form = SINGLE  # a backslash is plain text in 'single quotes'
        elif node.type == "comment":
            return Slot(DROP, None, "a comment")
        elif node.type in ("heredoc_body", "heredoc_content") and self._heredoc_quoted(node):
            return refuse(
                "a template inside a quoted heredoc (<<'EOF') would stay literal text; "
                "use an unquoted delimiter (<<EOF) to pass the value"
            )
        elif escaped or self.src[start - 1 : start] == b"\\":
            return refuse(backslash)
        elif node.type == "ansi_c_string":
            form = ANSI
        elif node.type in ("regex", "extglob_pattern"):
            pass
        elif node.type in ("heredoc_body", "heredoc_content"):
            # bash expands ${...} anywhere in an unquoted heredoc body (tree-sitter
            # misses one at the start of a <<- line)
            pass
        else:
            return refuse(
                f"plait cannot tell how bash reads a template here (inside {_describe(node.type)}); "
                "pass the value as an argument of a command instead"
            )

        inner = True  # still in the command the template belongs to
        in_string = False
        pattern = False
        arith = False
        test_op: str | None = None
        test_word = node
        child = node
        parent = node if node.type == "heredoc_body" else node.parent
        while parent is not None:
            pt = parent.type
            if pt in _BOUNDARIES:
                inner = False
            elif pt == "string" or pt == "translated_string":
                if inner and not arith:
                    in_string = True
            elif pt in ("concatenation", "raw_string", "ansi_c_string", "command_name"):
                pass
            elif pt == "expansion":
                op = _op_before(parent, child)
                if child.type == "subscript" and op is None:
                    pass  # ${a[${i}]}: judged at the subscript
                elif op == ":" or (op is not None and op.startswith(":") and op[1:2] in ("", " ")):
                    if inner:
                        checks.append(_check(INTEGER, "a ${x:offset:length}"))
                        arith = True
                elif op in _DEFAULT_OPS:
                    name = self._expansion_name(parent)
                    if inner and op in ("=", ":=") and name in self.int_names:
                        checks.append(_check(INTEGER, f"a default assigned to the integer variable {name}"))
                elif op in _PATTERN_OPS:
                    pattern = True
                else:
                    return refuse(
                        "a template in this part of a ${...} expansion is not allowed; "
                        "assign the value to a variable first (x=${v}) and expand that"
                    )
            elif pt == "subscript":
                if child is not parent.children[0]:
                    array = self.t(parent.children[0])
                    if array in self.assoc_names:
                        pattern = True  # a key: quoted, used as is
                    elif inner:
                        checks.append(_check(INTEGER, "an array subscript"))
                        arith = True
            elif pt == "c_style_for_statement" and child.type == "do_group":
                pass
            elif pt in ("arithmetic_expansion", "c_style_for_statement") or (
                pt == "compound_statement" and parent.children[0].type == "(("
            ):
                if inner:
                    checks.append(_check(INTEGER, "shell arithmetic ($(( )), (( )) or for (( )))"))
                    arith = True
            elif pt in _EXPR:
                if test_op is None:
                    test_op = _operator(parent, self)
                    test_word = child
            elif pt == "test_command":
                if inner and not arith:
                    if test_op in _ARITH_OPS:
                        checks.append(_check(INTEGER, f"[[ {test_op} ]]"))
                    elif test_op in ("-v", "-R"):
                        checks.append(self._name_check(test_word, offset, f"[[ {test_op} ]]"))
                    pattern = True
            elif pt == "command":
                verdict = self._in_command(parent, child, offset, i)
                if verdict is not None:
                    kind, why = verdict
                    if kind == "refuse" and not integer_already():
                        return refuse(why or "")
                    if inner and kind != "data":
                        checks.append((kind, why or ""))
            elif pt == "declaration_command":
                verdict = self._in_declaration(parent, child, offset)
                if verdict[0] == "refuse" and not integer_already():
                    return refuse(verdict[1] or "")
                if inner and verdict[0] != "data":
                    checks.append((verdict[0], verdict[1] or ""))
            elif pt == "unset_command":
                if inner:
                    checks.append(self._name_check(_word_start(parent, child), offset, "`unset`"))
            elif pt == "variable_assignment":
                name_node = parent.children[0]
                if child is not name_node and inner:
                    name = self.t(name_node if name_node.type != "subscript" else name_node.children[0])
                    if name in self.int_names:
                        checks.append(_check(INTEGER, f"a value for the integer variable {name}"))
            elif pt == "array":
                if inner:
                    key = self._element_key(parent, child, offset)
                    if key is not None:
                        key_of = self._assigned_name(parent)
                        if key_of in self.assoc_names:
                            pattern = True
                        else:
                            checks.append(_check(INTEGER, "an array subscript ([i]=value)"))
                            arith = True
                    assigned = self._assigned_name(parent)
                    if assigned in self.int_names:
                        checks.append(_check(INTEGER, f"a value for the integer array {assigned}"))
            elif pt in ("file_redirect", "herestring_redirect", "heredoc_body"):
                owner = _redirect_owner(parent)
                if owner is not None:
                    stdin = pt != "file_redirect" or self._redirect_op(parent) in ("<", "<>", "<&")
                    if stdin and self._reads_program(owner) and not integer_already():
                        return refuse(
                            f"`{self._command_name(owner)}` reads its program from this input, "
                            "so the value would run as code; pass it as an argument of a script instead"
                        )
                    if inner and pt != "file_redirect":
                        target = self._int_target(owner)
                        if target:
                            checks.append(_check(INTEGER, f"input read into the integer variable {target}"))
                if pt == "heredoc_body" and inner:
                    in_string = True
            elif pt == "pipeline":
                for later in parent.children:
                    if later.start_byte <= child.start_byte:
                        continue
                    cmd = _command_in(later)
                    if cmd is not None and self._reads_program(cmd) and not integer_already():
                        return refuse(
                            f"`{self._command_name(cmd)}` later in this pipeline reads its program from "
                            "its input, so the value would run as code"
                        )
            elif pt in ("for_statement", "select_statement"):
                var = parent.child_by_field_name("variable")
                in_list = _field_of(parent, child) == "value"
                if inner and in_list and var is not None and self.t(var) in self.int_names:
                    checks.append(_check(INTEGER, f"a value for the integer variable {self.t(var)}"))
            elif pt in ("case_statement",):
                pass
            elif pt in _STRUCTURAL:
                if pt == "case_item" and _field_of(parent, child) == "value":
                    pattern = True
            else:
                if inner:
                    return refuse(
                        f"a template inside {_describe(pt)} is not allowed; "
                        "pass the value as an argument of a command instead"
                    )
            child = parent
            parent = parent.parent

        if form == QUOTED and (arith or (in_string and not pattern)):
            form = BARE
        strictest, where = _strictest(checks)
        return Slot(form, strictest, where)

    # -- helpers for positions

    def _heredoc_quoted(self, node: Any) -> bool:
        redirect = node
        while redirect is not None and redirect.type != "heredoc_redirect":
            redirect = redirect.parent
        if redirect is None:
            return False
        for c in redirect.children:
            if c.type == "heredoc_start":
                return any(q in self.t(c) for q in "'\"\\")
        return False

    def _expansion_name(self, node: Any) -> str | None:
        for c in node.children:
            if c.type == "variable_name":
                return self.t(c)
        return None

    def _assigned_name(self, array_node: Any) -> str | None:
        parent = array_node.parent
        if parent is not None and parent.type == "variable_assignment":
            first = parent.children[0]
            return self.t(first)
        return None

    def _element_key(self, array: Any, child: Any, offset: int) -> bool | None:
        """Whether the template stands in the [key] of a ([key]=value) element."""
        text = self.t(child)
        if not text.startswith("["):
            return None
        ph_at = self.byte_starts[int(self._slot_index(offset))] - child.start_byte
        close = text.find("]=")
        if close < 0:
            return None
        return True if ph_at < len(text[:close].encode()) else None

    def _slot_index(self, offset: int) -> int:
        return self.starts.index(offset)

    def _redirect_op(self, node: Any) -> str:
        for c in node.children:
            if not c.is_named:
                return c.type
        return ""

    def _int_target(self, cmd: Any) -> str | None:
        name = self._command_name(cmd)
        if name not in ("read", "mapfile", "readarray"):
            return None
        for arg in cmd.children_by_field_name("argument"):
            text = self._static(arg)
            if text in self.int_names:
                return text
        return None

    def _static(self, node: Any) -> str | None:
        return _static(node, self)

    def _command_name(self, cmd: Any) -> str | None:
        name = cmd.child_by_field_name("name")
        if name is None:
            return None
        return self._resolve_name(name)

    def _resolve_name(self, name_node: Any) -> str | None:
        node = name_node.children[0] if name_node.type == "command_name" and name_node.children else name_node
        text = self._static(node)
        if text is not None:
            return text.rsplit("/", 1)[-1] or text
        if node.type == "concatenation":
            tail = ""
            for part in reversed(node.children):
                s = self._static(part)
                if s is None:
                    break
                tail = s + tail
                if "/" in tail:
                    return tail.rsplit("/", 1)[-1]
        return None

    def _name_check(self, word: Any, offset: int, where: str) -> tuple[str, str]:
        """A variable-name operand: the value must keep the word a name (or an integer subscript)."""
        start = word if isinstance(word, int) else word.start_byte
        idx = self._slot_index(offset)
        prefix = self.src[start : self.byte_starts[idx]].decode("utf-8", errors="replace")
        prefix = re.sub(r"\$\{PLAIT_V\d+\}", "x", prefix)
        prefix = prefix.replace('"', "").replace("'", "").replace("\\", "")
        if prefix.count("[") > prefix.count("]"):
            return _check(INTEGER, f"an array subscript in a variable name ({where})")
        if prefix == "":
            return _check(NAME, f"a variable name ({where})")
        return _check(NAME_PART, f"a variable name ({where})")

    def _reads_program(self, cmd: Any) -> bool:
        """Whether a command reads shell (or other) code from its standard input."""
        name = self._command_name(cmd)
        if name is None:
            return False
        args = [self._static(a) for a in cmd.children_by_field_name("argument")]
        if name in ("source", "."):
            return bool(args) and args[0] in ("/dev/stdin", "/dev/fd/0", "/proc/self/fd/0")
        if name in _SHELLS:
            operands: list[str | None] = []
            takes = False
            for a in args:
                if takes:
                    takes = False
                    continue
                if a is None:
                    operands.append(a)
                elif a in ("-o", "+o", "-O", "+O", "--rcfile", "--init-file"):
                    takes = True
                elif a[:1] in "-+" and a not in ("-", "--") and not operands:
                    if "c" in a[1:] and not a.startswith("--"):
                        return False
                    if "s" in a[1:] and not a.startswith("--"):
                        return True
                else:
                    operands.append(a)
            return not operands or operands[0] in ("-", "/dev/stdin")
        interp = _interp_for(name)
        if interp is not None and not interp.program_operand:
            operands = []
            for a in args:
                if a is not None and a in interp.code:
                    return False
                if a is None or not a.startswith("-") or a == "-":
                    operands.append(a)
            return not operands or operands[0] in ("-", "/dev/stdin")
        return False

    # -- a template inside a simple command

    def _in_command(self, cmd: Any, child: Any, offset: int, slot: int) -> Role | None:
        field = _field_of(cmd, child)
        if field == "name" or child.type == "command_name":
            return _refuse(
                "a template as (part of) the command name would choose the program to run; "
                "write the command name in the workflow and pass the value as an argument "
                '(to run a tool from a folder given as a value, set it in `env` and write "$TOOL_DIR/tool")'
            )
        if child.type in ("variable_assignment", "file_redirect", "herestring_redirect"):
            return None  # judged on the way up
        if field != "argument":
            return None
        name_node = cmd.child_by_field_name("name")
        name = self._resolve_name(name_node) if name_node is not None else None
        args = cmd.children_by_field_name("argument")
        if name is None:
            return _refuse(
                f"the command name `{self.t(name_node)}` is only known at run time, so plait cannot "
                "tell whether it runs its arguments as code; write the command name literally"
            )
        key = cmd.id
        if key not in self.roles:
            self.roles[key] = self._roles(name, args)
        roles = self.roles[key]
        for arg, role in zip(args, roles, strict=True):
            if arg.id == child.id:
                if role[0] == "name":
                    return self._name_check(child, offset, f"`{name}`")
                return role
        return _DATA

    def _roles(self, name: str, args: list[Any]) -> list[Role]:
        """What each argument of ``name`` is: data, an integer, a name, or code (refused)."""
        statics = [self._static(a) for a in args]
        n = len(args)
        if name in _RUNS_ARGS:
            return [_refuse(f"{_RUNS_ARGS[name]}, so a value there would run as shell code; {_AS_DATA}")] * n
        if name in ("source", "."):
            roles: list[Role] = [_DATA] * n
            if n:
                roles[0] = _refuse(f"`{name}` runs the file a value would name; name the file in the workflow")
            return roles
        if name == "let":
            return [_check(INTEGER, "`let`")] * n
        if name in ("test", "["):
            roles = [_DATA] * n
            for k in range(n - 1):
                if statics[k] in ("-v", "-R"):
                    roles[k + 1] = ("name", None)
            return roles
        if name == "read":
            return self._option_roles(statics, {"a": ("name", None)}, "dinNptu", operand=("name", None))
        if name in ("mapfile", "readarray"):
            return self._option_roles(
                statics,
                {"C": _refuse("`mapfile -C` runs a callback as shell code")},
                "dnOsuc",
                operand=("name", None),
            )
        if name == "getopts":
            roles = [_DATA] * n
            if n >= 2:
                roles[1] = ("name", None)  # getopts OPTSTRING NAME [ARGS]
            return roles
        if name == "wait":
            return self._option_roles(statics, {"p": ("name", None)}, "", operand=_DATA)
        if name == "printf":
            roles = [_DATA] * n
            k = 0
            while k < n and (statics[k] or "").startswith("-") and statics[k] != "--":
                if statics[k] == "-v" and k + 1 < n:
                    roles[k + 1] = ("name", None)
                    k += 2
                    continue
                k += 1
            if k < n and statics[k] == "--":
                k += 1
            if k < n:
                roles[k] = _refuse(
                    "a template as the format of printf would be read for % and \\ escapes "
                    "(and a value starting with -v would assign a variable); write printf '%s' ${value}"
                )
            return roles
        if name in _DECLARE_WORDS or name == "unset":
            return [
                _refuse(f"a template given to `{name}` through a wrapper; call `{name}` directly")
            ] * n
        if name in _WRAPPERS:
            return self._wrapper_roles(name, args, statics)
        if name == "find":
            return self._find_roles(args, statics)
        if name in _SHELLS:
            return self._shell_roles(name, statics)
        interp = _interp_for(name)
        if interp is not None:
            return self._interp_roles(name, interp, statics)
        return [_DATA] * n

    def _option_roles(
        self,
        statics: list[str | None],
        special: dict[str, Role],
        takes_arg: str,
        operand: Role,
    ) -> list[Role]:
        roles: list[Role] = []
        pending: Role | None = None
        options = True
        for s in statics:
            if pending is not None:
                roles.append(pending)
                pending = None
                continue
            if options and s == "--":
                options = False
                roles.append(_DATA)
                continue
            if options and s is not None and s.startswith("-") and len(s) > 1:
                roles.append(_DATA)
                for j, ch in enumerate(s[1:], 1):
                    if ch in special or ch in takes_arg:
                        role = special.get(ch, _DATA)
                        if j == len(s) - 1:
                            pending = role
                        elif role[0] == "refuse":
                            roles[-1] = role
                        break
                continue
            options = False
            roles.append(operand)
        return roles

    def _wrapper_roles(self, name: str, args: list[Any], statics: list[str | None]) -> list[Role]:
        w = _WRAPPERS[name]
        n = len(args)
        roles = [_DATA] * n
        k = 0
        positionals = w.positionals
        if name == "command" and any(s in ("-v", "-V") for s in statics[:1]):
            return roles
        while k < n:
            s = statics[k]
            if s is not None and s.startswith("-") and len(s) > 1 and s != "--":
                opt = s.split("=", 1)[0]
                if opt in w.refuse:
                    return roles[:k] + [
                        _refuse(f"`{name} {opt}` runs its argument through a shell, so a value there would run")
                    ] * (n - k)
                if opt in w.takes_arg and "=" not in s:
                    k += 2
                    continue
                k += 1
                continue
            if s == "--":
                k += 1
                continue
            if name == "env" and s is not None and "=" in s:
                k += 1
                continue
            if name == "env" and s is None and "=" in (self.t(args[k]).split("${", 1)[0]):
                k += 1  # NAME=${value}: an environment value for the command
                continue
            if s is None and positionals == 0:
                roles[k] = _refuse(
                    f"plait cannot tell whether this value is an option of `{name}` or the command it runs; "
                    "write the command literally and give the value after it"
                )
                k += 1
                continue
            if positionals:
                positionals -= 1
                k += 1
                continue
            break
        if k >= n:
            return roles
        inner = statics[k]
        if inner is None:
            roles[k] = _refuse(
                f"a template as the command that `{name}` runs would choose the program; "
                "write the command in the workflow"
            )
            return roles
        inner_name = inner.rsplit("/", 1)[-1]
        return roles[: k + 1] + self._roles(inner_name, args[k + 1 :])

    def _find_roles(self, args: list[Any], statics: list[str | None]) -> list[Role]:
        n = len(args)
        roles = [_DATA] * n
        k = 0
        while k < n:
            if statics[k] in ("-exec", "-execdir", "-ok", "-okdir"):
                end = k + 1
                while end < n and statics[end] not in (";", "+"):
                    end += 1
                if k + 1 < n:
                    inner = statics[k + 1]
                    if inner is None:
                        roles[k + 1] = _refuse(
                            "a template as the command of `find -exec` would choose the program; "
                            "write the command in the workflow"
                        )
                    else:
                        roles[k + 2 : end] = self._roles(inner.rsplit("/", 1)[-1], args[k + 2 : end])
                k = end + 1
                continue
            k += 1
        return roles

    def _shell_roles(self, name: str, statics: list[str | None]) -> list[Role]:
        n = len(statics)
        roles = [_DATA] * n
        code_next = False
        k = 0
        while k < n:
            s = statics[k]
            if s is None:
                break
            if s in ("-o", "+o", "-O", "+O"):
                k += 2
                continue
            if s in ("--rcfile", "--init-file"):
                if k + 1 < n:
                    roles[k + 1] = _refuse(f"`{name} {s}` runs that file as shell code")
                k += 2
                continue
            if s == "--":
                k += 1
                break
            if s[:1] in "-+" and len(s) > 1:
                if not s.startswith("--") and "c" in s[1:]:
                    code_next = True
                if not s.startswith("--") and "s" in s[1:]:
                    return roles  # commands come from stdin; the rest are its arguments
                k += 1
                continue
            break
        if k < n:
            if code_next:
                roles[k] = _refuse(
                    f"the `{name} -c` string is shell code, so a value there would run; "
                    f"pass the value as an argument after the string and use it as \"$1\": "
                    f"{name} -c 'echo \"$1\"' _ ${{value}}"
                )
            else:
                roles[k] = _refuse(
                    f"`{name}` runs the script a value would name (or takes the value as its options); "
                    "name the script in the workflow and pass values after it"
                )
        elif statics[k:] and statics[k] is None:
            pass
        return roles

    def _interp_roles(self, name: str, interp: _Interp, statics: list[str | None]) -> list[Role]:
        n = len(statics)
        roles = [_DATA] * n
        had_code = False
        k = 0
        code_msg = (
            f"a template in `{name}` program text would run as {name} code; "
            "pass the value as data (an argument, an environment variable, or awk -v)"
        )
        while k < n:
            s = statics[k]
            if s is None:
                if had_code:
                    return roles  # the operands after the code are its files or arguments
                roles[k] = _refuse(
                    code_msg
                    if interp.program_operand
                    else f"plait cannot tell whether this value is an option of `{name}` or the script "
                    "it runs; name the script in the workflow and pass values after it"
                )
                return roles
            if s == "--":
                k += 1
                break
            if s.startswith("-") and len(s) > 1:
                opt, eq, _rest = s.partition("=")
                short = s[:2]
                if opt in interp.code or short in interp.code:
                    had_code = True
                    if not eq and opt in interp.code and k + 1 < n:
                        roles[k + 1] = _refuse(code_msg)
                    k += 2 if (not eq and opt in interp.code) else 1
                    if name not in ("perl", "sed", "awk", "ruby"):
                        return roles
                    continue
                if opt in interp.code_files or short in interp.code_files:
                    had_code = True
                    if not eq and opt in interp.code_files and k + 1 < n:
                        roles[k + 1] = _refuse(f"`{name} {opt}` runs the file or module a value would name")
                    k += 2 if (not eq and opt in interp.code_files) else 1
                    if not interp.program_operand:
                        return roles
                    continue
                if opt in interp.takes_arg and not eq:
                    k += 2
                    continue
                k += 1
                continue
            break
        if k < n and not had_code:
            roles[k] = _refuse(
                code_msg if interp.program_operand else
                f"`{name}` runs the script a value would name; name the script in the workflow and "
                "pass values after it"
            )
        return roles

    # -- declare, typeset, local, export, readonly

    def _in_declaration(self, decl: Any, child: Any, offset: int) -> Role:
        keyword = self.t(decl.children[0])
        flags = ""
        dynamic_flags = False
        for c in decl.children[1:]:
            if c.start_byte >= child.start_byte:
                break
            text = self._static(c)
            if text is None:
                dynamic_flags = True
            elif text.startswith("-"):
                flags += text[1:]
        text = self._static(child)
        if child.type == "word" and text is not None and text.startswith(("-", "+")):
            return _DATA
        if child.type == "variable_assignment":
            eq = next((c for c in child.children if c.type in ("=", "+=")), None)
            at = self.byte_starts[self._slot_index(offset)]
            if eq is None or at < eq.start_byte or child.children[-1].type == "array":
                return _DATA  # in the name's subscript, or an element of name=(...): checked there
            name = self.t(child.children[0])
            value_prefix = self.src[eq.end_byte : at].decode("utf-8", errors="replace")
            value_prefix = value_prefix.replace('"', "").replace("'", "")
            return self._declared_value(keyword, flags, dynamic_flags, name, value_prefix)
        # a word built with the template: NAME, or NAME=VALUE
        idx = self._slot_index(offset)
        before = self.src[child.start_byte : self.byte_starts[idx]].decode("utf-8", errors="replace")
        if "=" not in re.sub(r"\$\{PLAIT_V\d+\}", "", before):
            return self._name_check(child, offset, f"`{keyword}`")
        name = before.split("=", 1)[0].strip("\"'")
        value_prefix = before.split("=", 1)[1].replace('"', "").replace("'", "")
        return self._declared_value(keyword, flags, dynamic_flags, name, value_prefix)

    def _declared_value(
        self, keyword: str, flags: str, dynamic: bool, name: str, value_prefix: str
    ) -> Role:
        name = name.split("[", 1)[0].rstrip("+")
        if "n" in flags:
            return _check(NAME, f"the target of a nameref (`{keyword} -n`)")
        if "i" in flags or name in self.int_names:
            return _check(INTEGER, f"a value of `{keyword} -i`")
        array = "a" in flags or "A" in flags or dynamic
        if keyword in ("declare", "typeset", "local") and name in self.array_names:
            array = True
        if not array:
            return _DATA
        if value_prefix == "":
            return _check(NOT_COMPOUND, f"a value given to `{keyword}` for an array")
        if value_prefix.startswith("(") or "$" in value_prefix:
            return _refuse(
                f"a template inside a quoted array assignment given to `{keyword}` would be read as "
                "shell code; write the array unquoted: name=(${a} ${b})"
            )
        return _DATA


def _strictest(checks: list[tuple[str, str]]) -> tuple[str | None, str]:
    order = {INTEGER: 0, NAME: 1, NAME_PART: 2, NOT_COMPOUND: 3}
    best: tuple[str | None, str] = (None, "")
    for kind, where in checks:
        if kind in order and (best[0] is None or order[kind] < order[best[0]]):
            best = (kind, where)
    return best


def _word_start(parent: Any, child: Any) -> int:
    """Where the shell word holding ``child`` starts: tree-sitter may split one word in pieces."""
    start = child.start_byte
    for c in reversed(parent.children):
        if c.start_byte >= child.start_byte:
            continue
        if c.end_byte != start or not c.is_named:
            break
        start = c.start_byte
    return start


def _first_error(node: Any) -> Any:
    if node.is_error or node.is_missing:
        return node
    for c in node.children:
        if c.has_error or c.is_error or c.is_missing:
            found = _first_error(c)
            if found is not None:
                return found
    return None


def _field_of(parent: Any, child: Any) -> str | None:
    for k, c in enumerate(parent.children):
        if c.id == child.id:
            return parent.field_name_for_child(k)
    return None


def _op_before(expansion: Any, child: Any) -> str | None:
    op = None
    for c in expansion.children:
        if c.id == child.id:
            return op
        if not c.is_named and c.type not in ("${", "}"):
            op = c.type
        elif c.is_named and c.type not in ("variable_name", "subscript", "special_variable_name"):
            pass
    return op


def _operator(expr: Any, analyser: _Analyser) -> str | None:
    for c in expr.children:
        if c.type == "test_operator":
            return analyser.t(c)
        if not c.is_named and c.type not in ("(", ")"):
            return c.type
    return None


def _redirect_owner(redirect: Any) -> Any:
    node = redirect
    while node is not None and node.type not in ("command", "redirected_statement"):
        node = node.parent
    if node is None:
        return None
    if node.type == "redirected_statement":
        body = node.child_by_field_name("body")
        return _command_in(body) if body is not None else None
    return node


def _command_in(node: Any) -> Any:
    while node is not None and node.type == "redirected_statement":
        node = node.child_by_field_name("body")
    if node is not None and node.type == "command":
        return node
    return None


def _static(node: Any, a: _Analyser) -> str | None:
    """The word's text after quote removal, or None when it holds an expansion."""
    t = node.type
    if t in ("word", "number"):
        text = a.t(node)
        if "${PLAIT_V" in text:
            return None
        return re.sub(r"\\(.)", r"\1", text.replace("\\\n", ""), flags=re.S)
    if t == "raw_string":
        text = a.t(node)[1:-1]
        return None if "${PLAIT_V" in text else text
    if t == "ansi_c_string":
        text = a.t(node)[2:-1]
        return None if "${PLAIT_V" in text else text
    if t == "string":
        parts = []
        for c in node.children:
            if c.type == '"':
                continue
            if c.type != "string_content":
                return None
            parts.append(re.sub(r"\\([\\\"$`])", r"\1", a.t(c).replace("\\\n", "")))
        return "".join(parts)
    if t == "concatenation":
        parts = []
        for c in node.children:
            s = _static(c, a)
            if s is None:
                return None
            parts.append(s)
        return "".join(parts)
    return None


_DESCRIPTIONS = {
    "string_content": "double quotes, after a backslash",
    "heredoc_content": "a heredoc, after a backslash",
    "word": "a word bash does not expand it in",
    "function_definition": "a function name",
}


def _describe(node_type: str) -> str:
    return _DESCRIPTIONS.get(node_type, f"`{node_type.replace('_', ' ')}`")
