"""An :class:`IonDefinition` back to ION YAML.

The output reads back to an equal definition (authored content only: ``content_sha256``,
``signature``, ``applied_ms`` and ``applied_by`` are set by ``ion apply`` and not written).
Authored order is kept, fields at their default are left out, and small mappings and lists of
scalars are written in flow style, so the text looks like what a person would write.  A
definition that fails validation may not read back equal (a name with a dot in it, say).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ion.authoring import yaml_core
from ion.authoring.durations import format_duration
from ion.authoring.schema import API_VERSION, KIND
from ion.model.definition import (
    ArgValue,
    CanaryPolicy,
    Component,
    DriftSettings,
    Edge,
    IonDefinition,
    MetricGate,
    ModelPolicy,
    Pipeline,
    PipelineRole,
    Placement,
    RestartPolicy,
    TriggerCondition,
)

logger = logging.getLogger(__name__)

_FLOW_WIDTH = 72  # longer than this and a flow mapping is harder to read than a block one


def dump_ion(definition: IonDefinition) -> str:
    """ION YAML for ``definition``; ``parse_ion`` of the result gives an equal definition."""
    document = to_document(definition)
    sections = {key: document.pop(key) for key in ("pipelines", "edges") if key in document}
    parts = [yaml_core.dump(document)]
    # Each list element is dumped alone so that a blank line can separate elements without
    # touching the inside of any scalar; indenting the lines of a flow scalar is harmless.
    for key, elements in sections.items():
        body = "\n".join(_indent(yaml_core.dump([element])) for element in elements)
        parts.append(f"{key}:\n{body}" if elements else f"{key}: []\n")
    return "\n".join(parts)


def _indent(text: str) -> str:
    return "".join(f"  {line}" if line.strip() else line for line in text.splitlines(True))


def to_document(definition: IonDefinition) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": definition.name}
    if definition.description:
        metadata["description"] = definition.description
    if definition.labels:
        metadata["labels"] = yaml_core.FlowMap(definition.labels)
    if definition.version:
        metadata["version"] = definition.version
    document: dict[str, Any] = {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata}
    document["pipelines"] = [_pipeline(p) for p in definition.pipelines]
    if definition.edges:
        document["edges"] = [_edge(e) for e in definition.edges]
    return document


def _pipeline(pipeline: Pipeline) -> dict[str, Any]:
    out: dict[str, Any] = {"name": pipeline.name}
    if pipeline.description:
        out["description"] = pipeline.description
    out["engine"] = pipeline.engine
    if pipeline.role is not PipelineRole.OTHER:
        out["role"] = pipeline.role.value
    out["mode"] = pipeline.mode.value
    if pipeline.schedule:
        out["schedule"] = pipeline.schedule
    out["placement"] = _placement(pipeline.placement)
    if pipeline.engine_config:
        out["engine_config"] = _small_map(pipeline.engine_config)
    if pipeline.restart != RestartPolicy():
        out["restart"] = _restart(pipeline.restart)
    out["components"] = [_component(c) for c in pipeline.components]
    return out


def _placement(placement: Placement) -> yaml_core.FlowMap:
    out = yaml_core.FlowMap()
    if placement.nodes:
        out["nodes"] = yaml_core.FlowList(placement.nodes)
    if placement.labels:
        out["labels"] = yaml_core.FlowMap(placement.labels)
    return out


def _restart(restart: RestartPolicy) -> yaml_core.FlowMap:
    default = RestartPolicy()
    out = yaml_core.FlowMap()
    if restart.max_restarts != default.max_restarts:
        out["max_restarts"] = restart.max_restarts
    for key, value, default_value in (
        ("window", restart.window_ms, default.window_ms),
        ("backoff", restart.backoff_initial_ms, default.backoff_initial_ms),
        ("max_backoff", restart.backoff_max_ms, default.backoff_max_ms),
    ):
        if value != default_value:
            out[key] = format_duration(value)
    return out


def _component(component: Component) -> dict[str, Any]:
    out: dict[str, Any] = {"name": component.name, "type": component.type}
    if component.inputs:
        out["inputs"] = _small_map(
            {b.port: f"{b.from_component}.{b.from_port}" for b in component.inputs}
        )
    if component.args:
        out["args"] = _small_map({k: _value(v) for k, v in component.args.items()})
    return out


def _value(value: ArgValue) -> Any:
    if isinstance(value, tuple):
        items = [_value(v) for v in value]
        return yaml_core.FlowList(items) if _all_scalars(items) else items
    if isinstance(value, Mapping):
        return _small_map({k: _value(v) for k, v in value.items()})
    return value


def _all_scalars(values: list[Any]) -> bool:
    return all(v is None or isinstance(v, bool | int | float | str) for v in values)


def _small_map(values: Mapping[str, Any]) -> dict[str, Any]:
    """Flow style when every value is a scalar and the whole fits comfortably on a line."""
    plain = dict(values)
    if not plain or not _all_scalars(list(plain.values())):
        return plain
    width = sum(len(str(k)) + len(str(v)) + 4 for k, v in plain.items())
    if width > _FLOW_WIDTH or any(isinstance(v, str) and "\n" in v for v in plain.values()):
        return plain
    return yaml_core.FlowMap(plain)


def _edge(edge: Edge) -> dict[str, Any]:
    out: dict[str, Any] = {"name": edge.name}
    if edge.description:
        out["description"] = edge.description
    out["kind"] = edge.kind.value
    out["from"] = str(edge.source)
    out["to"] = yaml_core.FlowList(str(t) for t in edge.targets)
    if edge.ttl_ms:
        out["ttl"] = format_duration(edge.ttl_ms)
    if edge.policy is not None:
        out["policy"] = _policy(edge.policy)
    if edge.drift is not None:
        out["drift"] = _drift(edge.drift)
    if edge.trigger is not None:
        out["trigger"] = _trigger(edge.trigger)
    return out


def _policy(policy: ModelPolicy) -> dict[str, Any]:
    out: dict[str, Any] = {"type": policy.kind.value}
    if policy.keep_versions != ModelPolicy().keep_versions:
        out["keep_versions"] = policy.keep_versions
    if policy.gates:
        out["gates"] = [_gate(g) for g in policy.gates]
    if policy.canary is not None:
        out["canary"] = _canary(policy.canary)
    return out if "gates" in out or "canary" in out else yaml_core.FlowMap(out)


def _gate(gate: MetricGate) -> yaml_core.FlowMap:
    out = yaml_core.FlowMap(metric=gate.metric)
    if not gate.higher_is_better:
        out["higher_is_better"] = False
    for key, bound in (
        ("min", gate.min),
        ("max", gate.max),
        ("margin_over_active", gate.margin_over_active),
    ):
        if bound is not None:
            out[key] = bound
    return out


def _canary(canary: CanaryPolicy) -> yaml_core.FlowMap:
    default = CanaryPolicy()
    out = yaml_core.FlowMap()
    if canary.share != default.share:
        out["share"] = canary.share
    if canary.nodes:
        out["nodes"] = yaml_core.FlowList(canary.nodes)
    if canary.hold_ms != default.hold_ms:
        out["hold"] = format_duration(canary.hold_ms)
    if canary.max_drift != default.max_drift:
        out["max_drift"] = canary.max_drift
    if canary.max_error_rate != default.max_error_rate:
        out["max_error_rate"] = canary.max_error_rate
    return out


def _drift(drift: DriftSettings) -> yaml_core.FlowMap:
    default = DriftSettings()
    out = yaml_core.FlowMap()
    if drift.metric is not default.metric:
        out["metric"] = drift.metric.value
    if drift.threshold != default.threshold:
        out["threshold"] = drift.threshold
    if drift.window_ms != default.window_ms:
        out["window"] = format_duration(drift.window_ms)
    if drift.min_samples != default.min_samples:
        out["min_samples"] = drift.min_samples
    return out


def _trigger(trigger: TriggerCondition) -> yaml_core.FlowMap:
    default = TriggerCondition("", 0.0)
    out = yaml_core.FlowMap(metric=trigger.metric, above=trigger.above)
    if trigger.min_nodes != default.min_nodes:
        out["min_nodes"] = trigger.min_nodes
    if trigger.window_ms != default.window_ms:
        out["window"] = format_duration(trigger.window_ms)
    if trigger.cooldown_ms != default.cooldown_ms:
        out["cooldown"] = format_duration(trigger.cooldown_ms)
    return out
