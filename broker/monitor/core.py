"""The monitor's pure core: MQTT messages and ``now`` in, table writes and alerts out.

``ingest(topic, payload, now_ms)`` folds one MQTT message (decoded with ``ion.wire.codec``; an
``EnvelopeBatch`` counts as each envelope it carries) into in-memory state and pending writes;
``tick(now_ms)`` applies what only time changes (a node silent for three heartbeats is
offline, old model alerts expire); ``take()`` hands over everything written since the last
call as one ``Writes`` for the store to commit in one transaction.  Current-state rows are
coalesced (a node that sent five statuses in a batch is written once), history rows appended.

Invariants: nothing here does I/O or reads a clock; a malformed message is counted and logged
once per kind and changes no state; an exception while folding one valid message is counted
(``malformed.fold``) and does not stop the next.

Telemetry (stats, health, events) is stored from a pipeline's own topics and from node event
topics.  The copies of the same reports that the agent also sends along telemetry edges
(``.../edges/<edge>/stats/<node>``) count for delivery (``streams``) but are not stored again.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ion import topics
from ion.errors import DecodeError
from ion.model.command import Command
from ion.model.definition import IonDefinition, IonDeleted
from ion.model.event import Event, Severity, Trigger
from ion.model.health import DriftScore, HealthReport, StatsReport
from ion.model.manifest import ModelManifest
from ion.model.messages import Envelope
from ion.model.status import NodeState, NodeStatus
from ion.topics import Channel, Topic, TopicError, TopicKind
from ion.wire.codec import decode, unbatched

from . import rows
from .alerts import Alert, AlertBounds, AlertEngine, Condition, alert_event
from .schema import TABLES
from .streams import StreamState

log = logging.getLogger(__name__)

Row = dict[str, Any]
Key = tuple[Any, ...]
PRIMARY_KEYS: dict[str, tuple[str, ...]] = {name: pk for name, (_, pk) in TABLES.items()}
_TOPIC_CACHE = 100_000  # parsed topics kept (the fleet's topics repeat endlessly)
_HEARTBEATS = 3  # a node silent for this many heartbeat intervals is offline
_MODEL_BAD = frozenset({"model.rejected", "model.rolled_back", "model.rollback_failed",
                        "model.canary_failed"})  # fmt: skip
_MODEL_GOOD = frozenset({"model.accepted", "model.activated", "model.promoted",
                         "model.canary_passed"})  # fmt: skip
_NODE_CHILDREN = ("pipelines", "queues", "links", "node_models")


@dataclass(slots=True)
class Writes:
    """What to commit: upserts coalesced per primary key, deletes, appended history rows, and
    the alert transitions to announce on the bus."""

    upserts: dict[str, dict[Key, Row]] = field(default_factory=dict)
    deletes: dict[str, set[Key]] = field(default_factory=dict)
    appends: dict[str, list[Row]] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)

    @property
    def row_count(self) -> int:
        return (
            sum(map(len, self.upserts.values()))
            + sum(map(len, self.deletes.values()))
            + sum(map(len, self.appends.values()))
        )


@dataclass(frozen=True, slots=True)
class Restored:
    """State read back from an existing database, so a restarted monitor continues: stream
    positions (no false gaps), firing alerts (no second fire), the rows children are
    replaced against, and the ids of retained decisions already in the audit trail."""

    nodes: tuple[Row, ...] = ()
    children: Mapping[str, tuple[Row, ...]] = field(default_factory=dict)  # table -> rows
    ions: tuple[Row, ...] = ()
    streams: tuple[Row, ...] = ()
    firing: tuple[Alert, ...] = ()
    next_alert_id: int = 1
    retained_ids: Mapping[str, str] = field(default_factory=dict)  # topic -> message id


@dataclass(slots=True)
class _Node:
    row: Row
    heartbeat_ms: int = 0  # monitor time of the last status that said "online"
    children: dict[str, set[Key]] = field(default_factory=dict)  # table -> keys last written


class MonitorCore:
    def __init__(
        self,
        monitor_id: str,
        bounds: AlertBounds | None = None,
        restored: Restored | None = None,
    ) -> None:
        restored = restored or Restored()
        self.monitor_id = monitor_id
        self.bounds = bounds or AlertBounds()
        self._counters: Counter[str] = Counter()
        self.messages = 0  # MQTT messages in (plain ints: counted on the hot path)
        self.envelopes = 0  # envelopes in them (a batch counts each)
        self._own_alerts = topics.monitor_alerts(monitor_id)
        self._topics: dict[str, Topic | str] = {}  # a topic, or why it is not one
        self._logged: set[str] = set()
        self._w = Writes()
        self._dirty_nodes: set[str] = set()
        self._dirty_streams: set[StreamState] = set()
        self._seen_unknown: dict[str, int] = {}  # nodes heard from before their status
        self._nodes: dict[str, _Node] = {}
        for r in restored.nodes:
            self._nodes[r["node_id"]] = _Node(dict(r), heartbeat_ms=int(r.get("seen_ms") or 0))
        for table, table_rows in restored.children.items():
            pk = PRIMARY_KEYS[table]
            for r in table_rows:
                node = self._nodes.get(r["node_id"])
                if node is not None:
                    node.children.setdefault(table, set()).add(tuple(r[c] for c in pk))
        self._ions: dict[str, Row] = {r["name"]: dict(r) for r in restored.ions}
        self._streams: dict[tuple[str, str], StreamState] = {}
        for r in restored.streams:
            s = StreamState(r["source_node"], r["stream"])
            for column in rows.STREAM_COLUMNS[2:]:
                setattr(s, column, int(r[column] or 0))
            self._streams[(s.source_node, s.stream)] = s
        self._retained_ids = dict(restored.retained_ids)
        self.alerts = AlertEngine(restored.firing, restored.next_alert_id)

    # -- in --------------------------------------------------------------------------------------

    def ingest(self, topic: str, payload: bytes, now_ms: int, *, retained: bool = False) -> int:
        """Fold one MQTT message; returns how many envelopes it carried (0 if dropped)."""
        self.messages += 1
        parsed = self._topics.get(topic)
        if parsed is None:
            parsed = self._parse(topic)
        if isinstance(parsed, str):
            self._malformed("topic", parsed)
            return 0
        if parsed.kind is TopicKind.CLIENT_PROBE:
            self._counters["probes"] += 1  # a client's read barrier: any bytes, not an envelope
            return 0
        if not payload:
            # A cleared retained message: ours are never empty (deletion is a tombstone).
            self._counters["cleared"] += 1
            return 0
        try:
            env = decode(payload)
        except DecodeError as exc:
            self._malformed("payload", f"{topic}: {exc}")
            return 0
        envelopes = unbatched(env)
        if parsed.kind is TopicKind.MONITOR_ALERTS and topic == self._own_alerts:
            return len(envelopes)  # our own alerts, already stored when raised
        for e in envelopes:
            self.envelopes += 1
            try:
                self._envelope(parsed, topic, e, now_ms, retained)
            except Exception as exc:  # noqa: BLE001 - a bug or an odd value must not stop it
                self._malformed("fold", f"{topic}: {type(exc).__name__}: {exc}", exc=exc)
        return len(envelopes)

    def tick(self, now_ms: int) -> None:
        """What time alone changes: silent nodes go offline, model alerts expire."""
        for node_id, node in self._nodes.items():
            self._liveness(node_id, node, now_ms)
        for alert in self.alerts.expire("model_rejected", self.bounds.model_rejected_hold_ms,
                                        now_ms):  # fmt: skip
            self._announce(alert)

    def take(self) -> Writes:
        for node_id in self._dirty_nodes:
            self._upsert("nodes", self._nodes[node_id].row)
        for s in self._dirty_streams:
            self._upsert("streams", s.row())
        self._dirty_nodes.clear()
        self._dirty_streams.clear()
        w, self._w = self._w, Writes()
        return w

    @property
    def counters(self) -> Counter[str]:
        """Messages, envelopes, malformed ones by kind, alerts fired and resolved."""
        out = Counter(self._counters)
        out["messages"], out["envelopes"] = self.messages, self.envelopes
        return out

    def node_state(self, node_id: str) -> str | None:
        node = self._nodes.get(node_id)
        return None if node is None else str(node.row["state"])

    def stream(self, source: str, stream: str) -> StreamState | None:
        return self._streams.get((source, stream))

    # -- one envelope ----------------------------------------------------------------------------

    def _envelope(self, t: Topic, topic: str, e: Envelope, now: int, retained: bool) -> None:
        source = e.source_node or t.node
        node = self._nodes.get(source)
        if node is not None:
            node.row["seen_ms"] = now
            self._dirty_nodes.add(source)
        elif source:
            self._seen_unknown[source] = now
        if e.sequence:
            self._track(source, e.stream or topic, e, now)
        body = e.body
        time_ms = e.created_ms or now
        kind = t.kind
        if kind is TopicKind.PIPELINE:
            self._telemetry(t, e, body, time_ms=time_ms, now=now, source=source)
        elif kind is TopicKind.NODE_STATUS:
            if not isinstance(body, NodeStatus) or body.node_id != t.node:
                self._malformed("unexpected", f"{topic}: not the status of node {t.node}")
                return
            self._status(body, e, now, retained)
        elif kind is TopicKind.NODE_EVENTS or kind is TopicKind.MONITOR_ALERTS:
            if not isinstance(body, Event):
                self._malformed("unexpected", f"{topic}: {type(body).__name__}, not an Event")
                return
            self._event(body, time_ms, now, node_id=source, ion=e.ion, pipeline=body.pipeline)
        elif kind is TopicKind.DEFINITION:
            if not isinstance(body, IonDefinition | IonDeleted) or body.name != t.ion:
                self._malformed("unexpected", f"{topic}: not a definition of ION {t.ion}")
                return
            row = rows.ion_row(body, self._ions.get(t.ion), now)
            self._ions[t.ion] = row
            self._upsert("ions", row)
        elif kind is TopicKind.MODEL_MANIFEST:
            if not isinstance(body, ModelManifest):
                self._malformed("unexpected", f"{topic}: {type(body).__name__}, not a manifest")
                return
            mv = rows.model_version_row(body, ion=t.ion, edge=t.edge, time_ms=time_ms)
            self._upsert("model_versions", mv)
        elif kind is TopicKind.MODEL_DECISION:
            if not isinstance(body, Command):
                self._malformed("unexpected", f"{topic}: {type(body).__name__}, not a Command")
                return
            if self._first_time(topic, e):
                decision = rows.decision_from_command(
                    body, time_ms=time_ms, ion=t.ion, edge=t.edge, version=t.version, sender=source
                )
                if decision is not None:
                    self._append("decisions", decision)
        elif kind is TopicKind.MODEL_CANARY:
            if not isinstance(body, Event):
                self._malformed("unexpected", f"{topic}: {type(body).__name__}, not an Event")
                return
            if self._first_time(topic, e):
                self._event(body, time_ms, now, node_id=t.node, ion=t.ion, pipeline=body.pipeline)
        elif kind is TopicKind.EDGE and t.channel is Channel.TRIGGER and isinstance(body, Trigger):
            self._append("events", rows.event_row(
                Event("trigger.sent", Severity.INFO, subject=f"{t.ion}/{body.edge}",
                      message=body.reason, attributes={"edge": body.edge,
                                                       "target_pipeline": body.target_pipeline}),
                time_ms=time_ms, node_id=source, ion=t.ion, pipeline=body.target_pipeline,
            ))  # fmt: skip

    def _telemetry(
        self, t: Topic, e: Envelope, body: object, *, time_ms: int, now: int, source: str
    ) -> None:
        ion = e.ion or t.ion
        if isinstance(body, StatsReport) and t.channel is Channel.STATS:
            self._extend("stats", rows.stats_rows(body, time_ms=time_ms, node_id=source, ion=ion,
                                                  pipeline=t.pipeline))  # fmt: skip
        elif isinstance(body, HealthReport) and t.channel is Channel.HEALTH:
            at = body.window_end_ms or time_ms
            self._extend("stats", rows.health_stats_rows(body, time_ms=at, node_id=source,
                                                         ion=ion, pipeline=t.pipeline))  # fmt: skip
            if body.drift:
                self._extend("drift", rows.drift_rows(body, time_ms=at, node_id=source, ion=ion,
                                                      pipeline=t.pipeline))  # fmt: skip
                self._drift_scores(source, ion, body.pipeline or t.pipeline, body.drift, now)
        elif isinstance(body, Event) and t.channel is Channel.EVENTS:
            pipeline = body.pipeline or t.pipeline
            self._event(body, time_ms, now, node_id=source, ion=ion, pipeline=pipeline)
        else:
            self._malformed("unexpected", f"{t}: {type(body).__name__} on a {t.channel} topic")

    def _event(
        self, ev: Event, time_ms: int, now: int, *, node_id: str, ion: str, pipeline: str
    ) -> None:
        self._append("events", rows.event_row(ev, time_ms=time_ms, node_id=node_id, ion=ion,
                                              pipeline=pipeline))  # fmt: skip
        decision = rows.decision_from_event(ev, time_ms=time_ms, node_id=node_id, ion=ion)
        if decision is not None:
            self._append("decisions", decision)
        kind = ev.type
        if kind in ("health.drift", "health.drift_cleared"):
            a = ev.attributes
            self._observe(Condition(
                "drift", f"{node_id}/{ion}/{pipeline}", holds=kind == "health.drift",
                value=_number(a.get("score")),
                threshold=_number(a.get("threshold")) or self.bounds.drift_threshold,
                message=ev.message, node_id=node_id, ion=ion, pipeline=pipeline,
            ), now)  # fmt: skip
        elif kind in _MODEL_BAD or kind in _MODEL_GOOD:
            a = ev.attributes
            model_ion, edge = a.get("ion") or ion, a.get("edge", "")
            self._observe(Condition(
                "model_rejected", f"{node_id}/{model_ion}/{edge}", holds=kind in _MODEL_BAD,
                value=_number(a.get("version")), message=f"{kind} on {node_id}: {ev.message}",
                node_id=node_id, ion=model_ion, pipeline=ev.pipeline or pipeline,
            ), now)  # fmt: skip

    def _drift_scores(
        self, node_id: str, ion: str, pipeline: str, scores: Iterable[DriftScore], now: int
    ) -> None:
        scores = list(scores)
        overall = [d for d in scores if not d.feature] or scores
        bound = self.bounds.drift_threshold
        worst = max(overall, key=lambda d: d.score / (d.threshold or bound))
        threshold = worst.threshold or bound
        what = f"{worst.metric} {worst.feature or 'overall'}"
        self._observe(Condition(
            "drift", f"{node_id}/{ion}/{pipeline}", holds=worst.score > threshold,
            value=worst.score, threshold=threshold,
            message=f"drift on {node_id} {ion}/{pipeline}: {what} {worst.score:.3g} "
                    f"(threshold {threshold:g})",
            node_id=node_id, ion=ion, pipeline=pipeline,
        ), now)  # fmt: skip

    # -- node status -----------------------------------------------------------------------------

    def _status(self, s: NodeStatus, e: Envelope, now: int, retained: bool) -> None:
        node_id = s.node_id
        node = self._nodes.get(node_id)
        seen = max(now, self._seen_unknown.pop(node_id, 0))
        row = rows.node_row(s, node.row if node else None, status_ms=e.created_ms, seen_ms=seen)
        if node is None:
            node = self._nodes[node_id] = _Node(row)
        node.row = row
        self._dirty_nodes.add(node_id)
        if s.state is NodeState.ONLINE:
            # A retained status may be old: it counts from when it was made, not delivered.
            node.heartbeat_ms = min(now, e.created_ms) if retained and e.created_ms else now
        if s.state is NodeState.ONLINE or s.pipelines:
            self._children(node, "pipelines", rows.pipeline_rows(s, now))
            self._children(node, "queues", rows.queue_rows(s, now))
            self._children(node, "links", rows.link_rows(s, now))
            self._children(node, "node_models", rows.node_model_rows(s, now))
            self._pipeline_alerts(node_id, s, now)
            totals = rows.queue_totals(s)
            for link, (depth, size, oldest) in totals.items():
                if not retained:
                    self._append("queue_history", {"time_ms": now, "node_id": node_id,
                                                   "link": link, "depth": depth, "bytes": size,
                                                   "oldest_age_ms": oldest})  # fmt: skip
                self._backlog(node_id, link, depth, oldest, now)
        self._liveness(node_id, node, now)

    def _children(self, node: _Node, table: str, new_rows: list[Row]) -> None:
        keys = set()
        for r in new_rows:
            keys.add(self._upsert(table, r))
        for gone in node.children.get(table, set()) - keys:
            self._w.deletes.setdefault(table, set()).add(gone)
            self._w.upserts.get(table, {}).pop(gone, None)
        node.children[table] = keys

    def _pipeline_alerts(self, node_id: str, s: NodeStatus, now: int) -> None:
        present = set()
        for p in s.pipelines:
            key = f"{node_id}/{p.ion}/{p.pipeline}"
            present.add(key)
            self._observe(Condition(
                "crash_loop", key, holds=p.state.value == "crash_loop", value=p.restarts,
                message=f"pipeline {p.ion}/{p.pipeline} on {node_id} is crash-looping "
                        f"({p.restarts} restarts): {p.message}"[:500],
                severity="error", node_id=node_id, ion=p.ion, pipeline=p.pipeline,
            ), now)  # fmt: skip
        for rule, key in list(self.alerts.firing):
            if rule == "crash_loop" and key.startswith(f"{node_id}/") and key not in present:
                self._announce_opt(self.alerts.resolve(rule, key, now, "pipeline removed"))

    def _backlog(self, node_id: str, link: str, depth: int, oldest: int, now: int) -> None:
        b = self.bounds
        by_age = oldest > b.backlog_age_ms
        self._observe(Condition(
            "backlog", f"{node_id}/{link}", holds=depth > b.backlog_depth or by_age,
            value=oldest if by_age else depth,
            threshold=b.backlog_age_ms if by_age else b.backlog_depth,
            message=f"{node_id} queues {depth} messages on {link}, oldest {oldest / 1000:.0f} s",
            node_id=node_id,
        ), now)  # fmt: skip

    def _liveness(self, node_id: str, node: _Node, now: int) -> None:
        row = node.row
        interval = int(row.get("heartbeat_interval_ms") or 0)
        state = row["state"]
        if state == "online" and interval and now - node.heartbeat_ms > _HEARTBEATS * interval:
            silent = (now - node.heartbeat_ms) / 1000
            row["state"] = state = "offline"
            row["error"] = f"no heartbeat for {silent:.0f} s ({_HEARTBEATS} intervals)"
            self._dirty_nodes.add(node_id)
        down = state in ("offline", "failed")
        if down == self.alerts.is_firing("node_offline", node_id):
            return  # nothing changes (the common case, for every node on every tick)
        why = row.get("error") or ("last will or shutdown" if state == "offline" else "")
        self._observe(Condition(
            "node_offline", node_id, holds=down, value=0.0 if down else 1.0,
            message=f"node {node_id} is {state}" + (f": {why}" if why and down else ""),
            severity="error", node_id=node_id,
        ), now)  # fmt: skip

    # -- delivery --------------------------------------------------------------------------------

    def _track(self, source: str, stream: str, e: Envelope, now: int) -> None:
        s = self._streams.get((source, stream))
        if s is None:
            s = self._streams[(source, stream)] = StreamState(source, stream)
        lag = now - e.created_ms
        s.arrive(e.sequence, lag_ms=lag, hops=len(e.route), now_ms=now)
        self._dirty_streams.add(s)
        key = f"{source}:{stream}"
        if lag > self.bounds.lag_ms or self.alerts.is_firing("lag", key):
            self._observe(Condition(
                "lag", key, holds=lag > self.bounds.lag_ms, value=lag,
                threshold=self.bounds.lag_ms,
                message=f"messages from {source} on {stream} arrive {lag / 1000:.1f} s late",
                node_id=source, ion=e.ion,
            ), now)  # fmt: skip

    # -- helpers ---------------------------------------------------------------------------------

    def _observe(self, c: Condition, now: int) -> None:
        self._announce_opt(self.alerts.observe(c, now))

    def _announce_opt(self, alert: Alert | None) -> None:
        if alert is not None:
            self._announce(alert)

    def _announce(self, alert: Alert) -> None:
        self._upsert("alerts", alert.row())
        ev = alert_event(alert, self.monitor_id)
        at = alert.resolved_ms or alert.started_ms
        self._append("events", rows.event_row(ev, time_ms=at, node_id=alert.node_id,
                                              ion=alert.ion, pipeline=alert.pipeline))  # fmt: skip
        self._w.alerts.append(alert)
        self._counters[f"alerts.{alert.state}"] += 1

    def _first_time(self, topic: str, e: Envelope) -> bool:
        """Whether a retained message is new to the audit trail (a restarted monitor gets
        every retained decision again, with the same message id)."""
        if self._retained_ids.get(topic) == e.message_id:
            return False
        self._retained_ids[topic] = e.message_id
        self._upsert("meta", {"key": f"retained:{topic}", "value": e.message_id})
        return True

    def _upsert(self, table: str, row: Row) -> Key:
        key = tuple(row[c] for c in PRIMARY_KEYS[table])
        self._w.upserts.setdefault(table, {})[key] = row
        deletes = self._w.deletes.get(table)
        if deletes:
            deletes.discard(key)
        return key

    def _append(self, table: str, row: Row) -> None:
        self._w.appends.setdefault(table, []).append(row)

    def _extend(self, table: str, new_rows: list[Row]) -> None:
        if new_rows:
            self._w.appends.setdefault(table, []).extend(new_rows)

    def _parse(self, topic: str) -> Topic | str:
        try:
            parsed: Topic | str = topics.parse(topic)
        except TopicError as exc:
            parsed = str(exc)
        if len(self._topics) >= _TOPIC_CACHE:
            self._topics.clear()
        self._topics[topic] = parsed
        return parsed

    def _malformed(self, kind: str, detail: str, exc: BaseException | None = None) -> None:
        self._counters[f"malformed.{kind}"] += 1
        if kind not in self._logged:  # once per kind: a flood must not flood the log
            self._logged.add(kind)
            log.warning("monitor %s dropped a malformed message (%s): %s", self.monitor_id,
                        kind, detail[:500], exc_info=exc)  # fmt: skip


def _number(text: str | None) -> float:
    try:
        return float(text) if text else 0.0
    except ValueError:
        return 0.0
