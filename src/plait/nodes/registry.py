"""Where node types come from: built-ins (imported only when used), the
``plait.nodes`` entry-point group, and ``--nodes PATH`` files or folders."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from plait.errors import UsageError
from plait.nodes.base import PlaitNode

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

    def __getitem__(self, name: str) -> type[PlaitNode]:
        cls = self._loaded.get(name)
        if cls is not None:
            return cls
        if name not in self._targets:
            self._read_entry_points()
        target = self._targets[name]  # KeyError for unknown types, as a Mapping should
        try:
            cls = _import_target(target)
        except Exception as exc:
            raise UsageError(
                f"node type '{name}' could not be loaded from {target}: {exc}",
                hint="check the plugin that provides it (`pip show` it, or fix the file)",
            )
        self._loaded[name] = cls
        return cls

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if name not in self._targets:
            self._read_entry_points()
        return name in self._targets

    def __iter__(self) -> Iterator[str]:
        self._read_entry_points()
        return iter(sorted(self._targets))

    def __len__(self) -> int:
        self._read_entry_points()
        return len(self._targets)

    def source(self, name: str) -> str:
        return self._sources.get(name, "")

    def register(self, cls: type[PlaitNode], source: str) -> None:
        if not cls.type_name:
            raise UsageError(f"node class {cls.__name__} in {source} has no type_name")
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
