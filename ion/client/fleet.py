"""Reading the fleet's retained node statuses, and folding them into the operator's views.

Everything here but ``read_statuses`` is pure and takes ``now_ms``: ``node_rows`` (``ion
nodes``), ``status_rows`` and ``fleet_problems`` (``ion status``), ``pipeline_rows`` (``ion
pipelines``).  The retained statuses are all the broker holds about the fleet without a
monitor: the last thing each node said, or its last will.  So a node that died without a will
being sent (its broker link still half-open) is caught by age: an online status older than
three heartbeats is shown as ``stale``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ion import topics
from ion.errors import DecodeError
from ion.model.messages import NodeState, NodeStatus, PipelineState
from ion.wire.codec import decode

from .session import OperatorSession

# How many heartbeats an online status may miss before the node counts as silent.
STALE_HEARTBEATS = 3
# The order ``ion status`` lists layers in: top of the hierarchy first.
LAYER_ORDER = ("cloud", "gateway", "edge")
# Pipeline states that count as failed in the views (not merely stopped or pending).
FAILED_PIPELINE_STATES = frozenset(
    {PipelineState.FAILED, PipelineState.CRASH_LOOP, PipelineState.BACKOFF, PipelineState.KILLED}
)
DEFAULT_BACKLOG_AGE_S = 300.0


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


@dataclass(frozen=True, slots=True)
class FleetProblem:
    """Something an operator should look at, derived from the statuses alone."""

    severity: str  # warning | error
    node_id: str
    kind: str  # node.offline | node.stale | node.failed | pipeline.failed | queue.backlog ...
    message: str


@dataclass(frozen=True, slots=True)
class StatusRow:
    """One node in ``ion status``."""

    node_id: str
    layer: str
    state: str  # online | offline | draining | failed | stale
    heartbeat_age_s: float | None
    pipelines_running: int
    pipelines_failed: int
    pipelines_total: int
    queue_depth: int
    queue_oldest_s: float | None  # the oldest queued item over every outbox and class
    models_active: int  # model edges with an active version on this node
    models_pending: int  # versions waiting for approval or a gate
    problems: int


@dataclass(frozen=True, slots=True)
class PipelineRow:
    """One pipeline on one node in ``ion pipelines``."""

    ion: str
    pipeline: str
    node_id: str
    node_state: str
    state: str
    engine: str
    restarts: int
    since_s: float | None  # how long it has been in ``state``
    message: str
    exit_code: int
    ion_version: int


def effective_state(status: NodeStatus, *, now_ms: int, sent_ms: int | None) -> str:
    """The node's own state, or ``stale`` when it claims online but has gone silent."""
    if (
        status.state is NodeState.ONLINE
        and sent_ms
        and status.heartbeat_interval_ms
        and now_ms - sent_ms > STALE_HEARTBEATS * status.heartbeat_interval_ms
    ):
        return "stale"
    return status.state.value


def _age_s(now_ms: int, then_ms: int | None) -> float | None:
    return (now_ms - then_ms) / 1000 if then_ms else None


def node_rows(statuses: list[NodeStatus], *, now_ms: int, sent_ms: dict[str, int]) -> list[NodeRow]:
    rows = []
    for s in sorted(statuses, key=lambda s: s.node_id):
        running = sum(p.state is PipelineState.RUNNING for p in s.pipelines)
        sent = sent_ms.get(s.node_id)
        rows.append(
            NodeRow(
                node_id=s.node_id,
                state=effective_state(s, now_ms=now_ms, sent_ms=sent),
                layer=s.layer,
                labels=",".join(f"{k}={v}" for k, v in s.labels.items()),
                pipelines=f"{running}/{len(s.pipelines)}",
                queued=sum(q.depth for q in s.queues),
                cpu_percent=s.resources.cpu_percent if s.resources else 0.0,
                rss_mb=(s.resources.rss_bytes / 2**20) if s.resources else 0.0,
                heartbeat_age_s=_age_s(now_ms, sent),
            )
        )
    return rows


def _layer_key(status: NodeStatus) -> tuple[int, str, str]:
    layer = status.layer or "edge"
    rank = LAYER_ORDER.index(layer) if layer in LAYER_ORDER else len(LAYER_ORDER)
    return rank, layer, status.node_id


def node_problems(
    status: NodeStatus, *, now_ms: int, sent_ms: int | None, backlog_age_s: float
) -> list[FleetProblem]:
    """What is wrong with one node, judged from its status."""
    node = status.node_id
    out: list[FleetProblem] = []
    state = effective_state(status, now_ms=now_ms, sent_ms=sent_ms)
    age = _age_s(now_ms, sent_ms)
    if state == "offline":
        out.append(FleetProblem("error", node, "node.offline", f"{node} is offline"))
    elif state == "stale":
        out.append(
            FleetProblem(
                "error", node, "node.stale",
                f"{node} has sent no heartbeat for {age or 0:.0f}s "
                f"(every {status.heartbeat_interval_ms / 1000:g}s expected)",
            )
        )  # fmt: skip
    elif state == "failed":
        out.append(
            FleetProblem("error", node, "node.failed", f"{node} failed: {status.error or '?'}")
        )
    if state == "offline":
        return out  # what an offline node last said about its pipelines is history
    for p in status.pipelines:
        if p.state in FAILED_PIPELINE_STATES:
            why = f": {p.message}" if p.message else ""
            out.append(
                FleetProblem(
                    "error", node, f"pipeline.{p.state.value}",
                    f"{p.ion}/{p.pipeline} on {node} is {p.state.value} "
                    f"(restarts {p.restarts}){why}",
                )
            )  # fmt: skip
    oldest = max((q.oldest_age_ms for q in status.queues if q.depth), default=0) / 1000
    if oldest > backlog_age_s:
        depth = sum(q.depth for q in status.queues)
        out.append(
            FleetProblem(
                "warning", node, "queue.backlog",
                f"{node} holds {depth} queued message(s), the oldest {oldest:.0f}s old",
            )
        )  # fmt: skip
    for link in status.links:
        # The node's own link ("broker") carried this very status: one saying it is down was
        # written before the link came up and queued, so only other links (a gateway's
        # upstream) are judged here; a silent node shows up as stale instead.
        if not link.connected and link.name not in ("broker", "local"):
            why = f": {link.error}" if link.error else ""
            out.append(
                FleetProblem(
                    "warning", node, "link.down", f"{node}'s {link.name} link is down{why}"
                )
            )
    return out


def status_rows(
    statuses: list[NodeStatus],
    *,
    now_ms: int,
    sent_ms: dict[str, int],
    backlog_age_s: float = DEFAULT_BACKLOG_AGE_S,
) -> tuple[list[StatusRow], list[FleetProblem]]:
    """``ion status``: one row per node, by layer (cloud, gateway, edge, others), and every
    problem found."""
    rows: list[StatusRow] = []
    problems: list[FleetProblem] = []
    for s in sorted(statuses, key=_layer_key):
        sent = sent_ms.get(s.node_id)
        found = node_problems(s, now_ms=now_ms, sent_ms=sent, backlog_age_s=backlog_age_s)
        problems += found
        queued = [q for q in s.queues if q.depth]
        rows.append(
            StatusRow(
                node_id=s.node_id,
                layer=s.layer or "edge",
                state=effective_state(s, now_ms=now_ms, sent_ms=sent),
                heartbeat_age_s=_age_s(now_ms, sent),
                pipelines_running=sum(p.state is PipelineState.RUNNING for p in s.pipelines),
                pipelines_failed=sum(p.state in FAILED_PIPELINE_STATES for p in s.pipelines),
                pipelines_total=len(s.pipelines),
                queue_depth=sum(q.depth for q in s.queues),
                queue_oldest_s=(max(q.oldest_age_ms for q in queued) / 1000) if queued else None,
                models_active=sum(bool(m.active_version) for m in s.models),
                models_pending=sum(len(m.pending) for m in s.models),
                problems=len(found),
            )
        )
    return rows, problems


def pipeline_rows(
    statuses: list[NodeStatus], *, now_ms: int, sent_ms: dict[str, int], ion: str | None = None
) -> list[PipelineRow]:
    """``ion pipelines``: every pipeline on every node (of ``ion`` only, when given), by ION,
    pipeline and node."""
    rows = []
    for s in statuses:
        node_state = effective_state(s, now_ms=now_ms, sent_ms=sent_ms.get(s.node_id))
        for p in s.pipelines:
            if ion is not None and p.ion != ion:
                continue
            rows.append(
                PipelineRow(
                    ion=p.ion,
                    pipeline=p.pipeline,
                    node_id=s.node_id,
                    node_state=node_state,
                    state=p.state.value,
                    engine=p.engine,
                    restarts=p.restarts,
                    since_s=_age_s(now_ms, p.since_ms),
                    message=p.message,
                    exit_code=p.exit_code,
                    ion_version=p.ion_version,
                )
            )
    return sorted(rows, key=lambda r: (r.ion, r.pipeline, r.node_id))


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
