"""Which component ports of each pipeline are ends of ION edges, worked out once per definition.

Authors may write an edge end as ``pipeline`` or ``pipeline.component``; the validator resolves
the short forms against the component catalog (``ion.validate``).  The agent does the same
when a definition arrives, so the runner gets every edge end as a concrete
``(component, port)`` and the local socket knows which edges a pipeline may use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ion.model.definition import Edge, EdgeKind, IonDefinition
from node.runner.spec import EdgePort

if TYPE_CHECKING:
    from ion.catalog import Catalog

_CATALOG: Catalog | None = None


def _catalog() -> Catalog:
    global _CATALOG  # noqa: PLW0603 - built once, lazily: entry points are read on first use
    from ion.catalog import builtin_catalog

    if _CATALOG is None:
        _CATALOG = builtin_catalog().with_entry_points()
    return _CATALOG


@dataclass(frozen=True, slots=True)
class IonEdges:
    """One definition's edges, resolved, and the edge ends per pipeline."""

    edges: Mapping[str, Edge] = field(default_factory=dict)
    ports: Mapping[str, tuple[EdgePort, ...]] = field(default_factory=dict)
    """pipeline name -> its ports that are edge ends (sources and targets)."""
    readers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """edge name -> the pipelines with a component port that reads it."""

    def outgoing(self, pipeline: str) -> tuple[Edge, ...]:
        return tuple(e for e in self.edges.values() if e.source.pipeline == pipeline)

    def incoming(self, pipeline: str) -> tuple[Edge, ...]:
        return tuple(
            e for e in self.edges.values() if any(t.pipeline == pipeline for t in e.targets)
        )


def resolve_edges(definition: IonDefinition, catalog: Catalog | None = None) -> IonEdges:
    # Imported on the first definition: an agent with nothing to run stays small.
    from ion.validate.core import validate_ion

    report = validate_ion(definition, catalog=catalog or _catalog())
    # An edge the validator could not resolve (it was applied with an unknown component, say)
    # keeps its short form: telemetry still flows, port binding skips it.
    resolved = {e.name: e for e in report.resolved_edges} or {}
    edges = {e.name: resolved.get(e.name, e) for e in definition.edges}
    ports: dict[str, list[EdgePort]] = {}
    components = {(p.name, c.name) for p in definition.pipelines for c in p.components}
    for e in edges.values():
        if e.kind is EdgeKind.TRIGGER:
            continue
        if (
            e.source.component
            and e.source.port
            and (e.source.pipeline, e.source.component) in components
        ):
            ports.setdefault(e.source.pipeline, []).append(
                EdgePort(e.name, e.kind.value, "out", e.source.component, e.source.port)
            )
        for t in e.targets:
            if t.component and t.port and (t.pipeline, t.component) in components:
                ports.setdefault(t.pipeline, []).append(
                    EdgePort(e.name, e.kind.value, "in", t.component, t.port)
                )
    readers: dict[str, list[str]] = {}
    for pipeline, pipeline_ports in ports.items():
        for port in pipeline_ports:
            if port.direction == "in" and pipeline not in readers.setdefault(port.edge, []):
                readers[port.edge].append(pipeline)
    return IonEdges(
        edges,
        {p: tuple(v) for p, v in ports.items()},
        {e: tuple(v) for e, v in readers.items()},
    )
