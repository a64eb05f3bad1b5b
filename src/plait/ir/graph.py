"""The shape of a workflow's graph: who follows whom, who can run before whom.

Everything here is linear in nodes + edges, or answers one question at a time
without building the transitive closure (a chain of 5,000 nodes would make
that 12.5 million pairs): strongly connected components and their topological
order are found once, and "can A lead to B?" searches only the components
that come no later than B's.
"""

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
    seen: set[tuple[str, str]] = set()
    for e in edges:
        out.setdefault(e.source, [])
        if (e.source, e.target) not in seen:
            seen.add((e.source, e.target))
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


class Reachability:
    """Answers "can A lead to B by one edge or more?" for one graph."""

    def __init__(self, nodes: list[str], succ: dict[str, list[str]]) -> None:
        self.succ = succ
        self.comp, self.order, self.cyclic = _components(nodes, succ)
        # the components' own edges
        self._csucc: list[set[int]] = [set() for _ in range(len(self.order))]
        for a, targets in succ.items():
            ca = self.comp.get(a)
            if ca is None:
                continue
            for b in targets:
                cb = self.comp.get(b)
                if cb is not None and cb != ca:
                    self._csucc[ca].add(cb)
        self._pred: dict[str, list[str]] | None = None

    def leads_to(self, a: str, b: str) -> bool:
        ca, cb = self.comp.get(a), self.comp.get(b)
        if ca is None or cb is None:
            return False
        if ca == cb:
            return ca in self.cyclic
        order = self.order
        limit = order[cb]
        if order[ca] > limit:
            return False  # a comes after b in every topological order
        seen = {ca}
        stack = [ca]
        while stack:
            for nxt in self._csucc[stack.pop()]:
                if nxt == cb:
                    return True
                if nxt not in seen and order[nxt] < limit:
                    seen.add(nxt)
                    stack.append(nxt)
        return False

    def ancestors(self, b: str) -> set[str]:
        """Every node that can lead to ``b`` (``b`` itself only through a loop)."""
        if self._pred is None:
            pred: dict[str, list[str]] = {}
            for a, targets in self.succ.items():
                for t in targets:
                    pred.setdefault(t, []).append(a)
            self._pred = pred
        return reachable_from(b, self._pred)


def _components(nodes: list[str], succ: dict[str, list[str]]) -> tuple[dict[str, int], list[int], set[int]]:
    """Tarjan's strongly connected components, iteratively: (node -> component,
    component -> topological position, the components that hold a cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    comp: dict[str, int] = {}
    found: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack.add(v)
            targets = succ.get(v, ())
            recursed = False
            while i < len(targets):
                w = targets[i]
                i += 1
                if w not in index:
                    work.append((v, i))
                    work.append((w, 0))
                    recursed = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if recursed:
                continue
            if low[v] == index[v]:
                members = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp[w] = len(found)
                    members.append(w)
                    if w == v:
                        break
                found.append(members)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    # Tarjan finds components in reverse topological order.
    total = len(found)
    order = [total - 1 - k for k in range(total)]
    cyclic = {k for k, members in enumerate(found) if len(members) > 1 or members[0] in succ.get(members[0], ())}
    return comp, order, cyclic


class RunOrder:
    """Which node may run before which, for validation: a node can have run
    before ``b`` when it is reachable from the start and leads to ``b``."""

    def __init__(self, wf: Workflow) -> None:
        edges = effective_edges(wf)
        succ = successors(edges)
        start = start_node(wf)
        self.reach = Reachability([n.id for n in wf.nodes], succ)
        self.live = reachable_from(start, succ) | {start}

    def can_run_before(self, a: str, b: str) -> bool:
        return a in self.live and self.reach.leads_to(a, b)

    def before(self, b: str) -> set[str]:
        return self.reach.ancestors(b) & self.live


def unreachable(wf: Workflow) -> list[str]:
    succ = successors(effective_edges(wf))
    start = start_node(wf)
    live = reachable_from(start, succ) | {start}
    return [n.id for n in wf.nodes if n.id not in live]
