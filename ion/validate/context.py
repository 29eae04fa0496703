"""What the rules share: each pipeline and component with its location and catalog spec."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from ion.authoring.locations import child, element_keys, item
from ion.catalog import Catalog, ComponentSpec
from ion.model.definition import Component, EdgeKind, Pipeline, PortType

logger = logging.getLogger(__name__)

PORT_OF_KIND: dict[EdgeKind, PortType | None] = {
    EdgeKind.MODEL: PortType.MODEL,
    EdgeKind.HEALTH: PortType.HEALTH,
    EdgeKind.STATS: PortType.STATS,
    EdgeKind.EVENTS: PortType.EVENTS,
    EdgeKind.DATA: PortType.DATA,
    EdgeKind.TRIGGER: None,
}

Port = tuple[str, str]
"""(component name, port name) inside one pipeline."""


@dataclass
class ComponentInfo:
    component: Component
    loc: str
    spec: ComponentSpec | None
    """None when the pipeline's engine or the component's type is unknown (reported once)."""
    first: bool
    """The first component of this name; later namesakes are duplicates."""


@dataclass
class PipelineInfo:
    pipeline: Pipeline
    loc: str
    engine_known: bool
    components: list[ComponentInfo]
    by_name: dict[str, ComponentInfo] = field(default_factory=dict)
    bound_inputs: set[Port] = field(default_factory=set)
    consumed_outputs: set[Port] = field(default_factory=set)
    edge_fed_inputs: set[Port] = field(default_factory=set)
    """Inputs that an ION edge targets (filled in by the edge rules)."""
    uncertain_inputs: set[PortType] = field(default_factory=set)
    """Port types for which an edge into this pipeline could not be resolved; required inputs
    of these types are not reported as unbound (the edge already has an error or is unknown)."""

    @property
    def specs_known(self) -> bool:
        return all(c.spec is not None for c in self.components)

    def ports(self, port_types: Iterable[PortType], *, outputs: bool) -> list[Port]:
        wanted = set(port_types)
        found: list[Port] = []
        for info in self.by_name.values():
            if info.spec is None:
                continue
            ports = info.spec.outputs if outputs else info.spec.inputs
            found.extend((info.component.name, p) for p, t in ports.items() if t in wanted)
        return found

    def has_output(self, port_type: PortType) -> bool:
        return bool(self.ports([port_type], outputs=True))


def build(pipelines: Iterable[Pipeline], catalog: Catalog) -> list[PipelineInfo]:
    pipelines = list(pipelines)
    infos: list[PipelineInfo] = []
    for key, pipeline in zip(element_keys(p.name for p in pipelines), pipelines, strict=True):
        loc = item("pipelines", key)
        engine_known = pipeline.engine in catalog.engines
        components_loc = child(loc, "components")
        component_keys = element_keys(c.name for c in pipeline.components)
        components: list[ComponentInfo] = []
        seen: set[str] = set()
        for c_key, component in zip(component_keys, pipeline.components, strict=True):
            spec = catalog.get(component.type, pipeline.engine) if engine_known else None
            first = component.name not in seen
            seen.add(component.name)
            components.append(ComponentInfo(component, item(components_loc, c_key), spec, first))
        info = PipelineInfo(pipeline, loc, engine_known, components)
        info.by_name = {c.component.name: c for c in components if c.first}
        for c in components:
            for binding in c.component.inputs:
                info.bound_inputs.add((c.component.name, binding.port))
                info.consumed_outputs.add((binding.from_component, binding.from_port))
        infos.append(info)
    return infos


def first_by_name(infos: Iterable[PipelineInfo]) -> dict[str, PipelineInfo]:
    by_name: dict[str, PipelineInfo] = {}
    for info in infos:
        by_name.setdefault(info.pipeline.name, info)
    return by_name
