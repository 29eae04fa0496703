"""The agent's side of trigger edges: feeds ``TriggerBook`` and carries out its firings.

A node that hosts a target pipeline of a trigger edge evaluates the edge itself (see
``node.agent.triggers``).  It subscribes to the source pipeline's telemetry from every node
(``ion/v1/ions/<ion>/pipelines/<source>/<channel>/+``: health for ``drift``, stats, events and
health otherwise; gateways relay these up by default) and to node statuses (which nodes still
run the source).  When the edge fires it

1. starts its local target pipelines at once (no round trip through the broker: this works
   while the broker's other side is unreachable),
2. publishes a ``Trigger`` per target on the edge's trigger topic (the audit trail, the
   monitor, ``ion events``, and the edge's other target nodes), and
3. publishes a ``trigger.fired`` node event with the metric, the value per node and the nodes.

Its own trigger messages come back (it subscribes to the edge): they are ignored, so a
target never starts twice.  A trigger message from another node that evaluates the same edge
starts the local targets unless the edge is cooling down here, and starts the cooldown.

The time of the last firing per edge is kept in ``<data_dir>/triggers.json`` (written
atomically on every firing), so a restarted agent respects the cooldown.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from pathlib import Path
from typing import Any

from ion import topics
from ion.errors import UnavailableError
from ion.model.definition import EdgeKind, IonDefinition
from ion.model.event import Event, Severity, Trigger
from ion.model.health import HealthReport, StatsReport
from ion.model.status import NodeStatus
from ion.topics import Channel, TopicKind
from node.files import write_atomically
from node.reconcile import PipelineKey

from .receiver import Arrival
from .triggers import DRIFT, EdgeKey, Firing, TriggerBook, WatchedEdge

log = logging.getLogger(__name__)

STATE_FILE = "triggers.json"
TICK_S = 1.0  # re-evaluation while no report arrives (a cooldown ends, readings expire)

Publish = Callable[..., Awaitable[None]]
"""``Agent.publish``: ``(topic, body, *, ion=...)``, durable when it returns."""
Spawn = Callable[[Coroutine[Any, Any, None], str], object]
StartPipeline = Callable[[PipelineKey], bool]


def watched_edges(
    active: Mapping[str, IonDefinition], local: Iterable[PipelineKey]
) -> list[WatchedEdge]:
    """The trigger edges with a target pipeline on this node (``local``)."""
    here = set(local)
    out = []
    for name, definition in sorted(active.items()):
        for e in definition.edges:
            if e.kind is not EdgeKind.TRIGGER or e.trigger is None:
                continue
            targets = tuple(t.pipeline for t in e.targets)
            if not any((name, t) in here for t in targets):
                continue
            out.append(
                WatchedEdge(
                    ion=name,
                    edge=e.name,
                    source_pipeline=e.source.pipeline,
                    condition=e.trigger,
                    targets=targets,
                    source_component=e.source.component,
                )
            )
    return out


def load_state(path: Path) -> dict[EdgeKey, int]:
    """The persisted firing times; an unreadable file is logged and treated as empty (the
    worst case is one firing inside a cooldown, not a node that cannot start)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("trigger state %s unreadable, starting without it: %s", path, exc)
        return {}
    out: dict[EdgeKey, int] = {}
    fired = raw.get("last_fired_ms", {}) if isinstance(raw, dict) else {}
    for key, value in fired.items() if isinstance(fired, dict) else ():
        ion, _, edge = str(key).partition("/")
        if ion and edge and isinstance(value, int) and not isinstance(value, bool):
            out[(ion, edge)] = value
    return out


def save_state(path: Path, last_fired: Mapping[EdgeKey, int]) -> None:
    data = {"last_fired_ms": {f"{i}/{e}": ms for (i, e), ms in sorted(last_fired.items())}}
    write_atomically(path, json.dumps(data, sort_keys=True).encode())


class TriggerWatch:
    def __init__(
        self,
        *,
        node_id: str,
        data_dir: Path,
        clock: Callable[[], int],
        publish: Publish,
        spawn: Spawn,
        start: StartPipeline,
    ) -> None:
        self._node_id = node_id
        self._path = data_dir / STATE_FILE
        self._clock = clock
        self._publish = publish
        self._spawn = spawn
        self._start = start
        self._book = TriggerBook(load_state(self._path))
        self._local: frozenset[PipelineKey] = frozenset()
        self._filters: frozenset[str] = frozenset()
        self.fired: list[Firing] = []  # this agent's firings, newest last (bounded)

    @property
    def book(self) -> TriggerBook:
        return self._book

    # -- plan -----------------------------------------------------------------------------------

    def plan(self, active: Mapping[str, IonDefinition], local: Iterable[PipelineKey]) -> None:
        self._local = frozenset(local)
        self._book.configure(watched_edges(active, self._local))
        filters: set[str] = set()
        for w in self._book.watched:
            channels = (
                (Channel.HEALTH,)
                if w.condition.metric == DRIFT
                else (Channel.HEALTH, Channel.STATS, Channel.EVENTS)
            )
            filters.update(topics.pipeline_filter(w.ion, w.source_pipeline, ch) for ch in channels)
        if filters:
            filters.add(topics.ALL_NODE_STATUS)
        self._filters = frozenset(filters)

    def subscriptions(self) -> frozenset[str]:
        return self._filters

    # -- what arrives ---------------------------------------------------------------------------

    def on_arrival(self, arrival: Arrival) -> None:
        """Pipeline telemetry or a node status (other arrivals are ignored)."""
        topic, env = arrival.topic, arrival.envelope
        body = env.body
        now = self._clock()
        if topic.kind is TopicKind.NODE_STATUS and isinstance(body, NodeStatus):
            if body.node_id == topic.node:
                self._book.node_status(body)
            return
        if topic.kind is not TopicKind.PIPELINE or arrival.duplicate:
            return
        if not isinstance(body, HealthReport | StatsReport | Event):
            return
        # The time the report was made, not when it arrived: a backlog relayed after an
        # outage must not count as recent.  Never later than now (a source clock ahead).
        at = min(env.created_ms, now) if env.created_ms > 0 else now
        if self._book.observe(topic.ion, topic.pipeline, topic.node, body, at):
            self._evaluate(now)

    def accept_trigger(self, arrival: Arrival) -> bool:
        """A message on a trigger topic: True when the local targets should start."""
        env = arrival.envelope
        if arrival.duplicate or env.source_node == self._node_id:
            return False  # our own firing coming back: its targets started already
        topic = arrival.topic
        if not any(w.key == (topic.ion, topic.edge) for w in self._book.watched):
            return True  # an edge this node does not evaluate: the sender decided
        if self._book.fired_elsewhere(topic.ion, topic.edge, self._clock()):
            self._save()
            log.info("trigger %s/%s fired by %s", topic.ion, topic.edge, env.source_node)
            return True
        log.info(
            "trigger %s/%s from %s ignored: cooling down", topic.ion, topic.edge, env.source_node
        )
        return False

    async def run(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self._evaluate(self._clock())

    # -- firing ---------------------------------------------------------------------------------

    def _evaluate(self, now: int) -> None:
        firings = self._book.evaluate(now)
        if not firings:
            return
        self._save()  # before acting: a crash right after must not fire again on restart
        for firing in firings:
            self._fire(firing)

    def _save(self) -> None:
        try:
            save_state(self._path, self._book.last_fired)
        except OSError as exc:
            log.warning("could not keep the trigger state in %s: %s", self._path, exc)

    def _fire(self, firing: Firing) -> None:
        self.fired = [*self.fired[-99:], firing]
        reason = firing.reason()
        log.warning("trigger %s/%s fired: %s", firing.ion, firing.edge, reason)
        local = [t for t in firing.targets if (firing.ion, t) in self._local]
        started = [t for t in local if self._start((firing.ion, t))]
        topic = topics.edge(firing.ion, firing.edge, Channel.TRIGGER, self._node_id)
        for target in firing.targets:
            body = Trigger(edge=firing.edge, target_pipeline=target, reason=reason)
            self._spawn(self._send(topic, body, firing.ion), f"trigger {firing.edge}")
        attributes = {
            "ion": firing.ion,
            "edge": firing.edge,
            "metric": firing.metric,
            "above": f"{firing.above:g}",
            "nodes": ",".join(firing.nodes),
            "targets": ",".join(firing.targets),
            "started": ",".join(started),
            **{f"value.{n}": f"{v:.6g}" for n, v in firing.values.items()},
        }
        event = Event(
            type="trigger.fired",
            severity=Severity.INFO,
            subject=f"{firing.ion}/{firing.edge}@{self._node_id}",
            message=reason,
            attributes=attributes,
        )
        node_events = topics.node_topic(self._node_id, TopicKind.NODE_EVENTS)
        self._spawn(self._send(node_events, event, ""), "trigger event")

    async def _send(self, topic: str, body: object, ion: str) -> None:
        try:
            await self._publish(topic, body, ion=ion)
        except UnavailableError as exc:  # outbox full or draining: the firing stands
            log.warning("could not queue %s for %s: %s", type(body).__name__, topic, exc)
