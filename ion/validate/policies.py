"""Rules about the settings an edge carries: model policy, drift settings, trigger condition,
time to live.  Which settings fit which edge kind, and whether their values make sense."""

from __future__ import annotations

import logging

from ion.authoring.locations import child, item
from ion.model.definition import (
    CanaryPolicy,
    DriftMetric,
    DriftSettings,
    Edge,
    EdgeKind,
    MetricGate,
    ModelPolicy,
    PolicyKind,
    TriggerCondition,
)
from ion.validate.names import valid_name
from ion.validate.report import Collector

logger = logging.getLogger(__name__)

# Drift scores bounded by 1: a threshold above it can never be crossed.
_BOUNDED_METRICS = (DriftMetric.JENSEN_SHANNON, DriftMetric.OVERLAP)


def check_edge_settings(out: Collector, edge: Edge, loc: str) -> None:
    if edge.policy is not None and edge.kind is not EdgeKind.MODEL:
        out.error(child(loc, "policy"), f"a policy applies to model edges, not {edge.kind.value}")
    if edge.drift is not None and edge.kind is not EdgeKind.MODEL:
        out.error(
            child(loc, "drift"), f"drift settings apply to model edges, not {edge.kind.value}"
        )
    if edge.trigger is not None and edge.kind is not EdgeKind.TRIGGER:
        out.error(
            child(loc, "trigger"),
            f"a trigger condition applies to trigger edges, not {edge.kind.value}",
        )
    if edge.kind is EdgeKind.TRIGGER and edge.trigger is None:
        out.error(
            child(loc, "trigger"),
            "a trigger edge needs a condition, e.g. trigger: {metric: drift, above: 0.25}",
        )
    if edge.ttl_ms < 0:
        out.error(child(loc, "ttl"), "ttl must not be negative")
    if edge.policy is not None:
        _check_policy(out, edge.policy, child(loc, "policy"))
    if edge.drift is not None:
        _check_drift(out, edge.drift, child(loc, "drift"))
    if edge.trigger is not None:
        _check_trigger(out, edge.trigger, child(loc, "trigger"))


def _check_policy(out: Collector, policy: ModelPolicy, loc: str) -> None:
    if policy.keep_versions < 1:
        out.error(
            child(loc, "keep_versions"), "keep_versions must be at least 1 (the active version)"
        )
    gates_loc = child(loc, "gates")
    if policy.kind is PolicyKind.GATED and not policy.gates:
        out.error(
            gates_loc, "a gated policy needs gates, e.g. gates: [{metric: silhouette, min: 0.3}]"
        )
    if policy.gates and policy.kind in (PolicyKind.AUTO, PolicyKind.MANUAL):
        out.warning(
            gates_loc,
            f"gates are ignored by the {policy.kind.value} policy (gated and canary use them)",
        )
    for index, gate in enumerate(policy.gates):
        _check_gate(out, gate, item(gates_loc, index))
    canary_loc = child(loc, "canary")
    if policy.kind is PolicyKind.CANARY and policy.canary is None:
        out.error(
            canary_loc, "a canary policy needs canary: {share: 0.1} or canary: {nodes: [...]}"
        )
    if policy.canary is not None:
        if policy.kind is not PolicyKind.CANARY:
            out.warning(
                canary_loc, f"canary settings are ignored by the {policy.kind.value} policy"
            )
        _check_canary(out, policy.canary, canary_loc)


def _check_gate(out: Collector, gate: MetricGate, loc: str) -> None:
    if not gate.metric:
        out.error(child(loc, "metric"), "a gate needs the metric it checks")
    if gate.min is None and gate.max is None and gate.margin_over_active is None:
        out.error(loc, "a gate needs at least one bound: min, max or margin_over_active")
    if gate.min is not None and gate.max is not None and gate.min > gate.max:
        out.error(child(loc, "min"), f"min {gate.min} is above max {gate.max}: nothing passes")
    if gate.margin_over_active is not None and gate.margin_over_active < 0:
        out.error(child(loc, "margin_over_active"), "margin_over_active must not be negative")


def _check_canary(out: Collector, canary: CanaryPolicy, loc: str) -> None:
    if canary.share == 0 and not canary.nodes:
        out.error(loc, "a canary needs share (the fraction of consumers that go first) or nodes")
    if canary.share != 0 and canary.nodes:
        out.error(loc, "give either share or nodes for the canary, not both")
    if canary.share != 0 and not 0 < canary.share <= 1:
        out.error(child(loc, "share"), f"share must be in (0, 1], got {canary.share}")
    for index, node in enumerate(canary.nodes):
        if not valid_name(node):
            out.error(item(child(loc, "nodes"), index), f"{node!r} is not a valid node id")
    if canary.hold_ms < 0:
        out.error(child(loc, "hold"), "hold must not be negative")
    if canary.max_drift < 0:
        out.error(child(loc, "max_drift"), "max_drift must not be negative (0 turns it off)")
    if not 0 <= canary.max_error_rate <= 1:
        out.error(child(loc, "max_error_rate"), "max_error_rate must be in [0, 1] (0 turns it off)")


def _check_drift(out: Collector, drift: DriftSettings, loc: str) -> None:
    if drift.threshold <= 0:
        out.error(child(loc, "threshold"), "threshold must be positive")
    elif drift.threshold > 1 and drift.metric in _BOUNDED_METRICS:
        out.warning(
            child(loc, "threshold"),
            f"{drift.metric.value} drift is at most 1; threshold {drift.threshold} never fires",
        )
    if drift.window_ms <= 0:
        out.error(child(loc, "window"), "window must be positive")
    if drift.min_samples < 1:
        out.error(child(loc, "min_samples"), "min_samples must be at least 1")


def _check_trigger(out: Collector, trigger: TriggerCondition, loc: str) -> None:
    if not trigger.metric:
        out.error(child(loc, "metric"), "a trigger needs the metric it watches, e.g. drift")
    if trigger.min_nodes < 1:
        out.error(child(loc, "min_nodes"), "min_nodes must be at least 1")
    if trigger.window_ms <= 0:
        out.error(child(loc, "window"), "window must be positive")
    if trigger.cooldown_ms < 0:
        out.error(child(loc, "cooldown"), "cooldown must not be negative")
