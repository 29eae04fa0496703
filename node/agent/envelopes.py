"""Pure helpers for what the agent sends: traffic classes and sequence numbers."""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from ion.model.definition import IonDefinition, IonDeleted
from ion.model.messages import (
    ChunkRequest,
    Command,
    CommandResult,
    DataRecords,
    DeliveryAck,
    Envelope,
    Event,
    HealthReport,
    ModelChunk,
    ModelManifest,
    NodeStatus,
    RetransmitRequest,
    StatsReport,
    Trigger,
    new_envelope,
)
from ion.wire.batch import encode_envelope
from node.outbox.classes import TrafficClass

_CLASS_OF: Mapping[type, TrafficClass] = {
    IonDefinition: TrafficClass.CONTROL,
    IonDeleted: TrafficClass.CONTROL,
    Command: TrafficClass.CONTROL,
    CommandResult: TrafficClass.CONTROL,
    RetransmitRequest: TrafficClass.CONTROL,
    DeliveryAck: TrafficClass.CONTROL,
    NodeStatus: TrafficClass.CONTROL,
    ModelManifest: TrafficClass.MODEL,
    ModelChunk: TrafficClass.MODEL,
    ChunkRequest: TrafficClass.MODEL,
    Event: TrafficClass.EVENTS,
    Trigger: TrafficClass.EVENTS,
    HealthReport: TrafficClass.HEALTH,
    StatsReport: TrafficClass.STATS,
    DataRecords: TrafficClass.DATA,
}


def traffic_class_of(body: object) -> TrafficClass:
    try:
        return _CLASS_OF[type(body)]
    except KeyError:
        raise TypeError(f"no traffic class for {type(body).__name__}") from None


class Sequencer:
    """Next sequence number per stream, continuing from what the outbox persisted.

    Numbers are handed out in memory and made durable by the outbox transaction that stores
    the message carrying them; a number handed out but never stored (a crash in between) is
    simply used again, since no receiver ever saw it.
    """

    def __init__(self, last: Mapping[str, int]) -> None:
        self._last = dict(last)

    def next(self, stream: str) -> int:
        n = self._last.get(stream, 0) + 1
        self._last[stream] = n
        return n


def ordered_message_id(now_ms: int) -> str:
    """A message id (32 lowercase hex digits, as ``new_message_id``) that starts with the time.

    The first 12 digits are ``now_ms`` (48 bits, until the year 10889), the other 20 random
    (80 bits: two ids of one millisecond collide with odds of about 1 in 10^24).  Receivers
    remember ids in an indexed SQLite window; random ids land on random index pages, so each
    small commit dirtied one page per id and wrote it to the WAL (measured: ~30 us of CPU and
    ~60 us of wall time per remembered id with 100,000 ids kept), while ids that grow with time
    land together at the end of the index and are trimmed together from its start (~10 us).
    """
    return f"{now_ms & 0xFFFF_FFFF_FFFF:012x}{secrets.token_hex(10)}"


def sequenced(
    body: object,
    *,
    source_node: str,
    ion: str,
    stream: str,
    sequence: int,
    now_ms: int,
    correlation_id: str = "",
    message_id: str | None = None,
) -> tuple[Envelope, bytes]:
    """A new envelope for ``body`` with its stream position, and its encoding."""
    env = new_envelope(
        body,  # type: ignore[arg-type]
        source_node=source_node,
        ion=ion,
        sequence=sequence,
        stream=stream,
        now_ms=now_ms,
        correlation_id=correlation_id,
        message_id=ordered_message_id(now_ms) if message_id is None else message_id,
    )
    return env, encode_envelope(env)
