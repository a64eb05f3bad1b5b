"""The `plait` command's entry point: answers --version before importing the CLI."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] in (["--version"], ["-V"]):
        from plait import __version__

        sys.stdout.write(f"plait, version {__version__}\n")
        return
    from plait.cli import main as cli_main

    cli_main()
