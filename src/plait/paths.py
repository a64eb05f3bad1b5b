"""Where plait keeps its own files: run records, the item cache, user settings.

``$PLAIT_HOME`` when set; otherwise the user's data directory, as other CLI
tools keep their logs: ``$XDG_DATA_HOME/plait`` (default ``~/.local/share/plait``)
on Linux and other Unixes, ``~/Library/Application Support/plait`` on macOS,
``%APPDATA%\\plait`` on Windows. So ``plait runs`` finds the same runs from any folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def home() -> Path:
    explicit = os.environ.get("PLAIT_HOME")
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "plait"
    if sys.platform == "win32":
        appdata = os.environ.get("APPDATA")
        return (Path(appdata) if appdata else Path.home() / "AppData" / "Roaming") / "plait"
    data = os.environ.get("XDG_DATA_HOME")
    base = Path(data) if data and os.path.isabs(data) else Path.home() / ".local" / "share"
    return base / "plait"
