"""Local socket frames without a socket: the length-prefix framing (``node.local.framing``) and
the frame <-> bytes/JSON conversions (``ion.wire.local``)."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ion.errors import DecodeError
from ion.model.event import DataRecords, Event, Severity
from ion.model.health import Metric, StatsReport
from ion.model.local import (
    Delivered,
    Delivery,
    Emit,
    Hello,
    LocalFrame,
    Reply,
    Subscribe,
)
from ion.model.messages import Envelope, new_envelope
from ion.v1 import local_pb2
from ion.wire.local import (
    FrameContentError,
    decode_frame,
    encode_frame,
    frame_from_json,
    frame_to_json,
)
from node.local.framing import HEADER_SIZE, FrameDecoder, FramingError, encode

# Framing -----------------------------------------------------------------------------------


def test_frames_survive_any_cut_of_the_stream() -> None:
    payloads = [b"", b"a", b"hello world", bytes(range(256)) * 40]
    stream = b"".join(encode(p) for p in payloads)
    for step in (1, 2, 3, 7, 100, len(stream)):
        dec = FrameDecoder()
        got: list[bytes] = []
        for i in range(0, len(stream), step):
            got.extend(dec.feed(stream[i : i + step]))
        assert got == payloads, step
        assert dec.buffered == 0
        dec.check_end()


def test_several_frames_in_one_read_come_out_in_order() -> None:
    dec = FrameDecoder()
    frames = [f"frame {i}".encode() for i in range(1000)]
    assert dec.feed(b"".join(encode(f) for f in frames)) == frames


def test_partial_frame_is_kept_until_complete() -> None:
    dec = FrameDecoder()
    data = encode(b"abcdef")
    assert dec.feed(data[:2]) == []  # half a header
    assert dec.feed(data[2:6]) == []  # header and two bytes
    assert dec.buffered == 6
    with pytest.raises(FramingError, match="inside a frame"):
        dec.check_end()
    assert dec.feed(data[6:] + data[:1]) == [b"abcdef"]
    assert dec.buffered == 1


def test_oversized_frame_is_refused_from_its_header_alone() -> None:
    dec = FrameDecoder(max_frame_size=10)
    assert dec.feed(encode(b"x" * 10)) == [b"x" * 10]
    # Only the header: nothing of the 4 GiB it announces is buffered or awaited.
    with pytest.raises(FramingError, match="4294967295 bytes announced"):
        dec.feed(struct.pack(">I", 2**32 - 1))
    assert dec.buffered == 0
    # The stream is out of sync for good: every later call fails the same way.
    with pytest.raises(FramingError):
        dec.feed(encode(b"ok"))


def test_frames_before_an_oversized_one_are_lost_with_the_connection() -> None:
    dec = FrameDecoder(max_frame_size=10)
    with pytest.raises(FramingError):
        dec.feed(encode(b"fine") + encode(b"y" * 11))


def test_encode_refuses_what_the_peer_would_refuse() -> None:
    with pytest.raises(ValueError, match="over the limit"):
        encode(b"x" * 11, max_frame_size=10)
    assert encode(b"abc")[:HEADER_SIZE] == b"\x00\x00\x00\x03"


def test_decoder_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max frame size"):
        FrameDecoder(0)
    with pytest.raises(ValueError, match="max frame size"):
        FrameDecoder(2**32)


@given(st.lists(st.binary(max_size=64), max_size=30), st.integers(1, 50))
def test_any_payloads_any_chunking(payloads: list[bytes], step: int) -> None:
    stream = b"".join(encode(p) for p in payloads)
    dec = FrameDecoder(max_frame_size=64)
    got: list[bytes] = []
    for i in range(0, len(stream), step):
        got.extend(dec.feed(stream[i : i + step]))
    assert got == payloads


@given(st.binary(max_size=2000))
def test_garbage_yields_bounded_frames_or_a_framing_error(data: bytes) -> None:
    dec = FrameDecoder(max_frame_size=100)
    try:
        frames = dec.feed(data)
    except FramingError:
        return
    assert all(len(f) <= 100 for f in frames)
    assert dec.buffered < HEADER_SIZE + 100


# Frames <-> bytes --------------------------------------------------------------------------


def _envelope(body: object = None) -> Envelope:
    return new_envelope(
        body if body is not None else DataRecords(payload=b"x" * 100),  # type: ignore[arg-type]
        source_node="edge-1",
        now_ms=1_700_000_000_000,
        ion="demo",
    )


FRAMES = [
    LocalFrame(1, Hello("demo", "p", "c", token="t0k", protocol_version=1)),
    LocalFrame(2, Emit("out", _envelope())),
    LocalFrame(3, Emit("", _envelope(StatsReport("p", "c", (Metric("rows", 3.0),))))),
    LocalFrame(4, Subscribe(("in", "model"), window=8)),
    LocalFrame(4, Delivery(7, "in", _envelope(Event("x.y", Severity.WARNING, message="m")))),
    LocalFrame(5, Reply.success()),
    LocalFrame(6, Reply.failure("outbox full", retryable=True)),
    LocalFrame(0, Delivered(7)),
    LocalFrame(2**64 - 1, Subscribe()),
]


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: type(f.message).__name__)
def test_every_frame_kind_round_trips(frame: LocalFrame) -> None:
    assert decode_frame(encode_frame(frame)) == frame
    line = frame_to_json(frame)
    assert "\n" not in line
    assert frame_from_json(line) == frame


def test_token_stays_out_of_repr() -> None:
    assert "t0k" not in repr(FRAMES[0])


@pytest.mark.parametrize(
    "data",
    [
        b"",  # no kind
        b"\xff\xff\xff",  # not protobuf
        local_pb2.LocalFrame(request_id=5).SerializeToString(),  # no kind
        bytes(random.Random(7).getrandbits(8) for _ in range(64)),
    ],
)
def test_bytes_that_are_no_frame_raise_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_frame(data)


def test_an_emit_may_leave_its_message_id_to_the_agent() -> None:
    m = local_pb2.LocalFrame(request_id=9)
    m.emit.edge = "out"
    m.emit.envelope.data.payload = b"abc"
    frame = decode_frame(m.SerializeToString())
    assert isinstance(frame.message, Emit)
    assert len(frame.message.envelope.message_id) == 32


def test_invalid_content_names_its_request() -> None:
    m = local_pb2.LocalFrame(request_id=42)
    m.emit.edge = "out"
    m.emit.envelope.message_id = "0" * 32  # but no body
    with pytest.raises(FrameContentError) as info:
        decode_frame(m.SerializeToString())
    assert info.value.request_id == 42
    m.emit.envelope.health.pipeline = "p"
    h = m.emit.envelope.health.histograms.add(feature="f")
    h.bin_edges.extend([0.0, 1.0])
    h.counts.extend([1, 2])  # two counts for one bin
    with pytest.raises(FrameContentError, match="histogram"):
        decode_frame(m.SerializeToString())


def test_an_ok_reply_is_not_an_empty_frame() -> None:
    # proto3 drops default fields: the oneof must still say "reply".
    assert decode_frame(encode_frame(LocalFrame(0, Reply()))).message == Reply()


def test_json_garbage_raises_decode_error() -> None:
    for text in ("", "{", '{"emit": 3}', '{"nope": {}}', "[]"):
        with pytest.raises(DecodeError):
            frame_from_json(text)


def test_domain_values_check_themselves() -> None:
    with pytest.raises(ValueError, match="request id"):
        LocalFrame(-1, Reply())
    with pytest.raises(ValueError, match="successful reply"):
        Reply(ok=True, error="x")
    with pytest.raises(ValueError, match="window"):
        Subscribe(window=2**32)
    with pytest.raises(ValueError, match="delivered id"):
        Delivered(2**64)
    with pytest.raises(ValueError, match="delivery id"):
        Delivery(-1, "in", _envelope())
