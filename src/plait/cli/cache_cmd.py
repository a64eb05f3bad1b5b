"""`plait cache stats|prune|clear`."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from plait.errors import UsageError

if TYPE_CHECKING:
    from plait.runtime.cache import ItemCache


def _cache() -> ItemCache:
    from plait.paths import home
    from plait.runtime.cache import open_cache

    return open_cache(home())


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def stats_command(as_json: bool) -> int:
    stats = _cache().stats()
    if as_json:
        sys.stdout.write(json.dumps(stats, indent=2) + "\n")
        return 0
    lines = [
        f"item cache  {stats['path']}",
        f"  entries   {stats['entries']:,} ({_size(stats['bytes'])}), used {stats['hits']:,} times"
        + (f"; {stats['expired']:,} expired (plait cache prune)" if stats["expired"] else ""),
    ]
    for row in stats["by_type"]:
        lines.append(f"  {row['type']:<10}{row['entries']:,} entries, {_size(row['bytes'])}, {row['hits']:,} hits")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def prune_command(older_than: str | None) -> int:
    from plait.ir.values import parse_duration

    seconds = None
    if older_than is not None:
        seconds = parse_duration(older_than)
        if seconds is None:
            raise UsageError(f"--older-than takes a duration such as 7d, 12h or 30m, not {older_than!r}")
    gone = _cache().prune(seconds)
    sys.stdout.write(f"dropped {gone:,} entr{'y' if gone == 1 else 'ies'}\n")
    return 0


def clear_command() -> int:
    gone = _cache().clear()
    sys.stdout.write(f"dropped {gone:,} entr{'y' if gone == 1 else 'ies'}\n")
    return 0
