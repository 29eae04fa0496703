"""The envelope every ION message travels in, and the union of the bodies it can carry.

Mirrors ``Envelope`` in proto/ion/v1/envelope.proto.  The bodies live in modules named after
their proto files (``status``, ``command``, ``manifest``, ``health``, ``event``, and
``definition`` for the ION itself); this module re-exports them, so
``from ion.model.messages import ...`` is enough for code that handles envelopes.
``ion.wire.codec`` turns an ``Envelope`` into bytes and back.

Invariants checked when a value is built, so that whatever encodes also decodes: the message id
is 32 lowercase hex digits, and a batch never holds another batch.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import TypeAlias

from ion.model.command import (
    ApproveModel,
    Command,
    CommandAction,
    CommandResult,
    ModelRef,
    Ping,
    PipelineRef,
    RejectModel,
    RestartPipeline,
    RollbackModel,
    RunPipeline,
)
from ion.model.definition import IonDefinition, IonDeleted, Signature
from ion.model.event import DataRecords, Event, Severity, Trigger
from ion.model.health import (
    CategoricalCounts,
    DriftScore,
    HealthReport,
    Histogram,
    JobProgress,
    Metric,
    StatsReport,
    Table,
    TimeSeries,
    TimeSeriesPoint,
)
from ion.model.manifest import ArtifactLayout, ChunkRequest, ModelChunk, ModelManifest
from ion.model.status import (
    IonVersion,
    LinkStatus,
    ModelStatus,
    NodeState,
    NodeStatus,
    PipelineState,
    PipelineStatus,
    QueueStatus,
    ResourceUsage,
)

__all__ = [
    "MESSAGE_ID_PATTERN",
    "ApproveModel",
    "ArtifactLayout",
    "Body",
    "CategoricalCounts",
    "ChunkRequest",
    "Command",
    "CommandAction",
    "CommandResult",
    "DataRecords",
    "DeliveryAck",
    "DriftScore",
    "Envelope",
    "EnvelopeBatch",
    "Event",
    "HealthReport",
    "Histogram",
    "Hop",
    "IonDefinition",
    "IonDeleted",
    "IonVersion",
    "JobProgress",
    "LinkStatus",
    "Metric",
    "ModelChunk",
    "ModelManifest",
    "ModelRef",
    "ModelStatus",
    "NodeState",
    "NodeStatus",
    "Ping",
    "PipelineRef",
    "PipelineState",
    "PipelineStatus",
    "QueueStatus",
    "RejectModel",
    "ResourceUsage",
    "RestartPipeline",
    "RetransmitRequest",
    "RollbackModel",
    "RunPipeline",
    "Severity",
    "Signature",
    "StatsReport",
    "Table",
    "TimeSeries",
    "TimeSeriesPoint",
    "Trigger",
    "is_message_id",
    "new_envelope",
    "new_message_id",
]

MESSAGE_ID_PATTERN = r"[0-9a-f]{32}"
"""A message id: 32 lowercase hex digits (128 random bits).  Receivers deduplicate by it."""
_MESSAGE_ID = re.compile(MESSAGE_ID_PATTERN)


def is_message_id(value: str) -> bool:
    return _MESSAGE_ID.fullmatch(value) is not None


def new_message_id() -> str:
    return secrets.token_hex(16)


class MessageIds:
    """Message ids that grow: 12 hex digits of milliseconds (48 bits), then 80 bits that start
    at a random point and count on from the last id while the clock stands (or steps back).
    What agents and the SDK send.  Receivers keep the ids they handled in an indexed window:
    ids in time order land at its end instead of on random pages (measured: ~30 us of CPU per
    remembered id with random ids, ~11 us in order), and a new id above everything they
    remember needs no lookup (``OutboxStore.inbox_seen``).  Two sources collide only if their
    counts of one millisecond overlap (odds of about n / 2^80).  Not thread-safe."""

    def __init__(self) -> None:
        self._last = 0

    def take(self, now_ms: int, count: int = 1) -> list[str]:
        """``count`` new ids, in increasing order."""
        start = (now_ms & 0xFFFF_FFFF_FFFF) << 80 | int.from_bytes(secrets.token_bytes(10))
        if start <= self._last:
            start = self._last + 1
        end = start + count
        if end > 1 << 128:  # after about 9,000 years of time stamps; start again at 0
            start, end = 0, count
        self._last = end - 1
        return [f"{n:032x}" for n in range(start, end)]


@dataclass(frozen=True, slots=True)
class Hop:
    """One relay a message passed through (relays append themselves), for lag per hop."""

    node: str
    received_ms: int = 0
    forwarded_ms: int = 0


@dataclass(frozen=True, slots=True)
class EnvelopeBatch:
    """Many small messages in one MQTT message, when a backlog exists.  Never nested."""

    envelopes: tuple[Envelope, ...]

    def __post_init__(self) -> None:
        for e in self.envelopes:
            if isinstance(e.body, EnvelopeBatch):
                # A bad value (the wire allows the nesting, the protocol does not).
                raise ValueError(  # noqa: TRY004
                    f"batch inside a batch (message {e.message_id})"
                )


@dataclass(frozen=True, slots=True)
class RetransmitRequest:
    """Asks a source to send again ``from_sequence..to_sequence`` (inclusive) of one stream."""

    stream: str
    from_sequence: int
    to_sequence: int
    requester: str = ""

    def __post_init__(self) -> None:
        if self.from_sequence > self.to_sequence:
            raise ValueError(
                f"retransmit request for stream {self.stream!r} runs backwards "
                f"({self.from_sequence} > {self.to_sequence})"
            )


@dataclass(frozen=True, slots=True)
class DeliveryAck:
    """Tells a source that a receiver holds everything of a stream up to a sequence number."""

    stream: str
    up_to_sequence: int
    receiver: str = ""


Body: TypeAlias = (
    IonDefinition
    | IonDeleted
    | NodeStatus
    | Command
    | CommandResult
    | ModelManifest
    | ModelChunk
    | ChunkRequest
    | HealthReport
    | Event
    | StatsReport
    | DataRecords
    | Trigger
    | EnvelopeBatch
    | RetransmitRequest
    | DeliveryAck
)


# Keyword-only: the fields keep the wire's order while `body` (last) has no default.
@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    message_id: str
    ion: str = ""  # empty for node-level traffic
    source_node: str
    created_ms: int  # Unix milliseconds at the source
    # Per (source_node, stream), from 1 with no gaps; 0 means "not sequenced" (retained state).
    sequence: int = 0
    stream: str = ""
    route: tuple[Hop, ...] = ()
    correlation_id: str = ""  # e.g. the command a result answers
    body: Body

    def __post_init__(self) -> None:
        if not is_message_id(self.message_id):
            raise ValueError(f"message id {self.message_id[:80]!r} is not 32 lowercase hex digits")


def new_envelope(
    body: Body,
    *,
    source_node: str,
    now_ms: int,
    ion: str = "",
    sequence: int = 0,
    stream: str = "",
    correlation_id: str = "",
    message_id: str | None = None,
) -> Envelope:
    """An envelope for ``body`` created now, with a fresh random message id unless one is given."""
    return Envelope(
        message_id=new_message_id() if message_id is None else message_id,
        ion=ion,
        source_node=source_node,
        created_ms=now_ms,
        sequence=sequence,
        stream=stream,
        correlation_id=correlation_id,
        body=body,
    )
