"""Rules about ION edges: names, ends, and whether the kind of an edge fits its two ends.

An endpoint is written ``pipeline``, ``pipeline.component`` or ``pipeline.component.port``.
The short forms stand for the one port of the edge's kind they can mean:

* a source reads an output port of the edge's kind; when several exist, the outputs that no
  component inside the pipeline consumes come first (``training`` means the publisher's
  ``model`` output, not the trainer's that feeds the publisher);
* a target feeds an input port of the edge's kind that is not bound inside the pipeline;
* every pipeline produces stats and events implicitly, so a stats or events edge may start at
  a bare pipeline (its whole stream); a trigger edge starts at a pipeline and targets a batch
  pipeline as a whole.

More than one candidate is an ambiguity error that lists them; none is an error too.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field, replace

from ion.authoring.locations import child, element_keys, item
from ion.model.definition import Edge, EdgeKind, Endpoint, PipelineMode, PortType
from ion.validate.context import PORT_OF_KIND, PipelineInfo
from ion.validate.names import check_name, check_unique, did_you_mean
from ion.validate.policies import check_edge_settings
from ion.validate.report import Collector

logger = logging.getLogger(__name__)

_TRIGGER_SOURCES = frozenset({PortType.HEALTH, PortType.EVENTS, PortType.STATS})


@dataclass
class EdgeFindings:
    resolved: list[Edge] = field(default_factory=list)
    locations: list[str] = field(default_factory=list)
    links: dict[tuple[str, str], str] = field(default_factory=dict)
    """(source pipeline, target pipeline) -> name of the first edge joining them."""
    triggered: set[str] = field(default_factory=set)
    """Pipelines that some trigger edge starts."""
    model_fed: dict[tuple[str, str, str], str] = field(default_factory=dict)
    """(pipeline, component, port) -> the model edge feeding that input."""


def check_edges(
    out: Collector,
    edges: tuple[Edge, ...],
    pipelines: dict[str, PipelineInfo],
    unknown_kinds: frozenset[int] = frozenset(),
) -> EdgeFindings:
    """``unknown_kinds`` holds the indexes of edges whose kind could not be read (a schema
    error): they are left unchecked, and the inputs they may feed are not reported unbound."""
    findings = EdgeFindings()
    keys = element_keys(e.name for e in edges)
    for index, (key, edge) in enumerate(zip(keys, edges, strict=True)):
        loc = item("edges", key)
        findings.locations.append(loc)
        check_name(out, child(loc, "name"), "edge", edge.name)
        if index in unknown_kinds:
            findings.resolved.append(edge)
            for target in edge.targets:
                if target.pipeline in pipelines:
                    pipelines[target.pipeline].uncertain_inputs.update(PortType)
            continue
        check_edge_settings(out, edge, loc)
        source = _check_source(out, edge, pipelines, child(loc, "from"))
        targets = _check_targets(out, edge, pipelines, loc, findings)
        findings.resolved.append(replace(edge, source=source, targets=targets))
    check_unique(out, "edge", zip(findings.locations, (e.name for e in edges), strict=True))
    return findings


def _pipeline_of(
    out: Collector, endpoint: Endpoint, pipelines: dict[str, PipelineInfo], loc: str, side: str
) -> PipelineInfo | None:
    if not endpoint.pipeline:
        out.error(loc, f"the edge's {side} is missing")
        return None
    info = pipelines.get(endpoint.pipeline)
    if info is None:
        out.error(
            loc,
            f"edge {side} {endpoint.pipeline!r} is not a pipeline of this ION"
            f"{did_you_mean(endpoint.pipeline, pipelines)}",
        )
    return info


def _check_source(
    out: Collector, edge: Edge, pipelines: dict[str, PipelineInfo], loc: str
) -> Endpoint:
    endpoint = edge.source
    info = _pipeline_of(out, endpoint, pipelines, loc, "source")
    if info is None:
        return endpoint
    if edge.kind is EdgeKind.TRIGGER:
        if endpoint.component:
            return resolve(
                out, info, endpoint, loc, _TRIGGER_SOURCES, kind=edge.kind, outputs=True
            )[0]
        needs_health = edge.trigger is not None and edge.trigger.metric == "drift"
        if needs_health and info.specs_known and not info.has_output(PortType.HEALTH):
            out.error(
                loc,
                "a trigger on drift needs health from its source, and pipeline "
                f"{info.pipeline.name!r} has no component with a health output",
            )
        return endpoint
    port_type = PORT_OF_KIND[edge.kind]
    assert port_type is not None
    if edge.kind in (EdgeKind.STATS, EdgeKind.EVENTS) and not endpoint.component:
        return endpoint  # the pipeline's implicit stream
    return resolve(out, info, endpoint, loc, {port_type}, kind=edge.kind, outputs=True)[0]


def _check_targets(
    out: Collector,
    edge: Edge,
    pipelines: dict[str, PipelineInfo],
    loc: str,
    findings: EdgeFindings,
) -> tuple[Endpoint, ...]:
    to_loc = child(loc, "to")
    if not edge.targets:
        out.error(to_loc, "an edge needs at least one target")
    resolved: list[Endpoint] = []
    seen: set[Endpoint] = set()
    for index, target in enumerate(edge.targets):
        target_loc = item(to_loc, index)
        resolved.append(target)
        if target in seen and target.pipeline:
            out.error(target_loc, f"target {str(target)!r} is listed twice")
            continue
        seen.add(target)
        info = _pipeline_of(out, target, pipelines, target_loc, "target")
        if info is None:
            continue
        if edge.source.pipeline in pipelines:
            findings.links.setdefault((edge.source.pipeline, target.pipeline), edge.name)
        if edge.kind is EdgeKind.TRIGGER:
            _check_trigger_target(out, target, info, target_loc)
            findings.triggered.add(target.pipeline)
            continue
        port_type = PORT_OF_KIND[edge.kind]
        assert port_type is not None
        endpoint, certain = resolve(
            out, info, target, target_loc, {port_type}, kind=edge.kind, outputs=False
        )
        resolved[-1] = endpoint
        if not certain:
            info.uncertain_inputs.add(port_type)
            continue
        info.edge_fed_inputs.add((endpoint.component, endpoint.port))
        if edge.kind is EdgeKind.MODEL:
            key = (endpoint.pipeline, endpoint.component, endpoint.port)
            other = findings.model_fed.setdefault(key, edge.name)
            if other != edge.name:
                out.error(
                    target_loc,
                    f"input {endpoint} already receives models from edge {other!r}; "
                    "one model edge per input",
                )
    return tuple(resolved)


def _check_trigger_target(out: Collector, target: Endpoint, info: PipelineInfo, loc: str) -> None:
    if target.component:
        out.error(loc, f"a trigger edge starts a whole pipeline: write {target.pipeline!r}")
    if info.pipeline.mode is not PipelineMode.BATCH:
        out.error(
            loc,
            f"a trigger edge must target a batch pipeline; {target.pipeline!r} is "
            f"{info.pipeline.mode.value} and always running",
        )


def resolve(
    out: Collector,
    info: PipelineInfo,
    endpoint: Endpoint,
    loc: str,
    port_types: Collection[PortType],
    *,
    kind: EdgeKind,
    outputs: bool,
) -> tuple[Endpoint, bool]:
    """The endpoint with component and port filled in, and whether that worked.  Unknown
    component types make an endpoint unresolvable without an error (their error is elsewhere)."""
    direction = "output" if outputs else "input"
    wanted = "/".join(sorted(t.value for t in port_types))
    if endpoint.component:
        component = info.by_name.get(endpoint.component)
        if component is None:
            out.error(
                loc,
                f"pipeline {info.pipeline.name!r} has no component {endpoint.component!r}"
                f"{did_you_mean(endpoint.component, info.by_name)}",
            )
            return endpoint, False
        spec = component.spec
        if spec is None:
            return endpoint, False
        ports = spec.outputs if outputs else spec.inputs
        if endpoint.port:
            port_type = ports.get(endpoint.port)
            if port_type is None:
                out.error(
                    loc,
                    f"component {endpoint.component!r} ({spec.type}) has no {direction} port "
                    f"{endpoint.port!r}{did_you_mean(endpoint.port, ports)}; "
                    f"{direction}s: {', '.join(ports) or 'none'}",
                )
                return endpoint, False
            if port_type not in port_types:
                out.error(
                    loc,
                    f"{endpoint} is a {port_type.value} {direction}; a {kind.value} edge needs "
                    f"{wanted}",
                )
                return endpoint, False
            if not outputs and (endpoint.component, endpoint.port) in info.bound_inputs:
                out.error(
                    loc,
                    f"input {endpoint} is already bound inside the pipeline; an edge can only "
                    "feed an unbound input",
                )
                return endpoint, False
            return endpoint, True
        candidates = [
            (endpoint.component, p)
            for p, t in ports.items()
            if t in port_types and (outputs or (endpoint.component, p) not in info.bound_inputs)
        ]
        where = f"component {endpoint.component!r}"
    else:
        if not info.specs_known:
            return endpoint, False
        candidates = info.ports(port_types, outputs=outputs)
        if outputs:
            candidates = [c for c in candidates if c not in info.consumed_outputs] or candidates
        else:
            candidates = [c for c in candidates if c not in info.bound_inputs]
        where = f"pipeline {endpoint.pipeline!r}"
    if len(candidates) == 1:
        component_name, port = candidates[0]
        return Endpoint(endpoint.pipeline, component_name, port), True
    if not candidates:
        unbound = "" if outputs else "unbound "
        out.error(loc, f"{where} has no {unbound}{wanted} {direction} for a {kind.value} edge")
    else:
        listed = ", ".join(f"{c}.{p}" for c, p in candidates)
        first = f"{endpoint.pipeline}.{candidates[0][0]}.{candidates[0][1]}"
        out.error(
            loc,
            f"ambiguous endpoint {str(endpoint)!r}: {where} has {len(candidates)} {wanted} "
            f"{direction}s ({listed}); name one, e.g. {first}",
        )
    return endpoint, False
