"""The ION definition as typed, frozen values.

An ION is a directed graph (cycles allowed) whose vertices are pipelines and whose edges carry
models, health, stats, events, data or triggers between them.  Each pipeline is a DAG of
components inside one engine.  These values are what the authoring format loads into, what the
validator checks, and what ``ion.wire`` converts to and from protobuf without loss.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

# A component argument: what YAML scalars, lists and maps hold.
ArgValue = None | bool | int | float | str | tuple["ArgValue", ...] | Mapping[str, "ArgValue"]

NAME_PATTERN = r"^[a-z0-9]([a-z0-9_-]{0,62}[a-z0-9])?$"
"""Names of IONs, pipelines, components, edges and nodes: they appear in MQTT topics, so no
``/``, ``+``, ``#`` or upper case; at most 64 characters."""


class EdgeKind(enum.Enum):
    MODEL = "model"
    HEALTH = "health"
    STATS = "stats"
    EVENTS = "events"
    DATA = "data"
    TRIGGER = "trigger"


class PipelineMode(enum.Enum):
    BATCH = "batch"
    STREAMING = "streaming"


class PipelineRole(enum.Enum):
    TRAINING = "training"
    INFERENCE = "inference"
    COMPARATOR = "comparator"
    OTHER = "other"


class PolicyKind(enum.Enum):
    AUTO = "auto"
    MANUAL = "manual"
    GATED = "gated"
    CANARY = "canary"


class DriftMetric(enum.Enum):
    PSI = "psi"
    JENSEN_SHANNON = "jensen_shannon"
    OVERLAP = "overlap"


class PortType(enum.Enum):
    """What flows through a component port; the ION edge kinds that can attach to it."""

    DATA = "data"
    MODEL = "model"
    HEALTH = "health"
    STATS = "stats"
    EVENTS = "events"


@dataclass(frozen=True, slots=True)
class Placement:
    """Run on every node named in ``nodes`` and on every node carrying all ``labels``."""

    nodes: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)

    def selects(self, node_id: str, node_labels: Mapping[str, str]) -> bool:
        if node_id in self.nodes:
            return True
        if not self.labels:
            return False
        return all(node_labels.get(k) == v for k, v in self.labels.items())


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    max_restarts: int = 5
    window_ms: int = 600_000
    backoff_initial_ms: int = 1_000
    backoff_max_ms: int = 60_000


@dataclass(frozen=True, slots=True)
class PortBinding:
    """Input ``port`` of the owning component reads ``from_component.from_port``."""

    port: str
    from_component: str
    from_port: str


@dataclass(frozen=True, slots=True)
class Component:
    name: str
    type: str
    args: Mapping[str, ArgValue] = field(default_factory=dict)
    inputs: tuple[PortBinding, ...] = ()


@dataclass(frozen=True, slots=True)
class Pipeline:
    name: str
    engine: str
    role: PipelineRole
    mode: PipelineMode
    placement: Placement
    components: tuple[Component, ...]
    schedule: str = ""
    engine_config: Mapping[str, str] = field(default_factory=dict)
    restart: RestartPolicy = RestartPolicy()
    description: str = ""

    def component(self, name: str) -> Component | None:
        return next((c for c in self.components if c.name == name), None)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One end of an ION edge; ``component``/``port`` are empty when the pipeline has exactly
    one port of the edge's kind (the validator resolves it)."""

    pipeline: str
    component: str = ""
    port: str = ""

    def __str__(self) -> str:
        return ".".join(p for p in (self.pipeline, self.component, self.port) if p)


@dataclass(frozen=True, slots=True)
class MetricGate:
    metric: str
    higher_is_better: bool = True
    min: float | None = None
    max: float | None = None
    margin_over_active: float | None = None


@dataclass(frozen=True, slots=True)
class CanaryPolicy:
    share: float = 0.0
    nodes: tuple[str, ...] = ()
    hold_ms: int = 300_000
    max_drift: float = 0.0
    max_error_rate: float = 0.0


@dataclass(frozen=True, slots=True)
class ModelPolicy:
    kind: PolicyKind = PolicyKind.AUTO
    keep_versions: int = 3
    gates: tuple[MetricGate, ...] = ()
    canary: CanaryPolicy | None = None


@dataclass(frozen=True, slots=True)
class DriftSettings:
    metric: DriftMetric = DriftMetric.PSI
    threshold: float = 0.2
    window_ms: int = 60_000
    min_samples: int = 100


@dataclass(frozen=True, slots=True)
class TriggerCondition:
    metric: str
    above: float
    min_nodes: int = 1
    window_ms: int = 300_000
    cooldown_ms: int = 600_000


@dataclass(frozen=True, slots=True)
class Edge:
    name: str
    kind: EdgeKind
    source: Endpoint
    targets: tuple[Endpoint, ...]
    policy: ModelPolicy | None = None
    trigger: TriggerCondition | None = None
    drift: DriftSettings | None = None
    ttl_ms: int = 0
    description: str = ""


@dataclass(frozen=True, slots=True)
class Signature:
    key_id: str
    algorithm: str
    value: bytes
    signed_ms: int = 0


@dataclass(frozen=True, slots=True)
class IonDefinition:
    name: str
    pipelines: tuple[Pipeline, ...]
    edges: tuple[Edge, ...] = ()
    version: int = 0
    description: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    # Filled in by `ion apply`; not part of the authored content.
    content_sha256: str = ""
    signature: Signature | None = None
    applied_ms: int = 0
    applied_by: str = ""

    def pipeline(self, name: str) -> Pipeline | None:
        return next((p for p in self.pipelines if p.name == name), None)

    def edge(self, name: str) -> Edge | None:
        return next((e for e in self.edges if e.name == name), None)


@dataclass(frozen=True, slots=True)
class IonDeleted:
    """The tombstone that replaces a deleted ION's definition."""

    name: str
    version: int
    deleted_ms: int = 0
    deleted_by: str = ""
    signature: Signature | None = None
