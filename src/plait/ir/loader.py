"""Read a workflow file into plain data, naming file, line and column when it is malformed.

Both formats load to JSON's data model (objects with text keys, lists, text,
numbers, true/false/null) and refuse what would exhaust or crash what comes
after: nesting deeper than ``MAX_DEPTH``, YAML aliases that expand beyond
``MAX_ALIAS_NODES`` values, integers longer than ``MAX_INT_DIGITS`` digits,
NaN and infinities, duplicate keys, lone UTF-16 surrogates, and files over
``MAX_FILE_BYTES`` (YAML: ``MAX_YAML_CHARS``). docs/format.md, "Limits and hostile input", is the user's
side of these rules.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plait.errors import Problem, WorkflowInvalid

SUFFIXES = (".json", ".yaml", ".yml")
MARKDOWN_SUFFIX = ".pflow.md"  # pflow's markdown format; Path.suffix sees only ".md"


@dataclass
class Document:
    """A workflow file as read: its plain IR, and what reading it found.

    For a ``.pflow.md`` the IR is built as far as the markdown allows, beside every
    problem in it, and :meth:`report` points later problems at markdown lines.
    """

    raw: Any
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    markdown: Any = None  # the MarkdownWorkflow of a .pflow.md

    def report(self, later: list[Problem]) -> list[Problem]:
        """The problems found while reading plus ``later`` ones, placed in the file."""
        if self.markdown is None:
            return [*self.problems, *later]
        problems: list[Problem] = self.markdown.report(later)
        return problems


def load_document(path: str | Path) -> Document:
    """Like :func:`load_file`, but a ``.pflow.md``'s problems come back instead of raising."""
    p = Path(path)
    if not p.name.lower().endswith(MARKDOWN_SUFFIX) or not p.is_file():
        return Document(load_file(p))
    from plait.ir.markdown import parse_markdown

    doc = parse_markdown(_read(p))
    return Document(doc.ir, doc.problems, doc.warnings, doc)


def _read(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8-sig")  # tolerate the BOM some editors write
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowInvalid([Problem(f"cannot read workflow file: {exc}")], file=str(p))

MAX_FILE_BYTES = 16 * 1024 * 1024
#: PyYAML's pure-Python parser takes ~7 s and ~120 MB per MiB of YAML
MAX_YAML_CHARS = 2 * 1024 * 1024
#: objects and lists inside one another; far beyond any real workflow, far below
#: what the recursive code after the loader (validation, templates, JSON output) can take
MAX_DEPTH = 100
#: values that YAML aliases (``*name``, ``<<: *name``) may repeat, in all, once expanded
MAX_ALIAS_NODES = 10_000
#: Python's own limit for turning text into an int and back (sys.get_int_max_str_digits)
MAX_INT_DIGITS = 4300


class Refused(ValueError):
    """Data that parses but is refused; ``pos`` (an offset in the text) or
    ``line``/``column`` (1-based) say where, ``path`` is the JSON path when known."""

    def __init__(
        self,
        message: str,
        hint: str,
        *,
        pos: int | None = None,
        line: int | None = None,
        column: int | None = None,
        path: str = "",
        mark: Any = None,  # a YAML mark: 0-based line and column
    ) -> None:
        super().__init__(message)
        if mark is not None:
            line, column = mark.line + 1, mark.column + 1
        self.message = message
        self.hint = hint
        self.pos = pos
        self.line = line
        self.column = column
        self.path = path

    def locate(self, text: str) -> Refused:
        if self.pos is not None and self.line is None:
            self.line, self.column = line_column(text, self.pos)
        return self


def line_column(text: str, pos: int) -> tuple[int, int]:
    return text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)


def load_file(path: str | Path) -> Any:
    p = Path(path)
    if p.name.lower().endswith(MARKDOWN_SUFFIX) and p.is_file():
        from plait.ir.markdown import load_markdown

        return load_markdown(_read(p), file=str(p))
    if str(path) == "-" and not p.exists():
        raise WorkflowInvalid(
            [Problem(
                "the workflow is read from a file, not from standard input ('-')",
                hint="save it first (plait run wf.json); standard input is for a batch's items "
                '({"from": "-"}) and for an input marked stdin: true',
            )],
            file="-",
        )
    if not p.exists():
        raise WorkflowInvalid(
            [Problem(f"workflow file not found: {p}", hint="check the path and the current directory")],
            file=str(p),
        )
    if p.is_dir():
        raise WorkflowInvalid(
            [Problem(f"{p} is a directory, not a workflow file", hint="give the path of a .json or .yaml file")],
            file=str(p),
        )
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise WorkflowInvalid(
            [
                Problem(
                    f"unsupported workflow file type '{suffix or p.name}'",
                    hint=(
                        f"a pflow markdown workflow is named NAME{MARKDOWN_SUFFIX}"
                        if suffix == ".md"
                        else f"use a .json, .yaml, .yml or {MARKDOWN_SUFFIX} file"
                    ),
                )
            ],
            file=str(p),
        )
    text = read_workflow_text(p)
    raw = load_text(text, "yaml" if suffix in (".yaml", ".yml") else "json", file=str(p))
    if suffix == ".json":
        raw = unwrap_saved(raw)
    return pflow_aliases(raw)


def unwrap_saved(raw: Any) -> Any:
    """The IR inside a workflow pflow saved (``~/.pflow/workflows/NAME.json``):
    ``{"name", "description", "ir": {...}, "created_at", ...}``. The wrapper's
    description is the workflow's when the IR has none; its other fields are
    pflow's bookkeeping (dates, version, search metadata)."""
    if not (isinstance(raw, dict) and "nodes" not in raw and isinstance(raw.get("ir"), dict)):
        return raw
    ir = dict(raw["ir"])
    if "description" not in ir and isinstance(raw.get("description"), str) and raw["description"]:
        ir["description"] = raw["description"]
    return ir


def pflow_aliases(raw: Any) -> Any:
    """Nodes that write pflow's ``parameters`` get ``params``, so everything after
    the loader (convert included) sees one name. Both given stays as written:
    validation reports it."""
    nodes = raw.get("nodes") if isinstance(raw, dict) else None
    if not isinstance(nodes, list) or not any(
        isinstance(n, dict) and "parameters" in n and "params" not in n for n in nodes
    ):
        return raw
    renamed = [
        {("params" if k == "parameters" else k): v for k, v in n.items()}
        if isinstance(n, dict) and "parameters" in n and "params" not in n
        else n
        for n in nodes
    ]
    return {**raw, "nodes": renamed}


def read_workflow_text(p: Path) -> str:
    """The file's text: at most MAX_FILE_BYTES (a symlink to /dev/zero ends too),
    UTF-8 with or without the BOM some editors write."""
    try:
        with open(p, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise WorkflowInvalid([Problem(f"cannot read workflow file: {exc.strerror or exc}")], file=str(p))
    if len(data) > MAX_FILE_BYTES:
        raise WorkflowInvalid(
            [
                Problem(
                    f"the workflow file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB",
                    hint="keep large data out of the workflow: read it at run time with read-file or an input",
                )
            ],
            file=str(p),
        )
    for bom, name in ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
                      (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16")):  # fmt: skip
        if data.startswith(bom):
            raise WorkflowInvalid(
                [Problem(f"the workflow file is {name} text", line=1, column=1, hint="save it as UTF-8")],
                file=str(p),
            )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        start = exc.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        line = data.count(b"\n", 0, start) + 1
        line_start = data.rfind(b"\n", 0, start) + 1
        column = len(data[line_start:start].decode("utf-8", "replace")) + 1
        raise WorkflowInvalid(
            [
                Problem(
                    f"the workflow file is not valid UTF-8 (byte 0x{data[start]:02x})",
                    line=line,
                    column=column,
                    hint="save the file as UTF-8",
                )
            ],
            file=str(p),
        )


def load_text(text: str, fmt: str, *, file: str | None = None) -> Any:
    if not text.strip():
        raise WorkflowInvalid(
            [Problem("the workflow file is empty", line=1, column=1, hint='start from {"nodes": [...]}')],
            file=file,
        )
    if fmt == "json":
        try:
            return parse_json(text)
        except json.JSONDecodeError as exc:
            raise WorkflowInvalid(
                [
                    Problem(
                        f"malformed JSON: {exc.msg}",
                        line=exc.lineno,
                        column=exc.colno,
                        hint=_json_hint(exc.msg),
                    )
                ],
                file=file,
            )
        except Refused as exc:
            raise WorkflowInvalid([_refused_problem(exc.locate(text))], file=file)
    return _load_yaml(text, file)


def _refused_problem(exc: Refused) -> Problem:
    path = exc.path if len(exc.path) <= 80 else exc.path[:40] + "..." + exc.path[-37:]
    return Problem(exc.message, path=path, line=exc.line, column=exc.column, hint=exc.hint)


def _json_hint(msg: str) -> str:
    if "Expecting ',' delimiter" in msg:
        return "a comma is missing between two items, or a string is not closed"
    if "Expecting property name" in msg:
        return "JSON does not allow trailing commas or unquoted keys"
    if "Expecting value" in msg:
        return "a value is missing or not valid JSON (strings need double quotes)"
    return "fix the JSON syntax at that position"


# -- the limits, worded once for both formats --------------------------------------

_SURROGATE = re.compile("[\ud800-\udfff]")

_HINT_DEPTH = "flatten the data, or keep it in a file and read it at run time"
_HINT_NUMBER = "JSON has no NaN or Infinity: write null, a number, or text in quotes"
_HINT_BIG_INT = "write it as text in quotes"
_HINT_SURROGATE = (
    "write the character itself, or both halves of its UTF-16 pair (\\ud83d\\ude00 is one emoji)"
)


def _too_deep() -> str:
    return f"values are nested more than {MAX_DEPTH} levels deep"


def _big_int(digits: int) -> str:
    return f"an integer of {digits} digits is too long (at most {MAX_INT_DIGITS})"


def _surrogate_message(value: str) -> str:
    found = _SURROGATE.search(value)
    code = ord(found.group()) if found else 0
    return f"text holds a lone surrogate \\u{code:04x} (half of a UTF-16 pair), which is not Unicode"


def _duplicate_hint() -> str:
    return "each key may appear once in an object; remove or rename one of them"


# -- JSON -------------------------------------------------------------------------


class _Stop(Exception):
    """Raised inside json.loads: the scanner below finds and words the problem."""


def _no_constant(name: str) -> Any:
    raise _Stop(name)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Stop("duplicate")
    return obj


def parse_json(text: str) -> Any:
    """``json.loads`` that refuses (with :class:`Refused`, offset included) what
    the module docstring lists; syntax errors stay ``json.JSONDecodeError``."""
    try:
        value = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique_pairs)
        if _check_tree(value):
            return value
    except json.JSONDecodeError:
        raise
    except (_Stop, RecursionError, ValueError):  # ValueError: an int over Python's digit limit
        pass
    # The cheap checks said no; a token scan finds the first problem and its place.
    raise _locate_json_problem(text)


def _check_tree(value: Any) -> bool:
    """Depth, finite floats and proper Unicode, without recursion."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return False
        elif isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                return False
            if isinstance(item, dict):
                for key, child in item.items():
                    if _SURROGATE.search(key):
                        return False
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)
    return True


_JSON_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>"(?:[^"\\]|\\.)*")
    | (?P<open>[\[{]) | (?P<close>[\]}]) | (?P<colon>:) | (?P<comma>,)
    | (?P<word>-?[A-Za-z]+)
    | (?P<num>-?[0-9]+(?P<frac>(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?))
    )""",
    re.VERBOSE | re.DOTALL,
)
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


class _Frame:
    __slots__ = ("index", "is_object", "key", "seen", "want_key")

    def __init__(self, is_object: bool) -> None:
        self.is_object = is_object
        self.want_key = is_object
        self.key: str | None = None
        self.index = 0
        self.seen: dict[str, int] = {}


def _json_path(stack: list[_Frame], last: str | None = None) -> str:
    out = ""
    for frame in stack:
        if frame.is_object:
            if frame.key is not None and not frame.want_key:
                out += _path_key(frame.key, out)
        else:
            out += f"[{frame.index}]"
    return out + (_path_key(last, out) if last is not None else "")


def _child_path(parent: str, key: str) -> str:
    return parent + _path_key(key, parent)


def _path_key(key: str, before: str) -> str:
    if _PLAIN_KEY.fullmatch(key):
        return f".{key}" if before else key
    return f"[{json.dumps(key)}]"


def _locate_json_problem(text: str) -> Refused:
    """Walk the tokens of text that json.loads accepted up to its first refusal."""
    stack: list[_Frame] = []
    pos = 0
    while True:
        m = _JSON_TOKEN.match(text, pos)
        if m is None or m.lastgroup is None:
            break
        start, pos = m.start(m.lastgroup), m.end()
        kind, token = m.lastgroup, m.group(m.lastgroup)
        top = stack[-1] if stack else None
        if kind == "open":
            if len(stack) >= MAX_DEPTH:
                return Refused(_too_deep(), _HINT_DEPTH, pos=start, path=_json_path(stack))
            stack.append(_Frame(token == "{"))
        elif kind == "close":
            if stack:
                stack.pop()
        elif kind == "colon" and top is not None:
            top.want_key = False
        elif kind == "comma" and top is not None:
            if top.is_object:
                top.want_key = True
            else:
                top.index += 1
        elif kind == "str":
            value = json.loads(token)
            if _SURROGATE.search(value):
                return Refused(_surrogate_message(value), _HINT_SURROGATE, pos=start, path=_json_path(stack))
            if top is not None and top.is_object and top.want_key:
                if value in top.seen:
                    first, _ = line_column(text, top.seen[value])
                    return Refused(
                        f"duplicate key {value!r} (first given on line {first})",
                        _duplicate_hint(),
                        pos=start,
                        path=_json_path(stack, value),
                    )
                top.seen[value] = start
                top.key = value
        elif kind == "word" and token in ("NaN", "Infinity", "-Infinity"):
            return Refused(f"{token} is not a JSON number", _HINT_NUMBER, pos=start, path=_json_path(stack))
        elif kind == "num":
            if not m.group("frac"):
                digits = len(token.lstrip("-"))
                if digits > MAX_INT_DIGITS:
                    return Refused(_big_int(digits), _HINT_BIG_INT, pos=start, path=_json_path(stack))
            elif not math.isfinite(float(token)):
                shown = token if len(token) <= 20 else token[:17] + "..."
                return Refused(
                    f"the number {shown} is too large (it would be infinite)",
                    _HINT_NUMBER,
                    pos=start,
                    path=_json_path(stack),
                )
    return Refused("the JSON data cannot be loaded", "check the file's syntax")


# -- YAML -------------------------------------------------------------------------


def _load_yaml(text: str, file: str | None) -> Any:
    import yaml  # lazy: only YAML workflows pay for it

    if len(text) > MAX_YAML_CHARS:
        raise WorkflowInvalid(
            [
                Problem(
                    f"the YAML workflow holds more than {MAX_YAML_CHARS // (1024 * 1024)} MiB of text",
                    hint="write a workflow this large as JSON (up to 16 MiB), or keep its data in a file",
                )
            ],
            file=file,
        )
    try:
        loader = _yaml_loader_class()(text)  # the reader checks the characters here
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except Refused as exc:
        raise WorkflowInvalid([_refused_problem(exc)], file=file)
    except yaml.YAMLError as exc:
        raise WorkflowInvalid([_yaml_problem(exc, text)], file=file)


def _yaml_problem(exc: Any, text: str) -> Problem:
    import yaml

    hint = "check indentation and quoting; a value with ': ' or '#' needs quotes"
    if isinstance(exc, yaml.reader.ReaderError):  # a control character the YAML spec forbids
        line, column = line_column(text, exc.position)
        char = exc.character if isinstance(exc.character, int) else 0
        return Problem(
            f"malformed YAML: character #x{char:04x} is not allowed in YAML",
            line=line,
            column=column,
            hint="remove it, or write it as an escape (\\x00) inside double quotes",
        )
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    message = f"malformed YAML: {problem}" + (f" ({context})" if context else "")
    return Problem(
        message,
        line=mark.line + 1 if mark is not None else None,
        column=mark.column + 1 if mark is not None else None,
        hint=hint,
    )


@functools.cache
def _yaml_loader_class() -> type:
    """SafeLoader held to JSON's data model and to the limits above."""
    import yaml
    from yaml.events import AliasEvent, CollectionStartEvent
    from yaml.nodes import MappingNode, ScalarNode

    class Loader(yaml.SafeLoader):
        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self._depth = 0
            self._open_anchors: set[str] = set()
            self._alias_budget = MAX_ALIAS_NODES
            self._measured: dict[int, tuple[int, int]] = {}
            self._path: list[str] = []
            self._paths: dict[int, str] = {}  # JSON path of each node, for messages

        # Composition sees aliases before anything is copied: the budget is kept here.
        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            if isinstance(event, AliasEvent):
                if event.anchor in self._open_anchors:
                    raise Refused(
                        f"the alias *{event.anchor} is inside the value it names (a loop)",
                        "an alias may only repeat a value that is already complete",
                        path=self._joined(),
                        mark=event.start_mark,
                    )
                node = super().compose_node(parent, index)
                size, depth = self._measure(node)
                self._alias_budget -= size
                if self._alias_budget < 0:
                    raise Refused(
                        f"YAML aliases repeat more than {MAX_ALIAS_NODES} values in all",
                        "repeat less through aliases (*name, <<: *name); write the values out",
                        path=self._joined(),
                        mark=event.start_mark,
                    )
                if self._depth + depth > MAX_DEPTH:
                    raise Refused(_too_deep(), _HINT_DEPTH, path=self._joined(), mark=event.start_mark)
                return node
            opens = isinstance(event, CollectionStartEvent)
            if opens:
                if self._depth >= MAX_DEPTH:
                    raise Refused(_too_deep(), _HINT_DEPTH, path=self._joined(), mark=event.start_mark)
                self._depth += 1
            anchor = event.anchor
            if anchor is not None:
                self._open_anchors.add(anchor)
            try:
                node = super().compose_node(parent, index)
            finally:
                if opens:
                    self._depth -= 1
                if anchor is not None:
                    self._open_anchors.discard(anchor)
            return node

        # Called between descend_resolver and ascend_resolver: self._path is the node's own.
        def compose_scalar_node(self, anchor: Any) -> Any:
            node = super().compose_scalar_node(anchor)
            self._paths[id(node)] = self._joined()
            return node

        def compose_sequence_node(self, anchor: Any) -> Any:
            path = self._joined()
            node = super().compose_sequence_node(anchor)
            self._paths[id(node)] = path
            return node

        def compose_mapping_node(self, anchor: Any) -> Any:
            path = self._joined()
            node = super().compose_mapping_node(anchor)
            self._paths[id(node)] = path
            return node

        def path_of(self, node: Any) -> str:
            return self._paths.get(id(node), "")

        def descend_resolver(self, current_node: Any, current_index: Any) -> None:
            if isinstance(current_index, int) and not isinstance(current_index, bool):
                self._path.append(f"[{current_index}]")
            elif isinstance(current_index, ScalarNode):
                self._path.append(_path_key(current_index.value, "".join(self._path)))
            else:
                self._path.append("")
            super().descend_resolver(current_node, current_index)

        def ascend_resolver(self) -> None:
            self._path.pop()
            super().ascend_resolver()

        def _joined(self) -> str:
            return "".join(self._path)

        def _measure(self, node: Any) -> tuple[int, int]:
            """(values in it once aliases are expanded, levels of nesting)."""
            known = self._measured.get(id(node))
            if known is not None:
                return known
            if isinstance(node, ScalarNode):
                result = (1, 0)
            else:
                children = (
                    [part for pair in node.value for part in pair]
                    if isinstance(node, MappingNode)
                    else node.value
                )
                size, depth = 1, 0
                for child in children:
                    s, d = self._measure(child)
                    size += s
                    depth = max(depth, d)
                result = (size, depth + 1)
            self._measured[id(node)] = result
            return result

        def construct_scalar(self, node: Any) -> Any:
            value = super().construct_scalar(node)
            if isinstance(value, str) and _SURROGATE.search(value):
                raise Refused(_surrogate_message(value), _HINT_SURROGATE, mark=node.start_mark, path=self.path_of(node))
            return value

        def construct_object(self, node: Any, deep: bool = False) -> Any:
            try:
                return super().construct_object(node, deep=deep)
            except (Refused, yaml.YAMLError):
                raise
            except Exception:
                # An explicit tag on text that does not fit it (!!int abc, !!bool maybe, !!float "")
                raise Refused(
                    f"cannot read {_preview(node.value)!r} as {_tag_name(node.tag)}",
                    "remove the tag, or give a value of that type",
                    mark=node.start_mark, path=self.path_of(node),
                )

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if not isinstance(node, MappingNode):
                return super().construct_mapping(node, deep=deep)
            seen: dict[str, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self._key(key_node)
                if key in seen:
                    raise Refused(
                        f"duplicate key {key!r} (first given on line {seen[key].start_mark.line + 1})",
                        _duplicate_hint(),
                        path=_child_path(self.path_of(node), key),
                        mark=key_node.start_mark,
                    )
                seen[key] = key_node
            self.flatten_mapping(node)  # merged keys first: the mapping's own keys win
            mapping: dict[str, Any] = {}
            for key_node, value_node in node.value:
                mapping[self._key(key_node)] = self.construct_object(value_node, deep=deep)
            return mapping

        def _key(self, key_node: Any) -> str:
            """Keys are text, as in JSON: ``1:``, ``on:`` and ``null:`` are the keys
            "1", "on" and "null", as written."""
            if not isinstance(key_node, ScalarNode):
                raise Refused(
                    "a key must be text, not a list or an object",
                    "write the key as plain text",
                    mark=key_node.start_mark,
                )
            key = self.construct_object(key_node)
            return key if isinstance(key, str) else str(key_node.value)

    def construct_float(loader: Any, node: Any) -> float:
        value = yaml.SafeLoader.construct_yaml_float(loader, node)
        if not math.isfinite(value):
            raise Refused(
                f"{node.value} is not a JSON number"
                if node.value.lower().lstrip("+-") in (".nan", ".inf")
                else f"the number {node.value[:20]} is too large (it would be infinite)",
                _HINT_NUMBER,
                mark=node.start_mark, path=loader.path_of(node),
            )
        return float(value)

    def construct_int(loader: Any, node: Any) -> int:
        try:
            value = int(yaml.SafeLoader.construct_yaml_int(loader, node))
        except ValueError:
            digits = sum(c.isdigit() for c in node.value)
            if digits <= MAX_INT_DIGITS:
                raise  # not a number at all (!!int abc): construct_object words it
            raise Refused(
                _big_int(digits), _HINT_BIG_INT, mark=node.start_mark, path=loader.path_of(node)
            )
        if value.bit_length() > 3 * MAX_INT_DIGITS and abs(value) >= _int_ceiling():  # 0x... forms
            raise Refused(
                f"an integer of more than {MAX_INT_DIGITS} digits is too long",
                _HINT_BIG_INT,
                mark=node.start_mark,
                path=loader.path_of(node),
            )
        return value

    def construct_as_text(loader: Any, node: Any) -> str:
        # A date stays the text it was written as: JSON has no date type.
        return str(loader.construct_scalar(node))

    def refuse_tag(loader: Any, node: Any) -> Any:
        raise Refused(
            f"the YAML type {_tag_name(node.tag)} is not supported",
            "a workflow holds JSON data: objects, lists, text, numbers, true/false and null",
            mark=node.start_mark, path=loader.path_of(node),
        )

    Loader.add_constructor("tag:yaml.org,2002:float", construct_float)
    Loader.add_constructor("tag:yaml.org,2002:int", construct_int)
    Loader.add_constructor("tag:yaml.org,2002:timestamp", construct_as_text)
    for tag in ("binary", "omap", "pairs", "set"):
        Loader.add_constructor(f"tag:yaml.org,2002:{tag}", refuse_tag)
    return Loader


def _preview(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


@functools.cache
def _int_ceiling() -> int:
    return 10 ** MAX_INT_DIGITS


def _tag_name(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org,2002:") else tag
