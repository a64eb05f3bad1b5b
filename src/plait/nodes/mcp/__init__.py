"""MCP tool nodes: ``mcp-<server>-<tool>`` node types from configured MCP servers.

``config`` reads the ``mcpServers`` files, ``catalog`` keeps the tool list that
``plait mcp sync`` cached and builds a node type per tool (no MCP SDK import),
``node`` is the node type itself and ``session`` the per-run connection to a
server, the only module that imports the ``mcp`` SDK (``pip install plait[mcp]``).
See docs/mcp.md.
"""
