"""The shape of a workflow's graph: who follows whom, who can run before whom."""

from __future__ import annotations

from plait.ir.model import Edge, Workflow


def effective_edges(wf: Workflow) -> list[Edge]:
    """The edges that drive execution: without any, nodes run in listed order."""
    if wf.edges:
        return wf.edges
    return [Edge(a.id, b.id) for a, b in zip(wf.nodes, wf.nodes[1:], strict=False)]


def start_node(wf: Workflow) -> str:
    return wf.start_node or wf.nodes[0].id


def successors(edges: list[Edge]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in edges:
        out.setdefault(e.source, [])
        if e.target not in out[e.source]:
            out[e.source].append(e.target)
    return out


def reachable_from(node_id: str, succ: dict[str, list[str]]) -> set[str]:
    """Every node reachable from ``node_id`` by one edge or more (itself only through a loop)."""
    seen: set[str] = set()
    stack = list(succ.get(node_id, ()))
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        stack.extend(succ.get(n, ()))
    return seen


def can_run_before(wf: Workflow) -> dict[str, set[str]]:
    """For each node, the nodes that may have finished by the time it starts.

    A node is a candidate when it is reachable from the start and the node is
    reachable from it; through loops that includes the node itself.
    """
    edges = effective_edges(wf)
    succ = successors(edges)
    start = start_node(wf)
    reach = {n.id: reachable_from(n.id, succ) for n in wf.nodes}
    live = reach.get(start, set()) | {start}
    before: dict[str, set[str]] = {n.id: set() for n in wf.nodes}
    for a in live:
        for b in reach.get(a, ()):
            before[b].add(a)
    return before


def unreachable(wf: Workflow) -> list[str]:
    succ = successors(effective_edges(wf))
    start = start_node(wf)
    live = reachable_from(start, succ) | {start}
    return [n.id for n in wf.nodes if n.id not in live]
