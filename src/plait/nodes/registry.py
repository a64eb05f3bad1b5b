"""Where node types come from: built-ins (imported only when used), the
``plait.nodes`` entry-point group, ``--nodes PATH`` files or folders, and the
``mcp-<server>-<tool>`` types of the MCP tool cache (docs/mcp.md)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from plait.errors import UsageError
from plait.nodes.base import PARAM_TYPES, Output, Param, PlaitNode

ENTRY_POINT_GROUP = "plait.nodes"

BUILTINS: dict[str, str] = {
    "shell": "plait.nodes.shell:ShellNode",
    "read-file": "plait.nodes.files:ReadFileNode",
    "write-file": "plait.nodes.files:WriteFileNode",
    "copy-file": "plait.nodes.files:CopyFileNode",
    "move-file": "plait.nodes.files:MoveFileNode",
    "delete-file": "plait.nodes.files:DeleteFileNode",
    "list-files": "plait.nodes.files:ListFilesNode",
    "echo": "plait.nodes.echo:EchoNode",
    "http": "plait.nodes.http:HttpNode",
    "llm": "plait.nodes.llm:LlmNode",
    "code": "plait.nodes.code:CodeNode",
    "workflow": "plait.nodes.workflow:WorkflowNode",
}


_TYPE_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$")
_PARAM_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def declaration_problems(cls: type[PlaitNode]) -> list[str]:
    """What is wrong with a node class's declaration (an empty list when nothing is)."""
    problems = []
    name = cls.type_name
    if not isinstance(name, str) or not _TYPE_NAME_RE.match(name):
        problems.append(f"type_name must be a name such as 'my-node' (letters, digits, _ - .), not {name!r}")
    if not isinstance(cls.description, str):
        problems.append("description must be a string")
    for what, specs, kind in (("param_specs", cls.param_specs, Param), ("output_specs", cls.output_specs, Output)):
        if not isinstance(specs, tuple | list):
            problems.append(f"{what} must be a tuple of {kind.__name__}(...), not {type(specs).__name__}")
            continue
        seen: set[str] = set()
        for spec in specs:
            if not isinstance(spec, kind):
                problems.append(f"{what} must hold {kind.__name__}(...) objects, not {spec!r}")
                continue
            if not isinstance(spec.name, str) or not _PARAM_NAME_RE.match(spec.name):
                problems.append(f"{what}: {spec.name!r} is not a valid name")
            elif spec.name in seen:
                problems.append(f"{what}: '{spec.name}' is declared twice")
            seen.add(spec.name)
            types = spec.type.split("|") if isinstance(spec.type, str) else [spec.type]
            bad = [t for t in types if t not in PARAM_TYPES]
            if bad:
                problems.append(
                    f"{what}: '{spec.name}' has type {spec.type!r}; types are {', '.join(PARAM_TYPES)} "
                    "(several joined by |)"
                )
    if cls.exec is PlaitNode.exec and not cls.has_async_exec():
        problems.append("it defines no exec(self, prep_res) method")
    outputs = {o.name for o in cls.output_specs if isinstance(o, Output)} if isinstance(cls.output_specs, tuple | list) else set()
    if cls.primary_output is not None and outputs and cls.primary_output not in outputs:
        problems.append(f"primary_output {cls.primary_output!r} is not one of its outputs")
    return problems


def _checked(cls: type[PlaitNode], source: str) -> type[PlaitNode]:
    problems = declaration_problems(cls)
    if problems:
        raise UsageError(
            f"node class {cls.__name__} from {source} has a bad declaration: " + "; ".join(problems),
            hint="see docs/custom-nodes.md for how a node type declares its params and outputs",
        )
    return cls


def _import_target(target: str) -> type[PlaitNode]:
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if not (inspect.isclass(cls) and issubclass(cls, PlaitNode)):
        raise TypeError(f"{target} is not a PlaitNode subclass")
    return cls


class Registry(Mapping[str, type[PlaitNode]]):
    """type name -> node class, loading each class on first use."""

    def __init__(self) -> None:
        self._targets: dict[str, str] = dict(BUILTINS)
        self._loaded: dict[str, type[PlaitNode]] = {}
        self._sources: dict[str, str] = dict.fromkeys(BUILTINS, "built-in")
        self._entry_points_read = False
        self._mcp_read = False
        self._mcp_error: UsageError | None = None
        #: the .py files ``load_path`` found node types in (resolved path -> the
        #: source as loaded), so an executor can load them in other processes too
        self.node_files: dict[str, str] = {}

    def _read_entry_points(self) -> None:
        if self._entry_points_read:
            return
        self._entry_points_read = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name not in self._targets:
                self._targets[ep.name] = ep.value
                self._sources[ep.name] = f"entry point ({ep.dist.name if ep.dist else ep.value})"

    def _read_mcp(self, strict: bool) -> None:
        """The ``mcp-<server>-<tool>`` types that ``plait mcp sync`` cached; read only when
        a workflow names one or every type is listed (no MCP SDK import). An unreadable
        cache is an error for a workflow that names an MCP type, and is skipped when
        types are only listed (a typo in a shell node's type must not be about MCP)."""
        if not self._mcp_read:
            self._mcp_read = True
            from plait.nodes.mcp.catalog import node_types

            try:
                found = node_types()
            except UsageError as exc:
                self._mcp_error = exc
                found = []
            for name, cls, source in found:
                if name not in self._targets:
                    self._targets[name] = f"{cls.__module__}:{cls.__name__}"
                    self._loaded[name] = cls
                    self._sources[name] = source
        if strict and self._mcp_error is not None:
            raise self._mcp_error

    def _find(self, name: str) -> None:
        if name not in self._targets:
            self._read_entry_points()
        if name not in self._targets and name.startswith("mcp-"):
            self._read_mcp(strict=True)

    def unknown_hint(self, name: str) -> str:
        """A hint for a type name that is not registered, beyond "did you mean"."""
        if name.startswith("mcp-"):
            from plait.nodes.mcp.catalog import unknown_hint

            return unknown_hint(name)
        return ""

    def __getitem__(self, name: str) -> type[PlaitNode]:
        cls = self._loaded.get(name)
        if cls is not None:
            return cls
        self._find(name)
        target = self._targets[name]  # KeyError for unknown types, as a Mapping should
        try:
            cls = _import_target(target)
        except Exception as exc:
            raise UsageError(
                f"node type '{name}' could not be loaded from {target}: {exc}",
                hint="check the plugin that provides it (`pip show` it, or fix the file)",
            )
        if self._sources.get(name) != "built-in":
            _checked(cls, self._sources.get(name) or target)
        self._loaded[name] = cls
        return cls

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        self._find(name)
        return name in self._targets

    def __iter__(self) -> Iterator[str]:
        self._read_entry_points()
        self._read_mcp(strict=False)
        return iter(sorted(self._targets))

    def __len__(self) -> int:
        self._read_entry_points()
        self._read_mcp(strict=False)
        return len(self._targets)

    def source(self, name: str) -> str:
        return self._sources.get(name, "")

    def register(self, cls: type[PlaitNode], source: str) -> None:
        if not cls.type_name:
            raise UsageError(f"node class {cls.__name__} in {source} has no type_name")
        _checked(cls, source)
        self._targets[cls.type_name] = f"{cls.__module__}:{cls.__name__}"
        self._loaded[cls.type_name] = cls
        self._sources[cls.type_name] = source

    def load_path(self, path: str | Path) -> list[str]:
        """Register every node class defined in a .py file, or in the .py files of a folder."""
        p = Path(path)
        if not p.exists():
            raise UsageError(f"--nodes path not found: {p}", hint="give a .py file or a folder of them")
        files = sorted(p.glob("*.py")) if p.is_dir() else [p]
        found: list[str] = []
        for file in files:
            name = f"plait_custom_nodes_{abs(hash(str(file.resolve())))}"
            spec = importlib.util.spec_from_file_location(name, file)
            if spec is None or spec.loader is None:
                raise UsageError(f"cannot import node file {file}", hint="it must be a Python file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                source = file.read_text(encoding="utf-8")
                spec.loader.exec_module(module)
            except Exception as exc:
                raise UsageError(
                    f"error while importing node file {file}: {type(exc).__name__}: {exc}",
                    hint="run the file with python to see the full error",
                )
            before = len(found)
            for obj in vars(module).values():
                if (
                    inspect.isclass(obj)
                    and issubclass(obj, PlaitNode)
                    and obj.__module__ == name
                    and obj.type_name
                ):
                    self.register(obj, f"file {file}")
                    found.append(obj.type_name)
            if len(found) > before:
                self.node_files[str(file.resolve())] = source
        if not found:
            raise UsageError(
                f"no node types found in {p}",
                hint="define a subclass of plait.nodes.base.PlaitNode with a type_name",
            )
        return found
