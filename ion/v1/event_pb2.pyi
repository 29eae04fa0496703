from ion.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Severity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEVERITY_UNSPECIFIED: _ClassVar[Severity]
    SEVERITY_DEBUG: _ClassVar[Severity]
    SEVERITY_INFO: _ClassVar[Severity]
    SEVERITY_WARNING: _ClassVar[Severity]
    SEVERITY_ERROR: _ClassVar[Severity]
    SEVERITY_CRITICAL: _ClassVar[Severity]
SEVERITY_UNSPECIFIED: Severity
SEVERITY_DEBUG: Severity
SEVERITY_INFO: Severity
SEVERITY_WARNING: Severity
SEVERITY_ERROR: Severity
SEVERITY_CRITICAL: Severity

class Event(_message.Message):
    __slots__ = ("type", "severity", "subject", "message", "attributes", "pipeline", "component")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    type: str
    severity: Severity
    subject: str
    message: str
    attributes: _containers.RepeatedCompositeFieldContainer[_common_pb2.StringPair]
    pipeline: str
    component: str
    def __init__(self, type: _Optional[str] = ..., severity: _Optional[_Union[Severity, str]] = ..., subject: _Optional[str] = ..., message: _Optional[str] = ..., attributes: _Optional[_Iterable[_Union[_common_pb2.StringPair, _Mapping]]] = ..., pipeline: _Optional[str] = ..., component: _Optional[str] = ...) -> None: ...

class Trigger(_message.Message):
    __slots__ = ("edge", "target_pipeline", "reason")
    EDGE_FIELD_NUMBER: _ClassVar[int]
    TARGET_PIPELINE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    edge: str
    target_pipeline: str
    reason: str
    def __init__(self, edge: _Optional[str] = ..., target_pipeline: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class DataRecords(_message.Message):
    __slots__ = ("columns", "values", "timestamps_ms", "payload", "content_type")
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_MS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedScalarFieldContainer[str]
    values: _containers.RepeatedScalarFieldContainer[float]
    timestamps_ms: _containers.RepeatedScalarFieldContainer[int]
    payload: bytes
    content_type: str
    def __init__(self, columns: _Optional[_Iterable[str]] = ..., values: _Optional[_Iterable[float]] = ..., timestamps_ms: _Optional[_Iterable[int]] = ..., payload: _Optional[bytes] = ..., content_type: _Optional[str] = ...) -> None: ...
