"""The monitor's pure core and alert rules: messages and a clock in, rows and alerts out."""

from __future__ import annotations

import json
import logging
import random

import pytest
from monitor_support import (
    ION,
    batch,
    env,
    event,
    health,
    pipeline_topic,
    sequenced,
    stats,
    status,
    status_msg,
)

from broker.monitor.alerts import Alert, AlertBounds, AlertEngine, Condition
from broker.monitor.core import MonitorCore, Restored, Writes
from ion import topics
from ion.errors import ConfigError
from ion.model.command import ApproveModel, Command, ModelRef, RejectModel
from ion.model.definition import IonDeleted
from ion.model.event import Severity
from ion.model.manifest import ModelManifest
from ion.model.messages import Hop
from ion.model.status import NodeState, PipelineState
from ion.topics import Channel
from ion.wire.codec import encode

T0 = 1_700_000_000_000


def ingest_status(core: MonitorCore, s: object, now: int, *, retained: bool = False) -> None:
    topic, payload = status_msg(s, now)  # type: ignore[arg-type]
    assert core.ingest(topic, payload, now, retained=retained) == 1


def upserted(w: Writes, table: str) -> list[dict[str, object]]:
    return list(w.upserts.get(table, {}).values())


def fired(w: Writes) -> list[tuple[str, str, str]]:
    return [(a.rule, a.key, a.state) for a in w.alerts]


# -- nodes ----------------------------------------------------------------------------------


def test_a_status_fills_node_pipelines_queues_links_and_models() -> None:
    core = MonitorCore("mon")
    ingest_status(core, status("edge-1", labels={"site": "north", "tier": "edge"}), T0)
    w = core.take()
    (node,) = upserted(w, "nodes")
    assert node["state"] == "online"
    assert json.loads(str(node["labels_json"])) == {"site": "north", "tier": "edge"}
    assert node["cpu_percent"] == 12.5 and node["parent"] == "gw-1" and node["seen_ms"] == T0
    assert [(p["pipeline"], p["state"]) for p in upserted(w, "pipelines")] == [("infer", "running")]
    assert {q["traffic_class"] for q in upserted(w, "queues")} == {"stats", "events"}
    (link,) = upserted(w, "links")
    assert link["connected"] == 1
    (model,) = upserted(w, "node_models")
    assert model["active_version"] == "3" and json.loads(str(model["pending_json"])) == ["4"]
    (hist,) = w.appends["queue_history"]
    assert (hist["depth"], hist["bytes"], hist["oldest_age_ms"]) == (4, 350, 120)
    assert w.alerts == []


def test_a_pipeline_gone_from_the_status_is_deleted() -> None:
    core = MonitorCore("mon")
    ingest_status(core, status("edge-1", pipelines=(("a", PipelineState.RUNNING),
                                                    ("b", PipelineState.RUNNING))), T0)  # fmt: skip
    core.take()
    ingest_status(core, status("edge-1", pipelines=(("a", PipelineState.RUNNING),)), T0 + 1000)
    w = core.take()
    assert w.deletes["pipelines"] == {("edge-1", ION, "b")}


def test_silent_node_goes_offline_after_three_heartbeats_and_comes_back() -> None:
    core = MonitorCore("mon")
    ingest_status(core, status("edge-1", heartbeat_ms=1000), T0)
    core.take()
    core.tick(T0 + 3000)  # exactly three intervals: still online
    assert core.node_state("edge-1") == "online"
    core.tick(T0 + 3001)
    w = core.take()
    assert core.node_state("edge-1") == "offline"
    assert "no heartbeat" in str(upserted(w, "nodes")[0]["error"])
    assert fired(w) == [("node_offline", "edge-1", "firing")]
    core.tick(T0 + 5000)
    assert core.take().alerts == []  # fires once while it holds
    ingest_status(core, status("edge-1"), T0 + 6000)
    w = core.take()
    assert core.node_state("edge-1") == "online"
    assert fired(w) == [("node_offline", "edge-1", "resolved")]
    types = [e["type"] for e in w.appends["events"]]
    assert types == ["alert.resolved"]


def test_last_will_marks_offline_keeps_what_the_node_said_and_fires_once() -> None:
    core = MonitorCore("mon")
    ingest_status(core, status("edge-1", labels={"site": "x"}), T0)
    core.take()
    will = status("edge-1", NodeState.OFFLINE, pipelines=(), labels={})
    ingest_status(core, will, T0 + 10)
    w = core.take()
    (node,) = upserted(w, "nodes")
    assert node["state"] == "offline" and json.loads(str(node["labels_json"])) == {"site": "x"}
    assert "pipelines" not in w.deletes  # the last known pipelines stay
    assert fired(w) == [("node_offline", "edge-1", "firing")]
    (ev,) = w.appends["events"]
    assert ev["type"] == "alert.fired" and ev["severity"] == "error"
    attrs = json.loads(str(ev["attributes_json"]))
    assert attrs["rule"] == "node_offline" and attrs["key"] == "edge-1"
    ingest_status(core, will, T0 + 20)
    assert core.take().alerts == []


def test_an_old_retained_online_status_counts_from_when_it_was_made() -> None:
    core = MonitorCore("mon")
    topic, payload = status_msg(status("edge-1", heartbeat_ms=1000), T0)
    core.ingest(topic, payload, T0 + 60_000, retained=True)
    core.tick(T0 + 60_000)
    assert core.node_state("edge-1") == "offline"


# -- telemetry --------------------------------------------------------------------------------


def test_stats_from_pipeline_topics_are_stored_and_edge_copies_only_counted() -> None:
    core = MonitorCore("mon")
    topic = pipeline_topic("edge-1", Channel.STATS)
    core.ingest(topic, sequenced(stats(rate=5.0, latency_ms=2.5), topic, "edge-1", 1, T0), T0)
    edge_topic = topics.edge(ION, "telemetry", Channel.STATS, "edge-1")
    core.ingest(edge_topic, sequenced(stats(rate=5.0), edge_topic, "edge-1", 1, T0), T0)
    w = core.take()
    assert sorted((r["name"], r["value"], r["samples"]) for r in w.appends["stats"]) == [
        ("latency_ms", 2.5, 1),
        ("rate", 5.0, 1),
    ]
    assert {r["stream"] for r in upserted(w, "streams")} == {topic, edge_topic}


def test_a_batch_counts_every_envelope() -> None:
    core = MonitorCore("mon")
    topic = pipeline_topic("edge-1", Channel.STATS)
    inner = [env(stats(n=float(i)), node="edge-1", now_ms=T0, sequence=i, stream=topic)
             for i in range(1, 21)]  # fmt: skip
    assert core.ingest(topic, batch(inner, "edge-1", T0), T0) == 20
    w = core.take()
    assert len(w.appends["stats"]) == 20
    (s,) = upserted(w, "streams")
    assert (s["received"], s["last_sequence"], s["gaps"]) == (20, 20, 0)
    assert core.counters["envelopes"] == 20 and core.counters["messages"] == 1


def test_streams_count_gaps_repairs_lag_and_hops() -> None:
    core = MonitorCore("mon")
    topic = pipeline_topic("edge-1", Channel.STATS)
    for seq in (1, 2, 6, 4):
        core.ingest(topic, sequenced(stats(x=1.0), topic, "edge-1", seq, T0), T0 + 250)
    hops = (Hop("gw-1", T0 + 10, T0 + 20),)
    core.ingest(topic, sequenced(stats(x=1.0), topic, "edge-1", 7, T0, hops), T0 + 300)
    (s,) = upserted(core.take(), "streams")
    assert (s["last_sequence"], s["received"], s["gaps"], s["repaired"]) == (7, 5, 3, 1)
    assert (s["lag_ms"], s["hops"]) == (300, 1)
    state = core.stream("edge-1", topic)
    assert state is not None and state.outstanding == 2


def test_lag_over_the_bound_fires_and_resolves() -> None:
    core = MonitorCore("mon", AlertBounds(lag_ms=1000))
    topic = pipeline_topic("edge-1", Channel.STATS)
    core.ingest(topic, sequenced(stats(x=1.0), topic, "edge-1", 1, T0), T0 + 5000)
    assert fired(core.take()) == [("lag", f"edge-1:{topic}", "firing")]
    core.ingest(topic, sequenced(stats(x=1.0), topic, "edge-1", 2, T0 + 5000), T0 + 5001)
    assert fired(core.take()) == [("lag", f"edge-1:{topic}", "resolved")]


def test_drift_scores_store_rows_and_fire_over_their_threshold() -> None:
    core = MonitorCore("mon")
    topic = pipeline_topic("edge-1", Channel.HEALTH)
    core.ingest(topic, sequenced(health(0.1), topic, "edge-1", 1, T0), T0)
    w = core.take()
    assert sorted((r["feature"], r["score"]) for r in w.appends["drift"]) == [
        ("", 0.1),
        ("x", 0.05),
    ]
    assert {r["name"] for r in w.appends["stats"]} == {"health.error_rate", "health.samples"}
    assert w.alerts == []
    core.ingest(topic, sequenced(health(0.5), topic, "edge-1", 2, T0), T0 + 1)
    w = core.take()
    (alert,) = w.alerts
    assert (alert.rule, alert.key, alert.value, alert.threshold) == (
        "drift", f"edge-1/{ION}/infer", 0.5, 0.2)  # fmt: skip
    core.ingest(topic, sequenced(health(0.5), topic, "edge-1", 3, T0), T0 + 2)
    assert core.take().alerts == []
    core.ingest(topic, sequenced(health(0.05), topic, "edge-1", 4, T0), T0 + 3)
    assert fired(core.take()) == [("drift", f"edge-1/{ION}/infer", "resolved")]


def test_health_drift_events_fire_the_drift_alert() -> None:
    core = MonitorCore("mon")
    topic = pipeline_topic("edge-1", Channel.EVENTS)
    ev = event("health.drift", Severity.WARNING, score="0.7", threshold="0.3")
    core.ingest(topic, sequenced(ev, topic, "edge-1", 1, T0), T0)
    w = core.take()
    (alert,) = w.alerts
    assert (alert.rule, alert.value, alert.threshold) == ("drift", 0.7, 0.3)
    assert [e["type"] for e in w.appends["events"]] == ["health.drift", "alert.fired"]
    cleared = event("health.drift_cleared")
    core.ingest(topic, sequenced(cleared, topic, "edge-1", 2, T0), T0 + 1)
    assert fired(core.take()) == [("drift", f"edge-1/{ION}/infer", "resolved")]


def test_crash_loop_and_backlog_fire_from_the_status() -> None:
    core = MonitorCore("mon", AlertBounds(backlog_depth=100, backlog_age_ms=60_000))
    s = status("edge-1", pipelines=(("infer", PipelineState.CRASH_LOOP),), depth=500)
    ingest_status(core, s, T0)
    assert sorted(fired(core.take())) == [
        ("backlog", "edge-1/upstream", "firing"),
        ("crash_loop", f"edge-1/{ION}/infer", "firing"),
    ]
    ingest_status(core, status("edge-1", depth=1, oldest_ms=120_000), T0 + 1000)
    w = core.take()
    assert fired(w) == [("crash_loop", f"edge-1/{ION}/infer", "resolved")]  # backlog: by age now
    ingest_status(core, status("edge-1", pipelines=(), depth=1), T0 + 2000)
    assert fired(core.take()) == [("backlog", "edge-1/upstream", "resolved")]


def test_model_events_make_the_audit_trail_and_rejections_alert() -> None:
    core = MonitorCore("mon", AlertBounds(model_rejected_hold_ms=60_000))
    topic = topics.node_topic("edge-1", topics.TopicKind.NODE_EVENTS)
    attrs = {"ion": ION, "edge": "model", "version": "4", "by": "canary"}
    core.ingest(topic, sequenced(event("model.rejected", **attrs), topic, "edge-1", 1, T0), T0)
    w = core.take()
    (d,) = w.appends["decisions"]
    assert (d["action"], d["version"], d["node_id"], d["actor"]) == ("rejected", "4", "edge-1",
                                                                     "canary")  # fmt: skip
    assert fired(w) == [("model_rejected", f"edge-1/{ION}/model", "firing")]
    core.ingest(topic, sequenced(event("model.activated", **attrs), topic, "edge-1", 2, T0), T0)
    assert fired(core.take()) == [("model_rejected", f"edge-1/{ION}/model", "resolved")]
    core.ingest(topic, sequenced(event("model.rolled_back", **attrs), topic, "edge-1", 3, T0), T0)
    assert len(core.take().alerts) == 1
    core.tick(T0 + 59_999)
    assert core.take().alerts == []
    core.tick(T0 + 60_000)
    assert fired(core.take()) == [("model_rejected", f"edge-1/{ION}/model", "resolved")]


def test_operator_decisions_enter_the_audit_trail_once() -> None:
    core = MonitorCore("mon")
    topic = topics.model_decision(ION, "model", "4")
    cmd = Command("c1", ApproveModel(ModelRef(ION, "model", "4")), issued_by="alice",
                  issued_ms=T0 - 5, reason="looks good")  # fmt: skip
    payload = encode(env(cmd, node="cli-alice", now_ms=T0))
    core.ingest(topic, payload, T0, retained=True)
    w = core.take()
    (d,) = w.appends["decisions"]
    assert (d["action"], d["actor"], d["node_id"], d["time_ms"]) == (
        "approved",
        "alice",
        "",
        T0 - 5,
    )
    meta = upserted(w, "meta")
    core.ingest(topic, payload, T0 + 5, retained=True)  # the same retained message again
    assert "decisions" not in core.take().appends
    # A monitor restarted with the ids it stored does not repeat it either.
    restored = Restored(retained_ids={topic: str(meta[0]["value"])})
    again = MonitorCore("mon", restored=restored)
    again.ingest(topic, payload, T0 + 9, retained=True)
    assert "decisions" not in again.take().appends
    reject = Command("c2", RejectModel(ModelRef(ION, "model", "4")), issued_by="bob")
    again.ingest(topic, encode(env(reject, node="cli-bob", now_ms=T0 + 10)), T0 + 10)
    assert again.take().appends["decisions"][0]["action"] == "rejected"


def test_manifests_and_definitions_fill_model_versions_and_ions() -> None:
    from agent_support import ticker

    from ion.model.definition import IonDefinition

    core = MonitorCore("mon")
    m = ModelManifest("a" * 64, "4", ion=ION, edge="model", size_bytes=10, format="kmeans-npz",
                      producer_node="cloud-1", created_ms=T0)  # fmt: skip
    core.ingest(topics.model_manifest(ION, "model"), encode(env(m, node="cloud-1", now_ms=T0)), T0)
    d = IonDefinition(ION, (ticker("infer", ("edge-1",)),), version=2, applied_by="alice")
    core.ingest(topics.definition(ION), encode(env(d, node="cli", now_ms=T0)), T0)
    w = core.take()
    (mv,) = upserted(w, "model_versions")
    assert (mv["version"], mv["model_id"], mv["producer_node"]) == ("4", "a" * 64, "cloud-1")
    (ion,) = upserted(w, "ions")
    assert ion["version"] == 2 and json.loads(str(ion["pipelines_json"]))[0]["name"] == "infer"
    tomb = IonDeleted(ION, 3, deleted_ms=T0 + 1)
    core.ingest(topics.definition(ION), encode(env(tomb, node="cli", now_ms=T0)), T0 + 1)
    (ion,) = upserted(core.take(), "ions")
    names = [p["name"] for p in json.loads(str(ion["pipelines_json"]))]
    assert (ion["version"], ion["deleted_ms"], names) == (3, T0 + 1, ["infer"])


# -- bad input --------------------------------------------------------------------------------


def test_random_bytes_on_many_topics_are_counted_logged_once_and_harmless(
    caplog: pytest.LogCaptureFixture,
) -> None:
    core = MonitorCore("mon")
    rng = random.Random(7)
    topic_list = [
        topics.node_status("edge-1"),
        pipeline_topic("edge-1", Channel.STATS),
        pipeline_topic("edge-1", Channel.HEALTH),
        topics.node_topic("edge-1", topics.TopicKind.NODE_EVENTS),
        topics.definition(ION),
        topics.model_manifest(ION, "model"),
        topics.model_decision(ION, "model", "3"),
        topics.edge(ION, "feed", Channel.DATA, "edge-1"),
        topics.monitor_alerts("other"),
        "ion/v1/nonsense/topic",
        "ion/v1/nodes/EDGE!/status",
    ]
    with caplog.at_level(logging.WARNING, logger="broker.monitor.core"):
        for _ in range(2000):
            payload = rng.randbytes(rng.randrange(0, 200))
            core.ingest(rng.choice(topic_list), payload, T0)
        # Valid envelopes with the wrong body for their topic.
        core.ingest(
            topics.node_status("edge-1"), encode(env(stats(x=1.0), node="e", now_ms=T0)), T0
        )
        core.ingest(topics.node_status("edge-2"), status_msg(status("edge-1"), T0)[1], T0)
        core.ingest(pipeline_topic("edge-1", Channel.STATS),
                    encode(env(health(0.1), node="edge-1", now_ms=T0)), T0)  # fmt: skip
    malformed = {k: v for k, v in core.counters.items() if k.startswith("malformed.")}
    assert malformed["malformed.payload"] > 1000
    assert malformed["malformed.topic"] > 100
    assert malformed["malformed.unexpected"] == 3
    messages = [r.getMessage() for r in caplog.records]
    for kind in ("payload", "topic", "unexpected"):
        assert sum(f"malformed message ({kind})" in m for m in messages) == 1
    # Still folding good messages afterwards.
    ingest_status(core, status("edge-1"), T0)
    assert core.node_state("edge-1") == "online"


def test_its_own_alerts_coming_back_are_not_stored_twice() -> None:
    core = MonitorCore("mon")
    ev = event("alert.fired", Severity.ERROR, rule="node_offline", key="x")
    core.ingest(topics.monitor_alerts("mon"), encode(env(ev, node="mon", now_ms=T0)), T0)
    assert "events" not in core.take().appends
    core.ingest(topics.monitor_alerts("other"), encode(env(ev, node="other", now_ms=T0)), T0)
    assert core.take().appends["events"][0]["node_id"] == "other"


# -- the alert engine alone -------------------------------------------------------------------


def test_alert_engine_fires_once_resolves_and_restores() -> None:
    engine = AlertEngine()
    c = Condition("backlog", "n/up", holds=True, value=5, threshold=1, node_id="n")
    a = engine.observe(c, 10)
    assert a is not None and (a.id, a.state, a.started_ms) == (1, "firing", 10)
    assert engine.observe(c, 11) is None
    r = engine.observe(Condition("backlog", "n/up", holds=False, value=0), 12)
    assert r is not None and (r.id, r.state, r.resolved_ms, r.started_ms) == (1, "resolved", 12, 10)
    assert engine.observe(Condition("backlog", "n/up", holds=False), 13) is None
    b = engine.observe(c, 14)
    assert b is not None and b.id == 2
    restored = AlertEngine([b], next_id=1)
    assert restored.observe(c, 15) is None
    assert restored.is_firing("backlog", "n/up")
    other = restored.observe(Condition("lag", "k", holds=True), 16)
    assert other is not None and other.id == 3


def test_alert_engine_refuses_unknown_rules_and_bad_bounds() -> None:
    with pytest.raises(ValueError, match="unknown alert rule"):
        AlertEngine().observe(Condition("weather", "k", holds=True), 1)
    with pytest.raises(ConfigError, match="lag_ms"):
        AlertBounds(lag_ms=0)
    with pytest.raises(ConfigError, match="drift"):
        AlertBounds(drift_threshold=-1)


def test_restored_core_does_not_fire_again_for_a_firing_alert() -> None:
    firing = Alert(7, "node_offline", "edge-1", "firing", "error", "edge-1", "", "", "down", 0.0,
                   0.0, T0, T0)  # fmt: skip
    core = MonitorCore("mon", restored=Restored(firing=(firing,), next_alert_id=8))
    ingest_status(core, status("edge-1", NodeState.OFFLINE), T0 + 1)
    assert core.take().alerts == []
    ingest_status(core, status("edge-1"), T0 + 2)
    (resolved,) = core.take().alerts
    assert (resolved.id, resolved.state) == (7, "resolved")
