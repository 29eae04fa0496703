"""``validate_ion``: every semantic rule over one ION definition, every problem collected.

Rules run in a fixed order (names and pipelines, then edges, then what needs both, then the
inventory) and never stop early; a rule that depends on something already reported as wrong
(an unknown engine, an unknown component type) stays silent instead of piling on.
``validate_text`` and ``validate_file`` also run the schema reader and merge both sets of
problems; a validation problem at or under a location with a schema error is dropped, because
it would only be an echo of that error on a placeholder value.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from pathlib import Path

from ion.authoring import ParsedIon, load_ion_file, parse_ion
from ion.authoring.locations import child, element_keys, is_within, item, parent
from ion.catalog import Catalog, builtin_catalog
from ion.errors import Problem
from ion.model.definition import EdgeKind, IonDefinition, PolicyKind
from ion.validate.context import PipelineInfo, build, first_by_name
from ion.validate.edges import EdgeFindings, check_edges
from ion.validate.graph import simple_cycles
from ion.validate.inventory import Inventory
from ion.validate.names import check_name, check_unique, did_you_mean
from ion.validate.pipelines import check_pipeline, check_required_inputs, check_role
from ion.validate.report import Collector, ValidationReport, sort_problems

logger = logging.getLogger(__name__)

MAX_REPORTED_CYCLES = 50


def validate_ion(
    definition: IonDefinition,
    *,
    catalog: Catalog | None = None,
    inventory: Inventory | None = None,
    lines: Mapping[str, int] | None = None,
    file: str | None = None,
) -> ValidationReport:
    """Check ``definition`` against every rule (see docs/ion-format.md).

    ``catalog`` defaults to ``builtin_catalog()``.  Placement is checked against ``inventory``
    only when one is given.  ``lines`` (from ``ParsedIon.lines``) and ``file`` locate problems.
    """
    return _validate(definition, catalog, inventory, Collector(lines, file), frozenset())


def _validate(
    definition: IonDefinition,
    catalog: Catalog | None,
    inventory: Inventory | None,
    out: Collector,
    unknown_kinds: frozenset[int],
) -> ValidationReport:
    catalog = builtin_catalog() if catalog is None else catalog
    check_name(out, "metadata.name", "ION", definition.name)
    if not definition.pipelines:
        out.error("pipelines", "an ION needs at least one pipeline")
    infos = build(definition.pipelines, catalog)
    check_unique(out, "pipeline", ((i.loc, i.pipeline.name) for i in infos))
    for info in infos:
        check_pipeline(out, info, catalog)
    by_name = first_by_name(infos)
    findings = check_edges(out, definition.edges, by_name, unknown_kinds)
    for info in infos:
        check_required_inputs(out, info)
        check_role(out, info, info.pipeline.name in findings.triggered)
    cycles = _report_cycles(out, definition, findings)
    if inventory is not None:
        _check_inventory(out, infos, by_name, findings, inventory)
    return ValidationReport(
        problems=sort_problems(out.problems),
        cycles=tuple(cycles),
        resolved_edges=tuple(findings.resolved),
    )


def _report_cycles(
    out: Collector, definition: IonDefinition, findings: EdgeFindings
) -> list[tuple[str, ...]]:
    graph: dict[str, list[str]] = {p.name: [] for p in definition.pipelines if p.name}
    for source, target in findings.links:
        if source in graph and target in graph and target not in graph[source]:
            graph[source].append(target)
    cycles = simple_cycles(graph, limit=MAX_REPORTED_CYCLES)
    edge_loc: dict[str, str] = {}
    for edge, loc in zip(definition.edges, findings.locations, strict=True):
        edge_loc.setdefault(edge.name, loc)
    for cycle in cycles:
        via = [findings.links[pair] for pair in itertools.pairwise(cycle)]
        out.info(
            edge_loc.get(via[0], "edges"),
            "cycle across the ION (allowed): " + " -> ".join(cycle) + f" (edges: {', '.join(via)})",
        )
    if len(cycles) == MAX_REPORTED_CYCLES:
        out.info("edges", f"more cycles across the ION than the {MAX_REPORTED_CYCLES} listed")
    return cycles


def _check_inventory(
    out: Collector,
    infos: list[PipelineInfo],
    by_name: Mapping[str, PipelineInfo],
    findings: EdgeFindings,
    inventory: Inventory,
) -> None:
    known = inventory.ids()
    runs_on: dict[str, set[str]] = {}
    for info in infos:
        placement, loc = info.pipeline.placement, child(info.loc, "placement")
        for index, node in enumerate(placement.nodes):
            if node not in known:
                out.error(
                    item(child(loc, "nodes"), index),
                    f"node {node!r} is not in the inventory{did_you_mean(node, known)}",
                )
        selected = {n.id for n in inventory.select(placement)}
        runs_on.setdefault(info.pipeline.name, selected)
        if not selected and (placement.nodes or placement.labels):
            out.error(loc, "placement selects no node of the inventory")
    for edge, loc in zip(findings.resolved, findings.locations, strict=True):
        policy = edge.policy
        if edge.kind is EdgeKind.MODEL and policy is not None and policy.canary is not None:
            consumers: set[str] = set()
            for target in edge.targets:
                consumers |= runs_on.get(target.pipeline, set())
            canary_loc = child(child(loc, "policy"), "canary")
            for index, node in enumerate(policy.canary.nodes):
                node_loc = item(child(canary_loc, "nodes"), index)
                if node not in known:
                    out.error(node_loc, f"canary node {node!r} is not in the inventory")
                elif node not in consumers and policy.kind is PolicyKind.CANARY:
                    out.error(node_loc, f"canary node {node!r} runs no target of this edge")
        trigger = edge.trigger
        if edge.kind is EdgeKind.TRIGGER and trigger is not None and edge.source.pipeline:
            if edge.source.pipeline not in by_name:
                continue
            sources = len(runs_on.get(edge.source.pipeline, set()))
            if 0 < sources < trigger.min_nodes:
                out.warning(
                    child(child(loc, "trigger"), "min_nodes"),
                    f"min_nodes is {trigger.min_nodes} but {edge.source.pipeline!r} runs on "
                    f"{sources} node(s) of the inventory: the trigger can never fire",
                )


# -- text and files: schema and semantic problems in one report ------------------------------


def validate_text(
    text: str,
    file: str | None = None,
    *,
    catalog: Catalog | None = None,
    inventory: Inventory | None = None,
) -> ValidationReport:
    """Parse and validate ION YAML in one pass: what ``ion validate`` prints."""
    return validate_parsed(parse_ion(text, file), catalog=catalog, inventory=inventory)


def validate_file(
    path: str | Path, *, catalog: Catalog | None = None, inventory: Inventory | None = None
) -> ValidationReport:
    return validate_parsed(load_ion_file(path), catalog=catalog, inventory=inventory)


def validate_parsed(
    parsed: ParsedIon, *, catalog: Catalog | None = None, inventory: Inventory | None = None
) -> ValidationReport:
    if parsed.partial is None:
        return ValidationReport(problems=sort_problems(parsed.problems))
    scopes = [_scope(p) for p in parsed.problems if p.severity == "error" and p.location]
    edge_keys = element_keys(e.name for e in parsed.partial.edges)
    unknown_kinds = frozenset(
        index for index, key in enumerate(edge_keys) if item("edges", key) in scopes
    )
    report = _validate(
        parsed.partial, catalog, inventory, Collector(parsed.lines, parsed.file), unknown_kinds
    )
    kept = [p for p in report.problems if not any(is_within(p.location, s) for s in scopes)]
    return ValidationReport(
        problems=sort_problems([*parsed.problems, *kept]),
        cycles=report.cycles,
        resolved_edges=report.resolved_edges,
    )


def _scope(problem: Problem) -> str:
    """What a schema error puts in doubt: the location itself, or the whole edge when its
    kind is unreadable (every edge rule depends on the kind)."""
    loc = problem.location
    if loc.startswith("edges[") and loc.endswith(".kind"):
        return parent(loc) or loc
    return loc
