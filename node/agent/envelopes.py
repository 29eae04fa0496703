"""Pure helpers for what the agent sends (traffic classes, sequence numbers) and for decoding
model chunks cheaply on arrival."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import replace

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
    MessageIds,
    ModelChunk,
    ModelManifest,
    NodeStatus,
    RetransmitRequest,
    StatsReport,
    Trigger,
    new_envelope,
)
from ion.wire.batch import batch_inner, encode_envelope, encode_records_run
from ion.wire.codec import DEFAULT_MAX_SIZE, decode
from node.outbox.classes import OutboxConfig, TrafficClass
from node.outbox.policy import OutboundItem
from node.outbox.records import MAX_RUN_ITEMS

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


# Classes whose items supersede older ones of their topic (the newest state is what counts).
COMPACTED_CLASSES = frozenset({TrafficClass.STATS, TrafficClass.HEALTH})


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

    def take(self, stream: str, count: int) -> int:
        """Reserve ``count`` numbers of ``stream`` in a row; returns the first."""
        first = self._last.get(stream, 0) + 1
        self._last[stream] = first + count - 1
        return first


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


def encode_many(
    bodies: Sequence[object],
    *,
    message_ids: Sequence[str],
    source_node: str,
    ion: str,
    stream: str,
    first_sequence: int,
    now_ms: int,
) -> list[bytes]:
    """New envelopes for ``bodies`` numbered from ``first_sequence`` on, encoded: what
    ``sequenced`` gives for each, with the shared header encoded once when all are
    ``DataRecords`` (the bulk of what applications send)."""
    if all(type(b) is DataRecords for b in bodies):
        return encode_records_run(
            bodies,  # type: ignore[arg-type]  # checked just above
            message_ids=message_ids,
            ion=ion,
            source_node=source_node,
            stream=stream,
            first_sequence=first_sequence,
            now_ms=now_ms,
        )
    return [
        sequenced(
            body,
            source_node=source_node,
            ion=ion,
            stream=stream,
            sequence=first_sequence + i,
            now_ms=now_ms,
            message_id=message_ids[i],
        )[1]
        for i, body in enumerate(bodies)
    ]


def run_items(
    topic: str,
    bodies: Sequence[object],
    encoded: Sequence[bytes],
    *,
    first_sequence: int,
    now_ms: int,
    config: OutboxConfig,
) -> list[OutboundItem]:
    """The outbox items for messages ``encoded`` (of ``bodies``, numbered from
    ``first_sequence`` on ``topic``, its own stream): consecutive small messages of one traffic
    class, as many as the sender would pack into one MQTT message (``batch_max_items``,
    ``batch_max_bytes``, each under ``batch_item_max_bytes``), become one run
    (``OutboundItem.items``); the others, and every message of a compacted class, one item
    each, as ``publish`` stores them."""
    limit = min(config.batch_max_items, MAX_RUN_ITEMS)
    small = config.batch_item_max_bytes
    classes = [traffic_class_of(b) for b in bodies]
    # Per class, not per message: an enum's hash is a Python call.
    compacted = {c: c in COMPACTED_CLASSES for c in set(classes)}
    items: list[OutboundItem] = []
    start = size = 0  # the run being gathered: its first message and its bytes
    n = len(encoded)
    for i in range(n + 1):
        if i < n:
            length = len(encoded[i])
            if (
                0 < i - start < limit
                and classes[i] is classes[start]
                and not compacted[classes[i]]
                and length < small
                and len(encoded[start]) < small
                and size + length <= config.batch_max_bytes
            ):
                size += length
                continue
        if i > start:  # the run start..i-1 is complete
            cls = classes[start]
            if i - start == 1:
                items.append(_one(topic, encoded[start], cls, now_ms, first_sequence + start))
            else:
                items.append(
                    OutboundItem(topic, batch_inner(encoded[start:i]), cls, now_ms,
                                 stream=topic, sequence=first_sequence + i - 1, items=i - start)
                )  # fmt: skip
        if i < n:
            start, size = i, len(encoded[i])
    return items


class Many:
    """A ``publish_many`` request's bodies (and the caller's ids, if given)."""

    __slots__ = ("bodies", "message_ids")

    def __init__(self, bodies: tuple[object, ...], message_ids: tuple[str, ...] | None) -> None:
        self.bodies = bodies
        self.message_ids = message_ids


# A request of one group commit: topic, body (or ``Many``), ION, correlation id, message id
# (or None), and whatever the caller waits on (not looked at here).
Request = tuple[str, object, str, str, str | None, object]


def _joins(request: Request, topic: str, ion: str) -> bool:
    """Whether ``request`` may join a run of single messages for ``topic`` of ``ion``."""
    return (
        request[0] == topic
        and request[2] == ion
        and not request[3]
        and type(request[1]) is not Many
    )


def outbound_items(
    requests: Sequence[Request],
    *,
    node_id: str,
    sequencer: Sequencer,
    ids: MessageIds,
    config: OutboxConfig,
    now_ms: int,
) -> tuple[list[OutboundItem], list[tuple[int, int]]]:
    """The outbox items for the requests of one group commit, numbered and named, and per
    request the range of items that hold its messages (several requests may share one).

    A ``Many`` becomes runs (``run_items``); so do consecutive single requests for one topic
    and ION (each keeps its own id and sequence number): with many concurrent callers that
    is one outbox row, send, ack and retained copy per run instead of per message.  A
    message with a correlation id is stored on its own."""
    items: list[OutboundItem] = []
    owners: list[tuple[int, int]] = []
    k = 0
    while k < len(requests):
        topic, body, ion, corr, *_ = requests[k]
        base = len(items)
        if corr:
            items.append(_single_item(requests[k], node_id, sequencer, ids, now_ms))
            owners.append((base, base + 1))
            k += 1
            continue
        end = k + 1
        given: Sequence[str | None]
        if type(body) is Many:
            bodies = body.bodies
            given = body.message_ids or ()
        else:
            while end < len(requests) and _joins(requests[end], topic, ion):
                end += 1
            bodies = tuple(r[1] for r in requests[k:end])
            given = [r[4] for r in requests[k:end]]
        n = len(bodies)
        names = ids.take(now_ms, n)
        if any(given):
            names = [g or i for g, i in zip(given, names, strict=True)]
        first = sequencer.take(topic, n)
        encoded = encode_many(
            bodies, message_ids=names, source_node=node_id, ion=ion, stream=topic,
            first_sequence=first, now_ms=now_ms,
        )  # fmt: skip
        run = run_items(topic, bodies, encoded, first_sequence=first, now_ms=now_ms, config=config)
        items += run
        if type(body) is Many:
            owners.append((base, base + len(run)))
        else:
            owners += [
                (base + i, base + i + 1) for i, it in enumerate(run) for _ in range(it.items)
            ]
        k = end
    return items, owners


def _single_item(
    request: Request, node_id: str, sequencer: Sequencer, ids: MessageIds, now_ms: int
) -> OutboundItem:
    topic, body, ion, corr, message_id, _ = request
    seq = sequencer.next(topic)
    _, payload = sequenced(
        body, source_node=node_id, ion=ion, stream=topic, sequence=seq, now_ms=now_ms,
        correlation_id=corr, message_id=message_id or ids.take(now_ms)[0],
    )  # fmt: skip
    return _one(topic, payload, traffic_class_of(body), now_ms, seq)


def _one(topic: str, payload: bytes, cls: TrafficClass, now_ms: int, seq: int) -> OutboundItem:
    """One message as one outbox item (a compacted class's newest supersedes its topic's)."""
    key = topic if cls in COMPACTED_CLASSES else None
    return OutboundItem(topic, payload, cls, now_ms, stream=topic, sequence=seq, compaction_key=key)


# -- model chunks without copying them through protobuf -------------------------------------------

_MODEL_CHUNK_FIELD = 26  # Envelope.model_chunk (proto/ion/v1/envelope.proto)
_CHUNK_DATA_FIELD = 3  # ModelChunk.data (proto/ion/v1/model.proto)


def decode_chunk_envelope(payload: bytes) -> Envelope | None:
    """``decode(payload)`` for an envelope carrying one ``ModelChunk``, or None when
    ``payload`` is anything else (the caller then decodes it the usual way).

    Why: protobuf copies a 256 KiB chunk into its arena and again into ``bytes`` (measured
    ~100 us per chunk on this machine, a fifth of what a consumer spends on it).  Here only
    the field boundaries are walked: the envelope with the chunk's data left out (a few
    hundred bytes) goes through the one hardened decoder, and the data is a read-only view
    of the payload, not a copy (a ``bytes`` payload: a view of anything mutable could change
    under the chunk after its hash was checked).  Fields keep their order, so protobuf's
    "last one wins" reads the same; anything unusual (a repeated body or data field, groups,
    truncation, oversize) is left to ``decode``, which reports it.
    """
    if len(payload) > DEFAULT_MAX_SIZE:
        return None
    view = memoryview(payload if isinstance(payload, bytes) else bytes(payload))  # immutable
    body = _single_field(view, 0, len(view), _MODEL_CHUNK_FIELD)
    if body is None:
        return None
    tag_at, start, end = body
    data = _single_field(view, start, end, _CHUNK_DATA_FIELD)
    if data is None:
        return None
    data_tag_at, data_start, data_end = data
    inner = bytes(view[start:data_tag_at]) + bytes(view[data_end:end])
    stripped = b"".join(
        (
            bytes(view[:tag_at]),
            _varint_bytes(_MODEL_CHUNK_FIELD << 3 | 2),
            _varint_bytes(len(inner)),
            inner,
            bytes(view[end:]),
        )
    )
    env = decode(stripped)
    chunk = env.body
    if not isinstance(chunk, ModelChunk) or chunk.data:
        return None
    # The data stays a view of ``payload`` (read-only bytes, kept alive by the view): hashing
    # and writing it need no copy of their own (measured ~70-100 us per 256 KiB chunk).
    full = ModelChunk(chunk.model_id, chunk.index, view[data_start:data_end])
    return replace(env, body=full)


def _single_field(view: memoryview, pos: int, end: int, wanted: int) -> tuple[int, int, int] | None:
    """(tag offset, value start, value end) of the one length-delimited field ``wanted`` in
    ``view[pos:end]``; None if it is absent, repeated, or the bytes are not plain protobuf."""
    found = None
    while pos < end:
        tag_at = pos
        key, pos = _varint(view, pos, end)
        wire = key & 7
        if wire == 0:
            _, pos = _varint(view, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(view, pos, end)
            if key >> 3 == wanted:
                if found is not None:
                    return None
                found = (tag_at, pos, pos + length)
            pos += length
        else:
            return None  # groups and invalid wire types: the generic decoder says why
        if pos > end:
            return None
    return found


def _varint(view: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while pos < end and shift < 64:
        b = view[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
    return 0, end + 1  # truncated or too long: past the end, which the caller refuses


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
