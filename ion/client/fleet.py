"""Reading the fleet's retained node statuses (pure folding plus one session read)."""

from __future__ import annotations

from dataclasses import dataclass

from ion import topics
from ion.errors import DecodeError
from ion.model.messages import NodeState, NodeStatus
from ion.wire.codec import decode

from .session import OperatorSession


@dataclass(frozen=True, slots=True)
class NodeRow:
    node_id: str
    state: str
    layer: str
    labels: str
    pipelines: str
    queued: int
    cpu_percent: float
    rss_mb: float
    heartbeat_age_s: float | None


def node_rows(statuses: list[NodeStatus], *, now_ms: int, sent_ms: dict[str, int]) -> list[NodeRow]:
    rows = []
    for s in sorted(statuses, key=lambda s: s.node_id):
        running = sum(p.state.value == "running" for p in s.pipelines)
        sent = sent_ms.get(s.node_id)
        age = (now_ms - sent) / 1000 if sent else None
        state = s.state.value
        # An online status older than three heartbeats means the node went silent.
        if (
            s.state is NodeState.ONLINE
            and age is not None
            and s.heartbeat_interval_ms
            and age * 1000 > 3 * s.heartbeat_interval_ms
        ):
            state = "stale"
        rows.append(
            NodeRow(
                node_id=s.node_id,
                state=state,
                layer=s.layer,
                labels=",".join(f"{k}={v}" for k, v in s.labels.items()),
                pipelines=f"{running}/{len(s.pipelines)}",
                queued=sum(q.depth for q in s.queues),
                cpu_percent=s.resources.cpu_percent if s.resources else 0.0,
                rss_mb=(s.resources.rss_bytes / 2**20) if s.resources else 0.0,
                heartbeat_age_s=age,
            )
        )
    return rows


def read_statuses(session: OperatorSession) -> tuple[list[NodeStatus], dict[str, int], list[str]]:
    """Every retained node status, when each was sent, and notes on unreadable ones."""
    statuses: list[NodeStatus] = []
    sent: dict[str, int] = {}
    problems: list[str] = []
    for msg in session.read_retained([topics.ALL_NODE_STATUS]):
        try:
            env = decode(msg.payload)
        except DecodeError as exc:
            problems.append(f"{msg.topic}: {exc}")
            continue
        if isinstance(env.body, NodeStatus):
            statuses.append(env.body)
            sent[env.body.node_id] = env.created_ms
    return statuses, sent, problems
