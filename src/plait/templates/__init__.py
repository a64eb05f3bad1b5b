"""Templates: ``${path}`` parsed once at compile time, resolved per item.

A compiled value is a :class:`Compiled`: its ``refs`` feed the static checks and
``resolve(base, local)`` produces the value for one item. ``base`` maps roots
(workflow inputs, node ids) to values; ``local`` holds what only one item sees
(the batch alias and ``__index__``). ``env`` is its own root, read from the
process environment and nowhere else.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from plait.nodes.base import TemplatedText
from plait.runtime.results import ResultList

NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
# The path inside an index template: one level of nesting, as in pflow.
INNER_PATH = rf"{NAME}(?:\.{NAME}|\[\d+\])*"
# An index is a number or one template resolved first: ${results[${__index__}].stdout}.
PATH = rf"{NAME}(?:\.{NAME}|\[\d+\]|\[\$\{{{INNER_PATH}\}}\])*"
# An optional extra '$' in front makes `$${x}` the literal text `${x}`.
TEMPLATE_RE = re.compile(rf"(\$?)\$\{{({PATH})\}}")
_STEP_RE = re.compile(rf"\.({NAME})|\[(\d+)\]|\[\$\{{({INNER_PATH})\}}\]")
# What reads as a template but is not one: the start of a path that goes on with
# an index template nested deeper than one level (or not closed), a step such as
# `.0`, or spaces inside the braces. Shell syntax (`${VAR:-x}`, `${#a[@]}`) never matches.
_BROKEN_RE = re.compile(
    rf"(?<!\$)\$\{{(?:\s+{NAME}|{NAME}(?:\.{NAME}|\[\d+\]|\[\$\{{{INNER_PATH}\}}\])*"
    rf"(?:\[\$\{{|\.(?![A-Za-z_])|\s+\}}))"
)

Base = Mapping[str, Any]
Local = Mapping[str, Any]


class TemplateError(Exception):
    """A template could not be resolved at run time."""

    def __init__(self, message: str, *, template: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.template = template
        self.hint = hint


@dataclass(frozen=True)
class Ref:
    """One ``${...}`` occurrence."""

    text: str  # as written, e.g. ${fetch.stdout.items[0]}
    root: str
    # a Ref among the steps is an index template, resolved before the step is taken
    steps: tuple[str | int | Ref, ...]

    def with_inner(self) -> list[Ref]:
        """This reference and the index templates inside it (each is checked and resolved)."""
        return [self, *(s for s in self.steps if isinstance(s, Ref))]


def parse_path(path: str) -> tuple[str, tuple[str | int | Ref, ...]]:
    root_end = len(path)
    for i, ch in enumerate(path):
        if ch in ".[":
            root_end = i
            break
    steps: list[str | int | Ref] = []
    for m in _STEP_RE.finditer(path, root_end):
        if m.group(1) is not None:
            steps.append(m.group(1))
        elif m.group(2) is not None:
            steps.append(int(m.group(2)))
        else:
            inner_root, inner_steps = parse_path(m.group(3))
            steps.append(Ref(f"${{{m.group(3)}}}", inner_root, inner_steps))
    return path[:root_end], tuple(steps)


def find_refs(text: str) -> list[Ref]:
    """Every reference in ``text``, index templates inside others included."""
    refs = []
    for m in TEMPLATE_RE.finditer(text):
        if m.group(1):
            continue
        root, steps = parse_path(m.group(2))
        refs += Ref(m.group(0), root, steps).with_inner()
    return refs


def broken_templates(text: str) -> list[str]:
    """The ``${...}`` in ``text`` that look like templates but cannot be read as one.

    Each would otherwise reach the node as literal text (half resolved, when a
    template inside it is resolved), so the static checks refuse them.
    """
    spans = [m.span() for m in TEMPLATE_RE.finditer(text)]
    found = []
    for m in _BROKEN_RE.finditer(text):
        if any(start <= m.start() < end for start, end in spans):
            continue
        found.append(_braced(text, m.start()))
    return found


def _braced(text: str, start: int) -> str:
    """The ``${...}`` starting at ``start``, up to its matching brace (or 60 characters)."""
    depth = 0
    for i in range(start + 1, min(len(text), start + 200)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return text[start : start + 60]


def has_template(value: Any) -> bool:
    if isinstance(value, str):
        return "${" in value and any(not m.group(1) for m in TEMPLATE_RE.finditer(value))
    if isinstance(value, dict):
        return any(has_template(v) for v in value.values())
    if isinstance(value, list):
        return any(has_template(v) for v in value)
    return False


def render_text(value: Any) -> str:
    """How a value reads inside a longer string."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, ResultList):
        return json.dumps(list(value), ensure_ascii=False)
    return str(value)


@functools.lru_cache(maxsize=256)
def _parse_json_text(text: str) -> Any:
    # Shared between resolutions: what a template hands out is a fresh copy (``fresh``).
    return json.loads(text)


_CONTAINERS = (dict, list, ResultList)


_SCALARS = frozenset((str, int, float, bool, type(None)))


def fresh(value: Any) -> Any:
    """A copy of the lists and dicts in ``value`` (the rest is immutable): a
    resolved value is never shared, so no node sees another one's changes."""
    kind = type(value)
    # Plain JSON data (a batch item, say) first: its scalars are kept without a call each.
    if kind is dict:
        copy = value.copy()
        for k, v in copy.items():
            if type(v) not in _SCALARS:
                copy[k] = fresh(v)  # the same key: the dict does not change size while walked
        return copy
    if kind is list:
        return [v if type(v) in _SCALARS else fresh(v) for v in value]
    if isinstance(value, dict):
        return {k: fresh(v) for k, v in value.items()}
    if isinstance(value, list):
        return [fresh(v) for v in value]
    if isinstance(value, ResultList):  # each result is decoded anew: already a copy
        return list(value)
    return value


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        keys = list(value)
        shown = ", ".join(map(str, keys[:20])) + (", ..." if len(keys) > 20 else "")
        return f"an object with keys: {shown}" if keys else "an empty object"
    if isinstance(value, list | ResultList):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    if isinstance(value, str):
        preview = value if len(value) <= 40 else value[:37] + "..."
        return f"a string ({preview!r})"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({render_text(value)})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    return f"a {type(value).__name__} ({value!r})"


def _step_text(step: str | int | Ref) -> str:
    if isinstance(step, Ref):
        return f"[{step.text}]"
    return f"[{step}]" if isinstance(step, int) else f".{step}"


def _index(step: Ref, base: Base, local: Local, outer: Ref) -> int:
    """The value of an index template: a whole number, as pflow requires."""
    value = lookup(step, base, local)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    index = local.get("__index__")
    at_item = f" (batch item {index})" if index is not None else ""
    raise TemplateError(
        f"template {outer.text}{at_item}: the index {step.text} is {_describe(value)}, not a whole number",
        template=outer.text,
        hint="an index template must give a position in the list, such as ${__index__}",
    )


def _step(value: Any, step: str | int, ref: Ref, done: int, local: Local) -> Any:
    if isinstance(value, str):
        stripped = value.strip()
        if stripped[:1] in ("{", "["):
            try:
                value = _parse_json_text(stripped)
            except ValueError:
                pass
    if isinstance(step, int):
        if isinstance(value, list | ResultList):
            if 0 <= step < len(value):
                return value[step]
            problem = f"index [{step}] is out of range ({_describe(value)})"
        else:
            problem = f"cannot take [{step}] of {_describe(value)}"
    else:
        if isinstance(value, dict):
            if step in value:
                return value[step]
            problem = f"'{step}' is missing; the value is {_describe(value)}"
        else:
            problem = f"cannot take '.{step}' of {_describe(value)}"
    where = ref.root + "".join(_step_text(s) for s in ref.steps[:done])
    index = local.get("__index__")
    at_item = f" (batch item {index})" if index is not None else ""
    raise TemplateError(f"template {ref.text}{at_item}: at {where}, {problem}", template=ref.text)


def lookup(ref: Ref, base: Base, local: Local) -> Any:
    root = ref.root
    if root in local:
        value = local[root]
    elif root in base:
        value = base[root]
    elif root == "env":
        if not ref.steps:
            raise TemplateError(
                f"template {ref.text}: name a variable, like ${{env.HOME}}", template=ref.text
            )
        name = ref.steps[0]
        if not isinstance(name, str) or name not in os.environ:
            raise TemplateError(
                f"template {ref.text}: environment variable {name} is not set",
                template=ref.text,
                hint=f"export {name}=... before running, or use a workflow input instead",
            )
        value = os.environ[name]
        for i, step in enumerate(ref.steps[1:], 1):
            value = _step(value, _index(step, base, local, ref) if isinstance(step, Ref) else step, ref, i, local)
        return value
    else:
        raise TemplateError(
            f"template {ref.text}: '{root}' has no value (the node did not run on this path, "
            "or the input was not given)",
            template=ref.text,
        )
    for i, step in enumerate(ref.steps):
        value = _step(value, _index(step, base, local, ref) if isinstance(step, Ref) else step, ref, i, local)
    return value


class Compiled:
    """A param value, compiled once. ``static`` values resolve to themselves."""

    __slots__ = ("refs", "resolve", "static", "value")

    def __init__(self, value: Any, refs: list[Ref], resolve: Callable[[Base, Local], Any] | None) -> None:
        self.value = value
        self.refs = refs
        self.static = resolve is None
        self.resolve: Callable[[Base, Local], Any] = resolve or (lambda base, local: value)


def compile_value(value: Any, keep_parts: bool = False, *, copy: bool = True, inline: bool = False) -> Compiled:
    """Compile a param value. ``copy=False`` hands out the referenced values
    themselves instead of fresh copies (for batch items, which are only read).

    Inside an object or list (``inline``), a string that is exactly one template
    and resolves to text holding a JSON object or list becomes that object or
    list, as pflow does: ``{"data": "${cmd.stdout}"}`` carries the parsed data.
    Text around the template (``"x ${cmd.stdout}"``) keeps it a string.
    """
    if isinstance(value, str):
        return _compile_str(value, keep_parts, copy, inline)
    if isinstance(value, dict | list) and all(map(_inert, value.values() if isinstance(value, dict) else value)):
        # Scalars and text without templates only (a batch's inline items, say):
        # static as it is, as the element by element way below would find.
        return Compiled(value, [], None)
    if isinstance(value, dict):
        items = {k: compile_value(v, inline=True) for k, v in value.items()}
        refs = [r for c in items.values() for r in c.refs]
        if all(c.static for c in items.values()):
            # rebuilt only when an escape ($${x}) inside changed something
            if any(c.value is not value[k] for k, c in items.items()):
                return Compiled({k: c.value for k, c in items.items()}, refs, None)
            return Compiled(value, refs, None)
        pairs = [(k, _resolver(c)) for k, c in items.items()]
        return Compiled(value, refs, lambda base, local: {k: f(base, local) for k, f in pairs})
    if isinstance(value, list):
        elems = [compile_value(v, inline=True) for v in value]
        refs = [r for c in elems for r in c.refs]
        if all(c.static for c in elems):
            if any(c.value is not v for c, v in zip(elems, value, strict=True)):
                return Compiled([c.value for c in elems], refs, None)
            return Compiled(value, refs, None)
        fns = [_resolver(c) for c in elems]
        return Compiled(value, refs, lambda base, local: [f(base, local) for f in fns])
    return Compiled(value, [], None)


def _resolver(c: Compiled) -> Callable[[Base, Local], Any]:
    """How a part of a templated object or list resolves: a static list or object
    inside it is copied each time, so no item sees what another changed in it."""
    if c.static and isinstance(c.value, _CONTAINERS):
        static = c.value
        return lambda base, local: fresh(static)
    return c.resolve


def parse_json_container(value: Any) -> Any:
    """``value`` parsed when it is text holding a JSON object or list, else ``value``
    itself (a number in text stays text: ids such as "1458059302022549698")."""
    if not isinstance(value, str):
        return value
    stripped = value.strip()
    if stripped[:1] not in ("{", "["):
        return value
    try:
        return fresh(_parse_json_text(stripped))
    except ValueError:
        return value


def scan(text: str) -> list[tuple[int, int, str | Ref]]:
    """``text`` cut into literal text and templates, with their offsets as written.

    ``$${x}`` is the literal ``${x}``. An escaped path with index templates,
    ``$${a[${i}]}``, escapes only its outer braces: the index templates are
    still resolved, so bash receives ``${a[7]}`` (its own array syntax).
    """
    out: list[tuple[int, int, str | Ref]] = []
    pos = 0
    for m in TEMPLATE_RE.finditer(text):
        if m.start() > pos:
            out.append((pos, m.start(), text[pos : m.start()]))
        root, steps = parse_path(m.group(2))
        if not m.group(1):
            out.append((m.start(), m.end(), Ref(m.group(0), root, steps)))
        elif not any(isinstance(s, Ref) for s in steps):
            out.append((m.start(), m.end(), m.group(0)[1:]))
        else:
            at = m.start(2)
            for inner in _STEP_RE.finditer(m.group(2), len(root)):
                if inner.group(3) is None:
                    continue
                start = m.start(2) + inner.start() + 1  # past the '['
                end = m.start(2) + inner.end() - 1
                lead = text[at:start] if at > m.start(2) else "${" + text[at:start]
                out.append((m.start() if at == m.start(2) else at, start, lead))
                inner_root, inner_steps = parse_path(inner.group(3))
                out.append((start, end, Ref(text[start:end], inner_root, inner_steps)))
                at = end
            out.append((at, m.end(), text[at : m.end()]))
        pos = m.end()
    if pos < len(text):
        out.append((pos, len(text), text[pos:]))
    return out


def _inert(value: Any) -> bool:
    """A value that compiles to itself, with no template and nothing inside."""
    if isinstance(value, str):
        return "${" not in value
    return not isinstance(value, _CONTAINERS)


def _compile_str(text: str, keep_parts: bool, copy: bool = True, inline: bool = False) -> Compiled:
    if "${" not in text:
        return Compiled(text, [], None)
    pieces: list[str | Ref] = []
    refs: list[Ref] = []
    for _, _, piece in scan(text):
        if isinstance(piece, str):
            _append_literal(pieces, piece)
        else:
            refs += piece.with_inner()
            pieces.append(piece)
    if not refs:
        unescaped = "".join(p for p in pieces if isinstance(p, str))
        return Compiled(unescaped, [], None)
    if len(pieces) == 1 and not keep_parts:
        only = pieces[0]
        assert isinstance(only, Ref)
        if inline:

            def resolve_inline(base: Base, local: Local) -> Any:
                value = lookup(only, base, local)
                if isinstance(value, str):
                    return parse_json_container(value)
                return fresh(value) if copy and isinstance(value, _CONTAINERS) else value

            return Compiled(text, refs, resolve_inline)
        if not copy:
            return Compiled(text, refs, lambda base, local: lookup(only, base, local))

        if not only.steps:  # a bare name (``${item}``): the common case of a batch's params
            root = only.root

            def resolve_name(base: Base, local: Local) -> Any:
                value = local[root] if root in local else lookup(only, base, local)
                return fresh(value) if isinstance(value, _CONTAINERS) else value

            return Compiled(text, refs, resolve_name)

        def resolve_one(base: Base, local: Local) -> Any:
            value = lookup(only, base, local)
            return fresh(value) if isinstance(value, _CONTAINERS) else value

        return Compiled(text, refs, resolve_one)
    frozen = tuple(pieces)
    if keep_parts:

        def resolve_parts(base: Base, local: Local) -> Any:
            parts = tuple(
                ("literal", p) if isinstance(p, str) else ("value", fresh(lookup(p, base, local)))
                for p in frozen
            )
            rendered = "".join(v if kind == "literal" else render_text(v) for kind, v in parts)
            return TemplatedText(rendered, parts)

        return Compiled(text, refs, resolve_parts)

    def resolve_text(base: Base, local: Local) -> str:
        # a loop, not a generator in join: a third less per item (most prompts are a template like this)
        parts = []
        for p in frozen:
            parts.append(p if isinstance(p, str) else render_text(lookup(p, base, local)))
        return "".join(parts)

    return Compiled(text, refs, resolve_text)


def _append_literal(pieces: list[str | Ref], literal: str) -> None:
    if not literal:
        return
    if pieces and isinstance(pieces[-1], str):
        pieces[-1] += literal
    else:
        pieces.append(literal)
