from ion.v1 import definition_pb2 as _definition_pb2
from ion.v1 import event_pb2 as _event_pb2
from ion.v1 import health_pb2 as _health_pb2
from ion.v1 import model_pb2 as _model_pb2
from ion.v1 import node_pb2 as _node_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Envelope(_message.Message):
    __slots__ = ("message_id", "ion", "source_node", "created_ms", "sequence", "stream", "route", "correlation_id", "definition", "deletion", "node_status", "command", "command_result", "model_manifest", "model_chunk", "chunk_request", "health", "event", "stats", "data", "trigger", "batch", "retransmit_request", "ack")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    ION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_NODE_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    DELETION_FIELD_NUMBER: _ClassVar[int]
    NODE_STATUS_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    COMMAND_RESULT_FIELD_NUMBER: _ClassVar[int]
    MODEL_MANIFEST_FIELD_NUMBER: _ClassVar[int]
    MODEL_CHUNK_FIELD_NUMBER: _ClassVar[int]
    CHUNK_REQUEST_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    RETRANSMIT_REQUEST_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    ion: str
    source_node: str
    created_ms: int
    sequence: int
    stream: str
    route: _containers.RepeatedCompositeFieldContainer[Hop]
    correlation_id: str
    definition: _definition_pb2.IonDefinition
    deletion: _definition_pb2.IonDeleted
    node_status: _node_pb2.NodeStatus
    command: _node_pb2.Command
    command_result: _node_pb2.CommandResult
    model_manifest: _model_pb2.ModelManifest
    model_chunk: _model_pb2.ModelChunk
    chunk_request: _model_pb2.ChunkRequest
    health: _health_pb2.HealthReport
    event: _event_pb2.Event
    stats: _health_pb2.StatsReport
    data: _event_pb2.DataRecords
    trigger: _event_pb2.Trigger
    batch: EnvelopeBatch
    retransmit_request: RetransmitRequest
    ack: DeliveryAck
    def __init__(self, message_id: _Optional[str] = ..., ion: _Optional[str] = ..., source_node: _Optional[str] = ..., created_ms: _Optional[int] = ..., sequence: _Optional[int] = ..., stream: _Optional[str] = ..., route: _Optional[_Iterable[_Union[Hop, _Mapping]]] = ..., correlation_id: _Optional[str] = ..., definition: _Optional[_Union[_definition_pb2.IonDefinition, _Mapping]] = ..., deletion: _Optional[_Union[_definition_pb2.IonDeleted, _Mapping]] = ..., node_status: _Optional[_Union[_node_pb2.NodeStatus, _Mapping]] = ..., command: _Optional[_Union[_node_pb2.Command, _Mapping]] = ..., command_result: _Optional[_Union[_node_pb2.CommandResult, _Mapping]] = ..., model_manifest: _Optional[_Union[_model_pb2.ModelManifest, _Mapping]] = ..., model_chunk: _Optional[_Union[_model_pb2.ModelChunk, _Mapping]] = ..., chunk_request: _Optional[_Union[_model_pb2.ChunkRequest, _Mapping]] = ..., health: _Optional[_Union[_health_pb2.HealthReport, _Mapping]] = ..., event: _Optional[_Union[_event_pb2.Event, _Mapping]] = ..., stats: _Optional[_Union[_health_pb2.StatsReport, _Mapping]] = ..., data: _Optional[_Union[_event_pb2.DataRecords, _Mapping]] = ..., trigger: _Optional[_Union[_event_pb2.Trigger, _Mapping]] = ..., batch: _Optional[_Union[EnvelopeBatch, _Mapping]] = ..., retransmit_request: _Optional[_Union[RetransmitRequest, _Mapping]] = ..., ack: _Optional[_Union[DeliveryAck, _Mapping]] = ...) -> None: ...

class Hop(_message.Message):
    __slots__ = ("node", "received_ms", "forwarded_ms")
    NODE_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_MS_FIELD_NUMBER: _ClassVar[int]
    FORWARDED_MS_FIELD_NUMBER: _ClassVar[int]
    node: str
    received_ms: int
    forwarded_ms: int
    def __init__(self, node: _Optional[str] = ..., received_ms: _Optional[int] = ..., forwarded_ms: _Optional[int] = ...) -> None: ...

class EnvelopeBatch(_message.Message):
    __slots__ = ("envelopes",)
    ENVELOPES_FIELD_NUMBER: _ClassVar[int]
    envelopes: _containers.RepeatedCompositeFieldContainer[Envelope]
    def __init__(self, envelopes: _Optional[_Iterable[_Union[Envelope, _Mapping]]] = ...) -> None: ...

class RetransmitRequest(_message.Message):
    __slots__ = ("stream", "from_sequence", "to_sequence", "requester")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TO_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    stream: str
    from_sequence: int
    to_sequence: int
    requester: str
    def __init__(self, stream: _Optional[str] = ..., from_sequence: _Optional[int] = ..., to_sequence: _Optional[int] = ..., requester: _Optional[str] = ...) -> None: ...

class DeliveryAck(_message.Message):
    __slots__ = ("stream", "up_to_sequence", "receiver")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    UP_TO_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    stream: str
    up_to_sequence: int
    receiver: str
    def __init__(self, stream: _Optional[str] = ..., up_to_sequence: _Optional[int] = ..., receiver: _Optional[str] = ...) -> None: ...
