"""Envelopes framed by hand where it pays: batches of encoded envelopes, and the bulk of new ones.

``EnvelopeBatch.envelopes`` is a repeated message field, which protobuf encodes as the plain
concatenation of its length-delimited elements; and two encoded messages concatenated parse as
their merge.  So a batch is: an encoded header envelope (id, source, time; no body) followed by
the ``batch`` field holding the already-encoded envelopes, never decoded again.  ``decode``
reads it like any other envelope.

The same rule makes ``encode_envelope`` cheap: protobuf writes known fields in ascending field
number, and an envelope's header fields (1-8) all come before its body (20 and up), so a new
``DataRecords`` envelope is its header, written here, followed by its body, serialised by
protobuf: the same bytes as ``codec.encode``, at about half the cost (the agent encodes every
message it sends once, so that cost is per message).
"""

from __future__ import annotations

from collections.abc import Sequence

from ion.model.event import DataRecords
from ion.model.messages import Envelope
from ion.v1 import envelope_pb2
from ion.wire.codec import encode
from ion.wire.convert_event import data_records_to_proto


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _ONE_BYTE[n]
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


_ONE_BYTE = [bytes((i,)) for i in range(0x80)]


def _tag(field_number: int, wire_type: int) -> bytes:
    return _varint((field_number << 3) | wire_type)


_VARINT, _LEN = 0, 2
_E = envelope_pb2.Envelope
_BATCH_FIELD_TAG = _tag(_E.BATCH_FIELD_NUMBER, _LEN)
_ID = _tag(_E.MESSAGE_ID_FIELD_NUMBER, _LEN)
_ION = _tag(_E.ION_FIELD_NUMBER, _LEN)
_SOURCE = _tag(_E.SOURCE_NODE_FIELD_NUMBER, _LEN)
_CREATED = _tag(_E.CREATED_MS_FIELD_NUMBER, _VARINT)
_SEQUENCE = _tag(_E.SEQUENCE_FIELD_NUMBER, _VARINT)
_STREAM = _tag(_E.STREAM_FIELD_NUMBER, _LEN)
_CORRELATION = _tag(_E.CORRELATION_ID_FIELD_NUMBER, _LEN)
_DATA = _tag(_E.DATA_FIELD_NUMBER, _LEN)
_U64 = 1 << 64
_ENVELOPES_TAG = _varint((envelope_pb2.EnvelopeBatch.ENVELOPES_FIELD_NUMBER << 3) | 2)


def batch_payload(
    encoded: Sequence[bytes], *, message_id: str, source_node: str, now_ms: int
) -> bytes:
    """One payload carrying the already-encoded envelopes ``encoded`` (none of them a batch)."""
    return batch_around(
        batch_inner(encoded), message_id=message_id, source_node=source_node, now_ms=now_ms
    )


def batch_inner(encoded: Sequence[bytes]) -> bytes:
    """The body of a batch holding ``encoded``: a part that batches concatenate.

    Concatenated inner parts are the inner part of the concatenated batch, so a sender can
    store a run of messages framed once and pack several such runs (and single envelopes,
    through this function) into one MQTT message without decoding or re-framing them."""
    return b"".join([_ENVELOPES_TAG + _varint(len(p)) + p for p in encoded])


def batch_around(inner: bytes, *, message_id: str, source_node: str, now_ms: int) -> bytes:
    """A batch envelope around ``inner`` (``batch_inner`` parts, concatenated)."""
    header = envelope_pb2.Envelope(
        message_id=message_id, source_node=source_node, created_ms=now_ms
    ).SerializeToString()
    return header + _BATCH_FIELD_TAG + _varint(len(inner)) + inner


def _string(tag: bytes, value: str) -> bytes:
    if not value:
        return b""  # proto3 leaves out fields at their default
    data = value.encode()
    return tag + _varint(len(data)) + data


# The same few ION names, node ids and streams head every message a node sends: their encoded
# fields are kept (bounded, for a process that sees many).
_FIELDS: dict[tuple[bytes, str], bytes] = {}
_MAX_FIELDS = 4096


def _known(tag: bytes, value: str) -> bytes:
    key = (tag, value)
    field = _FIELDS.get(key)
    if field is None:
        field = _string(tag, value)
        if len(_FIELDS) < _MAX_FIELDS:
            _FIELDS[key] = field
    return field


def encode_envelope(envelope: Envelope) -> bytes:
    """``codec.encode(envelope)``, byte for byte; written here for a ``DataRecords`` envelope
    without a route (a new one), by ``codec.encode`` for anything else."""
    body = envelope.body
    created, sequence = envelope.created_ms, envelope.sequence
    if (
        type(body) is not DataRecords
        or envelope.route
        or not 0 <= sequence < _U64
        or not -(1 << 63) <= created < 1 << 63
    ):
        return encode(envelope)  # also raises what protobuf raises for bad values
    try:
        head = b"".join((
            _string(_ID, envelope.message_id),
            _known(_ION, envelope.ion),
            _known(_SOURCE, envelope.source_node),
            _CREATED + _varint(created % _U64) if created else b"",
            _SEQUENCE + _varint(sequence) if sequence else b"",
            _known(_STREAM, envelope.stream),
            _string(_CORRELATION, envelope.correlation_id),
        ))  # fmt: skip
    except UnicodeEncodeError:
        return encode(envelope)
    data = _records_bytes(body)
    return head + _DATA + _varint(len(data)) + data


_RECORDS = data_records_to_proto  # the general case
_PAYLOAD = _tag(4, _LEN)  # DataRecords.payload (proto/ion/v1/event.proto)
_CONTENT_TYPE = _tag(5, _LEN)  # DataRecords.content_type


def _records_bytes(body: DataRecords) -> bytes:
    """``body``'s deterministic encoding; written here for payload-only records (no columns,
    values or timestamps: opaque application messages), by protobuf otherwise."""
    if body.columns or body.values or body.timestamps_ms:
        return _RECORDS(body).SerializeToString(deterministic=True)
    payload = body.payload
    out = _PAYLOAD + _varint(len(payload)) + payload if payload else b""
    if body.content_type:
        out += _string(_CONTENT_TYPE, body.content_type)
    return out


def encode_records_run(
    bodies: Sequence[DataRecords],
    *,
    message_ids: Sequence[str],
    ion: str,
    source_node: str,
    stream: str,
    first_sequence: int,
    now_ms: int,
) -> list[bytes]:
    """New envelopes for ``bodies``, sequenced from ``first_sequence`` on, with the same
    header otherwise: each the bytes ``codec.encode`` gives for it (the fields that do not
    change along the run are encoded once).  Raises ``ValueError`` for a sequence or time the
    wire cannot hold, ``TypeError`` for a body that is not ``DataRecords``."""
    last = first_sequence + len(bodies) - 1
    if first_sequence <= 0 or last >= _U64 or not 0 <= now_ms < 1 << 63:
        raise ValueError(f"sequence {first_sequence}..{last} or time {now_ms} out of range")
    middle = b"".join((
        _known(_ION, ion),
        _known(_SOURCE, source_node),
        _CREATED + _varint(now_ms) if now_ms else b"",
    ))  # fmt: skip
    tail = _known(_STREAM, stream)
    out = []
    seq = first_sequence
    for body, mid in zip(bodies, message_ids, strict=True):
        if type(body) is not DataRecords:
            raise TypeError(f"{type(body).__name__} is not DataRecords")
        data = _records_bytes(body)
        parts = (
            _ID, _varint(len(mid)), mid.encode(), middle, _SEQUENCE, _varint(seq), tail,
            _DATA, _varint(len(data)), data,
        )  # fmt: skip
        out.append(b"".join(parts))
        seq += 1
    return out
