"""Node status, commands and command results <-> protobuf (proto/ion/v1/node.proto)."""

from __future__ import annotations

from typing import assert_never

from ion.errors import DecodeError
from ion.model.command import (
    ApproveModel,
    Command,
    CommandAction,
    CommandResult,
    ModelRef,
    Ping,
    PipelineRef,
    PromoteModel,
    RejectModel,
    RestartPipeline,
    RollbackModel,
    RunPipeline,
)
from ion.model.status import (
    IonVersion,
    LinkStatus,
    ModelStatus,
    NodeState,
    NodeStatus,
    PipelineState,
    PipelineStatus,
    QueueStatus,
    ResourceUsage,
)
from ion.v1 import node_pb2 as pb
from ion.wire.convert_common import EnumTable, decoding
from ion.wire.values import (
    pairs_from_proto,
    pairs_to_proto,
    signature_from_proto,
    signature_to_proto,
)

NODE_STATES: EnumTable[NodeState, pb.NodeState] = EnumTable(
    "node state",
    {
        NodeState.ONLINE: pb.NODE_STATE_ONLINE,
        NodeState.OFFLINE: pb.NODE_STATE_OFFLINE,
        NodeState.DRAINING: pb.NODE_STATE_DRAINING,
        NodeState.FAILED: pb.NODE_STATE_FAILED,
    },
)
PIPELINE_STATES: EnumTable[PipelineState, pb.PipelineState] = EnumTable(
    "pipeline state",
    {
        PipelineState.PENDING: pb.PIPELINE_STATE_PENDING,
        PipelineState.STARTING: pb.PIPELINE_STATE_STARTING,
        PipelineState.RUNNING: pb.PIPELINE_STATE_RUNNING,
        PipelineState.SUCCEEDED: pb.PIPELINE_STATE_SUCCEEDED,
        PipelineState.FAILED: pb.PIPELINE_STATE_FAILED,
        PipelineState.BACKOFF: pb.PIPELINE_STATE_BACKOFF,
        PipelineState.CRASH_LOOP: pb.PIPELINE_STATE_CRASH_LOOP,
        PipelineState.STOPPING: pb.PIPELINE_STATE_STOPPING,
        PipelineState.STOPPED: pb.PIPELINE_STATE_STOPPED,
        PipelineState.KILLED: pb.PIPELINE_STATE_KILLED,
    },
)


def node_status_to_proto(s: NodeStatus) -> pb.NodeStatus:
    m = pb.NodeStatus(
        node_id=s.node_id,
        state=NODE_STATES.to_wire(s.state),
        agent_version=s.agent_version,
        labels=pairs_to_proto(s.labels),
        layer=s.layer,
        parent=s.parent,
        started_ms=s.started_ms,
        heartbeat_interval_ms=s.heartbeat_interval_ms,
        pipelines=[
            pb.PipelineStatus(
                ion=p.ion,
                pipeline=p.pipeline,
                engine=p.engine,
                state=PIPELINE_STATES.to_wire(p.state),
                restarts=p.restarts,
                since_ms=p.since_ms,
                message=p.message,
                exit_code=p.exit_code,
                ion_version=p.ion_version,
                engine_job_id=p.engine_job_id,
            )
            for p in s.pipelines
        ],
        queues=[
            pb.QueueStatus(
                link=q.link,
                traffic_class=q.traffic_class,
                depth=q.depth,
                bytes=q.bytes,
                oldest_age_ms=q.oldest_age_ms,
                sent=q.sent,
                dropped=q.dropped,
                expired=q.expired,
                rejected=q.rejected,
            )
            for q in s.queues
        ],
        models=[
            pb.ModelStatus(
                ion=ms.ion,
                edge=ms.edge,
                active_version=ms.active_version,
                active_model_id=ms.active_model_id,
                versions=ms.versions,
                pending=ms.pending,
                canary_state=ms.canary_state,
            )
            for ms in s.models
        ],
        links=[
            pb.LinkStatus(
                name=ln.name,
                url=ln.url,
                connected=ln.connected,
                since_ms=ln.since_ms,
                error=ln.error,
            )
            for ln in s.links
        ],
        error=s.error,
        ions=[
            pb.IonVersion(name=v.name, version=v.version, content_sha256=v.content_sha256)
            for v in s.ions
        ],
        counters=[pb.Counter(name=k, value=v) for k, v in s.counters.items()],
    )
    if (r := s.resources) is not None:
        m.resources.CopyFrom(
            pb.ResourceUsage(
                cpu_percent=r.cpu_percent,
                rss_bytes=r.rss_bytes,
                disk_free_bytes=r.disk_free_bytes,
                load1=r.load1,
            )
        )
    return m


def node_status_from_proto(m: pb.NodeStatus) -> NodeStatus:
    with decoding("node status"):
        resources = None
        if m.HasField("resources"):
            r = m.resources
            resources = ResourceUsage(
                cpu_percent=r.cpu_percent,
                rss_bytes=r.rss_bytes,
                disk_free_bytes=r.disk_free_bytes,
                load1=r.load1,
            )
        return NodeStatus(
            node_id=m.node_id,
            state=NODE_STATES.from_wire(m.state),
            agent_version=m.agent_version,
            labels=pairs_from_proto(m.labels),
            layer=m.layer,
            parent=m.parent,
            started_ms=m.started_ms,
            heartbeat_interval_ms=m.heartbeat_interval_ms,
            pipelines=tuple(
                PipelineStatus(
                    ion=p.ion,
                    pipeline=p.pipeline,
                    engine=p.engine,
                    state=PIPELINE_STATES.from_wire(p.state),
                    restarts=p.restarts,
                    since_ms=p.since_ms,
                    message=p.message,
                    exit_code=p.exit_code,
                    ion_version=p.ion_version,
                    engine_job_id=p.engine_job_id,
                )
                for p in m.pipelines
            ),
            queues=tuple(
                QueueStatus(
                    link=q.link,
                    traffic_class=q.traffic_class,
                    depth=q.depth,
                    bytes=q.bytes,
                    oldest_age_ms=q.oldest_age_ms,
                    sent=q.sent,
                    dropped=q.dropped,
                    expired=q.expired,
                    rejected=q.rejected,
                )
                for q in m.queues
            ),
            resources=resources,
            models=tuple(
                ModelStatus(
                    ion=ms.ion,
                    edge=ms.edge,
                    active_version=ms.active_version,
                    active_model_id=ms.active_model_id,
                    versions=tuple(ms.versions),
                    pending=tuple(ms.pending),
                    canary_state=ms.canary_state,
                )
                for ms in m.models
            ),
            links=tuple(
                LinkStatus(
                    name=ln.name,
                    url=ln.url,
                    connected=ln.connected,
                    since_ms=ln.since_ms,
                    error=ln.error,
                )
                for ln in m.links
            ),
            error=m.error,
            ions=tuple(
                IonVersion(name=v.name, version=v.version, content_sha256=v.content_sha256)
                for v in m.ions
            ),
            counters={c.name: c.value for c in m.counters},
        )


def _model_ref(r: ModelRef) -> pb.ModelRef:
    return pb.ModelRef(ion=r.ion, edge=r.edge, version=r.version)


def _pipeline_ref(r: PipelineRef) -> pb.PipelineRef:
    return pb.PipelineRef(ion=r.ion, pipeline=r.pipeline)


def command_to_proto(c: Command) -> pb.Command:
    """The wire form; to sign or verify, encode it deterministically with ``signature``
    cleared."""
    m = pb.Command(
        command_id=c.command_id,
        issued_by=c.issued_by,
        issued_ms=c.issued_ms,
        expires_ms=c.expires_ms,
        sequence=c.sequence,
        signature=signature_to_proto(c.signature),
        reason=c.reason,
    )
    action = c.action
    match action:
        case ApproveModel(ref=ref):
            m.approve_model.CopyFrom(_model_ref(ref))
        case RejectModel(ref=ref):
            m.reject_model.CopyFrom(_model_ref(ref))
        case RollbackModel(ref=ref):
            m.rollback_model.CopyFrom(_model_ref(ref))
        case PromoteModel(ref=ref):
            m.promote_model.CopyFrom(_model_ref(ref))
        case RestartPipeline(ref=pref):
            m.restart_pipeline.CopyFrom(_pipeline_ref(pref))
        case RunPipeline(ref=pref):
            m.run_pipeline.CopyFrom(_pipeline_ref(pref))
        case Ping():
            m.ping.SetInParent()
        case _:
            assert_never(action)
    return m


_MODEL_ACTIONS: dict[str, type[ApproveModel | RejectModel | RollbackModel | PromoteModel]] = {
    "approve_model": ApproveModel,
    "reject_model": RejectModel,
    "rollback_model": RollbackModel,
    "promote_model": PromoteModel,
}


def _action_from_proto(m: pb.Command) -> CommandAction:
    kind = m.WhichOneof("action")
    if kind is None:
        raise DecodeError(f"command {m.command_id[:80]!r} has no action")
    if kind in _MODEL_ACTIONS:
        r = getattr(m, kind)
        return _MODEL_ACTIONS[kind](ModelRef(ion=r.ion, edge=r.edge, version=r.version))
    if kind in ("restart_pipeline", "run_pipeline"):
        p = getattr(m, kind)
        pref = PipelineRef(ion=p.ion, pipeline=p.pipeline)
        return RestartPipeline(pref) if kind == "restart_pipeline" else RunPipeline(pref)
    if kind == "ping":
        return Ping()
    raise DecodeError(f"unknown command action {kind!r}")


def command_from_proto(m: pb.Command) -> Command:
    with decoding("command"):
        return Command(
            command_id=m.command_id,
            action=_action_from_proto(m),
            issued_by=m.issued_by,
            issued_ms=m.issued_ms,
            expires_ms=m.expires_ms,
            sequence=m.sequence,
            signature=signature_from_proto(m),
            reason=m.reason,
        )


def command_result_to_proto(r: CommandResult) -> pb.CommandResult:
    return pb.CommandResult(command_id=r.command_id, node_id=r.node_id, ok=r.ok, message=r.message)


def command_result_from_proto(m: pb.CommandResult) -> CommandResult:
    with decoding("command result"):
        return CommandResult(command_id=m.command_id, node_id=m.node_id, ok=m.ok, message=m.message)
