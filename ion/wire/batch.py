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
    inner = b"".join(_ENVELOPES_TAG + _varint(len(p)) + p for p in encoded)
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
    data = data_records_to_proto(body).SerializeToString(deterministic=True)
    return head + _DATA + _varint(len(data)) + data
