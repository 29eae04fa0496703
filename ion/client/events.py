"""The fleet's events as the operator sees them (``ion events``): what travels on the bus.

Four sources, all carrying ``Event`` bodies: node events (``nodes/<node>/events``), pipeline
events (``ions/<ion>/pipelines/<p>/events/<node>``), events along ION edges
(``ions/<ion>/edges/<e>/events/<node>``) and monitor alerts (``monitor/<m>/alerts``); plus the
retained canary verdicts (``.../model/canary/<node>``), which are events too and the only ones
a broker keeps, so a reader that just arrived sees them at once.

``event_records`` and ``EventFilter`` are pure; ``follow`` subscribes on an operator session
and ``EventStream`` decodes, filters and deduplicates what arrives, in the caller's thread.
"""

from __future__ import annotations

import fnmatch
import logging
import queue
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from ion import topics
from ion.config.broker import BrokerConfig
from ion.errors import DecodeError, InputError
from ion.model.messages import Event, Severity
from ion.topics import TopicError, TopicKind
from ion.wire.codec import decode_all

from .session import RetainedMessage, connect

log = logging.getLogger(__name__)

SEVERITIES = tuple(s.value for s in Severity)  # least to most severe
_RANK = {s: i for i, s in enumerate(SEVERITIES)}
_SOURCE_OF = {
    TopicKind.NODE_EVENTS: "node",
    TopicKind.PIPELINE: "pipeline",
    TopicKind.EDGE: "edge",
    TopicKind.MONITOR_ALERTS: "alert",
    TopicKind.MODEL_CANARY: "canary",
}
_DEDUP_WINDOW = 10_000


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One event, flattened for printing and for ``--json`` (the field names are the keys)."""

    time_ms: int  # when the source created it (its clock)
    source: str  # node | pipeline | edge | alert | canary
    node_id: str  # the node it came from (the monitor's id for alerts)
    ion: str
    pipeline: str
    edge: str
    type: str
    severity: str
    subject: str
    message: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    message_id: str = ""
    topic: str = ""


def event_filters(ion: str | None = None, node: str | None = None) -> list[str]:
    """The subscriptions that carry events, narrowed to one ION and/or one node when given.

    Alerts are not narrowed by node or ION at the broker (their topic names the monitor); the
    filter drops the others after decoding.
    """
    return list(topics.event_filters(ion, node))


def event_records(topic: str, payload: bytes) -> list[EventRecord]:
    """The events in one MQTT message (a batch holds many).  ``DecodeError`` or
    ``TopicError`` when the message is not one of ours."""
    parsed = topics.parse(topic)
    source = _SOURCE_OF.get(parsed.kind)
    if source is None:
        raise TopicError(f"{topic!r} carries no events")
    out = []
    for env in decode_all(payload):
        body = env.body
        if not isinstance(body, Event):
            continue
        out.append(
            EventRecord(
                time_ms=env.created_ms,
                source=source,
                node_id=parsed.monitor if source == "alert" else (parsed.node or env.source_node),
                ion=parsed.ion or env.ion,
                pipeline=parsed.pipeline or body.pipeline,
                edge=parsed.edge,
                type=body.type,
                severity=body.severity.value,
                subject=body.subject,
                message=body.message,
                attributes=dict(body.attributes),
                message_id=env.message_id,
                topic=topic,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class EventFilter:
    """What ``ion events`` shows: every field that is set must match."""

    ion: str | None = None
    node: str | None = None
    type_pattern: str | None = None  # shell-style, e.g. "model.*"
    min_severity: str | None = None
    since_ms: int | None = None  # created at or after this time

    def __post_init__(self) -> None:
        if self.min_severity is not None and self.min_severity not in _RANK:
            raise InputError(
                f"unknown severity {self.min_severity!r}: use one of {', '.join(SEVERITIES)}"
            )

    def accepts(self, e: EventRecord) -> bool:
        if self.ion is not None and e.ion != self.ion:
            return False
        if self.node is not None and e.node_id != self.node:
            return False
        if self.type_pattern is not None and not fnmatch.fnmatchcase(e.type, self.type_pattern):
            return False
        if self.min_severity is not None and _RANK.get(e.severity, 0) < _RANK[self.min_severity]:
            return False
        return self.since_ms is None or e.time_ms >= self.since_ms


class EventStream:
    """Events as they arrive on the broker, deduplicated by message id (a relay or a
    reconnect can deliver one twice).  Use through ``follow()``."""

    def __init__(self, event_filter: EventFilter, live: queue.Queue[RetainedMessage]) -> None:
        self._filter = event_filter
        self._live = live
        self._ready: list[EventRecord] = []  # decoded from one message, not yet handed out
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.undecodable = 0  # messages that were not ours (counted, not fatal)

    def _take(self, topic: str, payload: bytes) -> None:
        try:
            records = event_records(topic, payload)
        except (DecodeError, TopicError) as exc:
            log.debug("ignored %s: %s", topic, exc)
            self.undecodable += 1
            return
        for record in records:
            if self._filter.accepts(record) and not self._duplicate(record.message_id):
                self._ready.append(record)

    def _duplicate(self, message_id: str) -> bool:
        if message_id in self._seen:
            return True
        self._seen[message_id] = None
        if len(self._seen) > _DEDUP_WINDOW:
            self._seen.popitem(last=False)
        return False

    def get(self, timeout: float) -> EventRecord | None:
        """The next event, or None after ``timeout`` seconds (call with short timeouts: the
        main thread sees Ctrl-C only between waits)."""
        deadline = time.monotonic() + timeout
        while not self._ready:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                msg = self._live.get(timeout=left)
            except queue.Empty:
                return None
            self._take(msg.topic, msg.payload)
        return self._ready.pop(0)


@contextmanager
def follow(
    broker: BrokerConfig, event_filter: EventFilter, *, timeout: float = 10.0
) -> Iterator[EventStream]:
    """Subscribe to every event topic (narrowed by ``event_filter``'s ION and node) and yield
    the stream once the broker has granted the subscriptions (``RefusedError`` if it has not:
    an ACL)."""
    filters = event_filters(event_filter.ion, event_filter.node)  # bad names fail first
    with connect(broker, client_prefix="ion-events") as session:
        live = session.listen(filters, timeout)
        yield EventStream(event_filter, live)
