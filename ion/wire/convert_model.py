"""Model manifests, chunks and chunk requests <-> protobuf (proto/ion/v1/model.proto)."""

from __future__ import annotations

from ion.model.manifest import ArtifactLayout, ChunkRequest, ModelChunk, ModelManifest
from ion.v1 import model_pb2 as pb
from ion.wire.convert_common import EnumTable, decoding
from ion.wire.convert_health import (
    histogram_from_proto,
    histogram_to_proto,
    metrics_from_proto,
    metrics_to_proto,
)
from ion.wire.values import (
    pairs_from_proto,
    pairs_to_proto,
    signature_from_proto,
    signature_to_proto,
)

LAYOUTS: EnumTable[ArtifactLayout, pb.ArtifactLayout] = EnumTable(
    "artifact layout",
    {
        ArtifactLayout.FILE: pb.ARTIFACT_LAYOUT_FILE,
        ArtifactLayout.DIRECTORY: pb.ARTIFACT_LAYOUT_DIRECTORY,
    },
)


def model_manifest_to_proto(mf: ModelManifest) -> pb.ModelManifest:
    """The wire form; to sign or verify, encode it deterministically with ``signature``
    cleared."""
    return pb.ModelManifest(
        model_id=mf.model_id,
        version=mf.version,
        ion=mf.ion,
        edge=mf.edge,
        producer_pipeline=mf.producer_pipeline,
        producer_node=mf.producer_node,
        size_bytes=mf.size_bytes,
        chunk_size=mf.chunk_size,
        chunk_sha256=mf.chunk_sha256,
        format=mf.format,
        layout=LAYOUTS.to_wire(mf.layout),
        file_name=mf.file_name,
        metrics=metrics_to_proto(mf.metrics),
        baseline=[histogram_to_proto(h) for h in mf.baseline],
        created_ms=mf.created_ms,
        annotations=pairs_to_proto(mf.annotations),
        signature=signature_to_proto(mf.signature),
    )


def model_manifest_from_proto(m: pb.ModelManifest) -> ModelManifest:
    with decoding("model manifest"):
        return ModelManifest(
            model_id=m.model_id,
            version=m.version,
            ion=m.ion,
            edge=m.edge,
            producer_pipeline=m.producer_pipeline,
            producer_node=m.producer_node,
            size_bytes=m.size_bytes,
            chunk_size=m.chunk_size,
            chunk_sha256=tuple(m.chunk_sha256),
            format=m.format,
            layout=LAYOUTS.from_wire(m.layout),
            file_name=m.file_name,
            metrics=metrics_from_proto(m.metrics),
            baseline=tuple(histogram_from_proto(h) for h in m.baseline),
            created_ms=m.created_ms,
            annotations=pairs_from_proto(m.annotations),
            signature=signature_from_proto(m),
        )


def model_chunk_to_proto(c: ModelChunk) -> pb.ModelChunk:
    data = c.data if isinstance(c.data, bytes) else bytes(c.data)  # protobuf takes bytes only
    return pb.ModelChunk(model_id=c.model_id, index=c.index, data=data)


def model_chunk_from_proto(m: pb.ModelChunk) -> ModelChunk:
    with decoding("model chunk"):
        return ModelChunk(model_id=m.model_id, index=m.index, data=m.data)


def chunk_request_to_proto(r: ChunkRequest) -> pb.ChunkRequest:
    return pb.ChunkRequest(model_id=r.model_id, indexes=r.indexes, requester=r.requester)


def chunk_request_from_proto(m: pb.ChunkRequest) -> ChunkRequest:
    with decoding("chunk request"):
        return ChunkRequest(model_id=m.model_id, indexes=tuple(m.indexes), requester=m.requester)
