"""Where MCP servers are configured, and what a server entry may say.

Two files in the ``mcpServers`` shape that Claude Desktop, pflow and most MCP
clients share, read in this order, the first one naming a server wins:

1. ``$PLAIT_HOME/mcp-servers.json`` (``.plait/mcp-servers.json`` of the working
   directory when ``PLAIT_HOME`` is unset, as for the run records);
2. pflow's ``~/.pflow/mcp-servers.json``, so servers added with ``pflow mcp add``
   work unchanged.

An entry is either a local process spoken to over stdio, ``{"command", "args",
"env", "cwd"}``, or a streamable-HTTP endpoint, ``{"type": "http", "url",
"headers", "auth"}`` (``type`` may be left out when ``url`` is given). Secrets
stay out of the file: ``${VAR}``, ``${VAR:-default}`` (pflow's forms) and
``${env.VAR}`` (plait's) in any string are replaced from the environment when
plait connects, never when it validates and never into the tool cache.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plait.errors import UsageError

CONFIG_NAME = "mcp-servers.json"
SERVER_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
HTTP_TYPES = ("http", "streamable-http", "streamable_http", "streamableHttp")
DEFAULT_TIMEOUT_S = 30.0  # per tool call, as pflow's MCP node
DEFAULT_RECONNECTS = 2

# ${VAR}, ${VAR:-default} and ${env.VAR}
_ENV_RE = re.compile(r"\$\{(?:env\.)?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def plait_home() -> Path:
    home = os.environ.get("PLAIT_HOME")
    return Path(home) if home else Path.cwd() / ".plait"


def config_paths() -> list[Path]:
    """The config files, in the order they are read (a server's first entry wins)."""
    return [plait_home() / CONFIG_NAME, Path("~/.pflow").expanduser() / CONFIG_NAME]


@dataclass
class ServerConfig:
    """One server's entry, as written (``${...}`` not yet expanded)."""

    name: str
    source: Path
    raw: dict[str, Any]
    transport: str = "stdio"  # or "http"
    problems: list[str] = field(default_factory=list)

    @property
    def timeout(self) -> float:
        value = self.raw.get("timeout")
        return float(value) if isinstance(value, int | float) and value > 0 else DEFAULT_TIMEOUT_S

    @property
    def reconnects(self) -> int:
        value = self.raw.get("reconnects")
        return value if isinstance(value, int) and value >= 0 else DEFAULT_RECONNECTS

    def where(self) -> str:
        return f"MCP server '{self.name}' in {self.source}"

    def check(self) -> None:
        if self.problems:
            raise UsageError(
                f"{self.where()} is not usable: {'; '.join(self.problems)}",
                hint='a stdio server needs {"command": ..., "args": [...]}; an HTTP one {"url": "https://..."}',
            )

    def expanded(self) -> dict[str, Any]:
        """The entry with ``${...}`` replaced from the environment; missing variables are an error."""
        self.check()
        missing: list[str] = []

        def expand(value: Any) -> Any:
            if isinstance(value, str):
                return _ENV_RE.sub(lambda m: _lookup(m, missing), value)
            if isinstance(value, list):
                return [expand(v) for v in value]
            if isinstance(value, dict):
                return {k: expand(v) for k, v in value.items()}
            return value

        out = expand(self.raw)
        if missing:
            names = sorted(set(missing))
            raise UsageError(
                f"{self.where()} uses environment variable{'s' if len(names) > 1 else ''} "
                f"{', '.join(names)}, which {'are' if len(names) > 1 else 'is'} not set",
                hint=f"export {names[0]}=... before running, or write ${{{names[0]}:-default}} in the config",
            )
        return out


def _lookup(match: re.Match[str], missing: list[str]) -> str:
    name, default = match.group(1), match.group(2)
    value = os.environ.get(name)
    if value is not None:
        return value
    if default is not None:
        return default
    missing.append(name)
    return ""


#: fields of a server entry in the configs plait reads (its own, pflow's, Claude's)
_KNOWN_FIELDS = frozenset({"type", "transport", "command", "args", "env", "cwd", "url", "headers", "auth",
                           "timeout", "reconnects", "description", "disabled"})


def _entry(name: str, raw: Any, source: Path) -> ServerConfig:
    if not isinstance(raw, dict):
        return ServerConfig(name, source, {}, problems=[f"its entry must be an object, not {type(raw).__name__}"])
    server = ServerConfig(name, source, raw)
    problems = server.problems
    if not SERVER_NAME_RE.match(name):
        problems.append("a server name may hold only letters, digits, '-' and '_'")
    kind = raw.get("type")
    if kind is None:
        kind = "http" if "url" in raw and "command" not in raw else "stdio"
    if kind in HTTP_TYPES:
        server.transport = "http"
        url = raw.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://", "${")):
            problems.append("'url' must be an http:// or https:// URL")
        for key in ("headers", "auth"):
            if key in raw and not isinstance(raw[key], dict):
                problems.append(f"'{key}' must be an object")
    elif kind == "stdio":
        if "command" not in raw:
            from plait.errors import closest

            # a misspelt field is named: "comand" or "cmd" for "command", "uri" for "url"
            meant = {k: closest(str(k), ("command", "url")) for k in raw if k not in _KNOWN_FIELDS}
            typo = next(((k, m) for k, m in meant.items() if m), None)
            extra = f"; is '{typo[0]}' meant to be '{typo[1]}'?" if typo else ""
            problems.append(f"'command' (the program to start) is missing{extra}")
        elif not isinstance(raw.get("command"), str) or not raw["command"]:
            problems.append("'command' (the program to start) must be a non-empty string")
        args = raw.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str | int | float) for a in args):
            problems.append("'args' must be a list of strings")
        if "env" in raw and not (
            isinstance(raw["env"], dict) and all(isinstance(v, str | int | float) for v in raw["env"].values())
        ):
            problems.append("'env' must be an object of strings")
    elif kind == "sse":
        problems.append("the legacy SSE transport is not supported; use the server's streamable-HTTP endpoint")
    else:
        problems.append(f"unknown 'type' {kind!r}: use 'stdio' (the default) or 'http'")
    return server


def _read(path: Path) -> dict[str, ServerConfig]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsageError(f"cannot read the MCP server config {path}: {exc.strerror or exc}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{path}:{exc.lineno}:{exc.colno}: the MCP server config is not valid JSON: {exc.msg}",
            hint='it holds {"mcpServers": {"name": {"command": ..., "args": [...]}}}',
        )
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise UsageError(
            f"{path}: the MCP server config has no 'mcpServers' object",
            hint='it holds {"mcpServers": {"name": {"command": ..., "args": [...]}}}',
        )
    return {str(name): _entry(str(name), raw, path) for name, raw in servers.items()}


def load_servers() -> dict[str, ServerConfig]:
    """Every configured server by name, plait's file first, then pflow's."""
    out: dict[str, ServerConfig] = {}
    for path in config_paths():
        for name, server in _read(path).items():
            out.setdefault(name, server)
    return out


def find_server(name: str) -> ServerConfig:
    servers = load_servers()
    server = servers.get(name)
    if server is None:
        from plait.errors import did_you_mean

        files = " or ".join(str(p) for p in config_paths())
        raise UsageError(
            f"MCP server '{name}' is not configured in {files}",
            hint=did_you_mean(name, servers)
            or (f"configured servers: {', '.join(sorted(servers))}" if servers else "add it under \"mcpServers\""),
        )
    return server
