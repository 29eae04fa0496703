"""Helpers for the dashboard tests (no tests here): a monitor store built from the schema
contract (``broker/monitor/schema.py``) with sqlite-utils, a seeded fleet in it, and a
dashboard server run in a thread for synchronous (browser) tests."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils
from agent_support import apply_sync

from broker.dashboard import DashboardSettings, serve_dashboard
from broker.monitor.schema import INDEXES, TABLES
from ion import topics
from ion.client.session import connect
from ion.config.broker import parse_broker_url
from ion.model.command import Command
from ion.model.definition import (
    Component,
    Edge,
    EdgeKind,
    Endpoint,
    IonDefinition,
    ModelPolicy,
    Pipeline,
    PipelineMode,
    PipelineRole,
    Placement,
    PolicyKind,
)
from ion.model.manifest import ModelManifest
from ion.model.messages import new_envelope
from ion.model.status import ModelStatus, NodeState, NodeStatus
from ion.wire.codec import decode, encode


def now_ms() -> int:
    return time.time_ns() // 1_000_000


XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
TYPES = {"TEXT": str, "INTEGER": int, "REAL": float}
ION = "kmeans"
EDGE = "weights"


def create_store(path: Path) -> sqlite_utils.Database:
    """An empty store with every table and index of the contract, in WAL mode."""
    db = sqlite_utils.Database(path)
    db.enable_wal()
    for name, (columns, pk) in TABLES.items():
        kwargs: dict[str, Any] = {}
        if len(pk) == 1:
            kwargs["pk"] = pk[0]
        elif pk:
            kwargs["pk"] = pk
        db[name].create({c: TYPES[t] for c, t in columns.items()}, **kwargs)  # type: ignore[union-attr]
    for table, cols in INDEXES:
        db[table].create_index(list(cols))  # type: ignore[union-attr]
    return db


def seed(path: Path, now_ms: int, *, ion: str = ION) -> sqlite_utils.Database:
    """A small fleet: a cloud node, a gateway and three edges behind it (one offline), the
    KMeans-like ION with a cycle, a pending model version on edge-1, drift over threshold,
    alerts, queues, streams, and an event whose message is an XSS attempt."""
    db = create_store(path)
    j = json.dumps

    def node(node_id: str, layer: str, parent: str = "", state: str = "online") -> dict[str, Any]:
        return {
            "node_id": node_id, "state": state, "layer": layer, "parent": parent,
            "labels_json": j({"site": "lab"}), "agent_version": "0.1.0",
            "started_ms": now_ms - 600_000, "heartbeat_interval_ms": 5000,
            "status_ms": now_ms - 2000, "seen_ms": now_ms - (90_000 if state != "online" else 2000),
            "cpu_percent": 12.5, "rss_bytes": 80 * 2**20, "disk_free_bytes": 5 * 2**30,
            "error": "", "counters_json": "{}", "ions_json": j([{"name": ion, "version": 2}]),
        }  # fmt: skip

    db["nodes"].insert_all([  # type: ignore[union-attr]
        node("cloud-1", "cloud"), node("gw-1", "gateway"), node("edge-1", "edge", "gw-1"),
        node("edge-2", "edge", "gw-1"), node("edge-3", "edge", "gw-1", state="offline"),
    ])  # fmt: skip
    db["ions"].insert({  # type: ignore[union-attr]
        "name": ion, "version": 2, "description": "anomaly detection", "applied_ms": now_ms,
        "applied_by": "alice", "signed_by": "", "deleted_ms": 0, "updated_ms": now_ms,
        "pipelines_json": j([
            {"name": "training", "engine": "spark", "role": "training", "mode": "batch",
             "placement": {"nodes": ["cloud-1"]}},
            {"name": "inference", "engine": "python", "role": "inference", "mode": "streaming",
             "placement": {"labels": {"layer": "edge"}}},
        ]),
        "edges_json": j([
            {"name": EDGE, "kind": "model", "from": "training", "to": ["inference"],
             "policy": "manual"},
            {"name": "drift", "kind": "health", "from": "inference", "to": ["training"],
             "policy": ""},
            {"name": "retrain", "kind": "trigger", "from": "inference.health.out",
             "to": ["training"], "policy": ""},
        ]),
    })  # fmt: skip

    def pipeline(node_id: str, name: str, state: str) -> dict[str, Any]:
        return {
            "node_id": node_id, "ion": ion, "pipeline": name, "state": state,
            "engine": "spark" if name == "training" else "python", "restarts": 0 if
            state == "running" else 6, "since_ms": now_ms - 60_000,
            "message": "exit 1" if state == "crash_loop" else "", "exit_code": None,
            "ion_version": 2, "engine_job_id": "", "updated_ms": now_ms,
        }  # fmt: skip

    db["pipelines"].insert_all([  # type: ignore[union-attr]
        pipeline("cloud-1", "training", "running"), pipeline("edge-1", "inference", "running"),
        pipeline("edge-2", "inference", "running"), pipeline("edge-3", "inference", "crash_loop"),
    ])  # fmt: skip
    db["links"].insert_all([  # type: ignore[union-attr]
        {"node_id": "edge-1", "name": "upstream", "url": "mqtt://127.0.0.1:1884",
         "connected": 1, "since_ms": now_ms - 50_000, "error": "", "updated_ms": now_ms},
    ])  # fmt: skip
    db["queues"].insert_all([  # type: ignore[union-attr]
        {"node_id": "edge-1", "link": "upstream", "traffic_class": cls, "depth": depth,
         "bytes": depth * 200, "oldest_age_ms": depth * 100, "sent": 1000, "dropped": 0,
         "expired": 0, "rejected": 0, "updated_ms": now_ms}
        for cls, depth in (("data", 12), ("health", 1))
    ])  # fmt: skip
    db["queue_history"].insert_all([  # type: ignore[union-attr]
        {"time_ms": now_ms - (20 - i) * 30_000, "node_id": "edge-1", "link": "upstream",
         "depth": i % 7, "bytes": i * 100, "oldest_age_ms": i * 50} for i in range(20)
    ])  # fmt: skip
    db["streams"].insert_all([  # type: ignore[union-attr]
        {"source_node": "edge-1", "stream": f"ion/v1/ions/{ion}/edges/drift/health/edge-1",
         "last_sequence": 120, "received": 118, "gaps": 3, "repaired": 1, "lag_ms": 42,
         "hops": 1, "updated_ms": now_ms},
    ])  # fmt: skip
    db["model_versions"].insert_all([  # type: ignore[union-attr]
        {"ion": ion, "edge": EDGE, "version": v, "model_id": "ab" * 32, "size_bytes": 2048,
         "format": "npz", "producer_node": "cloud-1", "producer_pipeline": "training",
         "metrics_json": j({"silhouette": 0.41}), "created_ms": now_ms - 1000 * int(v),
         "signed_by": ""} for v in ("3", "4")
    ])  # fmt: skip
    db["node_models"].insert_all([  # type: ignore[union-attr]
        {"node_id": n, "ion": ion, "edge": EDGE, "active_version": "3",
         "active_model_id": "ab" * 32, "versions_json": j(["4", "3"] if n == "edge-1" else ["3"]),
         "pending_json": j(["4"] if n == "edge-1" else []), "canary_state": "",
         "updated_ms": now_ms} for n in ("edge-1", "edge-2")
    ])  # fmt: skip
    db["decisions"].insert({  # type: ignore[union-attr]
        "id": 1, "time_ms": now_ms - 5000, "ion": ion, "edge": EDGE, "version": "4",
        "node_id": "edge-1", "action": "held", "actor": "manual", "reason": "awaiting approval",
    })  # fmt: skip
    db["stats"].insert_all([  # type: ignore[union-attr]
        {"time_ms": now_ms - (30 - i) * 10_000, "node_id": "edge-1", "ion": ion,
         "pipeline": "inference", "component": "score", "name": "records_per_s",
         "value": 100.0 + i, "samples": 1} for i in range(30)
    ])  # fmt: skip
    db["drift"].insert_all([  # type: ignore[union-attr]
        {"time_ms": now_ms - (30 - i) * 10_000, "node_id": "edge-1", "ion": ion,
         "pipeline": "inference", "feature": "", "metric": "psi", "score": 0.01 * i,
         "threshold": 0.2, "model_version": "3", "samples": 500} for i in range(30)
    ])  # fmt: skip
    db["events"].insert_all([  # type: ignore[union-attr]
        {"id": 1, "time_ms": now_ms - 30_000, "node_id": "edge-1", "ion": ion,
         "pipeline": "inference", "type": "model.held", "severity": "info", "subject": EDGE,
         "message": "version 4 waits for approval", "attributes_json": "{}"},
        {"id": 2, "time_ms": now_ms - 20_000, "node_id": "edge-1", "ion": ion,
         "pipeline": "inference", "type": "health.drift", "severity": "warning", "subject": "psi",
         "message": XSS, "attributes_json": "{}"},
        {"id": 3, "time_ms": now_ms - 10_000, "node_id": "", "ion": ion, "pipeline": "",
         "type": "alert.fired", "severity": "error", "subject": "drift",
         "message": "drift psi 0.29 over 0.2 on edge-1", "attributes_json": "{}"},
    ])  # fmt: skip
    db["alerts"].insert_all([  # type: ignore[union-attr]
        {"id": 1, "rule": "drift", "key": "edge-1/inference", "state": "firing",
         "severity": "warning", "node_id": "edge-1", "ion": ion, "pipeline": "inference",
         "message": "drift psi 0.29 over 0.2", "value": 0.29, "threshold": 0.2,
         "started_ms": now_ms - 10_000, "updated_ms": now_ms, "resolved_ms": 0},
        {"id": 2, "rule": "node_offline", "key": "edge-3", "state": "firing",
         "severity": "error", "node_id": "edge-3", "ion": "", "pipeline": "",
         "message": "edge-3 offline for 90 s", "value": None, "threshold": None,
         "started_ms": now_ms - 8000, "updated_ms": now_ms, "resolved_ms": 0},
        {"id": 3, "rule": "backlog", "key": "edge-2/upstream", "state": "resolved",
         "severity": "warning", "node_id": "edge-2", "ion": "", "pipeline": "",
         "message": "backlog cleared", "value": 10.0, "threshold": 1000.0,
         "started_ms": now_ms - 400_000, "updated_ms": now_ms - 300_000,
         "resolved_ms": now_ms - 300_000},
    ])  # fmt: skip
    return db


def definition(name: str) -> IonDefinition:
    def p(pname: str, node: str) -> Pipeline:
        return Pipeline(pname, "python", PipelineRole.OTHER, PipelineMode.BATCH,
                        Placement(nodes=(node,)), (Component("c", "noop"),))  # fmt: skip

    return IonDefinition(
        name=name,
        pipelines=(p("training", "cloud-1"), p("inference", "edge-1")),
        edges=(Edge(EDGE, EdgeKind.MODEL, Endpoint("training"), (Endpoint("inference"),),
                    policy=ModelPolicy(kind=PolicyKind.MANUAL)),),
    )  # fmt: skip


def seed_broker(url: str, ion: str) -> None:
    """What `ion approve` reads: the ION, the latest manifest, a node holding 4 pending."""
    apply_sync(url, definition(ion))
    manifest = ModelManifest("ab" * 32, "4", ion=ion, edge=EDGE, producer_node="cloud-1",
                             size_bytes=9)  # fmt: skip
    status = NodeStatus("edge-1", NodeState.ONLINE, models=(
        ModelStatus(ion, EDGE, "3", "cd" * 32, ("4", "3"), ("4",), ""),))  # fmt: skip
    with connect(parse_broker_url(url)) as session:
        for topic, body in ((topics.model_manifest(ion, EDGE), manifest),
                            (topics.node_status("edge-1"), status)):  # fmt: skip
            env = new_envelope(body, source_node="test", now_ms=now_ms())  # type: ignore[arg-type]
            session.publish(topic, encode(env), retain=True)


def retained_decision(url: str, ion: str, version: str) -> Command | None:
    with connect(parse_broker_url(url)) as session:
        found = session.read_retained([topics.model_decision(ion, EDGE, version)])
    for msg in found:
        body = decode(msg.payload).body
        assert isinstance(body, Command)
        return body
    return None


@contextmanager
def dashboard_thread(settings: DashboardSettings) -> Iterator[str]:
    """Serve in a thread of its own (for synchronous tests); yields the URL; stops it."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    url: list[str] = []
    errors: list[BaseException] = []

    async def main() -> None:
        def started(u: str) -> None:
            url.append(u)
            ready.set()

        await serve_dashboard(settings, started=started)

    task_box: list[asyncio.Task[None]] = []

    def run() -> None:
        task = loop.create_task(main())
        task_box.append(task)
        try:
            loop.run_until_complete(task)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # reported to the test below
            errors.append(exc)
        finally:
            ready.set()
            loop.close()

    thread = threading.Thread(target=run, name="dashboard", daemon=True)
    thread.start()
    ready.wait(30)
    if errors or not url:
        thread.join(5)
        raise RuntimeError(f"the dashboard did not start: {errors}")
    try:
        yield url[0]
    finally:
        loop.call_soon_threadsafe(task_box[0].cancel)
        thread.join(10)
        assert not thread.is_alive(), "the dashboard did not stop"
