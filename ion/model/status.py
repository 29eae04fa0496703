"""What a node says about itself: the retained status on ``ion/v1/nodes/<node>/status``.

Mirrors ``NodeStatus`` in proto/ion/v1/node.proto.  The wire's UNSPECIFIED (0) enum values have
no member here: a status without a state is not a status, so decoding one fails.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class NodeState(enum.Enum):
    ONLINE = "online"
    OFFLINE = "offline"  # the last will, or a clean shutdown
    DRAINING = "draining"  # taking no new work, flushing its outbox
    FAILED = "failed"  # cannot work, e.g. the broker refused its credentials


class PipelineState(enum.Enum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    BACKOFF = "backoff"
    CRASH_LOOP = "crash_loop"
    STOPPING = "stopping"
    STOPPED = "stopped"
    KILLED = "killed"


@dataclass(frozen=True, slots=True)
class IonVersion:
    """Which version of an ION definition a node holds."""

    name: str
    version: int
    content_sha256: str = ""


@dataclass(frozen=True, slots=True)
class PipelineStatus:
    ion: str
    pipeline: str
    state: PipelineState
    engine: str = ""
    restarts: int = 0
    since_ms: int = 0
    message: str = ""
    exit_code: int = 0
    ion_version: int = 0
    engine_job_id: str = ""  # e.g. the Spark application id


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """One traffic class of one outbox."""

    link: str  # which outbox: "upstream", "local", ...
    traffic_class: str  # control | model | events | health | stats | data
    depth: int = 0
    bytes: int = 0
    oldest_age_ms: int = 0
    sent: int = 0
    dropped: int = 0
    expired: int = 0
    rejected: int = 0


@dataclass(frozen=True, slots=True)
class ResourceUsage:
    cpu_percent: float = 0.0
    rss_bytes: int = 0
    disk_free_bytes: int = 0
    load1: float = 0.0


@dataclass(frozen=True, slots=True)
class ModelStatus:
    ion: str
    edge: str
    active_version: str = ""
    active_model_id: str = ""
    versions: tuple[str, ...] = ()  # held in the store, newest first
    pending: tuple[str, ...] = ()  # waiting for approval or a gate
    canary_state: str = ""


@dataclass(frozen=True, slots=True)
class LinkStatus:
    """A broker connection (the node's own, or a gateway's upstream)."""

    name: str
    url: str = ""
    connected: bool = False
    since_ms: int = 0
    error: str = ""


@dataclass(frozen=True, slots=True)
class NodeStatus:
    node_id: str
    state: NodeState
    agent_version: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    layer: str = ""  # "edge" | "gateway" | "cloud" (free text)
    parent: str = ""  # the gateway this node sits behind, if any
    started_ms: int = 0
    heartbeat_interval_ms: int = 0
    pipelines: tuple[PipelineStatus, ...] = ()
    queues: tuple[QueueStatus, ...] = ()
    resources: ResourceUsage | None = None
    models: tuple[ModelStatus, ...] = ()
    links: tuple[LinkStatus, ...] = ()
    error: str = ""  # why the node is FAILED, or the last serious problem
    ions: tuple[IonVersion, ...] = ()
    # Named counters (e.g. malformed messages received, by kind), in the sender's order.
    counters: Mapping[str, int] = field(default_factory=dict)
