from ion.v1 import envelope_pb2 as _envelope_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LocalFrame(_message.Message):
    __slots__ = ("request_id", "hello", "emit", "subscribe", "delivery", "reply", "delivered")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    EMIT_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    hello: Hello
    emit: Emit
    subscribe: Subscribe
    delivery: Delivery
    reply: Reply
    delivered: Delivered
    def __init__(self, request_id: _Optional[int] = ..., hello: _Optional[_Union[Hello, _Mapping]] = ..., emit: _Optional[_Union[Emit, _Mapping]] = ..., subscribe: _Optional[_Union[Subscribe, _Mapping]] = ..., delivery: _Optional[_Union[Delivery, _Mapping]] = ..., reply: _Optional[_Union[Reply, _Mapping]] = ..., delivered: _Optional[_Union[Delivered, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("protocol_version", "ion", "pipeline", "component", "token")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ION_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    ion: str
    pipeline: str
    component: str
    token: str
    def __init__(self, protocol_version: _Optional[int] = ..., ion: _Optional[str] = ..., pipeline: _Optional[str] = ..., component: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class Emit(_message.Message):
    __slots__ = ("edge", "envelope")
    EDGE_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    edge: str
    envelope: _envelope_pb2.Envelope
    def __init__(self, edge: _Optional[str] = ..., envelope: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ...) -> None: ...

class Subscribe(_message.Message):
    __slots__ = ("edges", "window")
    EDGES_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    edges: _containers.RepeatedScalarFieldContainer[str]
    window: int
    def __init__(self, edges: _Optional[_Iterable[str]] = ..., window: _Optional[int] = ...) -> None: ...

class Delivery(_message.Message):
    __slots__ = ("delivery_id", "edge", "envelope")
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    EDGE_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    delivery_id: int
    edge: str
    envelope: _envelope_pb2.Envelope
    def __init__(self, delivery_id: _Optional[int] = ..., edge: _Optional[str] = ..., envelope: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ...) -> None: ...

class Reply(_message.Message):
    __slots__ = ("ok", "error", "retryable")
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    error: str
    retryable: bool
    def __init__(self, ok: _Optional[bool] = ..., error: _Optional[str] = ..., retryable: _Optional[bool] = ...) -> None: ...

class Delivered(_message.Message):
    __slots__ = ("up_to_delivery_id",)
    UP_TO_DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    up_to_delivery_id: int
    def __init__(self, up_to_delivery_id: _Optional[int] = ...) -> None: ...
