from ion.v1 import common_pb2 as _common_pb2
from ion.v1 import health_pb2 as _health_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ArtifactLayout(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ARTIFACT_LAYOUT_UNSPECIFIED: _ClassVar[ArtifactLayout]
    ARTIFACT_LAYOUT_FILE: _ClassVar[ArtifactLayout]
    ARTIFACT_LAYOUT_DIRECTORY: _ClassVar[ArtifactLayout]
ARTIFACT_LAYOUT_UNSPECIFIED: ArtifactLayout
ARTIFACT_LAYOUT_FILE: ArtifactLayout
ARTIFACT_LAYOUT_DIRECTORY: ArtifactLayout

class ModelManifest(_message.Message):
    __slots__ = ("model_id", "version", "ion", "edge", "producer_pipeline", "producer_node", "size_bytes", "chunk_size", "chunk_sha256", "format", "layout", "file_name", "metrics", "baseline", "created_ms", "annotations", "signature")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ION_FIELD_NUMBER: _ClassVar[int]
    EDGE_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_PIPELINE_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_NODE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SHA256_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    ANNOTATIONS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    version: str
    ion: str
    edge: str
    producer_pipeline: str
    producer_node: str
    size_bytes: int
    chunk_size: int
    chunk_sha256: _containers.RepeatedScalarFieldContainer[str]
    format: str
    layout: ArtifactLayout
    file_name: str
    metrics: _containers.RepeatedCompositeFieldContainer[_common_pb2.Metric]
    baseline: _containers.RepeatedCompositeFieldContainer[_health_pb2.Histogram]
    created_ms: int
    annotations: _containers.RepeatedCompositeFieldContainer[_common_pb2.StringPair]
    signature: _common_pb2.Signature
    def __init__(self, model_id: _Optional[str] = ..., version: _Optional[str] = ..., ion: _Optional[str] = ..., edge: _Optional[str] = ..., producer_pipeline: _Optional[str] = ..., producer_node: _Optional[str] = ..., size_bytes: _Optional[int] = ..., chunk_size: _Optional[int] = ..., chunk_sha256: _Optional[_Iterable[str]] = ..., format: _Optional[str] = ..., layout: _Optional[_Union[ArtifactLayout, str]] = ..., file_name: _Optional[str] = ..., metrics: _Optional[_Iterable[_Union[_common_pb2.Metric, _Mapping]]] = ..., baseline: _Optional[_Iterable[_Union[_health_pb2.Histogram, _Mapping]]] = ..., created_ms: _Optional[int] = ..., annotations: _Optional[_Iterable[_Union[_common_pb2.StringPair, _Mapping]]] = ..., signature: _Optional[_Union[_common_pb2.Signature, _Mapping]] = ...) -> None: ...

class ModelChunk(_message.Message):
    __slots__ = ("model_id", "index", "data")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    index: int
    data: bytes
    def __init__(self, model_id: _Optional[str] = ..., index: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class ChunkRequest(_message.Message):
    __slots__ = ("model_id", "indexes", "requester")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    INDEXES_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    indexes: _containers.RepeatedScalarFieldContainer[int]
    requester: str
    def __init__(self, model_id: _Optional[str] = ..., indexes: _Optional[_Iterable[int]] = ..., requester: _Optional[str] = ...) -> None: ...
