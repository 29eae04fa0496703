"""Models on the wire: a signed manifest plus content-addressed chunks.

Mirrors proto/ion/v1/model.proto.  Whether the chunks add up to the manifest (count, hashes,
size) is the model store's check, made as chunks arrive; these values only carry the facts.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from ion.model.definition import Signature
from ion.model.health import Histogram, Metric


class ArtifactLayout(enum.Enum):
    FILE = "file"
    DIRECTORY = "directory"  # a deterministic tar of the directory


@dataclass(frozen=True, slots=True)
class ModelManifest:
    """Retained per model edge, so late joiners find the latest one."""

    model_id: str  # hex SHA-256 of the artifact bytes
    version: str
    ion: str = ""
    edge: str = ""
    producer_pipeline: str = ""
    producer_node: str = ""
    size_bytes: int = 0
    chunk_size: int = 0
    chunk_sha256: tuple[str, ...] = ()
    format: str = ""  # e.g. "kmeans-npz", "tflite", "savedmodel"
    layout: ArtifactLayout = ArtifactLayout.FILE
    file_name: str = ""
    metrics: tuple[Metric, ...] = ()
    baseline: tuple[Histogram, ...] = ()
    created_ms: int = 0
    annotations: Mapping[str, str] = field(default_factory=dict)
    signature: Signature | None = None  # over the encoding with `signature` cleared

    @property
    def chunk_count(self) -> int:
        return len(self.chunk_sha256)

    def metric(self, name: str) -> float | None:
        return next((m.value for m in self.metrics if m.name == name), None)


@dataclass(frozen=True, slots=True)
class ModelChunk:
    model_id: str
    index: int
    # A received chunk's data may be a read-only view of the message it came in (the
    # receiver's ``decode_chunk_envelope``): one 256 KiB copy less per chunk and node.
    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class ChunkRequest:
    """Asks whoever holds the chunks (producer, gateway cache, monitor) for the missing ones."""

    model_id: str
    indexes: tuple[int, ...] = ()  # empty: all
    requester: str = ""
