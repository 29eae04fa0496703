"""Many encoded envelopes in one MQTT payload, without decoding them again.

``EnvelopeBatch.envelopes`` is a repeated message field, which protobuf encodes as the plain
concatenation of its length-delimited elements; and two encoded messages concatenated parse as
their merge.  So a batch is: an encoded header envelope (id, source, time; no body) followed by
the ``batch`` field holding the already-encoded envelopes.  ``decode`` reads it like any other
envelope.
"""

from __future__ import annotations

from collections.abc import Sequence

from ion.v1 import envelope_pb2


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


_BATCH_FIELD_TAG = _varint((envelope_pb2.Envelope.BATCH_FIELD_NUMBER << 3) | 2)
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
