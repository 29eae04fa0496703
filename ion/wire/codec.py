"""Envelopes <-> bytes: the one entry point between the wire and the typed domain values.

``encode`` serialises deterministically (the same value always gives the same bytes).
``decode`` treats its input as hostile: whatever the bytes, it returns an ``Envelope`` or raises
``ion.errors.DecodeError`` with a message that says what was wrong, and nothing else.

Per-body converters (``<body>_to_proto`` / ``<body>_from_proto``) are re-exported here for code
that needs a body's wire form on its own, e.g. to sign a manifest or a command over its
deterministic encoding.  ``*_from_proto`` raise only ``DecodeError``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import message as pb_message

from ion.errors import DecodeError
from ion.model.messages import (
    Body,
    ChunkRequest,
    Command,
    CommandResult,
    DataRecords,
    DeliveryAck,
    Envelope,
    EnvelopeBatch,
    Event,
    HealthReport,
    Hop,
    IonDefinition,
    IonDeleted,
    ModelChunk,
    ModelManifest,
    NodeStatus,
    RetransmitRequest,
    StatsReport,
    Trigger,
    is_message_id,
)
from ion.v1 import envelope_pb2 as pb
from ion.wire.convert_common import decoding
from ion.wire.convert_event import (
    data_records_from_proto,
    data_records_to_proto,
    event_from_proto,
    event_to_proto,
    trigger_from_proto,
    trigger_to_proto,
)
from ion.wire.convert_health import (
    health_report_from_proto,
    health_report_to_proto,
    stats_report_from_proto,
    stats_report_to_proto,
)
from ion.wire.convert_model import (
    chunk_request_from_proto,
    chunk_request_to_proto,
    model_chunk_from_proto,
    model_chunk_to_proto,
    model_manifest_from_proto,
    model_manifest_to_proto,
)
from ion.wire.convert_node import (
    command_from_proto,
    command_result_from_proto,
    command_result_to_proto,
    command_to_proto,
    node_status_from_proto,
    node_status_to_proto,
)
from ion.wire.definition import (
    definition_from_proto,
    definition_to_proto,
    deleted_from_proto,
    deleted_to_proto,
)

__all__ = [
    "DEFAULT_MAX_SIZE",
    "body_kind",
    "chunk_request_from_proto",
    "chunk_request_to_proto",
    "command_from_proto",
    "command_result_from_proto",
    "command_result_to_proto",
    "command_to_proto",
    "data_records_from_proto",
    "data_records_to_proto",
    "decode",
    "definition_from_proto",
    "definition_to_proto",
    "deleted_from_proto",
    "deleted_to_proto",
    "delivery_ack_from_proto",
    "delivery_ack_to_proto",
    "encode",
    "envelope_batch_from_proto",
    "envelope_batch_to_proto",
    "envelope_from_proto",
    "envelope_to_proto",
    "event_from_proto",
    "event_to_proto",
    "health_report_from_proto",
    "health_report_to_proto",
    "model_chunk_from_proto",
    "model_chunk_to_proto",
    "model_manifest_from_proto",
    "model_manifest_to_proto",
    "node_status_from_proto",
    "node_status_to_proto",
    "retransmit_request_from_proto",
    "retransmit_request_to_proto",
    "stats_report_from_proto",
    "stats_report_to_proto",
    "trigger_from_proto",
    "trigger_to_proto",
]

DEFAULT_MAX_SIZE = 64 * 1024 * 1024
"""Inputs larger than this are refused before parsing (64 MiB)."""


def encode(envelope: Envelope) -> bytes:
    """The envelope's deterministic protobuf encoding.

    Raises ``ValueError`` or ``TypeError`` (from protobuf) for a value outside what the wire can
    hold, e.g. a negative sequence number: a bug in the caller, not bad input.
    """
    return envelope_to_proto(envelope).SerializeToString(deterministic=True)


def decode(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> Envelope:
    """The envelope in ``data``; ``DecodeError`` for anything that is not a valid one."""
    if len(data) > max_size:
        raise DecodeError(f"message of {len(data)} bytes is over the limit of {max_size} bytes")
    if not data:
        raise DecodeError("empty message: no envelope")
    m = pb.Envelope()
    try:
        m.ParseFromString(data)
    except pb_message.DecodeError as exc:
        raise DecodeError(f"not an ion.v1 envelope (protobuf: {exc})") from exc
    return envelope_from_proto(m)


def unbatched(envelope: Envelope) -> tuple[Envelope, ...]:
    """The envelopes ``envelope`` carries: those of an ``EnvelopeBatch``, else itself."""
    body = envelope.body
    return body.envelopes if isinstance(body, EnvelopeBatch) else (envelope,)


def decode_all(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> tuple[Envelope, ...]:
    """``decode``, a batch unpacked: every envelope an MQTT payload carries."""
    return unbatched(decode(data, max_size=max_size))


def body_kind(envelope: Envelope) -> str:
    """The name of the envelope's ``body`` oneof field, e.g. ``"node_status"``."""
    return _codec_of(envelope.body).kind


def envelope_to_proto(e: Envelope) -> pb.Envelope:
    m = pb.Envelope(
        message_id=e.message_id,
        ion=e.ion,
        source_node=e.source_node,
        created_ms=e.created_ms,
        sequence=e.sequence,
        stream=e.stream,
        route=[
            pb.Hop(node=h.node, received_ms=h.received_ms, forwarded_ms=h.forwarded_ms)
            for h in e.route
        ],
        correlation_id=e.correlation_id,
    )
    codec = _codec_of(e.body)
    field = getattr(m, codec.kind)
    # An empty body (a Ping-like message, an empty batch) must still mark the oneof as set.
    field.SetInParent()
    field.CopyFrom(codec.to_proto(e.body))
    return m


def envelope_from_proto(m: pb.Envelope) -> Envelope:
    return _envelope_from_proto(m, in_batch=False)


def envelope_batch_to_proto(b: EnvelopeBatch) -> pb.EnvelopeBatch:
    return pb.EnvelopeBatch(envelopes=[envelope_to_proto(e) for e in b.envelopes])


def envelope_batch_from_proto(m: pb.EnvelopeBatch) -> EnvelopeBatch:
    envelopes = []
    for i, inner in enumerate(m.envelopes):
        try:
            envelopes.append(_envelope_from_proto(inner, in_batch=True))
        except DecodeError as exc:
            raise DecodeError(f"envelope {i} of batch: {exc}") from exc
    with decoding("envelope batch"):
        return EnvelopeBatch(tuple(envelopes))


def retransmit_request_to_proto(r: RetransmitRequest) -> pb.RetransmitRequest:
    return pb.RetransmitRequest(
        stream=r.stream,
        from_sequence=r.from_sequence,
        to_sequence=r.to_sequence,
        requester=r.requester,
    )


def retransmit_request_from_proto(m: pb.RetransmitRequest) -> RetransmitRequest:
    with decoding("retransmit request"):
        return RetransmitRequest(
            stream=m.stream,
            from_sequence=m.from_sequence,
            to_sequence=m.to_sequence,
            requester=m.requester,
        )


def delivery_ack_to_proto(a: DeliveryAck) -> pb.DeliveryAck:
    return pb.DeliveryAck(stream=a.stream, up_to_sequence=a.up_to_sequence, receiver=a.receiver)


def delivery_ack_from_proto(m: pb.DeliveryAck) -> DeliveryAck:
    with decoding("delivery ack"):
        return DeliveryAck(stream=m.stream, up_to_sequence=m.up_to_sequence, receiver=m.receiver)


def _definition_from_proto(m: Any) -> IonDefinition:
    with decoding("ION definition"):
        return definition_from_proto(m)


def _deleted_from_proto(m: Any) -> IonDeleted:
    with decoding("ION tombstone"):
        return deleted_from_proto(m)


@dataclass(frozen=True, slots=True)
class _BodyCodec:
    kind: str  # the Envelope.body oneof field
    to_proto: Callable[[Any], pb_message.Message]
    from_proto: Callable[[Any], Body]


# One row per member of `Body`, as data; a test checks the table against the union.
_BODY_CODECS: Mapping[type, _BodyCodec] = {
    IonDefinition: _BodyCodec("definition", definition_to_proto, _definition_from_proto),
    IonDeleted: _BodyCodec("deletion", deleted_to_proto, _deleted_from_proto),
    NodeStatus: _BodyCodec("node_status", node_status_to_proto, node_status_from_proto),
    Command: _BodyCodec("command", command_to_proto, command_from_proto),
    CommandResult: _BodyCodec("command_result", command_result_to_proto, command_result_from_proto),
    ModelManifest: _BodyCodec("model_manifest", model_manifest_to_proto, model_manifest_from_proto),
    ModelChunk: _BodyCodec("model_chunk", model_chunk_to_proto, model_chunk_from_proto),
    ChunkRequest: _BodyCodec("chunk_request", chunk_request_to_proto, chunk_request_from_proto),
    HealthReport: _BodyCodec("health", health_report_to_proto, health_report_from_proto),
    Event: _BodyCodec("event", event_to_proto, event_from_proto),
    StatsReport: _BodyCodec("stats", stats_report_to_proto, stats_report_from_proto),
    DataRecords: _BodyCodec("data", data_records_to_proto, data_records_from_proto),
    Trigger: _BodyCodec("trigger", trigger_to_proto, trigger_from_proto),
    EnvelopeBatch: _BodyCodec("batch", envelope_batch_to_proto, envelope_batch_from_proto),
    RetransmitRequest: _BodyCodec(
        "retransmit_request", retransmit_request_to_proto, retransmit_request_from_proto
    ),
    DeliveryAck: _BodyCodec("ack", delivery_ack_to_proto, delivery_ack_from_proto),
}
_BY_KIND: Mapping[str, _BodyCodec] = {c.kind: c for c in _BODY_CODECS.values()}


def _codec_of(body: Body) -> _BodyCodec:
    codec = _BODY_CODECS.get(type(body))
    if codec is None:
        raise TypeError(f"{type(body).__name__} is not an envelope body")
    return codec


def _envelope_from_proto(m: pb.Envelope, *, in_batch: bool) -> Envelope:
    message_id = m.message_id
    if not message_id:
        raise DecodeError("envelope has no message_id")
    kind = m.WhichOneof("body")
    if kind is None:
        if not is_message_id(message_id):
            raise _bad_message_id(message_id)
        raise DecodeError(f"envelope {message_id} has no body (or one this version does not know)")
    if kind == "batch" and in_batch:
        raise DecodeError(f"envelope {message_id[:80]!r}: batch inside a batch")
    body = _BY_KIND[kind].from_proto(getattr(m, kind))
    # A plain try rather than ``decoding(...)``: this runs for every envelope of every batch,
    # and a context manager plus an f-string built each time cost about a third of it.  The
    # message id is checked once, by ``Envelope`` (a regular expression: 5 % of the decoding).
    try:
        return Envelope(
            message_id=message_id,
            ion=m.ion,
            source_node=m.source_node,
            created_ms=m.created_ms,
            sequence=m.sequence,
            stream=m.stream,
            route=tuple(
                Hop(node=h.node, received_ms=h.received_ms, forwarded_ms=h.forwarded_ms)
                for h in m.route
            )
            if m.route
            else (),
            correlation_id=m.correlation_id,
            body=body,
        )
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        if not is_message_id(message_id):
            raise _bad_message_id(message_id) from exc
        raise DecodeError(f"invalid envelope {message_id}: {exc}") from exc


def _bad_message_id(message_id: str) -> DecodeError:
    return DecodeError(f"invalid message_id {message_id[:80]!r}: want 32 lowercase hex digits")
