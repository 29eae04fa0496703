"""The receiver's cheap decoding of model chunk envelopes (``decode_chunk_envelope``): the same
result as the generic decoder for every chunk envelope, and no opinion on anything else."""

from __future__ import annotations

import random

import pytest

from ion.errors import DecodeError
from ion.model.manifest import ChunkRequest, ModelChunk
from ion.model.messages import Envelope, Hop, new_envelope
from ion.wire.codec import decode, encode
from node.agent.envelopes import decode_chunk_envelope


def _chunk_envelope(rng: random.Random) -> Envelope:
    data = rng.randbytes(rng.choice([0, 1, 127, 128, 300, 70_000, 256 * 1024]))
    env = new_envelope(
        ModelChunk(f"{rng.getrandbits(256):064x}", rng.choice([0, 1, 127, 128, 2**31]), data),
        source_node=rng.choice(["", "edge-1", "gw"]),
        now_ms=rng.choice([0, 1, 1_700_000_000_000]),
        ion=rng.choice(["", "fleet"]),
        sequence=rng.choice([0, 1, 300, 2**40]),
        stream=rng.choice(["", "ion/v1/x/model/chunks"]),
        correlation_id=rng.choice(["", "c" * 40]),
    )
    if rng.random() < 0.5:
        env = Envelope(**{**{f: getattr(env, f) for f in env.__dataclass_fields__},
                          "route": (Hop("gw", 5, 6), Hop("cloud", 7, 0))})  # fmt: skip
    return env


def test_chunk_envelopes_decode_as_the_generic_decoder_does() -> None:
    rng = random.Random(7)
    for _ in range(300):
        env = _chunk_envelope(rng)
        payload = encode(env)
        got = decode_chunk_envelope(payload)
        if not env.body.data:  # type: ignore[union-attr]
            assert got is None  # no data field on the wire: left to the generic decoder
            continue
        assert got == decode(payload) == env


def test_anything_else_is_left_to_the_generic_decoder() -> None:
    req = new_envelope(ChunkRequest("a" * 64, (1, 2)), source_node="n", now_ms=1)
    assert decode_chunk_envelope(encode(req)) is None
    assert decode_chunk_envelope(b"") is None
    assert decode_chunk_envelope(b"\xff\xff\xff") is None  # a truncated varint


def test_truncated_and_repeated_fields_are_not_guessed() -> None:
    env = new_envelope(ModelChunk("b" * 64, 3, b"x" * 1000), source_node="n", now_ms=1)
    payload = encode(env)
    for cut in (1, 10, len(payload) // 2, len(payload) - 1):
        assert decode_chunk_envelope(payload[:cut]) is None
        with pytest.raises(DecodeError):
            decode(payload[:cut])
    # The body field twice: protobuf merges the two messages; the fast path declines.
    body_at = payload.index(b"\xd2\x01")  # field 26, length-delimited
    doubled = payload + payload[body_at:]
    assert decode_chunk_envelope(doubled) is None


def test_a_chunk_with_a_bad_header_is_refused_like_the_generic_decoder_does() -> None:
    env = new_envelope(ModelChunk("c" * 64, 3, b"y" * 500), source_node="n", now_ms=1)
    payload = bytearray(encode(env))
    i = payload.index(env.message_id.encode())
    payload[i] = ord("Z")  # the message id is no longer lowercase hex
    with pytest.raises(DecodeError):
        decode(bytes(payload))
    with pytest.raises(DecodeError):
        decode_chunk_envelope(bytes(payload))
