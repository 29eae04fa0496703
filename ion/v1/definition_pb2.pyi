from ion.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PipelineMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PIPELINE_MODE_UNSPECIFIED: _ClassVar[PipelineMode]
    PIPELINE_MODE_BATCH: _ClassVar[PipelineMode]
    PIPELINE_MODE_STREAMING: _ClassVar[PipelineMode]

class PipelineRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PIPELINE_ROLE_UNSPECIFIED: _ClassVar[PipelineRole]
    PIPELINE_ROLE_TRAINING: _ClassVar[PipelineRole]
    PIPELINE_ROLE_INFERENCE: _ClassVar[PipelineRole]
    PIPELINE_ROLE_COMPARATOR: _ClassVar[PipelineRole]
    PIPELINE_ROLE_OTHER: _ClassVar[PipelineRole]

class EdgeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EDGE_KIND_UNSPECIFIED: _ClassVar[EdgeKind]
    EDGE_KIND_MODEL: _ClassVar[EdgeKind]
    EDGE_KIND_HEALTH: _ClassVar[EdgeKind]
    EDGE_KIND_STATS: _ClassVar[EdgeKind]
    EDGE_KIND_EVENTS: _ClassVar[EdgeKind]
    EDGE_KIND_DATA: _ClassVar[EdgeKind]
    EDGE_KIND_TRIGGER: _ClassVar[EdgeKind]

class PolicyKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POLICY_KIND_UNSPECIFIED: _ClassVar[PolicyKind]
    POLICY_KIND_AUTO: _ClassVar[PolicyKind]
    POLICY_KIND_MANUAL: _ClassVar[PolicyKind]
    POLICY_KIND_GATED: _ClassVar[PolicyKind]
    POLICY_KIND_CANARY: _ClassVar[PolicyKind]

class DriftMetric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DRIFT_METRIC_UNSPECIFIED: _ClassVar[DriftMetric]
    DRIFT_METRIC_PSI: _ClassVar[DriftMetric]
    DRIFT_METRIC_JENSEN_SHANNON: _ClassVar[DriftMetric]
    DRIFT_METRIC_OVERLAP: _ClassVar[DriftMetric]
PIPELINE_MODE_UNSPECIFIED: PipelineMode
PIPELINE_MODE_BATCH: PipelineMode
PIPELINE_MODE_STREAMING: PipelineMode
PIPELINE_ROLE_UNSPECIFIED: PipelineRole
PIPELINE_ROLE_TRAINING: PipelineRole
PIPELINE_ROLE_INFERENCE: PipelineRole
PIPELINE_ROLE_COMPARATOR: PipelineRole
PIPELINE_ROLE_OTHER: PipelineRole
EDGE_KIND_UNSPECIFIED: EdgeKind
EDGE_KIND_MODEL: EdgeKind
EDGE_KIND_HEALTH: EdgeKind
EDGE_KIND_STATS: EdgeKind
EDGE_KIND_EVENTS: EdgeKind
EDGE_KIND_DATA: EdgeKind
EDGE_KIND_TRIGGER: EdgeKind
POLICY_KIND_UNSPECIFIED: PolicyKind
POLICY_KIND_AUTO: PolicyKind
POLICY_KIND_MANUAL: PolicyKind
POLICY_KIND_GATED: PolicyKind
POLICY_KIND_CANARY: PolicyKind
DRIFT_METRIC_UNSPECIFIED: DriftMetric
DRIFT_METRIC_PSI: DriftMetric
DRIFT_METRIC_JENSEN_SHANNON: DriftMetric
DRIFT_METRIC_OVERLAP: DriftMetric

class IonDefinition(_message.Message):
    __slots__ = ("name", "version", "description", "labels", "pipelines", "edges", "content_sha256", "signature", "applied_ms", "applied_by")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PIPELINES_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_MS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_BY_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    description: str
    labels: _containers.RepeatedCompositeFieldContainer[_common_pb2.StringPair]
    pipelines: _containers.RepeatedCompositeFieldContainer[Pipeline]
    edges: _containers.RepeatedCompositeFieldContainer[Edge]
    content_sha256: str
    signature: _common_pb2.Signature
    applied_ms: int
    applied_by: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., description: _Optional[str] = ..., labels: _Optional[_Iterable[_Union[_common_pb2.StringPair, _Mapping]]] = ..., pipelines: _Optional[_Iterable[_Union[Pipeline, _Mapping]]] = ..., edges: _Optional[_Iterable[_Union[Edge, _Mapping]]] = ..., content_sha256: _Optional[str] = ..., signature: _Optional[_Union[_common_pb2.Signature, _Mapping]] = ..., applied_ms: _Optional[int] = ..., applied_by: _Optional[str] = ...) -> None: ...

class IonDeleted(_message.Message):
    __slots__ = ("name", "version", "deleted_ms", "deleted_by", "signature")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DELETED_MS_FIELD_NUMBER: _ClassVar[int]
    DELETED_BY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    deleted_ms: int
    deleted_by: str
    signature: _common_pb2.Signature
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., deleted_ms: _Optional[int] = ..., deleted_by: _Optional[str] = ..., signature: _Optional[_Union[_common_pb2.Signature, _Mapping]] = ...) -> None: ...

class Pipeline(_message.Message):
    __slots__ = ("name", "engine", "role", "mode", "schedule", "placement", "components", "engine_config", "restart", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_CONFIG_FIELD_NUMBER: _ClassVar[int]
    RESTART_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    engine: str
    role: PipelineRole
    mode: PipelineMode
    schedule: str
    placement: Placement
    components: _containers.RepeatedCompositeFieldContainer[Component]
    engine_config: _containers.RepeatedCompositeFieldContainer[_common_pb2.StringPair]
    restart: RestartPolicy
    description: str
    def __init__(self, name: _Optional[str] = ..., engine: _Optional[str] = ..., role: _Optional[_Union[PipelineRole, str]] = ..., mode: _Optional[_Union[PipelineMode, str]] = ..., schedule: _Optional[str] = ..., placement: _Optional[_Union[Placement, _Mapping]] = ..., components: _Optional[_Iterable[_Union[Component, _Mapping]]] = ..., engine_config: _Optional[_Iterable[_Union[_common_pb2.StringPair, _Mapping]]] = ..., restart: _Optional[_Union[RestartPolicy, _Mapping]] = ..., description: _Optional[str] = ...) -> None: ...

class Placement(_message.Message):
    __slots__ = ("nodes", "labels")
    NODES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.RepeatedCompositeFieldContainer[_common_pb2.StringPair]
    def __init__(self, nodes: _Optional[_Iterable[str]] = ..., labels: _Optional[_Iterable[_Union[_common_pb2.StringPair, _Mapping]]] = ...) -> None: ...

class RestartPolicy(_message.Message):
    __slots__ = ("max_restarts", "window_ms", "backoff_initial_ms", "backoff_max_ms")
    MAX_RESTARTS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_MS_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_INITIAL_MS_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_MAX_MS_FIELD_NUMBER: _ClassVar[int]
    max_restarts: int
    window_ms: int
    backoff_initial_ms: int
    backoff_max_ms: int
    def __init__(self, max_restarts: _Optional[int] = ..., window_ms: _Optional[int] = ..., backoff_initial_ms: _Optional[int] = ..., backoff_max_ms: _Optional[int] = ...) -> None: ...

class Component(_message.Message):
    __slots__ = ("name", "type", "args", "inputs")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    args: _containers.RepeatedCompositeFieldContainer[_common_pb2.NamedValue]
    inputs: _containers.RepeatedCompositeFieldContainer[PortBinding]
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., args: _Optional[_Iterable[_Union[_common_pb2.NamedValue, _Mapping]]] = ..., inputs: _Optional[_Iterable[_Union[PortBinding, _Mapping]]] = ...) -> None: ...

class PortBinding(_message.Message):
    __slots__ = ("port", "from_component", "from_port")
    PORT_FIELD_NUMBER: _ClassVar[int]
    FROM_COMPONENT_FIELD_NUMBER: _ClassVar[int]
    FROM_PORT_FIELD_NUMBER: _ClassVar[int]
    port: str
    from_component: str
    from_port: str
    def __init__(self, port: _Optional[str] = ..., from_component: _Optional[str] = ..., from_port: _Optional[str] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("pipeline", "component", "port")
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    pipeline: str
    component: str
    port: str
    def __init__(self, pipeline: _Optional[str] = ..., component: _Optional[str] = ..., port: _Optional[str] = ...) -> None: ...

class Edge(_message.Message):
    __slots__ = ("name", "kind", "source", "targets", "policy", "trigger", "drift", "delivery", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: EdgeKind
    source: Endpoint
    targets: _containers.RepeatedCompositeFieldContainer[Endpoint]
    policy: ModelPolicy
    trigger: TriggerCondition
    drift: DriftSettings
    delivery: DeliveryOptions
    description: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[EdgeKind, str]] = ..., source: _Optional[_Union[Endpoint, _Mapping]] = ..., targets: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ..., policy: _Optional[_Union[ModelPolicy, _Mapping]] = ..., trigger: _Optional[_Union[TriggerCondition, _Mapping]] = ..., drift: _Optional[_Union[DriftSettings, _Mapping]] = ..., delivery: _Optional[_Union[DeliveryOptions, _Mapping]] = ..., description: _Optional[str] = ...) -> None: ...

class ModelPolicy(_message.Message):
    __slots__ = ("kind", "keep_versions", "gates", "canary")
    KIND_FIELD_NUMBER: _ClassVar[int]
    KEEP_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    GATES_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    kind: PolicyKind
    keep_versions: int
    gates: _containers.RepeatedCompositeFieldContainer[MetricGate]
    canary: CanaryPolicy
    def __init__(self, kind: _Optional[_Union[PolicyKind, str]] = ..., keep_versions: _Optional[int] = ..., gates: _Optional[_Iterable[_Union[MetricGate, _Mapping]]] = ..., canary: _Optional[_Union[CanaryPolicy, _Mapping]] = ...) -> None: ...

class MetricGate(_message.Message):
    __slots__ = ("metric", "higher_is_better", "min", "max", "margin_over_active")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    HIGHER_IS_BETTER_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    MARGIN_OVER_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    metric: str
    higher_is_better: bool
    min: float
    max: float
    margin_over_active: float
    def __init__(self, metric: _Optional[str] = ..., higher_is_better: _Optional[bool] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., margin_over_active: _Optional[float] = ...) -> None: ...

class CanaryPolicy(_message.Message):
    __slots__ = ("share", "nodes", "hold_ms", "max_drift", "max_error_rate")
    SHARE_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    HOLD_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_DRIFT_FIELD_NUMBER: _ClassVar[int]
    MAX_ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    share: float
    nodes: _containers.RepeatedScalarFieldContainer[str]
    hold_ms: int
    max_drift: float
    max_error_rate: float
    def __init__(self, share: _Optional[float] = ..., nodes: _Optional[_Iterable[str]] = ..., hold_ms: _Optional[int] = ..., max_drift: _Optional[float] = ..., max_error_rate: _Optional[float] = ...) -> None: ...

class DriftSettings(_message.Message):
    __slots__ = ("metric", "threshold", "window_ms", "min_samples")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    WINDOW_MS_FIELD_NUMBER: _ClassVar[int]
    MIN_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    metric: DriftMetric
    threshold: float
    window_ms: int
    min_samples: int
    def __init__(self, metric: _Optional[_Union[DriftMetric, str]] = ..., threshold: _Optional[float] = ..., window_ms: _Optional[int] = ..., min_samples: _Optional[int] = ...) -> None: ...

class TriggerCondition(_message.Message):
    __slots__ = ("metric", "above", "min_nodes", "window_ms", "cooldown_ms")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    ABOVE_FIELD_NUMBER: _ClassVar[int]
    MIN_NODES_FIELD_NUMBER: _ClassVar[int]
    WINDOW_MS_FIELD_NUMBER: _ClassVar[int]
    COOLDOWN_MS_FIELD_NUMBER: _ClassVar[int]
    metric: str
    above: float
    min_nodes: int
    window_ms: int
    cooldown_ms: int
    def __init__(self, metric: _Optional[str] = ..., above: _Optional[float] = ..., min_nodes: _Optional[int] = ..., window_ms: _Optional[int] = ..., cooldown_ms: _Optional[int] = ...) -> None: ...

class DeliveryOptions(_message.Message):
    __slots__ = ("ttl_ms",)
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    ttl_ms: int
    def __init__(self, ttl_ms: _Optional[int] = ...) -> None: ...
