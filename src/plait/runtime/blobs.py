"""Content-addressed files: large outputs kept beside a database, named by their SHA-256.

The run records (``blobs/``) and the item cache (``cache-blobs/``) keep outputs
too large for a row this way: one file per distinct content, written under a
temporary name and renamed, so a reader never sees half a file and two
writers of the same content agree.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def store(folder: Path, text: str) -> str:
    """Keep ``text`` in ``folder``; its name (the hash) comes back."""
    data = text.encode("utf-8", "surrogatepass")
    name = hashlib.sha256(data).hexdigest()
    path = folder / name[:2] / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.parent / f".{name}.{os.getpid()}.part"
        part.write_bytes(data)
        os.replace(part, path)
    return name


def load(folder: Path, name: str) -> str:
    """The text kept under ``name`` (OSError when it is gone)."""
    return (folder / name[:2] / name).read_text(encoding="utf-8", errors="surrogatepass")
