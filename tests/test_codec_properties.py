"""Properties of the envelope codec: lossless round trips for every body kind, and nothing
but ``DecodeError`` out of ``decode`` whatever the bytes."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from strategies import BODIES, envelopes, wire_envelopes

from ion.errors import DecodeError
from ion.model.messages import Envelope
from ion.wire import codec
from ion.wire.codec import body_kind, decode, encode

# Generated values are nested and sizeable; no deadline, so a slow CI machine is no failure.
ROUND_TRIP = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("kind", sorted(BODIES))
@ROUND_TRIP
@given(data=st.data())
def test_every_body_kind_round_trips_losslessly(kind: str, data: st.DataObject) -> None:
    e = data.draw(envelopes(BODIES[kind]))
    encoded = encode(e)
    assert body_kind(e) == kind
    assert decode(encoded) == e
    # Deterministic: re-encoding what was decoded gives the same bytes.
    assert encode(decode(encoded)) == encoded
    assert codec.envelope_from_proto(codec.envelope_to_proto(e)) == e


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    try:
        e = decode(data)
    except DecodeError:
        return
    assert isinstance(e, Envelope)


@st.composite
def mutated_encodings(draw: st.DrawFn) -> bytes:
    """A valid encoding with a few bytes changed, inserted, deleted or cut off: close enough to
    valid that parsing often succeeds and the conversion has to cope."""
    data = bytearray(encode(draw(envelopes())))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if op == "flip":
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[i]
        else:
            del data[i:]
    return bytes(data)


@pytest.mark.slow
@FUZZ
@given(mutated_encodings())
def test_mutated_encodings_raise_only_decode_error(data: bytes) -> None:
    try:
        e = decode(data)
    except DecodeError:
        return
    # Whatever decodes is a valid value: it encodes, and that encoding is a fixed point.  Bytes,
    # not values, are compared: a mutation can make a NaN.
    again = encode(e)
    assert encode(decode(again)) == again


@pytest.mark.slow
@FUZZ
@given(wire_envelopes())
def test_arbitrary_wire_messages_raise_only_decode_error(data: bytes) -> None:
    # Every field holds any value of its wire type: parsing succeeds, conversion must cope.
    try:
        e = decode(data)
    except DecodeError:
        return
    again = encode(e)
    assert encode(decode(again)) == again


@ROUND_TRIP
@given(envelopes(), st.integers(0, 64))
def test_size_limit_is_exact(e: Envelope, slack: int) -> None:
    data = encode(e)
    assert decode(data, max_size=len(data) + slack) == e
    assume(len(data) > 0)
    with pytest.raises(DecodeError, match="over the limit"):
        decode(data, max_size=len(data) - 1)
