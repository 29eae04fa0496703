"""Domain values -> rows of the monitor's tables (pure; see ``broker.monitor.schema``).

One function per body kind.  Rows are plain dicts keyed by column name; mappings and lists
become compact JSON text so ``datasette`` shows them as they are.
"""

from __future__ import annotations

import json
from typing import Any

from ion.model.command import (
    ApproveModel,
    Command,
    PromoteModel,
    RejectModel,
    RollbackModel,
)
from ion.model.definition import IonDefinition, IonDeleted
from ion.model.event import Event
from ion.model.health import HealthReport, StatsReport
from ion.model.manifest import ModelManifest
from ion.model.status import NodeState, NodeStatus

Row = dict[str, Any]
STREAM_COLUMNS = ("source_node", "stream", "last_sequence", "received", "gaps", "repaired",
                  "lag_ms", "hops", "updated_ms")  # fmt: skip


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(value: dict[str, Any] | list[Any]) -> str:
    if not value:
        return "[]" if isinstance(value, list) else "{}"
    return _ENCODER.encode(value)


def node_row(s: NodeStatus, previous: Row | None, *, status_ms: int, seen_ms: int) -> Row:
    """The ``nodes`` row after status ``s``.  An offline status (often the last will, made
    when the node started) keeps what the node last said about itself where it is silent."""
    r = s.resources
    row: Row = {
        "node_id": s.node_id,
        "state": s.state.value,
        "layer": s.layer,
        "parent": s.parent,
        "labels_json": dumps(dict(s.labels)),
        "agent_version": s.agent_version,
        "started_ms": s.started_ms,
        "heartbeat_interval_ms": s.heartbeat_interval_ms,
        "status_ms": status_ms,
        "seen_ms": seen_ms,
        "cpu_percent": r.cpu_percent if r else 0.0,
        "rss_bytes": r.rss_bytes if r else 0,
        "disk_free_bytes": r.disk_free_bytes if r else 0,
        "error": s.error,
        "counters_json": dumps(dict(s.counters)),
        "ions_json": dumps([{"name": v.name, "version": v.version} for v in s.ions]),
    }
    if previous is not None and s.state is not NodeState.ONLINE:
        for column in ("layer", "parent", "agent_version", "started_ms", "heartbeat_interval_ms"):
            if not row[column]:
                row[column] = previous.get(column)
        for column in ("labels_json", "counters_json", "ions_json"):
            if row[column] in ("{}", "[]"):
                row[column] = previous.get(column)
    return row


def link_rows(s: NodeStatus, now_ms: int) -> list[Row]:
    return [
        {
            "node_id": s.node_id,
            "name": link.name,
            "url": link.url,
            "connected": int(link.connected),
            "since_ms": link.since_ms,
            "error": link.error,
            "updated_ms": now_ms,
        }
        for link in s.links
    ]


def pipeline_rows(s: NodeStatus, now_ms: int) -> list[Row]:
    return [
        {
            "node_id": s.node_id,
            "ion": p.ion,
            "pipeline": p.pipeline,
            "state": p.state.value,
            "engine": p.engine,
            "restarts": p.restarts,
            "since_ms": p.since_ms,
            "message": p.message,
            "exit_code": p.exit_code,
            "ion_version": p.ion_version,
            "engine_job_id": p.engine_job_id,
            "updated_ms": now_ms,
        }
        for p in s.pipelines
    ]


def queue_rows(s: NodeStatus, now_ms: int) -> list[Row]:
    return [
        {
            "node_id": s.node_id,
            "link": q.link,
            "traffic_class": q.traffic_class,
            "depth": q.depth,
            "bytes": q.bytes,
            "oldest_age_ms": q.oldest_age_ms,
            "sent": q.sent,
            "dropped": q.dropped,
            "expired": q.expired,
            "rejected": q.rejected,
            "updated_ms": now_ms,
        }
        for q in s.queues
    ]


def queue_totals(s: NodeStatus) -> dict[str, tuple[int, int, int]]:
    """link -> (depth, bytes, oldest age) over its traffic classes."""
    out: dict[str, tuple[int, int, int]] = {}
    for q in s.queues:
        depth, size, oldest = out.get(q.link, (0, 0, 0))
        out[q.link] = (depth + q.depth, size + q.bytes, max(oldest, q.oldest_age_ms))
    return out


def node_model_rows(s: NodeStatus, now_ms: int) -> list[Row]:
    return [
        {
            "node_id": s.node_id,
            "ion": m.ion,
            "edge": m.edge,
            "active_version": m.active_version,
            "active_model_id": m.active_model_id,
            "versions_json": dumps(list(m.versions)),
            "pending_json": dumps(list(m.pending)),
            "canary_state": m.canary_state,
            "updated_ms": now_ms,
        }
        for m in s.models
    ]


def stats_rows(
    report: StatsReport, *, time_ms: int, node_id: str, ion: str, pipeline: str
) -> list[Row]:
    base = (node_id, ion, report.pipeline or pipeline, report.component)
    rows = [_stat(time_ms, base, m.name, m.value) for m in report.scalars]
    for series in report.series:
        rows.extend(_stat(p.time_ms, base, series.name, p.value) for p in series.points)
    progress = report.progress
    if progress is not None:
        rows.extend(
            _stat(time_ms, base, f"progress.{name}", getattr(progress, name)) for name in _PROGRESS
        )
    return rows


def health_stats_rows(
    report: HealthReport, *, time_ms: int, node_id: str, ion: str, pipeline: str
) -> list[Row]:
    """A health report's scalars and series, as stats named ``health.<name>``."""
    base = (node_id, ion, report.pipeline or pipeline, report.component)
    rows = [_stat(time_ms, base, f"health.{m.name}", m.value) for m in report.scalars]
    for series in report.series:
        rows.extend(_stat(p.time_ms, base, f"health.{series.name}", p.value) for p in series.points)
    if report.sample_count:
        rows.append(_stat(time_ms, base, "health.samples", float(report.sample_count)))
    return rows


_PROGRESS = ("jobs_done", "jobs_total", "stages_done", "stages_total", "tasks_done", "tasks_total",
             "step", "elapsed_ms")  # fmt: skip


def _stat(time_ms: int, base: tuple[str, str, str, str], name: str, value: float) -> Row:
    node_id, ion, pipeline, component = base
    return {
        "time_ms": time_ms,
        "node_id": node_id,
        "ion": ion,
        "pipeline": pipeline,
        "component": component,
        "name": name,
        "value": float(value),
        "samples": 1,
    }


def drift_rows(
    report: HealthReport, *, time_ms: int, node_id: str, ion: str, pipeline: str
) -> list[Row]:
    return [
        {
            "time_ms": time_ms,
            "node_id": node_id,
            "ion": ion,
            "pipeline": report.pipeline or pipeline,
            "feature": d.feature,
            "metric": d.metric,
            "score": d.score,
            "threshold": d.threshold,
            "model_version": d.model_version or report.model_version,
            "samples": report.sample_count,
        }
        for d in report.drift
    ]


def event_row(e: Event, *, time_ms: int, node_id: str, ion: str, pipeline: str) -> Row:
    return {
        "time_ms": time_ms,
        "node_id": node_id,
        "ion": ion,
        "pipeline": e.pipeline or pipeline,
        "type": e.type,
        "severity": e.severity.value,
        "subject": e.subject,
        "message": e.message,
        "attributes_json": dumps(dict(e.attributes)),
    }


def decision_from_event(e: Event, *, time_ms: int, node_id: str, ion: str) -> Row | None:
    """A node's ``model.*`` event as an audit-trail row (None for other events)."""
    if not e.type.startswith("model."):
        return None
    a = e.attributes
    return {
        "time_ms": time_ms,
        "ion": a.get("ion") or ion,
        "edge": a.get("edge", ""),
        "version": a.get("version", ""),
        "node_id": node_id,
        "action": e.type.removeprefix("model."),
        "actor": a.get("by") or node_id,
        "reason": e.message,
    }


_ACTIONS: dict[type, str] = {
    ApproveModel: "approved",
    RejectModel: "rejected",
    PromoteModel: "promoted",
    RollbackModel: "rollback_to",
}


def decision_from_command(
    cmd: Command, *, time_ms: int, ion: str, edge: str, version: str, sender: str
) -> Row | None:
    """An operator's retained decision on a model version as an audit-trail row."""
    action = _ACTIONS.get(type(cmd.action))
    if action is None:
        return None
    return {
        "time_ms": cmd.issued_ms or time_ms,
        "ion": ion,
        "edge": edge,
        "version": version,
        "node_id": "",
        "action": action,
        "actor": cmd.issued_by or sender,
        "reason": cmd.reason,
    }


def ion_row(d: IonDefinition | IonDeleted, previous: Row | None, now_ms: int) -> Row:
    if isinstance(d, IonDeleted):
        row = dict(previous) if previous else {
            "name": d.name, "description": "", "applied_ms": 0, "applied_by": "",
            "signed_by": "", "pipelines_json": "[]", "edges_json": "[]",
        }  # fmt: skip
        row.update(version=d.version, deleted_ms=d.deleted_ms or now_ms, updated_ms=now_ms)
        return row
    pipelines = [
        {
            "name": p.name,
            "engine": p.engine,
            "role": p.role.value,
            "mode": p.mode.value,
            "placement": {"nodes": list(p.placement.nodes), "labels": dict(p.placement.labels)},
        }
        for p in d.pipelines
    ]
    edges = [
        {
            "name": e.name,
            "kind": e.kind.value,
            "from": str(e.source),
            "to": [str(t) for t in e.targets],
            "policy": e.policy.kind.value if e.policy else "",
        }
        for e in d.edges
    ]
    return {
        "name": d.name,
        "version": d.version,
        "description": d.description,
        "applied_ms": d.applied_ms,
        "applied_by": d.applied_by,
        "signed_by": d.signature.key_id if d.signature else "",
        "deleted_ms": 0,
        "pipelines_json": dumps(pipelines),
        "edges_json": dumps(edges),
        "updated_ms": now_ms,
    }


def model_version_row(m: ModelManifest, *, ion: str, edge: str, time_ms: int) -> Row:
    return {
        "ion": m.ion or ion,
        "edge": m.edge or edge,
        "version": m.version,
        "model_id": m.model_id,
        "size_bytes": m.size_bytes,
        "format": m.format,
        "producer_node": m.producer_node,
        "producer_pipeline": m.producer_pipeline,
        "metrics_json": dumps({x.name: x.value for x in m.metrics}),
        "created_ms": m.created_ms or time_ms,
        "signed_by": m.signature.key_id if m.signature else "",
    }
