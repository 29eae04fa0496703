"""Messages for the monitor's tests and benchmark: encoded envelopes as agents send them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ion import topics
from ion.model.event import Event, Severity
from ion.model.health import DriftScore, HealthReport, Metric, StatsReport
from ion.model.messages import Envelope, EnvelopeBatch, Hop, new_envelope
from ion.model.status import (
    LinkStatus,
    ModelStatus,
    NodeState,
    NodeStatus,
    PipelineState,
    PipelineStatus,
    QueueStatus,
    ResourceUsage,
)
from ion.topics import Channel
from ion.wire.codec import encode

ION = "fleet"


def status(
    node: str,
    state: NodeState = NodeState.ONLINE,
    *,
    pipelines: Sequence[tuple[str, PipelineState]] = (("infer", PipelineState.RUNNING),),
    depth: int = 3,
    oldest_ms: int = 120,
    labels: Mapping[str, str] | None = None,
    heartbeat_ms: int = 1000,
) -> NodeStatus:
    return NodeStatus(
        node_id=node,
        state=state,
        agent_version="0.1",
        labels=dict(labels if labels is not None else {"site": "north"}),
        layer="edge",
        parent="gw-1",
        started_ms=1,
        heartbeat_interval_ms=heartbeat_ms,
        pipelines=tuple(
            PipelineStatus(
                ION,
                name,
                st,
                engine="python",
                restarts=2 if st.value == "crash_loop" else 0,
                message="boom" if st.value == "crash_loop" else "",
            )
            for name, st in pipelines
        ),
        queues=(
            QueueStatus(
                "upstream", "stats", depth=depth, bytes=depth * 100, oldest_age_ms=oldest_ms
            ),
            QueueStatus("upstream", "events", depth=1, bytes=50, oldest_age_ms=10),
        ),
        resources=ResourceUsage(cpu_percent=12.5, rss_bytes=40_000_000, disk_free_bytes=10**9),
        models=(
            ModelStatus(ION, "model", active_version="3", versions=("3", "2"), pending=("4",)),
        ),
        links=(LinkStatus("upstream", "mqtt://gw:1883", connected=True, since_ms=5),),
        counters={"malformed.payload": 0},
    )


def env(
    body: object,
    *,
    node: str,
    now_ms: int,
    sequence: int = 0,
    stream: str = "",
    route: Sequence[Hop] = (),
) -> Envelope:
    e = new_envelope(body, source_node=node, now_ms=now_ms, ion=ION, sequence=sequence,  # type: ignore[arg-type]
                     stream=stream)  # fmt: skip
    if route:
        from dataclasses import replace

        e = replace(e, route=tuple(route))
    return e


def status_msg(s: NodeStatus, now_ms: int) -> tuple[str, bytes]:
    return topics.node_status(s.node_id), encode(env(s, node=s.node_id, now_ms=now_ms))


def stats(pipeline: str = "infer", **values: float) -> StatsReport:
    return StatsReport(pipeline, "model", tuple(Metric(k, v) for k, v in values.items()))


def health(score: float, threshold: float = 0.2, pipeline: str = "infer") -> HealthReport:
    return HealthReport(
        pipeline,
        "drift",
        sample_count=500,
        model_version="3",
        scalars=(Metric("error_rate", 0.01),),
        drift=(
            DriftScore("", "psi", score, threshold, "3"),
            DriftScore("x", "psi", score / 2, threshold, "3"),
        ),
    )


def event(kind: str, severity: Severity = Severity.INFO, **attrs: str) -> Event:
    return Event(kind, severity, subject="s", message=f"{kind} happened", attributes=attrs,
                 pipeline="infer")  # fmt: skip


def pipeline_topic(node: str, channel: Channel, pipeline: str = "infer") -> str:
    return topics.pipeline(ION, pipeline, channel, node)


def sequenced(
    body: object, topic: str, node: str, sequence: int, now_ms: int, route: Sequence[Hop] = ()
) -> bytes:
    return encode(env(body, node=node, now_ms=now_ms, sequence=sequence, stream=topic, route=route))


def batch(envelopes: Sequence[Envelope], node: str, now_ms: int) -> bytes:
    return encode(env(EnvelopeBatch(tuple(envelopes)), node=node, now_ms=now_ms))
