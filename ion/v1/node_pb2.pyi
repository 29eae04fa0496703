from ion.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_STATE_UNSPECIFIED: _ClassVar[NodeState]
    NODE_STATE_ONLINE: _ClassVar[NodeState]
    NODE_STATE_OFFLINE: _ClassVar[NodeState]
    NODE_STATE_DRAINING: _ClassVar[NodeState]
    NODE_STATE_FAILED: _ClassVar[NodeState]

class PipelineState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PIPELINE_STATE_UNSPECIFIED: _ClassVar[PipelineState]
    PIPELINE_STATE_PENDING: _ClassVar[PipelineState]
    PIPELINE_STATE_STARTING: _ClassVar[PipelineState]
    PIPELINE_STATE_RUNNING: _ClassVar[PipelineState]
    PIPELINE_STATE_SUCCEEDED: _ClassVar[PipelineState]
    PIPELINE_STATE_FAILED: _ClassVar[PipelineState]
    PIPELINE_STATE_BACKOFF: _ClassVar[PipelineState]
    PIPELINE_STATE_CRASH_LOOP: _ClassVar[PipelineState]
    PIPELINE_STATE_STOPPING: _ClassVar[PipelineState]
    PIPELINE_STATE_STOPPED: _ClassVar[PipelineState]
    PIPELINE_STATE_KILLED: _ClassVar[PipelineState]
NODE_STATE_UNSPECIFIED: NodeState
NODE_STATE_ONLINE: NodeState
NODE_STATE_OFFLINE: NodeState
NODE_STATE_DRAINING: NodeState
NODE_STATE_FAILED: NodeState
PIPELINE_STATE_UNSPECIFIED: PipelineState
PIPELINE_STATE_PENDING: PipelineState
PIPELINE_STATE_STARTING: PipelineState
PIPELINE_STATE_RUNNING: PipelineState
PIPELINE_STATE_SUCCEEDED: PipelineState
PIPELINE_STATE_FAILED: PipelineState
PIPELINE_STATE_BACKOFF: PipelineState
PIPELINE_STATE_CRASH_LOOP: PipelineState
PIPELINE_STATE_STOPPING: PipelineState
PIPELINE_STATE_STOPPED: PipelineState
PIPELINE_STATE_KILLED: PipelineState

class NodeStatus(_message.Message):
    __slots__ = ("node_id", "state", "agent_version", "labels", "layer", "parent", "started_ms", "heartbeat_interval_ms", "pipelines", "queues", "resources", "models", "links", "error", "ions", "counters")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    STARTED_MS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    PIPELINES_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    IONS_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    state: NodeState
    agent_version: str
    labels: _containers.RepeatedCompositeFieldContainer[_common_pb2.StringPair]
    layer: str
    parent: str
    started_ms: int
    heartbeat_interval_ms: int
    pipelines: _containers.RepeatedCompositeFieldContainer[PipelineStatus]
    queues: _containers.RepeatedCompositeFieldContainer[QueueStatus]
    resources: ResourceUsage
    models: _containers.RepeatedCompositeFieldContainer[ModelStatus]
    links: _containers.RepeatedCompositeFieldContainer[LinkStatus]
    error: str
    ions: _containers.RepeatedCompositeFieldContainer[IonVersion]
    counters: _containers.RepeatedCompositeFieldContainer[Counter]
    def __init__(self, node_id: _Optional[str] = ..., state: _Optional[_Union[NodeState, str]] = ..., agent_version: _Optional[str] = ..., labels: _Optional[_Iterable[_Union[_common_pb2.StringPair, _Mapping]]] = ..., layer: _Optional[str] = ..., parent: _Optional[str] = ..., started_ms: _Optional[int] = ..., heartbeat_interval_ms: _Optional[int] = ..., pipelines: _Optional[_Iterable[_Union[PipelineStatus, _Mapping]]] = ..., queues: _Optional[_Iterable[_Union[QueueStatus, _Mapping]]] = ..., resources: _Optional[_Union[ResourceUsage, _Mapping]] = ..., models: _Optional[_Iterable[_Union[ModelStatus, _Mapping]]] = ..., links: _Optional[_Iterable[_Union[LinkStatus, _Mapping]]] = ..., error: _Optional[str] = ..., ions: _Optional[_Iterable[_Union[IonVersion, _Mapping]]] = ..., counters: _Optional[_Iterable[_Union[Counter, _Mapping]]] = ...) -> None: ...

class IonVersion(_message.Message):
    __slots__ = ("name", "version", "content_sha256")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    content_sha256: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., content_sha256: _Optional[str] = ...) -> None: ...

class PipelineStatus(_message.Message):
    __slots__ = ("ion", "pipeline", "engine", "state", "restarts", "since_ms", "message", "exit_code", "ion_version", "engine_job_id")
    ION_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    ION_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENGINE_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ion: str
    pipeline: str
    engine: str
    state: PipelineState
    restarts: int
    since_ms: int
    message: str
    exit_code: int
    ion_version: int
    engine_job_id: str
    def __init__(self, ion: _Optional[str] = ..., pipeline: _Optional[str] = ..., engine: _Optional[str] = ..., state: _Optional[_Union[PipelineState, str]] = ..., restarts: _Optional[int] = ..., since_ms: _Optional[int] = ..., message: _Optional[str] = ..., exit_code: _Optional[int] = ..., ion_version: _Optional[int] = ..., engine_job_id: _Optional[str] = ...) -> None: ...

class QueueStatus(_message.Message):
    __slots__ = ("link", "traffic_class", "depth", "bytes", "oldest_age_ms", "sent", "dropped", "expired", "rejected")
    LINK_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_CLASS_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    OLDEST_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    SENT_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    link: str
    traffic_class: str
    depth: int
    bytes: int
    oldest_age_ms: int
    sent: int
    dropped: int
    expired: int
    rejected: int
    def __init__(self, link: _Optional[str] = ..., traffic_class: _Optional[str] = ..., depth: _Optional[int] = ..., bytes: _Optional[int] = ..., oldest_age_ms: _Optional[int] = ..., sent: _Optional[int] = ..., dropped: _Optional[int] = ..., expired: _Optional[int] = ..., rejected: _Optional[int] = ...) -> None: ...

class ResourceUsage(_message.Message):
    __slots__ = ("cpu_percent", "rss_bytes", "disk_free_bytes", "load1")
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOAD1_FIELD_NUMBER: _ClassVar[int]
    cpu_percent: float
    rss_bytes: int
    disk_free_bytes: int
    load1: float
    def __init__(self, cpu_percent: _Optional[float] = ..., rss_bytes: _Optional[int] = ..., disk_free_bytes: _Optional[int] = ..., load1: _Optional[float] = ...) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("ion", "edge", "active_version", "active_model_id", "versions", "pending", "canary_state")
    ION_FIELD_NUMBER: _ClassVar[int]
    EDGE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    CANARY_STATE_FIELD_NUMBER: _ClassVar[int]
    ion: str
    edge: str
    active_version: str
    active_model_id: str
    versions: _containers.RepeatedScalarFieldContainer[str]
    pending: _containers.RepeatedScalarFieldContainer[str]
    canary_state: str
    def __init__(self, ion: _Optional[str] = ..., edge: _Optional[str] = ..., active_version: _Optional[str] = ..., active_model_id: _Optional[str] = ..., versions: _Optional[_Iterable[str]] = ..., pending: _Optional[_Iterable[str]] = ..., canary_state: _Optional[str] = ...) -> None: ...

class LinkStatus(_message.Message):
    __slots__ = ("name", "url", "connected", "since_ms", "error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    url: str
    connected: bool
    since_ms: int
    error: str
    def __init__(self, name: _Optional[str] = ..., url: _Optional[str] = ..., connected: _Optional[bool] = ..., since_ms: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class Counter(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: int
    def __init__(self, name: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...

class ModelRef(_message.Message):
    __slots__ = ("ion", "edge", "version")
    ION_FIELD_NUMBER: _ClassVar[int]
    EDGE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ion: str
    edge: str
    version: str
    def __init__(self, ion: _Optional[str] = ..., edge: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class Command(_message.Message):
    __slots__ = ("command_id", "issued_by", "issued_ms", "expires_ms", "sequence", "signature", "reason", "approve_model", "reject_model", "rollback_model", "restart_pipeline", "run_pipeline", "ping", "promote_model")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    ISSUED_BY_FIELD_NUMBER: _ClassVar[int]
    ISSUED_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_MS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    APPROVE_MODEL_FIELD_NUMBER: _ClassVar[int]
    REJECT_MODEL_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_MODEL_FIELD_NUMBER: _ClassVar[int]
    RESTART_PIPELINE_FIELD_NUMBER: _ClassVar[int]
    RUN_PIPELINE_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    PROMOTE_MODEL_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    issued_by: str
    issued_ms: int
    expires_ms: int
    sequence: int
    signature: _common_pb2.Signature
    reason: str
    approve_model: ModelRef
    reject_model: ModelRef
    rollback_model: ModelRef
    restart_pipeline: PipelineRef
    run_pipeline: PipelineRef
    ping: Ping
    promote_model: ModelRef
    def __init__(self, command_id: _Optional[str] = ..., issued_by: _Optional[str] = ..., issued_ms: _Optional[int] = ..., expires_ms: _Optional[int] = ..., sequence: _Optional[int] = ..., signature: _Optional[_Union[_common_pb2.Signature, _Mapping]] = ..., reason: _Optional[str] = ..., approve_model: _Optional[_Union[ModelRef, _Mapping]] = ..., reject_model: _Optional[_Union[ModelRef, _Mapping]] = ..., rollback_model: _Optional[_Union[ModelRef, _Mapping]] = ..., restart_pipeline: _Optional[_Union[PipelineRef, _Mapping]] = ..., run_pipeline: _Optional[_Union[PipelineRef, _Mapping]] = ..., ping: _Optional[_Union[Ping, _Mapping]] = ..., promote_model: _Optional[_Union[ModelRef, _Mapping]] = ...) -> None: ...

class PipelineRef(_message.Message):
    __slots__ = ("ion", "pipeline")
    ION_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    ion: str
    pipeline: str
    def __init__(self, ion: _Optional[str] = ..., pipeline: _Optional[str] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CommandResult(_message.Message):
    __slots__ = ("command_id", "node_id", "ok", "message")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    node_id: str
    ok: bool
    message: str
    def __init__(self, command_id: _Optional[str] = ..., node_id: _Optional[str] = ..., ok: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...
