"""Local socket frames <-> bytes (and JSON): the only module that touches ``local_pb2``.

``encode_frame`` / ``decode_frame`` handle one frame's protobuf bytes; the 4-byte length prefix
is ``node.local.framing``'s business.  ``decode_frame`` treats its input as hostile and raises
only ``DecodeError``:

- ``DecodeError`` itself: the bytes are not a frame at all (not protobuf, no kind).  Nothing in
  them can be trusted, including the request id, so the connection should be closed.
- ``FrameContentError`` (a ``DecodeError``): the frame parsed and names its ``request_id``, but
  what it carries is invalid (e.g. an envelope whose histogram counts do not fit its bins).
  That request can be answered with an error while the connection goes on.

``frame_to_json`` / ``frame_from_json`` give the same frames as one line of proto3 JSON
(snake_case field names): what the SDK writes when it runs without an agent, and reads back
as deliveries, so one standalone pipeline's output can be another's input.
"""

from __future__ import annotations

import json

from google.protobuf import json_format
from google.protobuf import message as pb_message

from ion.errors import DecodeError
from ion.model.local import (
    Delivered,
    Delivery,
    Emit,
    Hello,
    LocalFrame,
    LocalMessage,
    Reply,
    Subscribe,
)
from ion.model.messages import Envelope, new_message_id
from ion.v1 import envelope_pb2
from ion.v1 import local_pb2 as pb
from ion.wire.codec import envelope_from_proto, envelope_to_proto
from ion.wire.convert_common import decoding

__all__ = [
    "FrameContentError",
    "decode_frame",
    "encode_frame",
    "frame_from_json",
    "frame_from_proto",
    "frame_to_json",
    "frame_to_proto",
]


class FrameContentError(DecodeError):
    """A well-formed frame whose content is invalid; ``request_id`` is the request to fail."""

    def __init__(self, request_id: int, message: str) -> None:
        super().__init__(message)
        self.request_id = request_id


def encode_frame(frame: LocalFrame) -> bytes:
    """The frame's protobuf bytes (without the length prefix)."""
    return frame_to_proto(frame).SerializeToString()


def decode_frame(data: bytes) -> LocalFrame:
    """The frame in ``data``; ``DecodeError`` (maybe ``FrameContentError``) if it is not one.

    Size limits are the framing's job: by the time bytes get here their length was checked.
    """
    m = pb.LocalFrame()
    try:
        m.ParseFromString(data)
    except pb_message.DecodeError as exc:
        raise DecodeError(f"not an ion.v1 local frame (protobuf: {exc})") from exc
    return frame_from_proto(m)


def frame_to_json(frame: LocalFrame) -> str:
    """One line of proto3 JSON (snake_case names, sorted keys, no newline inside)."""
    d = json_format.MessageToDict(frame_to_proto(frame), preserving_proto_field_name=True)
    return json.dumps(d, sort_keys=True, separators=(",", ":"))


def frame_from_json(text: str) -> LocalFrame:
    """The frame in one line of proto3 JSON; ``DecodeError`` for anything else."""
    m = pb.LocalFrame()
    try:
        json_format.Parse(text, m)
    except json_format.ParseError as exc:
        raise DecodeError(f"not an ion.v1 local frame in JSON: {exc}") from exc
    return frame_from_proto(m)


def frame_to_proto(frame: LocalFrame) -> pb.LocalFrame:
    m = pb.LocalFrame(request_id=frame.request_id)
    msg = frame.message
    if isinstance(msg, Emit):
        m.emit.edge = msg.edge
        m.emit.envelope.CopyFrom(envelope_to_proto(msg.envelope))
    elif isinstance(msg, Reply):
        m.reply.SetInParent()  # an ok reply has only default fields, yet must mark the oneof
        m.reply.ok = msg.ok
        m.reply.error = msg.error
        m.reply.retryable = msg.retryable
    elif isinstance(msg, Delivery):
        m.delivery.delivery_id = msg.delivery_id
        m.delivery.edge = msg.edge
        m.delivery.envelope.CopyFrom(envelope_to_proto(msg.envelope))
    elif isinstance(msg, Delivered):
        m.delivered.SetInParent()
        m.delivered.up_to_delivery_id = msg.up_to_delivery_id
    elif isinstance(msg, Subscribe):
        m.subscribe.SetInParent()
        m.subscribe.edges.extend(msg.edges)
        m.subscribe.window = msg.window
    elif isinstance(msg, Hello):
        m.hello.SetInParent()
        m.hello.protocol_version = msg.protocol_version
        m.hello.ion = msg.ion
        m.hello.pipeline = msg.pipeline
        m.hello.component = msg.component
        m.hello.token = msg.token
    else:  # pragma: no cover - the union is closed; mypy checks the branches above
        raise TypeError(f"{type(msg).__name__} is not a local frame message")
    return m


def frame_from_proto(m: pb.LocalFrame) -> LocalFrame:
    kind = m.WhichOneof("kind")
    if kind is None:
        raise DecodeError("local frame has no kind (or one this version does not know)")
    rid = m.request_id
    message: LocalMessage
    if kind == "emit":
        message = Emit(edge=m.emit.edge, envelope=_envelope(rid, m.emit.envelope, fill_id=True))
    elif kind == "reply":
        with decoding("reply"):
            message = Reply(ok=m.reply.ok, error=m.reply.error, retryable=m.reply.retryable)
    elif kind == "delivery":
        d = m.delivery
        with decoding("delivery"):
            message = Delivery(
                delivery_id=d.delivery_id,
                edge=d.edge,
                envelope=_envelope(rid, d.envelope, fill_id=False),
            )
    elif kind == "delivered":
        message = Delivered(up_to_delivery_id=m.delivered.up_to_delivery_id)
    elif kind == "subscribe":
        message = Subscribe(edges=tuple(m.subscribe.edges), window=m.subscribe.window)
    else:
        h = m.hello
        message = Hello(
            ion=h.ion,
            pipeline=h.pipeline,
            component=h.component,
            token=h.token,
            protocol_version=h.protocol_version,
        )
    return LocalFrame(request_id=rid, message=message)


def _envelope(request_id: int, m: envelope_pb2.Envelope, *, fill_id: bool) -> Envelope:
    # An emitted envelope may leave its id to the agent (local.proto says so); the domain value
    # always has one, so a fresh id is given here, where the wire meets the domain.
    if fill_id and not m.message_id:
        m.message_id = new_message_id()
    try:
        return envelope_from_proto(m)
    except DecodeError as exc:
        raise FrameContentError(request_id, str(exc)) from exc
