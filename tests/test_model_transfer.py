"""Manifests from files, chunks from disk, and the Assembler on the receiving side."""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import replace
from pathlib import Path

import pytest

from ion.model.manifest import ArtifactLayout, ModelChunk, ModelManifest
from node.models.errors import ChunkMismatchError, IntegrityError, ManifestError
from node.models.pack import Packed
from node.models.staging import ChunkStaging
from node.models.transfer import (
    Assembler,
    ChunkOutcome,
    TransferLimits,
    build_manifest,
    check_manifest,
    digest_file,
    manifest_bytes,
    manifest_from_bytes,
    read_chunks,
)

LIMITS = TransferLimits()


def model_file(tmp_path: Path, size: int, name: str = "model.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(random.Random(size).randbytes(size))
    return path


def manifest_for(path: Path, chunk_size: int = 1000) -> ModelManifest:
    digest = digest_file(path, chunk_size)
    return build_manifest(
        Packed(path, ArtifactLayout.FILE, path.name, temporary=False),
        digest,
        version="7",
        ion="plant",
        edge="model",
        producer_pipeline="training",
        producer_node="cloud-1",
        format="kmeans-json/1",
        created_ms=1_000,
        metrics={"silhouette": 0.5},
        annotations={"k": "3"},
    )


def test_manifest_describes_the_file(tmp_path: Path) -> None:
    path = model_file(tmp_path, 4500)
    m = manifest_for(path)
    data = path.read_bytes()
    assert m.model_id == hashlib.sha256(data).hexdigest()
    assert (m.size_bytes, m.chunk_size, m.chunk_count) == (4500, 1000, 5)
    assert m.chunk_sha256[4] == hashlib.sha256(data[4000:]).hexdigest()
    assert m.metric("silhouette") == 0.5
    check_manifest(m, LIMITS)
    assert manifest_from_bytes(manifest_bytes(m)) == m
    chunks = list(read_chunks(path, m))
    assert [len(c.data) for c in chunks] == [1000, 1000, 1000, 1000, 500]
    assert b"".join(c.data for c in chunks) == data
    assert [c.index for c in read_chunks(path, m, [3, 99, -1, 0])] == [3, 0]


def test_exact_multiple_and_empty_files(tmp_path: Path) -> None:
    m = manifest_for(model_file(tmp_path, 3000))
    assert m.chunk_count == 3
    empty = manifest_for(model_file(tmp_path, 0, "empty.bin"))
    assert empty.chunk_count == 0
    asm = Assembler.create(tmp_path / "rx", empty, LIMITS)
    assert asm.complete
    assert asm.finish().read_bytes() == b""


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"model_id": "XYZ"}, "not a hex sha256"),
        ({"size_bytes": 10**12}, "over this node's limit"),
        ({"chunk_size": 0}, "chunk size 0"),
        ({"chunk_size": 64 * 1024 * 1024}, "chunk size"),
        ({"chunk_sha256": ("0" * 64,)}, "expected 5"),
        ({"file_name": "../x"}, "unsafe artifact name"),
    ],
)
def test_bad_or_oversized_manifests_are_refused(
    tmp_path: Path, change: dict[str, object], match: str
) -> None:
    m = replace(manifest_for(model_file(tmp_path, 4500)), **change)  # type: ignore[arg-type]
    with pytest.raises(ManifestError, match=match):
        Assembler.create(tmp_path / "rx", m, LIMITS)
    assert not (tmp_path / "rx").exists()


def test_chunks_in_any_order_complete_the_model(tmp_path: Path) -> None:
    path = model_file(tmp_path, 10_500)
    m = manifest_for(path)
    asm = Assembler.create(tmp_path / "rx", m, LIMITS)
    chunks = list(read_chunks(path, m))
    random.Random(1).shuffle(chunks)
    for n, chunk in enumerate(chunks):
        assert not asm.complete
        assert asm.add(chunk) is ChunkOutcome.ACCEPTED
        assert asm.missing_count == len(chunks) - n - 1
    assert asm.add(chunks[0]) is ChunkOutcome.DUPLICATE
    assert asm.complete and asm.missing() == []
    assert asm.finish().read_bytes() == path.read_bytes()


def test_a_tampered_chunk_is_refused_then_accepted_when_sent_again(tmp_path: Path) -> None:
    path = model_file(tmp_path, 4500)
    m = manifest_for(path)
    asm = Assembler.create(tmp_path / "rx", m, LIMITS)
    good = list(read_chunks(path, m))
    bad = ModelChunk(m.model_id, 2, bytes(b ^ 1 for b in good[2].data))
    assert asm.add(bad) is ChunkOutcome.BAD_HASH
    assert asm.add(ModelChunk(m.model_id, 2, good[2].data[:-1])) is ChunkOutcome.BAD_HASH
    assert asm.rejected == 2
    assert 2 in asm.missing()
    assert asm.add(ModelChunk(m.model_id, 9, b"x")) is ChunkOutcome.BAD_INDEX
    assert asm.add(ModelChunk("f" * 64, 0, good[0].data)) is ChunkOutcome.WRONG_MODEL
    for chunk in good:
        asm.add(chunk)
    assert asm.finish().read_bytes() == path.read_bytes()


def test_progress_survives_a_restart(tmp_path: Path) -> None:
    path = model_file(tmp_path, 9_000)
    m = manifest_for(path)
    chunks = list(read_chunks(path, m))
    asm = Assembler.create(tmp_path / "rx", m, LIMITS)
    for chunk in chunks[::2]:
        asm.add(chunk)
    asm.close()  # as a crash would leave it: the files stay
    again = Assembler.open(tmp_path / "rx", LIMITS)
    assert again.manifest == m
    assert again.missing() == [1, 3, 5, 7]
    # create() with the same manifest resumes too (the manifest came again, retained).
    again.close()
    resumed = Assembler.create(tmp_path / "rx", m, LIMITS)
    assert resumed.missing() == [1, 3, 5, 7]
    for chunk in chunks[1::2]:
        assert resumed.add(chunk) is ChunkOutcome.ACCEPTED
    assert resumed.finish().read_bytes() == path.read_bytes()


def test_a_torn_bitmap_starts_over_and_a_missing_manifest_is_refused(tmp_path: Path) -> None:
    path = model_file(tmp_path, 3_000)
    m = manifest_for(path)
    asm = Assembler.create(tmp_path / "rx", m, LIMITS)
    asm.add(next(read_chunks(path, m)))
    asm.close()
    (tmp_path / "rx" / Assembler.BITMAP).write_bytes(b"")
    assert Assembler.open(tmp_path / "rx", LIMITS).missing() == [0, 1, 2]
    (tmp_path / "rx" / Assembler.MANIFEST).write_bytes(b"junk")
    with pytest.raises(ManifestError, match="no usable manifest"):
        Assembler.open(tmp_path / "rx", LIMITS)


def test_chunks_gone_bad_on_disk_are_missing_again(tmp_path: Path) -> None:
    path = model_file(tmp_path, 4_500)
    m = manifest_for(path)
    asm = Assembler.create(tmp_path / "rx", m, LIMITS)
    chunks = list(read_chunks(path, m))
    for chunk in chunks:
        asm.add(chunk)
    asm.close()
    partial = tmp_path / "rx" / Assembler.DATA
    with open(partial, "r+b") as f:  # what a power loss could leave
        f.seek(1500)
        f.write(b"\xff" * 10)
    asm = Assembler.open(tmp_path / "rx", LIMITS)
    assert asm.complete  # the bitmap says so ...
    with pytest.raises(ChunkMismatchError) as info:
        asm.finish()  # ... the whole hash says otherwise
    assert info.value.indexes == (1,)
    assert asm.missing() == [1]
    assert asm.add(chunks[1]) is ChunkOutcome.ACCEPTED
    assert asm.finish().read_bytes() == path.read_bytes()


def test_a_manifest_whose_whole_hash_does_not_match_fails(tmp_path: Path) -> None:
    path = model_file(tmp_path, 4_500)
    m = replace(manifest_for(path), model_id="a" * 64)  # chunks fine, the whole is not
    asm = Assembler.create(tmp_path / "rx", m, LIMITS)
    for chunk in read_chunks(path, m):
        asm.add(chunk)
    with pytest.raises(IntegrityError, match="manifest is inconsistent"):
        asm.finish()
    asm.discard()
    assert not (tmp_path / "rx").exists()


def test_digest_streams_a_file_larger_than_one_read(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    with open(path, "wb") as f:
        for _ in range(3):
            f.write(os.urandom(1024 * 1024))
    d = digest_file(path)  # default 256 KiB chunks
    assert len(d.chunk_sha256) == 12 and d.size == 3 * 1024 * 1024
    assert d.model_id == hashlib.sha256(path.read_bytes()).hexdigest()


def test_staging_is_bounded_in_bytes_and_time(tmp_path: Path) -> None:
    staging = ChunkStaging(tmp_path / "staging", max_bytes=250, ttl_ms=1_000)
    a, b = "a" * 64, "b" * 64
    assert staging.put(ModelChunk(a, 1, b"x" * 100), now_ms=0)
    assert staging.put(ModelChunk(a, 0, b"y" * 100), now_ms=0)
    assert staging.put(ModelChunk(a, 0, b"y" * 100), now_ms=0)  # already held: no more bytes
    assert not staging.put(ModelChunk(b, 0, b"z" * 100), now_ms=0)  # full
    assert (staging.bytes, staging.dropped) == (200, 1)
    assert [(c.index, c.data[:1]) for c in staging.take(a)] == [(0, b"y"), (1, b"x")]
    assert staging.bytes == 0 and list(staging.take(a)) == []
    assert staging.put(ModelChunk(b, 0, b"z"), now_ms=10)
    assert staging.expire(now_ms=500) == 0
    assert staging.expire(now_ms=1_010) == 1
    assert list(staging.take(b)) == [] and staging.bytes == 0
    assert list((tmp_path / "staging").iterdir()) == []
    (tmp_path / "staging" / "junk").mkdir()
    ChunkStaging(tmp_path / "staging", max_bytes=1, ttl_ms=1)  # a cache: starts empty
    assert list((tmp_path / "staging").iterdir()) == []
