"""`plait mcp sync` and `plait mcp list`: the MCP servers and their cached tools.

Only click is imported here; the MCP SDK is imported by `sync` alone, when it
connects.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click


@click.group("mcp")
def mcp() -> None:
    """MCP servers: cache their tools (sync), show them (list).

    \b
    Servers are configured in $PLAIT_HOME/mcp-servers.json (.plait/ of the
    working directory without PLAIT_HOME) and in pflow's ~/.pflow/mcp-servers.json,
    as {"mcpServers": {NAME: {"command", "args", "env"} | {"url", "headers"}}}.
    Each tool becomes the node type mcp-NAME-TOOL. See docs/mcp.md.
    """


@mcp.command("sync")
@click.argument("servers", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print what was found as JSON.")
def sync(servers: tuple[str, ...], as_json: bool) -> None:
    """Connect to each configured server (or SERVERS), list its tools and cache them.

    The cache ($PLAIT_HOME/mcp-tools.json) is what `plait validate` and
    `plait nodes` read; a server that fails keeps its previous tools.
    """
    from plait.cli import _errors

    code = 1
    with _errors():
        code = sync_command(servers, as_json)
    sys.exit(code)


@mcp.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the servers and tools as JSON.")
def list_(as_json: bool) -> None:
    """Show the configured servers and the tools cached for each (connects to none)."""
    from plait.cli import _errors

    with _errors():
        list_command(as_json)


def _sdk_missing() -> Any:
    from plait.errors import UsageError

    return UsageError(
        "`plait mcp sync` needs the MCP SDK, which is not installed",
        hint="pip install 'plait[mcp]'",
    )


def sync_command(names: tuple[str, ...], as_json: bool) -> int:
    import asyncio
    from datetime import UTC, datetime

    from plait.errors import UsageError, did_you_mean
    from plait.nodes.mcp.catalog import read_cache, type_name, write_cache
    from plait.nodes.mcp.config import config_paths, load_servers

    configured = load_servers()
    if not configured:
        raise UsageError(
            "no MCP servers are configured",
            hint=f"add them under \"mcpServers\" in {config_paths()[0]} (or pflow's {config_paths()[1]})",
        )
    for name in names:
        if name not in configured:
            raise UsageError(
                f"MCP server '{name}' is not configured",
                hint=did_you_mean(name, configured) or f"configured servers: {', '.join(sorted(configured))}",
            )
    try:
        from plait.nodes.mcp.session import Session
    except ImportError:
        raise _sdk_missing() from None
    targets = [configured[n] for n in (names or sorted(configured))]

    async def one(server: Any) -> dict[str, Any]:
        try:
            server.check()
            session = Session(server, 1)
            try:
                await session.start(server.timeout)
                tools = await asyncio.wait_for(session.list_tools(), server.timeout)
                return {"tools": tools, "server_info": session.server_info()}
            finally:
                await session.close()
        except Exception as exc:
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            hint = getattr(exc, "hint", "")
            return {"error": message + (f" ({hint})" if hint else "")}

    async def every() -> list[dict[str, Any]]:
        return await asyncio.gather(*(one(s) for s in targets))

    found = asyncio.run(every())
    cache = read_cache()
    if not names:  # a full sync forgets servers no longer configured
        cache = {k: v for k, v in cache.items() if k in configured}
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    report: list[dict[str, Any]] = []
    for server, got in zip(targets, found, strict=True):
        row: dict[str, Any] = {"server": server.name, "transport": server.transport, "config": str(server.source)}
        if "error" in got:
            row["error"] = got["error"]
            row["kept"] = len(cache.get(server.name, {}).get("tools") or [])
        else:
            cache[server.name] = {
                "synced": now,
                "config": str(server.source),
                "transport": server.transport,
                "server_info": got["server_info"],
                "tools": got["tools"],
            }
            row["tools"] = [t["name"] for t in got["tools"]]
        report.append(row)
    path = write_cache(cache)
    collisions = _collisions(cache, type_name)

    if as_json:
        click.echo(json.dumps({"cache": str(path), "servers": report, "collisions": collisions}, indent=2))
    else:
        for row in report:
            if "error" in row:
                kept = f" (kept the {row['kept']} tools cached before)" if row["kept"] else ""
                click.echo(f"✗ {row['server']}: {row['error']}{kept}", err=True)
            else:
                n = len(row["tools"])
                click.echo(f"✓ {row['server']} ({row['transport']}): {n} tool{'s' if n != 1 else ''}")
                for tool in row["tools"]:
                    click.echo(f"    {type_name(row['server'], tool)}")
        for name, owners in collisions.items():
            click.echo(
                f"warning: {name} names a tool of servers {' and '.join(owners)}; the node type "
                f"calls '{owners[-1]}' (rename a server to reach the other)",
                err=True,
            )
        click.echo(f"cached in {path}")
    return 1 if any("error" in row for row in report) else 0


def _collisions(cache: dict[str, Any], type_name: Any) -> dict[str, list[str]]:
    owners: dict[str, list[str]] = {}
    for server in sorted(cache, key=len):
        for tool in cache[server].get("tools") or []:
            owners.setdefault(type_name(server, tool.get("name", "")), []).append(server)
    return {name: servers for name, servers in owners.items() if len(servers) > 1}


def list_command(as_json: bool) -> None:
    from plait.nodes.mcp.catalog import cache_path, read_cache, type_name
    from plait.nodes.mcp.config import config_paths, load_servers

    configured = load_servers()
    cache = read_cache()
    rows: list[dict[str, Any]] = []
    for name in sorted(set(configured) | set(cache)):
        server = configured.get(name)
        cached = cache.get(name) or {}
        rows.append(
            {
                "server": name,
                "configured": str(server.source) if server else None,
                "transport": server.transport if server else cached.get("transport"),
                "problems": server.problems if server else [],
                "synced": cached.get("synced"),
                "tools": [
                    {"type": type_name(name, t["name"]), "description": t.get("description") or ""}
                    for t in cached.get("tools") or []
                ],
            }
        )
    if as_json:
        click.echo(
            json.dumps(
                {"config": [str(p) for p in config_paths()], "cache": str(cache_path()), "servers": rows},
                indent=2,
            )
        )
        return
    if not rows:
        click.echo(f"no MCP servers configured (add them to {config_paths()[0]}, then run `plait mcp sync`)")
        return
    for row in rows:
        where = f"from {row['configured']}" if row["configured"] else "no longer configured"
        click.echo(f"{row['server']} ({row['transport']}, {where})")
        for problem in row["problems"]:
            click.echo(f"  problem: {problem}")
        if row["synced"] is None:
            click.echo("  not synced: run `plait mcp sync`")
            continue
        click.echo(f"  synced {row['synced']}, {len(row['tools'])} tools:")
        for tool in row["tools"]:
            first = next((line.strip() for line in tool["description"].splitlines() if line.strip()), "")
            click.echo(f"    {tool['type']}" + (f" — {first}" if first else ""))
