"""The monitor's SQLite schema: the contract between the writer (the ingest loop) and every
reader (dashboard, JSON API, /metrics, ``ion status --monitor``, ``datasette monitor.db``).

Plain tables with plain columns: times are Unix milliseconds (``*_ms``), mappings and lists
are JSON text (``*_json``).  Once a table is here it only grows (new columns, new tables);
nothing is renamed, so readers written against it keep working.

Current-state tables (one row per thing, upserted): ``nodes``, ``links``, ``pipelines``,
``queues``, ``node_models``, ``ions``, ``model_versions``, ``streams``, ``alerts``.
History tables (appended, retention and downsampling apply): ``stats``, ``drift``,
``events``, ``decisions``, ``queue_history``.
"""

from __future__ import annotations

from typing import Final

SCHEMA_VERSION: Final = 1

# name -> (columns in order with their SQL types, primary key)
TABLES: Final[dict[str, tuple[dict[str, str], tuple[str, ...]]]] = {
    # -- fleet ---------------------------------------------------------------------------------
    "nodes": (
        {
            "node_id": "TEXT",
            "state": "TEXT",  # online | offline | draining | failed (from status / last will)
            "layer": "TEXT",  # edge | gateway | cloud (free text)
            "parent": "TEXT",  # the gateway it sits behind, "" if none
            "labels_json": "TEXT",
            "agent_version": "TEXT",
            "started_ms": "INTEGER",
            "heartbeat_interval_ms": "INTEGER",
            "status_ms": "INTEGER",  # created time of the last status
            "seen_ms": "INTEGER",  # monitor's clock when anything last came from the node
            "cpu_percent": "REAL",
            "rss_bytes": "INTEGER",
            "disk_free_bytes": "INTEGER",
            "error": "TEXT",
            "counters_json": "TEXT",
            "ions_json": "TEXT",  # [{"name":..., "version":...}] the node runs
        },
        ("node_id",),
    ),
    "links": (
        {
            "node_id": "TEXT",
            "name": "TEXT",  # upstream | local | ...
            "url": "TEXT",
            "connected": "INTEGER",
            "since_ms": "INTEGER",
            "error": "TEXT",
            "updated_ms": "INTEGER",
        },
        ("node_id", "name"),
    ),
    "pipelines": (
        {
            "node_id": "TEXT",
            "ion": "TEXT",
            "pipeline": "TEXT",
            "state": "TEXT",  # pending | starting | running | succeeded | failed | crash_loop ...
            "engine": "TEXT",
            "restarts": "INTEGER",
            "since_ms": "INTEGER",
            "message": "TEXT",
            "exit_code": "INTEGER",
            "ion_version": "INTEGER",
            "engine_job_id": "TEXT",
            "updated_ms": "INTEGER",
        },
        ("node_id", "ion", "pipeline"),
    ),
    "queues": (
        {
            "node_id": "TEXT",
            "link": "TEXT",
            "traffic_class": "TEXT",
            "depth": "INTEGER",
            "bytes": "INTEGER",
            "oldest_age_ms": "INTEGER",
            "sent": "INTEGER",
            "dropped": "INTEGER",
            "expired": "INTEGER",
            "rejected": "INTEGER",
            "updated_ms": "INTEGER",
        },
        ("node_id", "link", "traffic_class"),
    ),
    "queue_history": (
        {
            "time_ms": "INTEGER",
            "node_id": "TEXT",
            "link": "TEXT",
            "depth": "INTEGER",  # summed over traffic classes
            "bytes": "INTEGER",
            "oldest_age_ms": "INTEGER",  # the oldest over traffic classes
        },
        (),
    ),
    # Delivery per source stream as the monitor receives it: one row per (source node, stream).
    "streams": (
        {
            "source_node": "TEXT",
            "stream": "TEXT",
            "last_sequence": "INTEGER",
            "received": "INTEGER",
            "gaps": "INTEGER",  # sequence numbers detected missing (before any repair)
            "repaired": "INTEGER",  # of those, later received
            "lag_ms": "INTEGER",  # monitor receive time - created time of the last message
            "hops": "INTEGER",  # relays the last message passed through
            "updated_ms": "INTEGER",
        },
        ("source_node", "stream"),
    ),
    # -- IONs and models -----------------------------------------------------------------------
    "ions": (
        {
            "name": "TEXT",
            "version": "INTEGER",
            "description": "TEXT",
            "applied_ms": "INTEGER",
            "applied_by": "TEXT",
            "signed_by": "TEXT",  # key id, "" when unsigned
            "deleted_ms": "INTEGER",  # 0 while it exists
            "pipelines_json": "TEXT",  # [{"name","engine","role","mode","placement"}]
            "edges_json": "TEXT",  # [{"name","kind","from","to":[...],"policy"}]
            "updated_ms": "INTEGER",
        },
        ("name",),
    ),
    "model_versions": (
        {
            "ion": "TEXT",
            "edge": "TEXT",
            "version": "TEXT",
            "model_id": "TEXT",
            "size_bytes": "INTEGER",
            "format": "TEXT",
            "producer_node": "TEXT",
            "producer_pipeline": "TEXT",
            "metrics_json": "TEXT",  # {"silhouette": 0.41, ...}
            "created_ms": "INTEGER",
            "signed_by": "TEXT",
        },
        ("ion", "edge", "version"),
    ),
    "node_models": (
        {
            "node_id": "TEXT",
            "ion": "TEXT",
            "edge": "TEXT",
            "active_version": "TEXT",
            "active_model_id": "TEXT",
            "versions_json": "TEXT",  # held in the node's store, newest first
            "pending_json": "TEXT",  # waiting for approval or a gate
            "canary_state": "TEXT",
            "updated_ms": "INTEGER",
        },
        ("node_id", "ion", "edge"),
    ),
    # The audit trail: every policy decision and operator command about a model version.
    "decisions": (
        {
            "id": "INTEGER",
            "time_ms": "INTEGER",
            "ion": "TEXT",
            "edge": "TEXT",
            "version": "TEXT",
            "node_id": "TEXT",  # where it was decided ("" for an operator's retained decision)
            "action": "TEXT",  # activated | held | approved | rejected | promoted | rolled_back ...
            "actor": "TEXT",  # policy name or operator identity
            "reason": "TEXT",
        },
        ("id",),
    ),
    # -- telemetry -----------------------------------------------------------------------------
    "stats": (
        {
            "time_ms": "INTEGER",
            "node_id": "TEXT",
            "ion": "TEXT",
            "pipeline": "TEXT",
            "component": "TEXT",
            "name": "TEXT",
            "value": "REAL",
            "samples": "INTEGER",  # 1, or how many points a downsampled row stands for
        },
        (),
    ),
    "drift": (
        {
            "time_ms": "INTEGER",
            "node_id": "TEXT",
            "ion": "TEXT",
            "pipeline": "TEXT",
            "feature": "TEXT",  # "" for the score over all features
            "metric": "TEXT",  # psi | jensen_shannon | overlap
            "score": "REAL",
            "threshold": "REAL",
            "model_version": "TEXT",
            "samples": "INTEGER",
        },
        (),
    ),
    "events": (
        {
            "id": "INTEGER",
            "time_ms": "INTEGER",
            "node_id": "TEXT",
            "ion": "TEXT",
            "pipeline": "TEXT",
            "type": "TEXT",  # dotted: model.accepted, health.drift, alert.fired ...
            "severity": "TEXT",  # debug | info | warning | error | critical
            "subject": "TEXT",
            "message": "TEXT",
            "attributes_json": "TEXT",
        },
        ("id",),
    ),
    "alerts": (
        {
            "id": "INTEGER",
            "rule": "TEXT",  # drift | node_offline | crash_loop | backlog | lag | model_rejected
            "key": "TEXT",  # what it is about, unique per rule while firing (e.g. node id)
            "state": "TEXT",  # firing | resolved
            "severity": "TEXT",
            "node_id": "TEXT",
            "ion": "TEXT",
            "pipeline": "TEXT",
            "message": "TEXT",
            "value": "REAL",
            "threshold": "REAL",
            "started_ms": "INTEGER",
            "updated_ms": "INTEGER",
            "resolved_ms": "INTEGER",  # 0 while firing
        },
        ("id",),
    ),
    "meta": (
        {"key": "TEXT", "value": "TEXT"},
        ("key",),
    ),
}

# Indexes the readers rely on: (table, columns).
INDEXES: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("stats", ("node_id", "pipeline", "name", "time_ms")),
    ("stats", ("time_ms",)),
    ("drift", ("node_id", "pipeline", "time_ms")),
    ("drift", ("time_ms",)),
    ("events", ("time_ms",)),
    ("events", ("node_id", "time_ms")),
    ("decisions", ("ion", "edge", "time_ms")),
    ("alerts", ("state", "started_ms")),
    ("queue_history", ("node_id", "time_ms")),
)
