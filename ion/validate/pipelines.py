"""Rules about one pipeline: engine, schedule, placement, restart policy, and its components
(types, arguments, input bindings, and the DAG they must form)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ion.authoring.durations import schedule_interval_ms
from ion.authoring.locations import child, item
from ion.catalog import Catalog, type_name
from ion.model.definition import ArgValue, PipelineMode, PipelineRole, PortType
from ion.validate.context import ComponentInfo, PipelineInfo
from ion.validate.graph import cycle_in, strongly_connected
from ion.validate.names import check_name, check_unique, did_you_mean, valid_name
from ion.validate.report import Collector

logger = logging.getLogger(__name__)

_INT64 = (-(2**63), 2**63 - 1)


def check_pipeline(out: Collector, info: PipelineInfo, catalog: Catalog) -> None:
    pipeline, loc = info.pipeline, info.loc
    check_name(out, child(loc, "name"), "pipeline", pipeline.name)
    if not info.engine_known:
        engines = sorted(catalog.engines)
        if pipeline.engine:
            out.error(
                child(loc, "engine"),
                f"unknown engine {pipeline.engine!r}{did_you_mean(pipeline.engine, engines)}; "
                f"known engines: {', '.join(engines)}",
            )
        else:
            out.error(child(loc, "engine"), f"engine is missing; one of: {', '.join(engines)}")
    _check_schedule(out, info)
    _check_placement(out, info)
    _check_restart(out, info)
    if not pipeline.components:
        out.error(child(loc, "components"), "a pipeline needs at least one component")
    check_unique(out, "component", ((c.loc, c.component.name) for c in info.components))
    for component in info.components:
        check_name(out, child(component.loc, "name"), "component", component.component.name)
        _check_type(out, info, component, catalog)
        _check_args(out, component)
        _check_bindings(out, info, component)
    _check_dag(out, info)


def _check_schedule(out: Collector, info: PipelineInfo) -> None:
    pipeline = info.pipeline
    if not pipeline.schedule:
        return
    loc = child(info.loc, "schedule")
    try:
        schedule_interval_ms(pipeline.schedule)
    except ValueError as exc:
        out.error(loc, str(exc))
    if pipeline.mode is PipelineMode.STREAMING:
        out.error(
            loc,
            "a streaming pipeline runs until stopped and takes no schedule; "
            "use mode: batch to run it on a schedule",
        )


def _check_placement(out: Collector, info: PipelineInfo) -> None:
    placement, loc = info.pipeline.placement, child(info.loc, "placement")
    if not placement.nodes and not placement.labels:
        out.error(loc, "placement selects no node: give nodes: [...] or labels: {...}")
    for index, node in enumerate(placement.nodes):
        if not valid_name(node):
            out.error(item(child(loc, "nodes"), index), f"{node!r} is not a valid node id")
    for key in placement.labels:
        if not key:
            out.error(child(loc, "labels"), "label keys must not be empty")


def _check_restart(out: Collector, info: PipelineInfo) -> None:
    restart, loc = info.pipeline.restart, child(info.loc, "restart")
    if restart.max_restarts < 0:
        out.error(child(loc, "max_restarts"), "max_restarts must not be negative")
    for key, value in (
        ("window", restart.window_ms),
        ("backoff", restart.backoff_initial_ms),
        ("max_backoff", restart.backoff_max_ms),
    ):
        if value < 0:
            out.error(child(loc, key), f"{key} must not be negative")
    if restart.backoff_initial_ms > restart.backoff_max_ms >= 0:
        out.error(child(loc, "backoff"), "backoff must not be longer than max_backoff")


def _check_type(
    out: Collector, info: PipelineInfo, component: ComponentInfo, catalog: Catalog
) -> None:
    if not info.engine_known or component.spec is not None:
        return
    engine, ctype = info.pipeline.engine, component.component.type
    loc = child(component.loc, "type")
    if not ctype:
        out.error(loc, "component type is missing")
        return
    elsewhere = catalog.get(ctype)
    if elsewhere is not None:
        out.error(
            loc,
            f"component type {ctype!r} does not run on engine {engine!r} "
            f"(it runs on: {', '.join(elsewhere.engines)})",
        )
        return
    suggestion = catalog.suggest(ctype, engine)
    hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
    out.error(loc, f"unknown component type {ctype!r} for engine {engine!r}{hint}")


def _check_args(out: Collector, component: ComponentInfo) -> None:
    args_loc = child(component.loc, "args")
    for name, value in component.component.args.items():
        _check_int_range(out, child(args_loc, name), value)
    spec = component.spec
    if spec is None:
        return
    for name, value in component.component.args.items():
        loc = child(args_loc, name)
        arg = spec.args.get(name)
        if arg is None:
            known = ", ".join(spec.args) or "none"
            out.error(
                loc,
                f"unknown argument {name!r} for {spec.type}"
                f"{did_you_mean(name, spec.args)}; known arguments: {known}",
            )
        elif value is None:
            if arg.required:
                out.error(loc, f"argument {name!r} is required and must not be null")
        elif arg.choices and value not in arg.choices:
            choices = ", ".join(repr(c) for c in arg.choices)
            out.error(loc, f"argument {name!r} must be one of {choices}, got {value!r}")
        elif not arg.accepts(value):
            out.error(
                loc, f"argument {name!r} expects {arg.type}, got {type_name(value)} {value!r}"
            )
    for name, arg in spec.args.items():
        if arg.required and name not in component.component.args:
            out.error(child(args_loc, name), f"missing required argument {name!r} ({arg.type})")


def _check_int_range(out: Collector, loc: str, value: ArgValue) -> None:
    """The wire carries integers as sint64; YAML integers can be any size."""
    if isinstance(value, bool):
        return
    if isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
        out.error(loc, "integer does not fit in 64 bits")
    elif isinstance(value, tuple):
        for index, element in enumerate(value):
            _check_int_range(out, item(loc, index), element)
    elif isinstance(value, Mapping):
        for key, element in value.items():
            _check_int_range(out, child(loc, key), element)


def _check_bindings(out: Collector, info: PipelineInfo, component: ComponentInfo) -> None:
    spec = component.spec
    inputs_loc = child(component.loc, "inputs")
    seen: set[str] = set()
    for binding in component.component.inputs:
        loc = child(inputs_loc, binding.port)
        if binding.port in seen:
            out.error(loc, f"input {binding.port!r} is bound more than once")
            continue
        seen.add(binding.port)
        if spec is not None and binding.port not in spec.inputs:
            known = ", ".join(spec.inputs) or "none"
            out.error(
                loc,
                f"{spec.type} has no input port {binding.port!r}"
                f"{did_you_mean(binding.port, spec.inputs)}; inputs: {known}",
            )
            continue
        source = info.by_name.get(binding.from_component)
        if source is None:
            out.error(
                loc,
                f"input {binding.port!r} reads from unknown component {binding.from_component!r}"
                f"{did_you_mean(binding.from_component, info.by_name)} in pipeline "
                f"{info.pipeline.name!r}",
            )
            continue
        if source.spec is None:
            continue
        out_type = source.spec.outputs.get(binding.from_port)
        if out_type is None:
            known = ", ".join(source.spec.outputs) or "none"
            out.error(
                loc,
                f"component {source.component.name!r} ({source.spec.type}) has no output port "
                f"{binding.from_port!r}{did_you_mean(binding.from_port, source.spec.outputs)}; "
                f"outputs: {known}",
            )
            continue
        in_type = spec.inputs[binding.port] if spec is not None else None
        if in_type is not None and in_type is not out_type:
            out.error(
                loc,
                f"input {binding.port!r} takes {in_type.value} but "
                f"{binding.from_component}.{binding.from_port} produces {out_type.value}",
            )


def _check_dag(out: Collector, info: PipelineInfo) -> None:
    graph: dict[str, list[str]] = {name: [] for name in info.by_name}
    for component in info.components:
        for binding in component.component.inputs:
            successors = graph.get(binding.from_component)
            if successors is not None and component.component.name not in successors:
                successors.append(component.component.name)
    for members in strongly_connected(graph):
        head = members[0]
        if len(members) == 1 and head not in graph[head]:
            continue
        cycle = cycle_in(graph, members)
        out.error(
            info.by_name[head].loc,
            "components form a cycle: " + " -> ".join(cycle) + "; a pipeline must be a DAG",
        )


def check_required_inputs(out: Collector, info: PipelineInfo) -> None:
    """After the edge rules: every required input is bound or fed by an ION edge."""
    for component in info.components:
        spec = component.spec
        if spec is None:
            continue
        name = component.component.name
        for port, port_type in spec.inputs.items():
            if not spec.input_required(port) or (name, port) in info.bound_inputs:
                continue
            if (name, port) in info.edge_fed_inputs or port_type in info.uncertain_inputs:
                continue
            out.error(
                child(child(component.loc, "inputs"), port),
                f"required input {port!r} ({port_type.value}) of {name!r} is not connected: bind "
                f"it (inputs: {{{port}: <component>.<port>}}) or make it the target of an ION "
                f"{port_type.value} edge",
            )


def check_role(out: Collector, info: PipelineInfo, triggered: bool) -> None:
    """Hints about how the pipeline will behave; never errors."""
    pipeline = info.pipeline
    if (
        pipeline.role is PipelineRole.TRAINING
        and info.specs_known
        and not info.has_output(PortType.MODEL)
    ):
        out.warning(
            child(info.loc, "role"), "a training pipeline without a model output publishes nothing"
        )
    if pipeline.mode is PipelineMode.BATCH and not pipeline.schedule and not triggered:
        out.info(
            child(info.loc, "mode"),
            "batch pipeline with no schedule and no trigger edge: it runs once per apply",
        )
