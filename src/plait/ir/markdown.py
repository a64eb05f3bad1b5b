"""pflow's markdown workflows (``.pflow.md``): read them into the plain IR, and write IR back.

Reading follows pflow's parser rule for rule, so a file gives the IR pflow builds
from it, plus ``description`` (the prose under the ``# Title``, which pflow keeps
beside its IR and plait's format has a field for). pflow's ``_source_line(s)``
bookkeeping keys are not copied into the IR: the :class:`SourceMap` holds where
every value came from, so a problem the validator finds later on the IR
(``nodes[2].params.command``) still points at its markdown line.

Unlike pflow, which stops at the first error, every problem in the file is
collected, each with its line and a hint. The IR is still built as far as it
goes, so validation can report the rest of the file in the same run; entities
that had a markdown problem are "tainted" and the validator's findings about
them are dropped (they would only repeat the markdown problem in other words).

The format, as pflow defines it:

- optional YAML frontmatter between ``---`` lines (pflow's save metadata; not IR);
- ``# Title`` and the prose under it (the workflow's description);
- ``## Inputs``, ``## Steps`` (required), ``## Outputs`` sections, each a list
  of ``### id`` entities that must carry prose (purpose or description);
- ``- key: value`` bullets are YAML (``*`` bullets are prose);
- fenced code blocks whose info string's last word names the param
  (```` ```shell command ````); with a leading ``yaml`` word the content is YAML;
- edges come from document order, ``- next:`` and ``- on-error:``;
- ``type``, ``batch`` and the other node-level fields are lifted out of params.
"""

from __future__ import annotations

import ast
import itertools
import json
import math
import re
import secrets
import warnings as _warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from plait.errors import Problem, WorkflowInvalid

# Entity ids as pflow requires them: stricter than the JSON format's node ids.
ENTITY_ID_RE = re.compile(r"^[a-z][a-z0-9_-]*$")

# Fields of a step that are node-level, not params: pflow lifts them out of the bullets.
LIFTED_FIELDS = ("batch", "loop", "retry", "cache", "prompt_cache", "prewarm", "approval")
_CODE_LIFTED = ("batch", "loop")  # the ones a code block lifts too; any other block is a param

_KNOWN = ("inputs", "steps", "outputs")
_SECTION_TITLES = {"inputs": "Inputs", "steps": "Steps", "outputs": "Outputs"}
_NEAR_MISS = {"input": "Inputs", "step": "Steps", "output": "Outputs"}

_BULLET_RE = re.compile(r"^(\s*)- (.+)$")
_ITEM_RE = re.compile(r"^\s*-\s+(\S+?):\s*(.*)$")
# The value of "- key: |" or "- key: >-": a YAML block scalar header.
_BLOCK_HEADER_RE = re.compile(r"[|>][-+]?([1-9])?[-+]?(?:\s+#.*)?")
_FENCE_RE = re.compile(r"^(`{3,}|~{3,})")

_NULLS = frozenset({"null", "Null", "NULL", "~"})
_TRUES = frozenset({"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"})
_FALSES = frozenset({"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"})
_INT_RE = re.compile(r"^[+-]?\d+$")
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.\d*|\.\d+)([eE][+-]?\d+)?$")
# The escapes a one-line double-quoted bullet value understands (pflow's set, not YAML's).
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r", "0": "\0", "/": "/", " ": " "}

# Quoted YAML scalars are left to YAML; a bare ${...} (one level of nested braces
# allowed) is masked, since YAML would read its "{" as the start of a flow mapping.
_SHIELD_RE = re.compile(r'"(?:\\.|[^"\\])*"' r"|'(?:''|[^'])*'" r"|(\$\{(?:[^{}]|\{[^{}]*\})*\})")
_TEMPLATE_IN_TEXT = re.compile(r"\$\{[^{}\s]*\}")

_NOTE_HINT = (
    "parameters are '- key: value' bullets; for a note, start the line with '*' instead of '-'"
)


# --------------------------------------------------------------------------- YAML


class _YamlError(Exception):
    def __init__(
        self, problem: str, context: str, line: int | None, column: int | None, opened: int | None
    ) -> None:
        super().__init__(problem)
        self.problem = problem
        self.context = context  # e.g. "while parsing a flow sequence"
        self.line = line  # 0-based, within the parsed text
        self.column = column  # 1-based
        self.opened = opened  # 0-based line where the context starts, when it is another line

    def text(self, first_line: int) -> str:
        """The message, its lines counted from ``first_line`` (the markdown line of the text's start)."""
        if not self.context:
            return self.problem
        where = (
            f", which starts at line {first_line + self.opened}" if self.opened is not None else ""
        )
        return f"{self.problem} ({self.context}{where})"


def _yaml_load(text: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """Parse YAML with ``${...}`` shielded from it; also the 0-based line of every sub-path."""
    pieces: list[str] = []
    templates: dict[str, str] = {}
    shifts: list[tuple[int, int, int]] = []  # (line, masked column, extra length) per template
    nonce = secrets.token_hex(4)
    last = 0
    line, col = 0, 0
    for m in _SHIELD_RE.finditer(text):
        if m.group(1) is None:
            continue
        before = text[last : m.start()]
        pieces.append(before)
        line += before.count("\n")
        col = len(before) - before.rfind("\n") - 1 if "\n" in before else col + len(before)
        key = f"__plait_tpl_{nonce}_{len(templates)}__"
        templates[key] = m.group(1)
        pieces.append(key)
        shifts.append((line, col, len(key) - len(m.group(1))))
        line += m.group(1).count("\n")
        col = (
            col + len(key)
            if "\n" not in m.group(1)
            else len(m.group(1)) - m.group(1).rfind("\n") - 1
        )
        last = m.end()
    pieces.append(text[last:])
    masked = "".join(pieces)

    loader = yaml.SafeLoader(masked)
    try:
        node = loader.get_single_node()
        value = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None) or ""
        context_mark = getattr(exc, "context_mark", None)
        for key, template in templates.items():
            problem, context = problem.replace(key, template), context.replace(key, template)
        if mark is None:
            raise _YamlError(problem, context, None, None, None) from None
        column = mark.column - sum(
            extra for ln, c, extra in shifts if ln == mark.line and c < mark.column
        )
        opened = context_mark.line if context_mark is not None else None
        raise _YamlError(
            problem, context, mark.line, column + 1, opened if opened != mark.line else None
        ) from None
    finally:
        loader.dispose()

    spots: dict[tuple[Any, ...], int] = {}
    if node is not None:
        _node_lines(node, (), spots)
    if templates:
        value = _unmask(value, templates)
        spots = {tuple(_unmask(k, templates) for k in path): ln for path, ln in spots.items()}
    return value, spots


def _node_lines(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    out.setdefault(path, node.start_mark.line)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                out.setdefault((*path, key.value), key.start_mark.line)
                _node_lines(value, (*path, key.value), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _node_lines(item, (*path, i), out)


def _unmask(value: Any, templates: dict[str, str]) -> Any:
    if isinstance(value, str):
        if "__plait_tpl_" in value:
            for key, template in templates.items():
                value = value.replace(key, template)
        return value
    if isinstance(value, list):
        return [_unmask(v, templates) for v in value]
    if isinstance(value, dict):
        return {_unmask(k, templates): _unmask(v, templates) for k, v in value.items()}
    return value


def _yaml_hint(message: str) -> str:
    if "mapping values are not allowed" in message:
        return "a value that holds ': ' must be quoted, e.g. - prompt: \"Summary: ${text}\""
    if "flow" in message or "expected ',' or" in message:
        return "a '[' or '{' value must be closed and its items separated by commas"
    return "check the indentation and quoting of this YAML"


def _scalar(value: str) -> Any:
    """A one-line bullet's value: YAML's scalars, and otherwise the text exactly as written."""
    if not value:
        return None
    if len(value) >= 2 and value[0] == value[-1] == '"':
        out, i, body = [], 0, value[1:-1]
        while i < len(body):
            if body[i] == "\\" and i + 1 < len(body) and body[i + 1] in _ESCAPES:
                out.append(_ESCAPES[body[i + 1]])
                i += 2
            else:
                out.append(body[i])
                i += 1
        return "".join(out)
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1].replace("''", "'")
    if value[0] in "\"'":
        raise ValueError("double" if value[0] == '"' else "single")
    if value[0] in "{[":
        return _yaml_load(value)[0]
    if value in _NULLS:
        return None
    if value in _TRUES:
        return True
    if value in _FALSES:
        return False
    if _INT_RE.match(value):
        return int(value)
    if _FLOAT_RE.match(value):
        return float(value)
    return value


# --------------------------------------------------------------------------- source map


@dataclass
class Spot:
    """Where a value of the IR was written: a line, and for code blocks the body."""

    line: int
    column: int | None = None
    body: str | None = None  # the text the value came from, to find a template inside it
    body_line: int | None = None  # the line of the body's first line


_PATH_PART = re.compile(r"\[\d+\]|[^.\[]+")


class SourceMap:
    """IR paths (``nodes[2].params.command``) to the markdown places they came from."""

    def __init__(self) -> None:
        self._spots: dict[str, Spot] = {}

    def add(self, path: str, spot: Spot) -> None:
        self._spots.setdefault(path, spot)

    def get(self, path: str) -> Spot | None:
        """The spot of ``path``, or of its nearest enclosing path that has one."""
        parts = _PATH_PART.findall(path)
        while parts:
            key = _join_path(parts)
            if key in self._spots:
                return self._spots[key]
            parts.pop()
        return None

    def locate(self, problem: Problem) -> None:
        """Give a problem found on the IR the markdown line (and column) it comes from."""
        if problem.line is not None or not problem.path:
            return
        spot = self.get(problem.path)
        if spot is None:
            return
        problem.line, problem.column = spot.line, spot.column
        # A template named in the message is found in the text it was written in.
        if spot.body is not None:
            for template in _TEMPLATE_IN_TEXT.findall(problem.message):
                for i, text in enumerate(spot.body.split("\n")):
                    col = text.find(template)
                    if col >= 0:
                        problem.line = (spot.body_line or spot.line) + i
                        problem.column = col + 1
                        return

    def __contains__(self, path: str) -> bool:
        return path in self._spots


def _join_path(parts: list[str]) -> str:
    out = ""
    for p in parts:
        out += p if p.startswith("[") or not out else "." + p
    return out


def _subpath(base: str, rel: tuple[Any, ...]) -> str:
    out = base
    for p in rel:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


# --------------------------------------------------------------------------- parse result


@dataclass
class MarkdownWorkflow:
    """A parsed ``.pflow.md``: the IR, and what else the document said about it."""

    ir: dict[str, Any]
    title: str | None = None
    frontmatter: dict[str, Any] | None = None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    source_map: SourceMap = field(default_factory=SourceMap)
    tainted: set[str] = field(default_factory=set)

    def report(self, later: list[Problem]) -> list[Problem]:
        """This file's problems plus those validation found later, in the order the file reads."""
        kept = [p for p in later if not self._is_tainted(p.path)]
        for p in kept:
            self.source_map.locate(p)
        return sorted(
            [*self.problems, *kept],
            key=lambda p: (p.line is None, p.line or 0, p.column or 0),
        )

    def _is_tainted(self, path: str) -> bool:
        return any(path == t or path.startswith((t + ".", t + "[")) for t in self.tainted)


# --------------------------------------------------------------------------- scanning


@dataclass
class _Block:
    tag: str
    param: str
    content: str
    line: int  # the opening fence
    yaml: bool


@dataclass
class _Item:
    line: int
    lines: list[str]


@dataclass
class _Entity:
    id: str
    line: int
    section: str
    prose: list[tuple[int, str]] = field(default_factory=list)
    items: list[_Item] = field(default_factory=list)
    blocks: list[_Block] = field(default_factory=list)
    path: str = ""
    bad_id: bool = False  # its id is invalid or a duplicate, so edges naming it are in doubt


class _Parser:
    def __init__(self, text: str) -> None:
        if text.startswith("\ufeff"):
            text = text[1:]
        self.lines = text.splitlines()
        self.out = MarkdownWorkflow(ir={})
        self.entities: list[_Entity] = []
        self.steps_line: int | None = None  # of the '## Steps' heading
        self.unclosed = False  # a code block ran to the end of the file

    def problem(
        self,
        message: str,
        line: int | None,
        hint: str = "",
        *,
        column: int | None = None,
        entity: _Entity | None = None,
        path: str | None = None,
    ) -> None:
        if entity is not None and entity.path:
            self.out.tainted.add(entity.path)
        self.out.problems.append(
            Problem(
                message,
                path=path if path is not None else (entity.path if entity else ""),
                hint=hint,
                line=line,
                column=column,
                node_id=entity.id if entity is not None and entity.section == "steps" else None,
            )
        )

    # -- phase 1: frontmatter

    def frontmatter(self) -> int:
        lines = self.lines
        if not lines or lines[0].rstrip() != "---":
            return 0
        close = next((i for i in range(1, len(lines)) if lines[i].rstrip() == "---"), None)
        if close is None:
            return 0
        try:
            data, _ = _yaml_load("\n".join(lines[1:close]))
        except _YamlError as exc:
            self.problem(
                f"malformed YAML in the frontmatter: {exc.text(2)}",
                2 + (exc.line or 0),
                "the frontmatter between the two '---' lines must be YAML key: value pairs",
                column=exc.column,
            )
            return close + 1
        if isinstance(data, dict):
            self.out.frontmatter = data
        elif data is not None:
            self.out.warnings.append(
                "line 1: the frontmatter is not a mapping of key: value and was ignored"
            )
        return close + 1

    # -- phase 2: the line-by-line state machine, as pflow's

    def scan(self, start: int) -> None:
        section = "none"
        section_lines: dict[str, int] = {}
        h1 = False
        h1_prose: list[tuple[int, str]] = []
        entity: _Entity | None = None
        fence: str | None = None
        fence_line = 0
        fence_tag = ""
        fence_body: list[str] = []
        fence_entity: _Entity | None = None
        item: _Item | None = None
        item_indent = 0
        scalar_key: int | None = None  # column of the key of an open "- key: |" block scalar
        scalar_indent = 0
        orphans: dict[str, list[int]] = {}
        cache_line: int | None = None

        def flush() -> None:
            nonlocal item, scalar_key, scalar_indent
            if item is not None:
                while item.lines and not item.lines[-1].strip():
                    item.lines.pop()
                if item.lines and entity is not None:
                    entity.items.append(item)
            item = None
            scalar_key, scalar_indent = None, 0

        for idx in range(start, len(self.lines)):
            line = self.lines[idx]
            n = idx + 1

            # A block scalar's content is opaque text, like a fence's, until a shallower line.
            if scalar_key is not None and item is not None:
                indent = len(line) - len(line.lstrip(" "))
                blank = indent == len(line)
                if not scalar_indent and not blank and indent > scalar_key:
                    scalar_indent = max([indent, *(len(b) for b in item.lines[1:])])
                if blank or (scalar_indent and indent >= scalar_indent):
                    item.lines.append(line)
                    continue
                scalar_key, scalar_indent = None, 0

            s = line.strip()
            if s.startswith(("```", "~~~")):
                if fence is not None:
                    if s == fence[0] * len(s) and len(s) >= len(fence):
                        if entity is not None:
                            param = fence_tag.split()[-1] if fence_tag else ""
                            words = fence_tag.split()
                            entity.blocks.append(
                                _Block(
                                    fence_tag,
                                    param,
                                    "\n".join(fence_body),
                                    fence_line,
                                    len(words) > 1 and words[0].lower() == "yaml",
                                )
                            )
                        elif section in _KNOWN:
                            orphans.setdefault(section, []).extend([fence_line, n])
                        fence = None
                    else:
                        fence_body.append(line)
                    continue
                flush()
                m = _FENCE_RE.match(s)
                assert m is not None
                fence = m.group(1)
                fence_tag = s[len(fence) :].strip()
                fence_line = n
                fence_body = []
                fence_entity = entity
                continue
            if fence is not None:
                fence_body.append(line)
                continue

            if s.startswith("# "):
                flush()
                if not h1:
                    h1 = True
                    self.out.title = s[2:].strip()
                    entity = None
                continue
            if s.startswith("## "):
                flush()
                entity = None
                name = s[3:].strip()
                lowered = name.lower()
                section = (
                    lowered if lowered in _KNOWN else "cache" if lowered == "cache" else "unknown"
                )
                if section in _KNOWN:
                    if section in section_lines:
                        self.problem(
                            f"a second '## {_SECTION_TITLES[section]}' section",
                            n,
                            f"merge it into the '## {_SECTION_TITLES[section]}' section at line "
                            f"{section_lines[section]}",
                            column=1,
                        )
                    else:
                        section_lines[section] = n
                    if section == "steps" and self.steps_line is None:
                        self.steps_line = n
                elif section == "cache":
                    if cache_line is None:
                        cache_line = n
                        self.problem(
                            "'## Cache' (pflow's LLM prompt cache) is not supported by plait yet",
                            n,
                            "remove the '## Cache' section; the workflow runs the same without it, "
                            "uncached",
                            column=1,
                        )
                elif lowered in _NEAR_MISS:
                    self.out.warnings.append(
                        f"line {n}: '## {name}' is not a section plait reads; "
                        f"did you mean '## {_NEAR_MISS[lowered]}'?"
                    )
                continue
            if s.startswith("### "):
                flush()
                eid = s[4:].strip()
                entity = _Entity(eid, n, section)
                if section in _KNOWN:
                    entity.path = self._entity_path(entity)
                entity.bad_id = True  # until it is found good
                if not ENTITY_ID_RE.match(eid):
                    self.problem(
                        f"invalid id '{eid}'",
                        n,
                        "an id starts with a lowercase letter, then lowercase letters, digits, "
                        "'-' or '_'" + (f", e.g. '{_slug(eid)}'" if _slug(eid) else ""),
                        column=5,
                        entity=entity,
                    )
                else:
                    same = next(
                        (e for e in self.entities if e.id == eid and e.section == section), None
                    )
                    if same is not None:
                        self.problem(
                            f"duplicate id '{eid}'",
                            n,
                            f"'{eid}' is already defined at line {same.line}; ids in a section "
                            "must be unique",
                            column=5,
                            entity=entity,
                        )
                    else:
                        entity.bad_id = False
                self.entities.append(entity)
                continue

            if section == "cache" and entity is None:
                continue

            if entity is not None:
                if item is not None:
                    if not s or len(line) - len(line.lstrip()) >= item_indent:
                        item.lines.append(line)
                        continue
                    flush()
                bm = _BULLET_RE.match(line)
                if bm:
                    flush()
                    item = _Item(n, [line.rstrip()])
                    item_indent = len(bm.group(1)) + 2
                    im = _ITEM_RE.match(line)
                    header = _BLOCK_HEADER_RE.fullmatch(im.group(2).strip()) if im else None
                    if im and header:
                        scalar_key = im.start(1)
                        if header.group(1):
                            scalar_indent = scalar_key + int(header.group(1))
                    continue
                if not s:
                    continue
                entity.prose.append((n, s))
                continue

            if h1 and section == "none":
                if s:
                    h1_prose.append((n, s))
                continue
            if section in _KNOWN and s:
                orphans.setdefault(section, []).append(n)

        flush()
        self.unclosed = fence is not None
        if fence is not None:
            self.problem(
                "this code block is never closed",
                fence_line,
                f"add a closing {fence} line after its last line",
                column=1,
                entity=fence_entity,
            )
        if h1_prose:
            self.out.ir["description"] = "\n".join(text for _, text in h1_prose)
            self.out.source_map.add("description", Spot(h1_prose[0][0], 1))
        for sec, nums in orphans.items():
            count = sum(1 for e in self.entities if e.section == sec)
            lo, hi = min(nums), max(nums)
            where = f"line {lo}" if lo == hi else f"lines {lo}-{hi}"
            title = _SECTION_TITLES[sec]
            if count == 0:
                self.problem(
                    f"'## {title}' has content but no ### entries ({where})",
                    lo,
                    f"each entry of '## {title}' starts with a '### id' heading, then its prose",
                    column=1,
                    path="nodes" if sec == "steps" else sec,
                )
                if sec == "steps":
                    self.out.tainted.add("nodes")
            else:
                self.out.warnings.append(
                    f"{where}: text in '## {title}' before its first ### entry is not part of "
                    "the workflow"
                )

    def _entity_path(self, e: _Entity) -> str:
        if e.section == "steps":
            return f"nodes[{sum(1 for x in self.entities if x.section == 'steps')}]"
        return f"{e.section}.{e.id}"

    # -- phase 3: the IR

    def build(self) -> None:
        ir = self.out.ir
        steps = [e for e in self.entities if e.section == "steps"]
        if self.steps_line is None:
            if not self.unclosed:
                self.problem(
                    "the workflow has no '## Steps' section",
                    max(len(self.lines), 1),
                    "add a '## Steps' section with at least one step: a '### id' heading, "
                    "a line saying what it does, and '- type: shell' (or another node type)",
                    path="nodes",
                )
            self.out.tainted.add("nodes")
        elif not steps and "nodes" not in self.out.tainted:
            self.problem(
                "the '## Steps' section has no steps",
                self.steps_line,
                "add a step under it: a '### id' heading, a line saying what it does, "
                "and '- type: shell' (or another node type)",
                column=1,
                path="nodes",
            )
            self.out.tainted.add("nodes")

        inputs = [e for e in self.entities if e.section == "inputs"]
        if inputs:
            ir["inputs"] = {e.id: self._flat(e) for e in inputs}
        nodes: list[dict[str, Any]] = []
        routing: dict[str, dict[str, tuple[Any, int]]] = {}
        for e in steps:
            node, route = self._node(e)
            nodes.append(node)
            if route:
                routing[e.id] = route
        ir["nodes"] = nodes
        ir["edges"] = self._edges(steps, nodes, routing)
        outputs = [e for e in self.entities if e.section == "outputs"]
        if outputs:
            ir["outputs"] = {e.id: self._flat(e) for e in outputs}
        if self.out.source_map.get("nodes") is None and self.steps_line is not None:
            self.out.source_map.add("nodes", Spot(self.steps_line, 1))

    def _prose(self, e: _Entity) -> str | None:
        if not e.prose:
            what = {"steps": "what this step does", "inputs": "what this input is"}.get(
                e.section, "what this output is"
            )
            self.problem(
                f"'{e.id}' has no description",
                e.line,
                f"write a line saying {what} between '### {e.id}' and its bullets",
                column=1,
                entity=e,
            )
            return None
        return "\n".join(text for _, text in e.prose)

    def _check_blocks(self, e: _Entity) -> list[_Block]:
        """The entity's well-formed code blocks; every malformed one is a problem."""
        good: list[_Block] = []
        seen: dict[str, int] = {}
        for b in e.blocks:
            if not b.tag:
                earlier = [x for x in e.blocks if x.tag and x.line < b.line]
                if earlier:
                    last = earlier[-1]
                    self.problem(
                        "a code block without an info string, most likely because a ``` line "
                        f"inside the '{last.tag}' block at line {last.line} closed it early",
                        b.line,
                        f"open the outer block with more backticks (````{last.tag}) and close "
                        "it with as many",
                        column=1,
                        entity=e,
                    )
                else:
                    self.problem(
                        "a code block without an info string: its last word names the param",
                        b.line,
                        "write e.g. ```shell command, ```python code, ```markdown prompt "
                        "or ```yaml batch",
                        column=1,
                        entity=e,
                    )
                continue
            if b.param in seen:
                self.problem(
                    f"a second code block for '{b.param}'",
                    b.line,
                    f"'{b.param}' already has the code block at line {seen[b.param]}; keep one",
                    column=1,
                    entity=e,
                )
                continue
            seen[b.param] = b.line
            ok = True
            if b.tag.split()[0].lower() == "python" or b.param == "code":
                ok = self._check_python(e, b)
            if b.yaml:
                try:
                    _yaml_load(b.content)
                except _YamlError as exc:
                    ok = False
                    self.problem(
                        f"malformed YAML in the '{b.tag}' block: {exc.text(b.line + 1)}",
                        b.line + 1 + (exc.line or 0),
                        _yaml_hint(exc.problem + exc.context),
                        column=exc.column,
                        entity=e,
                    )
            if ok:
                good.append(b)
        return good

    def _check_python(self, e: _Entity, b: _Block) -> bool:
        try:
            with _warnings.catch_warnings():
                _warnings.simplefilter("ignore")  # SyntaxWarnings are the code node's business
                ast.parse(b.content)
        except SyntaxError as exc:
            self.problem(
                f"Python syntax error in the '{b.tag}' block: {exc.msg}",
                b.line + (exc.lineno or 1),
                "fix the Python code; the line is counted from the top of this file",
                column=exc.offset,
                entity=e,
            )
            return False
        except ValueError as exc:  # e.g. a NUL byte
            self.problem(f"the '{b.tag}' block is not Python source: {exc}", b.line, entity=e)
            return False
        return True

    def _bullets(self, e: _Entity, base: str, lifted: tuple[str, ...] = ()) -> dict[str, Any]:
        """The entity's bullets as one mapping, each key mapped to the line it was written on."""
        merged: dict[str, Any] = {}
        smap = self.out.source_map
        for item in e.items:
            if len(item.lines) == 1:
                text = item.lines[0]
                m = _ITEM_RE.match(text)
                if not m:
                    shown = re.sub(r"^\s*-\s*", "", text).strip()
                    self.problem(
                        f"'{shown}' is not a 'key: value' parameter",
                        item.line,
                        _NOTE_HINT,
                        column=1,
                        entity=e,
                    )
                    continue
                key, raw = m.group(1), m.group(2)
                try:
                    merged[key] = _scalar(raw)
                except ValueError as exc:
                    self.problem(
                        f"the value of '{key}' opens a {exc} quote it never closes",
                        item.line,
                        "add the closing quote, or leave the quotes out",
                        column=m.start(2) + 1,
                        entity=e,
                    )
                    continue
                except _YamlError as exc:
                    self.problem(
                        f"malformed YAML in the value of '{key}': {exc.text(item.line)}",
                        item.line,
                        _yaml_hint(exc.problem + exc.context),
                        column=m.start(2) + (exc.column or 1),
                        entity=e,
                    )
                    continue
                path = _subpath(self._field_base(base, key, lifted), (key,))
                smap.add(path, Spot(item.line, m.start(2) + 1, body=text, body_line=item.line))
                if isinstance(merged[key], dict | list):
                    value_spots = _yaml_load(raw)[1]
                    for rel in value_spots:
                        smap.add(_subpath(path, rel), Spot(item.line, m.start(2) + 1))
                continue
            text = "\n".join(item.lines)
            try:
                parsed, spots = _yaml_load(text)
            except _YamlError as exc:
                self.problem(
                    f"malformed YAML in the parameters of '{e.id}': {exc.text(item.line)}",
                    item.line + (exc.line or 0),
                    _yaml_hint(exc.problem + exc.context),
                    column=exc.column,
                    entity=e,
                )
                continue
            entries = parsed if isinstance(parsed, list) else [parsed] if parsed is not None else []
            for i, entry in enumerate(entries):
                if not isinstance(entry, dict):
                    self.problem(
                        f"'{entry}' is not a 'key: value' parameter",
                        item.line + spots.get((i,), 0),
                        _NOTE_HINT,
                        column=1,
                        entity=e,
                    )
                    continue
                merged.update(entry)
                for key in entry:
                    prefix = (i, key) if isinstance(parsed, list) else (key,)
                    path = _subpath(self._field_base(base, key, lifted), (key,))
                    smap.add(
                        path, Spot(item.line + spots.get(prefix, 0), body=text, body_line=item.line)
                    )
                    for rel, ln in spots.items():
                        if rel[: len(prefix)] == prefix and len(rel) > len(prefix):
                            smap.add(_subpath(path, rel[len(prefix) :]), Spot(item.line + ln))
        return merged

    @staticmethod
    def _field_base(base: str, key: str, lifted: tuple[str, ...]) -> str:
        """Where a bullet's key lands in the IR: a node's params, unless it is node-level."""
        if base.endswith(".params") and (key in lifted or key in ("type", "next", "on-error")):
            return base[: -len(".params")]
        return base

    def _block_spots(self, b: _Block, path: str) -> None:
        smap = self.out.source_map
        smap.add(path, Spot(b.line, 1, body=b.content, body_line=b.line + 1))
        if b.yaml:
            for rel, ln in _yaml_load(b.content)[1].items():
                if rel:
                    smap.add(_subpath(path, rel), Spot(b.line + 1 + ln))

    def _flat(self, e: _Entity) -> dict[str, Any]:
        """An input or an output: prose, bullets and code blocks in one flat mapping."""
        out: dict[str, Any] = {}
        prose = self._prose(e)
        blocks = self._check_blocks(e)
        if prose:
            out["description"] = prose
        self.out.source_map.add(e.path, Spot(e.line, 5))
        if e.prose:
            self.out.source_map.add(f"{e.path}.description", Spot(e.prose[0][0], 1))
        out.update(self._bullets(e, e.path))
        for b in blocks:
            out[b.param] = b.content  # in inputs and outputs a block is text, even a yaml one
            self._block_spots(b, f"{e.path}.{b.param}")
        return out

    def _node(self, e: _Entity) -> tuple[dict[str, Any], dict[str, tuple[Any, int]]]:
        smap = self.out.source_map
        smap.add(e.path, Spot(e.line, 5))
        smap.add(f"{e.path}.id", Spot(e.line, 5))
        prose = self._prose(e)
        blocks = self._check_blocks(e)
        params = self._bullets(e, f"{e.path}.params", LIFTED_FIELDS)
        item_lines: dict[str, int] = {}
        for item in e.items:
            m = _ITEM_RE.match(item.lines[0])
            if m:
                item_lines.setdefault(m.group(1), item.line)
        for b in blocks:
            if b.param in params:
                self.problem(
                    f"'{b.param}' is given twice: as a bullet (line "
                    f"{item_lines.get(b.param, e.line)}) and as this code block",
                    b.line,
                    f"remove the '- {b.param}:' bullet or the code block",
                    column=1,
                    entity=e,
                )
        node: dict[str, Any] = {"id": e.id}
        if "type" in params:
            node["type"] = params.pop("type")
        elif "type" not in item_lines:  # a '- type:' bullet that did not parse is reported already
            self.problem(
                f"step '{e.id}' has no type",
                e.line,
                f"add a bullet such as '- type: shell' under '### {e.id}' (`plait nodes` lists the types)",
                column=1,
                entity=e,
            )
        for name in LIFTED_FIELDS:
            if name in params:
                node[name] = params.pop(name)
        route: dict[str, tuple[Any, int]] = {}
        for key in ("next", "on-error"):
            if key in params:
                route[key] = (params.pop(key), item_lines.get(key, e.line))
        if prose:
            node["purpose"] = prose
            smap.add(f"{e.path}.purpose", Spot(e.prose[0][0], 1))
        for b in blocks:
            if b.param in _CODE_LIFTED:
                node[b.param] = _yaml_load(b.content)[0] if b.yaml else b.content
                self._block_spots(b, f"{e.path}.{b.param}")
            else:
                params[b.param] = _yaml_load(b.content)[0] if b.yaml else b.content
                self._block_spots(b, f"{e.path}.params.{b.param}")
        if params:
            node["params"] = params
        return node, route

    def _edges(
        self,
        steps: list[_Entity],
        nodes: list[dict[str, Any]],
        routing: dict[str, dict[str, tuple[Any, int]]],
    ) -> list[dict[str, Any]]:
        edges: list[dict[str, Any]] = []
        smap = self.out.source_map

        doubtful = {e.id for e in steps if e.bad_id}

        def add(edge: dict[str, Any], line: int, column: int | None) -> None:
            smap.add(f"edges[{len(edges)}]", Spot(line, column))
            if edge["from"] in doubtful or edge["to"] in doubtful:
                self.out.tainted.add(f"edges[{len(edges)}]")
            edges.append(edge)

        for i, e in enumerate(steps):
            route = routing.get(e.id, {})
            if "next" in route:
                value, line = route["next"]
                text = str(value)
                targets = (
                    [t.strip() for t in text.split(",") if t.strip()]
                    if "," in text
                    else [text.strip()]
                )
                real = [t for t in targets if t != "end"]
                if len(real) == 1:
                    add({"from": e.id, "to": real[0], "action": "default"}, line, 3)
                elif real:
                    # Several targets: the node picks one by the action it returns.
                    for t in real:
                        add({"from": e.id, "to": t, "action": t}, line, 3)
                    add({"from": e.id, "to": real[0], "action": "default"}, line, 3)
            elif i < len(nodes) - 1:
                add({"from": e.id, "to": nodes[i + 1]["id"]}, e.line, 5)
            if "on-error" in route:
                value, line = route["on-error"]
                if value:
                    add({"from": e.id, "to": str(value), "action": "error"}, line, 3)
            for b in e.blocks:
                if b.param == "code" and b.tag:
                    self._code_routes(e, b, edges, add)

        if not edges and len(nodes) > 1:
            # pflow runs only the first step of a workflow without edges, plait runs them
            # all in order (as a JSON workflow without edges): refuse rather than differ.
            ends = [e for e in steps if "next" in routing.get(e.id, {})]
            first = ends[0] if ends else steps[0]
            self.problem(
                f"no step leads to another, so only '{steps[0].id}' would run",
                routing.get(first.id, {}).get("next", (None, first.line))[1],
                f"remove '- next: end' from '### {first.id}' to go on in document order, "
                "or remove the steps that never run",
                column=1,
                path="edges",
            )
            self.out.tainted.add("edges")
        if any(n["id"] == "end" for n in nodes):
            end = next(x for x in steps if x.id == "end")
            self.problem(
                "'end' cannot be a step id: '- next: end' means the flow stops",
                end.line,
                "rename the step, e.g. 'finish' or 'done'",
                column=5,
                entity=end,
            )
        self._branch_targets(steps, edges, routing)
        return edges

    def _code_routes(
        self, e: _Entity, b: _Block, edges: list[dict[str, Any]], add: Callable[..., None]
    ) -> None:
        """pflow's code node picks its successor by assigning ``next``; plait's does not (yet)."""
        try:
            with _warnings.catch_warnings():
                _warnings.simplefilter("ignore")
                tree = ast.parse(b.content)
        except (SyntaxError, ValueError):
            return
        for n in ast.walk(tree):
            target: ast.expr | None = None
            if isinstance(n, ast.AnnAssign) and n.value is not None:
                target, value = n.target, n.value
            elif isinstance(n, ast.Assign) and len(n.targets) == 1:
                target, value = n.targets[0], n.value
            if not (isinstance(target, ast.Name) and target.id == "next"):
                continue
            assert isinstance(n, ast.Assign | ast.AnnAssign)
            self.problem(
                "routing by assigning 'next' in Python code is not supported by plait yet",
                b.line + n.lineno,
                "plait's code node always continues on its default edge; route with "
                f"'- next: <id>' on '### {e.id}', or give the alternative its own step",
                column=n.col_offset + 1,
                entity=e,
            )
            literal = value.value if isinstance(value, ast.Constant) else None
            if (
                isinstance(literal, str)
                and literal != "end"
                and not any(x["from"] == e.id and x.get("action") == literal for x in edges)
            ):
                add({"from": e.id, "to": literal, "action": literal}, b.line + n.lineno, 1)

    def _branch_targets(
        self,
        steps: list[_Entity],
        edges: list[dict[str, Any]],
        routing: dict[str, dict[str, tuple[Any, int]]],
    ) -> None:
        """pflow's rule: a step reached by a named action must say where it goes next."""
        by_id = {e.id: e for e in steps}
        routers: dict[str, dict[str, list[str]]] = {}
        for edge in edges:
            action = edge.get("action")
            if action not in (None, "default"):
                routers.setdefault(edge["to"], {}).setdefault(edge["from"], []).append(action)
        if not routers:
            return

        def who(target: str) -> str:
            return ", ".join(
                f"'{r}'" + (" (on-error)" if all(a == "error" for a in acts) else "")
                for r, acts in sorted(routers[target].items())
            )

        order = {edge["from"]: edge["to"] for edge in edges if "action" not in edge}
        for target in sorted(routers):
            e = by_id.get(target)
            if e is None or "next" in routing.get(target, {}):
                continue
            follow = order.get(target)
            hint = (
                f"add '- next: {follow}' to continue there, or '- next: end' to stop"
                if follow and follow not in routers
                else "add '- next: end' (or '- next: <id>') to it"
            )
            self.problem(
                f"step '{target}' is a branch target of {who(target)} but has no '- next:'"
                + (f"; it would fall through to '{follow}' by document order" if follow else ""),
                e.line,
                hint,
                column=1,
                entity=e,
            )
        for edge in edges:
            if "action" in edge or edge["to"] not in routers or edge["from"] in routers[edge["to"]]:
                continue
            source = by_id[edge["from"]]
            join = _convergence(edges, routers, source.id)
            self.problem(
                f"step '{source.id}' falls through to '{edge['to']}' by document order, but "
                f"'{edge['to']}' is a branch target of {who(edge['to'])}",
                source.line,
                f"add '- next: {join}' to continue after the branch, or '- next: end'"
                if join
                else "add '- next: end' (or '- next: <id>') to it",
                column=1,
                entity=source,
            )


def _convergence(edges: list[dict[str, Any]], routers: dict[str, Any], source: str) -> str | None:
    """The step most branch targets continue to, when at least two do."""
    votes: dict[str, set[str]] = {}
    for edge in edges:
        if edge.get("action") == "default" and edge["from"] in routers:
            votes.setdefault(edge["to"], set()).add(edge["from"])
    best = sorted(
        (-len(v), k) for k, v in votes.items() if k not in routers and k != source and len(v) >= 2
    )
    return best[0][1] if best else None


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9_-]+", "-", text.strip().lower()).strip("-")
    slug = re.sub(r"^[^a-z]+", "", slug)
    return slug if ENTITY_ID_RE.match(slug) else ""


def parse_markdown(text: str) -> MarkdownWorkflow:
    """Parse a ``.pflow.md`` document; problems are collected on the result, not raised."""
    p = _Parser(text)
    start = p.frontmatter()
    p.scan(start)
    p.build()
    p.out.problems.sort(key=lambda q: (q.line is None, q.line or 0, q.column or 0))
    return p.out


def load_markdown(text: str, *, file: str | None = None) -> dict[str, Any]:
    """The IR of a ``.pflow.md`` document, or :class:`WorkflowInvalid` with every problem."""
    doc = parse_markdown(text)
    if doc.problems:
        raise WorkflowInvalid(doc.problems, file=file)
    return doc.ir


# --------------------------------------------------------------------------- writing

_SIMPLE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_TOP_DROPPED = ("ir_version", "$schema", "name", "metadata")  # carry no meaning a run depends on
_TOP_WRITTEN = ("description", "inputs", "nodes", "edges", "outputs", "start_node")
_NODE_WRITTEN = ("id", "type", "purpose", "params", *LIFTED_FIELDS)
_BULLET_ONLY = ("type", "next", "on-error", *LIFTED_FIELDS)  # a bullet of these is not a param
_LANGS = {"command": "shell", "code": "python", "prompt": "markdown", "system": "markdown"}
_BLOCK_PARAMS = ("command", "code", "prompt")
_LINE_BREAKS = re.compile("[\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
_PROSE_HAZARD = re.compile(r"^(?:#{1,3} |```|~~~)")


def to_markdown(
    ir: Any, *, title: str = "Workflow", frontmatter: dict[str, Any] | None = None
) -> tuple[str, list[str]]:
    """Write the IR as a ``.pflow.md`` document; also notes on what changed in form only.

    Raises :class:`WorkflowInvalid` naming everything the markdown cannot say (a fan-out,
    a start node other than the first step, an id pflow would refuse...): the result is
    checked by reading it back, so what is written means what the IR means.
    """
    losses: list[Problem] = []
    notes: list[str] = []

    def lose(message: str, path: str, hint: str = "") -> None:
        losses.append(Problem(message, path=path, hint=hint))

    if not isinstance(ir, dict) or not isinstance(ir.get("nodes"), list) or not ir["nodes"]:
        raise WorkflowInvalid(
            [Problem("a workflow needs a 'nodes' list to be written as markdown", path="nodes")]
        )
    nodes = ir["nodes"]
    for i, n in enumerate(nodes):
        if (
            not isinstance(n, dict)
            or not isinstance(n.get("id"), str)
            or not isinstance(n.get("type"), str)
        ):
            lose("a node needs a string 'id' and 'type'", f"nodes[{i}]")
    if losses:
        raise WorkflowInvalid(losses)

    for key in ir:
        if key in _TOP_DROPPED:
            if key == "ir_version" and ir[key] in ("0.1.0", "0.1"):
                continue
            notes.append(f"'{key}' is not part of the markdown format and was left out")
        elif key not in _TOP_WRITTEN:
            lose(f"'{key}' cannot be written in a .pflow.md", key, "keep this workflow in JSON")
    start = ir.get("start_node")
    if start is not None and start != nodes[0]["id"]:
        lose(
            f"start_node '{start}' is not the first node; a .pflow.md starts at its first step",
            "start_node",
            "move that node to the front of 'nodes'",
        )

    out: list[str] = []
    if frontmatter:
        out += ["---", *_dump_yaml(frontmatter).splitlines(), "---", ""]
    out += [f"# {' '.join(str(title).split()) or 'Workflow'}", ""]
    description = ir.get("description")
    if isinstance(description, str) and description.strip():
        out += [*_prose(description, in_entity=False), ""]

    inputs = ir.get("inputs") or {}
    outputs = ir.get("outputs") or {}
    for section, entries in (("inputs", inputs), ("outputs", outputs)):
        if not isinstance(entries, dict):
            lose(f"'{section}' must be an object of name: spec", section)
        else:
            for name, spec in entries.items():
                if not isinstance(spec, dict):
                    lose(f"{section[:-1]} '{name}' must be an object", f"{section}.{name}")
    ids = [n["id"] for n in nodes]
    for where, names in (("nodes", ids), ("inputs", list(inputs)), ("outputs", list(outputs))):
        for k, name in enumerate(names):
            if (
                not isinstance(name, str)
                or not ENTITY_ID_RE.match(name)
                or (where == "nodes" and name == "end")
            ):
                path = f"nodes[{k}].id" if where == "nodes" else f"{where}.{name}"
                lose(
                    f"'{name}' is not an id a .pflow.md allows",
                    path,
                    "ids start with a lowercase letter, then lowercase letters, digits, '-' or '_'"
                    + ("; 'end' is reserved" if name == "end" else ""),
                )
    if losses:
        raise WorkflowInvalid(losses)

    routes = _routes(ir, ids, lose)

    if inputs:
        out += ["## Inputs", ""]
        for name, spec in inputs.items():
            out += _flat_entity(name, spec, f"inputs.{name}", "input", notes, lose)
    out += ["## Steps", ""]
    for i, n in enumerate(nodes):
        out += _node_entity(i, n, routes.get(n["id"], []), notes, lose)
    if outputs:
        out += ["## Outputs", ""]
        for name, spec in outputs.items():
            out += _flat_entity(name, spec, f"outputs.{name}", "output", notes, lose)
    if losses:
        raise WorkflowInvalid(losses)
    text = "\n".join(out).rstrip("\n") + "\n"

    back = parse_markdown(text)
    if back.problems:
        raise WorkflowInvalid(
            [
                Problem(
                    f"the markdown written for this workflow would not read back: {p.message}",
                    hint=p.hint,
                )
                for p in back.problems
            ]
        )
    for path, (was, now) in _compare(_meaning(ir), _meaning(back.ir)).items():
        if path.endswith((".purpose", ".description")) or path == "description":
            if was:  # an absent one got a placeholder, and a note, above
                notes.append(f"the prose of {path} reads back in markdown's form: {now!r}")
            continue
        lose(
            f"cannot be written in a .pflow.md without changing it: {was!r} would read back as {now!r}",
            path,
        )
    if losses:
        raise WorkflowInvalid(losses)
    return text, notes


def _dump_yaml(value: Any) -> str:
    def dump(unicode: bool) -> str:
        return yaml.safe_dump(
            value, sort_keys=False, allow_unicode=unicode, width=1 << 30, default_flow_style=False
        )

    text = dump(True)
    if _LINE_BREAKS.search(text):  # U+2028 and friends would split the markdown's lines
        text = dump(False)
    if text.endswith("\n...\n"):
        text = text[: -len("...\n")]
    return text


def _prose(text: str, *, in_entity: bool) -> list[str]:
    lines = []
    for raw in text.split("\n"):
        s = raw.strip()
        if not s:
            continue
        if _PROSE_HAZARD.match(s) or (in_entity and s.startswith("- ")):
            s = "\\" + s  # as a markdown viewer shows it; read back, the backslash stays
        lines.append(s)
    return lines


def _routes(ir: dict[str, Any], ids: list[str], lose: Any) -> dict[str, list[str]]:
    """The '- next:' / '- on-error:' bullets that give each step its edges."""
    raw_edges = ir.get("edges") or []
    if not isinstance(raw_edges, list):
        lose("edges must be a list", "edges")
        return {}
    edges: list[tuple[str, str, str]] = []
    for k, e in enumerate(raw_edges):
        if not isinstance(e, dict) or e.get("from") not in ids or e.get("to") not in ids:
            lose("an edge must go from a node to a node", f"edges[{k}]")
            continue
        edges.append((e["from"], e["to"], e.get("action") or "default"))
    if not edges:
        return {}
    default: dict[str, list[str]] = {}
    error: dict[str, list[str]] = {}
    named: dict[str, list[tuple[str, str]]] = {}
    for src, dst, action in edges:
        bucket = default if action == "default" else error if action == "error" else None
        if bucket is not None:
            if dst not in bucket.setdefault(src, []):
                bucket[src].append(dst)
        else:
            named.setdefault(src, []).append((action, dst))
    branch_targets = {dst for _, dst, action in edges if action != "default"}
    routes: dict[str, list[str]] = {}
    for i, nid in enumerate(ids):
        after = ids[i + 1] if i + 1 < len(ids) else None
        d = default.get(nid, [])
        bullets: list[str] = []
        if nid in named:
            targets = [dst for _, dst in named[nid]]
            if any(a != dst for a, dst in named[nid]) or d != targets[:1]:
                lose(
                    f"the edges from '{nid}' choose by actions a .pflow.md cannot name",
                    "edges",
                    "a .pflow.md writes a choice as '- next: a, b' (action = target, default = the first)",
                )
                continue
            bullets.append(f"- next: {', '.join(targets)}")
        elif len(d) > 1:
            lose(
                f"'{nid}' fans out to {', '.join(d)}; a .pflow.md gives a step one successor",
                "edges",
                "keep this workflow in JSON",
            )
            continue
        elif not d:
            if after is not None or nid in branch_targets:
                bullets.append("- next: end")
        elif (
            d[0] != after
            or nid in branch_targets
            or (after in branch_targets and nid not in _routers(edges, after))
        ):
            bullets.append(f"- next: {d[0]}")
        e = error.get(nid, [])
        if len(e) > 1:
            lose(f"'{nid}' has {len(e)} error edges; a .pflow.md allows one", "edges")
        elif e:
            bullets.append(f"- on-error: {e[0]}")
        if bullets:
            routes[nid] = bullets
    return routes


def _routers(edges: list[tuple[str, str, str]], target: str) -> set[str]:
    return {src for src, dst, action in edges if dst == target and action != "default"}


def _node_entity(
    i: int, n: dict[str, Any], routes: list[str], notes: list[str], lose: Any
) -> list[str]:
    nid, path = n["id"], f"nodes[{i}]"
    for key in n:
        if key not in _NODE_WRITTEN:
            lose(f"node field '{key}' cannot be written in a .pflow.md", f"{path}.{key}")
    out = [f"### {nid}", ""]
    purpose = n.get("purpose")
    if isinstance(purpose, str) and purpose.strip():
        out += _prose(purpose, in_entity=True)
    else:
        out.append(f"A {n['type']} step.")
        notes.append(
            f"node '{nid}' had no purpose; a .pflow.md requires one, so a placeholder was written"
        )
    out.append("")
    bullets = [f"- type: {_one_line(n['type']) or json.dumps(n['type'])}"]
    blocks: list[str] = []
    for name in LIFTED_FIELDS:
        if name not in n:
            continue
        value = n[name]
        if name in _CODE_LIFTED and isinstance(value, dict | list):
            blocks += _code_block(f"yaml {name}", _dump_yaml(value).rstrip("\n"))
        elif name in _CODE_LIFTED and isinstance(value, str) and "\n" in value:
            blocks += _code_block(f"text {name}", value)
        else:
            bullets += _bullet(name, value)
    params = n.get("params") or {}
    if not isinstance(params, dict):
        lose("params must be an object", f"{path}.params")
        params = {}
    for key, value in params.items():
        key = str(key)
        blockable = bool(re.fullmatch(r"[^\s`~]+", key)) and key not in _CODE_LIFTED
        if key in _CODE_LIFTED:
            lose(
                f"a param named '{key}' cannot be written in a .pflow.md (it means the node's {key})",
                f"{path}.params.{key}",
            )
        elif (
            blockable
            and isinstance(value, str)
            and _block_safe(value)
            and ("\n" in value or key in _BLOCK_PARAMS or key in _BULLET_ONLY)
            and (key != "code" or _is_python(value))  # a code block named code must parse
        ):
            blocks += _code_block(f"{_LANGS.get(key, 'text')} {key}", value)
        elif (
            blockable
            and key != "code"  # a block named code is read as Python, whatever its info string
            and ((isinstance(value, dict | list) and value) or key in _BULLET_ONLY)
        ):
            blocks += _code_block(f"yaml {key}", _dump_yaml(value).rstrip("\n"))
        elif key in _BULLET_ONLY:
            lose(f"a param named '{key}' cannot be written in a .pflow.md", f"{path}.params.{key}")
        else:
            bullets += _bullet(key, value)
    bullets += routes
    out += [*bullets, ""]
    out += blocks
    return out


def _flat_entity(
    name: str, spec: dict[str, Any], path: str, what: str, notes: list[str], lose: Any
) -> list[str]:
    out = [f"### {name}", ""]
    desc = spec.get("description")
    if isinstance(desc, str) and desc.strip():
        out += _prose(desc, in_entity=True)
    else:
        out.append(f"The {name} {what}.")
        notes.append(
            f"{what} '{name}' had no description; a .pflow.md requires one, so a placeholder was written"
        )
    out.append("")
    bullets: list[str] = []
    blocks: list[str] = []
    for key, value in spec.items():
        if key == "description" and isinstance(value, str):
            continue
        if (
            isinstance(value, str)
            and "\n" in value
            and re.fullmatch(r"[^\s`~]+", str(key))
            and _block_safe(value)
        ):
            # in an input or an output a code block is text, whatever its info string
            blocks += _code_block(f"text {key}", value)
        else:
            bullets += _bullet(str(key), value)
    return [*out, *bullets, "", *blocks]


def _is_python(text: str) -> bool:
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            ast.parse(text)
    except (SyntaxError, ValueError):
        return False
    return True


def _block_safe(text: str) -> bool:
    return not _LINE_BREAKS.search(text)


def _code_block(tag: str, content: str) -> list[str]:
    longest = max(
        (len(s) for s in (ln.strip() for ln in content.split("\n")) if s and set(s) == {"`"}),
        default=2,
    )
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{tag}", *content.split("\n"), fence, ""]


def _one_line(value: Any) -> str | None:
    """``value`` as a one-line bullet writes it so that it reads back the same, or None."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        return (
            text
            if math.isfinite(value) and _FLOAT_RE.match(text) and float(text) == value
            else None
        )
    if not isinstance(value, str):
        return None
    if "\n" in value or _LINE_BREAKS.search(value):
        return (
            '"' + _escape(value) + '"' if not _LINE_BREAKS.search(value.replace("\r", "")) else None
        )
    plain = (
        value
        and value == value.strip()
        and value[0] not in "\"'{["
        and value not in _NULLS | _TRUES | _FALSES
        and not _INT_RE.match(value)
        and not _FLOAT_RE.match(value)
        and not _BLOCK_HEADER_RE.fullmatch(value)
    )
    return value if plain else '"' + _escape(value) + '"'


def _escape(text: str) -> str:
    return (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\t", "\\t")
        .replace("\r", "\\r")
        .replace("\0", "\\0")
    )


def _bullet(key: str, value: Any) -> list[str]:
    simple = bool(_SIMPLE_KEY.match(key))
    if simple:
        one = _one_line(value)
        if one is not None:
            return [f"- {key}: {one}"]
    # Several lines make the bullet YAML, whatever its value. Its lines must not look
    # like headings or fences (the markdown reads those before YAML), nor be blank.
    plain = simple and yaml.safe_load(key) == key  # a key such as 'null' or 'yes' is quoted
    head = f"- {key}:" if plain else f"- {_flow(key)}:"
    body = ["    " + ln for ln in _dump_yaml(value).rstrip("\n").split("\n")]
    if all(ln.strip() and not _PROSE_HAZARD.match(ln.strip()) for ln in body):
        return [head, *body]
    return [head, "    " + _flow(value)]


def _flow(value: Any) -> str:
    """``value`` as one line of YAML flow style, every string double-quoted."""
    if value is None or isinstance(value, bool | int):
        return json.dumps(value)
    if isinstance(value, float):
        return _dump_yaml(value).strip()  # 1.0e+16, .nan: what YAML reads back as that float
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_flow(k)}: {_flow(v)}" for k, v in value.items()) + "}"
    out = []
    for ch in str(value):
        code = ord(ch)
        if ch in '\\"':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif (
            code < 0x20
            or 0x7F <= code <= 0x9F
            or 0xD800 <= code <= 0xDFFF
            or ch in "\u2028\u2029\ufeff\ufffe\uffff"
        ):
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _meaning(ir: Any) -> dict[str, Any]:
    """The parts of an IR a run depends on, with edges in one canonical form."""
    out = {k: v for k, v in ir.items() if k in _TOP_WRITTEN and k != "start_node"}
    nodes = ir.get("nodes") or []
    edges = ir.get("edges") or []
    if not edges:
        pairs = itertools.pairwise(nodes)
        edges = [
            {"from": a.get("id"), "to": b.get("id")}
            for a, b in pairs
            if isinstance(a, dict) and isinstance(b, dict)
        ]
    out["edges"] = sorted(
        {
            (e.get("from"), e.get("to"), e.get("action") or "default")
            for e in edges
            if isinstance(e, dict)
        }
    )
    return out


def _compare(a: Any, b: Any, path: str = "") -> dict[str, tuple[Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        diffs: dict[str, tuple[Any, Any]] = {}
        for k in [*a, *(k for k in b if k not in a)]:
            sub = f"{path}.{k}" if path else str(k)
            if k not in a or k not in b:
                diffs[sub] = (a.get(k), b.get(k))
            else:
                diffs.update(_compare(a[k], b[k], sub))
        return diffs
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and path != "edges":
        diffs = {}
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            diffs.update(_compare(x, y, f"{path}[{i}]"))
        return diffs
    if a == b and type(a) is type(b):
        return {}
    return {path: (a, b)}
