"""Node types. Each module depends only on :mod:`plait.nodes.base`, the contract."""
