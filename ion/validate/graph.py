"""Cycles in small directed graphs (components of a pipeline, pipelines of an ION).

Graphs here have tens of vertices, so plain recursive depth-first searches are enough; the
enumeration of simple cycles is still capped, since their number can grow exponentially.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

logger = logging.getLogger(__name__)

Graph = Mapping[str, Sequence[str]]
"""Successors of each vertex; vertex order decides which cycle is reported first."""


def strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's strongly connected components, each in vertex order."""
    order = {v: i for i, v in enumerate(graph)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in order:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            components.append(sorted(component, key=order.__getitem__))

    for v in graph:
        if v not in index:
            visit(v)
    return sorted(components, key=lambda c: order[c[0]])


def simple_cycles(graph: Graph, limit: int = 100) -> list[tuple[str, ...]]:
    """Elementary cycles as closed paths (``a, b, a``), each starting at its earliest vertex,
    at most ``limit`` of them.  Self-loops are cycles ``(a, a)``."""
    vertices = list(graph)
    rank = {v: i for i, v in enumerate(vertices)}
    found: list[tuple[str, ...]] = []

    def extend(start: str, path: list[str], on_path: set[str]) -> None:
        for w in graph.get(path[-1], ()):
            if len(found) >= limit:
                return
            if w == start:
                found.append((*path, start))
            elif w in rank and rank[w] > rank[start] and w not in on_path:
                path.append(w)
                on_path.add(w)
                extend(start, path, on_path)
                on_path.discard(w)
                path.pop()

    for start in vertices:
        extend(start, [start], {start})
    return found


def cycle_in(graph: Graph, component: Sequence[str]) -> tuple[str, ...]:
    """One cycle through the vertices of a strongly connected ``component``."""
    members = set(component)
    restricted = {v: [w for w in graph.get(v, ()) if w in members] for v in component}
    cycles = simple_cycles(restricted, limit=1)
    return cycles[0] if cycles else tuple(component)
