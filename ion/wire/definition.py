"""ION definition <-> protobuf, losslessly, plus the canonical content hash."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, TypeVar

from ion.errors import DecodeError
from ion.model.definition import (
    CanaryPolicy,
    Component,
    DriftMetric,
    DriftSettings,
    Edge,
    EdgeKind,
    Endpoint,
    IonDefinition,
    IonDeleted,
    MetricGate,
    ModelPolicy,
    Pipeline,
    PipelineMode,
    PipelineRole,
    Placement,
    PolicyKind,
    PortBinding,
    RestartPolicy,
    TriggerCondition,
)
from ion.v1 import definition_pb2 as pb
from ion.wire.values import (
    named_values_from_proto,
    named_values_to_proto,
    pairs_from_proto,
    pairs_to_proto,
    signature_from_proto,
    signature_to_proto,
)

E = TypeVar("E")

# Domain enum <-> wire enum number.  0 (UNSPECIFIED) never appears in a valid definition.
EDGE_KINDS: Mapping[EdgeKind, pb.EdgeKind] = {
    EdgeKind.MODEL: pb.EDGE_KIND_MODEL,
    EdgeKind.HEALTH: pb.EDGE_KIND_HEALTH,
    EdgeKind.STATS: pb.EDGE_KIND_STATS,
    EdgeKind.EVENTS: pb.EDGE_KIND_EVENTS,
    EdgeKind.DATA: pb.EDGE_KIND_DATA,
    EdgeKind.TRIGGER: pb.EDGE_KIND_TRIGGER,
}
MODES: Mapping[PipelineMode, pb.PipelineMode] = {
    PipelineMode.BATCH: pb.PIPELINE_MODE_BATCH,
    PipelineMode.STREAMING: pb.PIPELINE_MODE_STREAMING,
}
ROLES: Mapping[PipelineRole, pb.PipelineRole] = {
    PipelineRole.TRAINING: pb.PIPELINE_ROLE_TRAINING,
    PipelineRole.INFERENCE: pb.PIPELINE_ROLE_INFERENCE,
    PipelineRole.COMPARATOR: pb.PIPELINE_ROLE_COMPARATOR,
    PipelineRole.OTHER: pb.PIPELINE_ROLE_OTHER,
}
POLICY_KINDS: Mapping[PolicyKind, pb.PolicyKind] = {
    PolicyKind.AUTO: pb.POLICY_KIND_AUTO,
    PolicyKind.MANUAL: pb.POLICY_KIND_MANUAL,
    PolicyKind.GATED: pb.POLICY_KIND_GATED,
    PolicyKind.CANARY: pb.POLICY_KIND_CANARY,
}
DRIFT_METRICS: Mapping[DriftMetric, pb.DriftMetric] = {
    DriftMetric.PSI: pb.DRIFT_METRIC_PSI,
    DriftMetric.JENSEN_SHANNON: pb.DRIFT_METRIC_JENSEN_SHANNON,
    DriftMetric.OVERLAP: pb.DRIFT_METRIC_OVERLAP,
}


def _enum_from(table: Mapping[E, Any], number: int, what: str) -> E:
    for member, n in table.items():
        if n == number:
            return member
    raise DecodeError(f"invalid {what} {number} in ION definition")


def definition_to_proto(d: IonDefinition) -> pb.IonDefinition:
    return pb.IonDefinition(
        name=d.name,
        version=d.version,
        description=d.description,
        labels=pairs_to_proto(d.labels),
        pipelines=[_pipeline_to_proto(p) for p in d.pipelines],
        edges=[_edge_to_proto(e) for e in d.edges],
        content_sha256=d.content_sha256,
        signature=signature_to_proto(d.signature),
        applied_ms=d.applied_ms,
        applied_by=d.applied_by,
    )


def definition_from_proto(m: pb.IonDefinition) -> IonDefinition:
    return IonDefinition(
        name=m.name,
        version=m.version,
        description=m.description,
        labels=pairs_from_proto(m.labels),
        pipelines=tuple(_pipeline_from_proto(p) for p in m.pipelines),
        edges=tuple(_edge_from_proto(e) for e in m.edges),
        content_sha256=m.content_sha256,
        signature=signature_from_proto(m),
        applied_ms=m.applied_ms,
        applied_by=m.applied_by,
    )


def deleted_to_proto(d: IonDeleted) -> pb.IonDeleted:
    return pb.IonDeleted(
        name=d.name,
        version=d.version,
        deleted_ms=d.deleted_ms,
        deleted_by=d.deleted_by,
        signature=signature_to_proto(d.signature),
    )


def deleted_from_proto(m: pb.IonDeleted) -> IonDeleted:
    return IonDeleted(
        name=m.name,
        version=m.version,
        deleted_ms=m.deleted_ms,
        deleted_by=m.deleted_by,
        signature=signature_from_proto(m),
    )


def content_sha256(d: IonDefinition) -> str:
    """Hex SHA-256 of the definition's authored content and version.

    Computed over the deterministic protobuf encoding with the fields that `ion apply` fills in
    afterwards (hash, signature, applied_ms, applied_by) cleared, so it is stable across
    re-encoding and is what a signature signs.
    """
    m = definition_to_proto(d)
    m.content_sha256 = ""
    m.ClearField("signature")
    m.applied_ms = 0
    m.applied_by = ""
    return hashlib.sha256(m.SerializeToString(deterministic=True)).hexdigest()


def _pipeline_to_proto(p: Pipeline) -> pb.Pipeline:
    return pb.Pipeline(
        name=p.name,
        engine=p.engine,
        role=ROLES[p.role],
        mode=MODES[p.mode],
        schedule=p.schedule,
        placement=pb.Placement(
            nodes=list(p.placement.nodes), labels=pairs_to_proto(p.placement.labels)
        ),
        components=[
            pb.Component(
                name=c.name,
                type=c.type,
                args=named_values_to_proto(c.args),
                inputs=[
                    pb.PortBinding(
                        port=b.port, from_component=b.from_component, from_port=b.from_port
                    )
                    for b in c.inputs
                ],
            )
            for c in p.components
        ],
        engine_config=pairs_to_proto(p.engine_config),
        restart=pb.RestartPolicy(
            max_restarts=p.restart.max_restarts,
            window_ms=p.restart.window_ms,
            backoff_initial_ms=p.restart.backoff_initial_ms,
            backoff_max_ms=p.restart.backoff_max_ms,
        ),
        description=p.description,
    )


def _pipeline_from_proto(m: pb.Pipeline) -> Pipeline:
    return Pipeline(
        name=m.name,
        engine=m.engine,
        role=_enum_from(ROLES, m.role, "pipeline role"),
        mode=_enum_from(MODES, m.mode, "pipeline mode"),
        schedule=m.schedule,
        placement=Placement(
            nodes=tuple(m.placement.nodes), labels=pairs_from_proto(m.placement.labels)
        ),
        components=tuple(
            Component(
                name=c.name,
                type=c.type,
                args=named_values_from_proto(c.args),
                inputs=tuple(
                    PortBinding(port=b.port, from_component=b.from_component, from_port=b.from_port)
                    for b in c.inputs
                ),
            )
            for c in m.components
        ),
        engine_config=pairs_from_proto(m.engine_config),
        restart=RestartPolicy(
            max_restarts=m.restart.max_restarts,
            window_ms=m.restart.window_ms,
            backoff_initial_ms=m.restart.backoff_initial_ms,
            backoff_max_ms=m.restart.backoff_max_ms,
        ),
        description=m.description,
    )


def _endpoint_to_proto(e: Endpoint) -> pb.Endpoint:
    return pb.Endpoint(pipeline=e.pipeline, component=e.component, port=e.port)


def _endpoint_from_proto(m: pb.Endpoint) -> Endpoint:
    return Endpoint(pipeline=m.pipeline, component=m.component, port=m.port)


def _edge_to_proto(e: Edge) -> pb.Edge:
    m = pb.Edge(
        name=e.name,
        kind=EDGE_KINDS[e.kind],
        source=_endpoint_to_proto(e.source),
        targets=[_endpoint_to_proto(t) for t in e.targets],
        delivery=pb.DeliveryOptions(ttl_ms=e.ttl_ms),
        description=e.description,
    )
    if e.policy is not None:
        m.policy.CopyFrom(_policy_to_proto(e.policy))
    if e.trigger is not None:
        t = e.trigger
        m.trigger.CopyFrom(
            pb.TriggerCondition(
                metric=t.metric,
                above=t.above,
                min_nodes=t.min_nodes,
                window_ms=t.window_ms,
                cooldown_ms=t.cooldown_ms,
            )
        )
    if e.drift is not None:
        m.drift.CopyFrom(
            pb.DriftSettings(
                metric=DRIFT_METRICS[e.drift.metric],
                threshold=e.drift.threshold,
                window_ms=e.drift.window_ms,
                min_samples=e.drift.min_samples,
            )
        )
    return m


def _edge_from_proto(m: pb.Edge) -> Edge:
    trigger = None
    if m.HasField("trigger"):
        t = m.trigger
        trigger = TriggerCondition(
            metric=t.metric,
            above=t.above,
            min_nodes=t.min_nodes,
            window_ms=t.window_ms,
            cooldown_ms=t.cooldown_ms,
        )
    drift = None
    if m.HasField("drift"):
        drift = DriftSettings(
            metric=_enum_from(DRIFT_METRICS, m.drift.metric, "drift metric"),
            threshold=m.drift.threshold,
            window_ms=m.drift.window_ms,
            min_samples=m.drift.min_samples,
        )
    return Edge(
        name=m.name,
        kind=_enum_from(EDGE_KINDS, m.kind, "edge kind"),
        source=_endpoint_from_proto(m.source),
        targets=tuple(_endpoint_from_proto(t) for t in m.targets),
        policy=_policy_from_proto(m.policy) if m.HasField("policy") else None,
        trigger=trigger,
        drift=drift,
        ttl_ms=m.delivery.ttl_ms,
        description=m.description,
    )


def _policy_to_proto(p: ModelPolicy) -> pb.ModelPolicy:
    m = pb.ModelPolicy(
        kind=POLICY_KINDS[p.kind],
        keep_versions=p.keep_versions,
        gates=[
            pb.MetricGate(
                metric=g.metric,
                higher_is_better=g.higher_is_better,
                min=g.min,
                max=g.max,
                margin_over_active=g.margin_over_active,
            )
            for g in p.gates
        ],
    )
    if p.canary is not None:
        c = p.canary
        m.canary.CopyFrom(
            pb.CanaryPolicy(
                share=c.share,
                nodes=list(c.nodes),
                hold_ms=c.hold_ms,
                max_drift=c.max_drift,
                max_error_rate=c.max_error_rate,
            )
        )
    return m


def _policy_from_proto(m: pb.ModelPolicy) -> ModelPolicy:
    canary = None
    if m.HasField("canary"):
        c = m.canary
        canary = CanaryPolicy(
            share=c.share,
            nodes=tuple(c.nodes),
            hold_ms=c.hold_ms,
            max_drift=c.max_drift,
            max_error_rate=c.max_error_rate,
        )
    return ModelPolicy(
        kind=_enum_from(POLICY_KINDS, m.kind, "policy kind"),
        keep_versions=m.keep_versions,
        gates=tuple(
            MetricGate(
                metric=g.metric,
                higher_is_better=g.higher_is_better,
                min=g.min if g.HasField("min") else None,
                max=g.max if g.HasField("max") else None,
                margin_over_active=(
                    g.margin_over_active if g.HasField("margin_over_active") else None
                ),
            )
            for g in m.gates
        ),
        canary=canary,
    )
