"""Chunked model transfer: manifests from files, chunks from disk, and the receiving side.

Sending: ``digest_file`` streams once through the packed artifact (sha256 of the whole, which
is the model id, and of every chunk); ``build_manifest`` wraps that with what the model means;
``read_chunks`` reads chunks back from disk one at a time.  Nothing holds the whole model in
memory.

Receiving: an ``Assembler`` owns one directory per model id::

    manifest.bin     the manifest (its envelope encoding), written once, atomically
    data.partial     the artifact's bytes, chunks written at their offsets in any order
    received.bitmap  one bit per chunk, set after the chunk's bytes are written

A chunk is written only when its length and sha256 match the manifest; a bad one is counted
and its index stays missing.  The bitmap is updated in place, one byte per accepted chunk: a
process crash keeps both files consistent (the page cache survives the process), so a restart
resumes with the chunks already verified.  A power loss may lose recent writes, so
``finish`` checks again what it did not see arrive itself and marks bad chunks missing again
(``ChunkMismatchError``): the transfer heals by asking for them.  How much it checks depends
on who vouches for the chunk hashes:

- a *signed* manifest reaches an assembler only after the node checked its signature against
  its trusted producer keys (``ModelExchange.on_manifest``, the gateway cache: callers must),
  so the signer vouches that its chunk hashes are those of the bytes the model id names, and
  every chunk was checked against them on arrival.  Hashing the whole file again would only
  re-check the signer's arithmetic, at the cost of hashing every byte twice (the largest
  single cost of receiving a model).  Only chunks taken over from before a restart are read
  back and checked again (a power loss may have lost their bytes but kept their bits);
- an *unsigned* manifest (development mode) is also checked whole, so nobody can pass other
  bytes off under a known model id.  That sha256 is fed as chunks arrive in order (they
  nearly always do), so ``finish`` only reads back what came out of order or before a
  restart.

Every ``WRITEBACK_BYTES`` a worker thread makes what was written so far durable (fdatasync)
and drops those pages from the page cache, so the fsync before the model is stored finds
little left to write and the page cache does not grow by the model's size.  Only starting
the writeback (``POSIX_FADV_DONTNEED`` alone, as before) is not enough: the data then sits in
the disk's (or a virtual disk's host's) write cache, and the device flush of the final fsync
writes all of it at once.  On this project's VM that flush stalled every node of a 20-node
rollout for 0.8 s at the end, against 0.05 s with a flush every 4 MiB during the transfer
(``bench/model_rollout.py``).
"""

from __future__ import annotations

import contextlib
import enum
import functools
import hashlib
import logging
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ion.errors import DecodeError
from ion.model.health import Histogram, Metric
from ion.model.manifest import ModelChunk, ModelManifest
from ion.model.messages import new_envelope
from ion.wire.codec import decode, encode
from node.files import write_atomically

from .config import DEFAULT_CHUNK_SIZE
from .errors import ChunkMismatchError, IntegrityError, ManifestError, UnsafeArchiveError
from .pack import GiB, MiB, Packed, safe_file_name

log = logging.getLogger(__name__)

WRITEBACK_BYTES = 4 * MiB
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_READ_BLOCK = 1 * MiB
_CATCH_UP_CHUNKS = 8  # chunks read back per add to extend the in-order hash


@dataclass(frozen=True, slots=True)
class TransferLimits:
    """What this node accepts from a manifest before fetching anything."""

    max_model_bytes: int = 4 * GiB
    max_chunk_bytes: int = 8 * MiB  # one chunk must fit one MQTT message with room to spare


@dataclass(frozen=True, slots=True)
class Digest:
    model_id: str  # hex sha256 of the whole
    size: int
    chunk_size: int
    chunk_sha256: tuple[str, ...]


def digest_file(path: Path, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Digest:
    """Stream once through ``path``: the sha256 of the whole and of every chunk.

    The whole is hashed in a second thread while this one hashes the chunks (hashlib lets
    go of the GIL), which halves the time before a producer can send its first chunk."""
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    whole = hashlib.sha256()
    chunks: list[str] = []
    size = 0
    with open(path, "rb") as f, ThreadPoolExecutor(1, "ion-digest") as pool:
        pending: Future[None] | None = None
        while block := f.read(chunk_size):
            if pending is not None:
                pending.result()  # in order, and at most one block held besides this one
            pending = pool.submit(whole.update, block)
            chunks.append(hashlib.sha256(block).hexdigest())
            size += len(block)
        if pending is not None:
            pending.result()
    return Digest(whole.hexdigest(), size, chunk_size, tuple(chunks))


def build_manifest(
    packed: Packed,
    digest: Digest,
    *,
    version: str,
    ion: str,
    edge: str,
    producer_pipeline: str,
    producer_node: str,
    format: str,
    created_ms: int,
    metrics: Mapping[str, float] | None = None,
    baseline: tuple[Histogram, ...] = (),
    annotations: Mapping[str, str] | None = None,
) -> ModelManifest:
    return ModelManifest(
        model_id=digest.model_id,
        version=version,
        ion=ion,
        edge=edge,
        producer_pipeline=producer_pipeline,
        producer_node=producer_node,
        size_bytes=digest.size,
        chunk_size=digest.chunk_size,
        chunk_sha256=digest.chunk_sha256,
        format=format,
        layout=packed.layout,
        file_name=packed.file_name,
        metrics=tuple(Metric(k, float(v)) for k, v in sorted((metrics or {}).items())),
        baseline=baseline,
        created_ms=created_ms,
        annotations=dict(annotations or {}),
    )


def chunk_length(manifest: ModelManifest, index: int) -> int:
    start = index * manifest.chunk_size
    return max(0, min(manifest.chunk_size, manifest.size_bytes - start))


def read_chunks(
    path: Path, manifest: ModelManifest, indexes: Iterable[int] | None = None
) -> Iterator[ModelChunk]:
    """The chunks at ``indexes`` (all when None) read from ``path``, one at a time."""
    wanted = range(manifest.chunk_count) if indexes is None else indexes
    with open(path, "rb") as f:
        for index in wanted:
            if not 0 <= index < manifest.chunk_count:
                continue  # a request for a chunk that does not exist: nothing to send
            f.seek(index * manifest.chunk_size)
            yield ModelChunk(manifest.model_id, index, f.read(chunk_length(manifest, index)))


def check_manifest(m: ModelManifest, limits: TransferLimits) -> None:
    """``ManifestError`` unless ``m`` is well formed and within ``limits``."""
    if not _HEX64.match(m.model_id):
        raise ManifestError(f"model id {m.model_id[:80]!r} is not a hex sha256")
    if m.size_bytes > limits.max_model_bytes:
        raise ManifestError(
            f"model {m.model_id[:12]} has {m.size_bytes} bytes, over this node's limit of "
            f"{limits.max_model_bytes}"
        )
    if not 0 < m.chunk_size <= limits.max_chunk_bytes:
        raise ManifestError(
            f"chunk size {m.chunk_size} is outside 1..{limits.max_chunk_bytes} bytes"
        )
    expected = -(-m.size_bytes // m.chunk_size)
    if m.chunk_count != expected:
        raise ManifestError(
            f"{m.chunk_count} chunk hashes for {m.size_bytes} bytes in chunks of "
            f"{m.chunk_size} (expected {expected})"
        )
    if not all(_HEX64.match(h) for h in m.chunk_sha256):
        raise ManifestError("a chunk hash is not a hex sha256")
    try:
        safe_file_name(m.file_name)
    except UnsafeArchiveError as exc:
        raise ManifestError(str(exc)) from None


# -- the manifest on local disk -------------------------------------------------------------


def manifest_bytes(m: ModelManifest) -> bytes:
    # The envelope encoding: one decoder, hardened against hostile input, for wire and disk.
    return encode(new_envelope(m, source_node="", now_ms=0))


def manifest_from_bytes(data: bytes) -> ModelManifest:
    body = decode(data).body
    if not isinstance(body, ModelManifest):
        raise DecodeError(f"expected a model manifest, found {type(body).__name__}")
    return body


# -- the receiving side -----------------------------------------------------------------------


class ChunkOutcome(enum.Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"  # already held: nothing written
    BAD_HASH = "bad_hash"  # wrong length or sha256: refused, the index stays missing
    BAD_INDEX = "bad_index"  # no such chunk in the manifest
    WRONG_MODEL = "wrong_model"


class Assembler:
    """Receives one model's chunks into its directory; see the module docstring."""

    MANIFEST = "manifest.bin"
    DATA = "data.partial"
    BITMAP = "received.bitmap"

    def __init__(self, directory: Path, manifest: ModelManifest) -> None:
        """Use ``create`` or ``open``."""
        self.directory = directory
        self.manifest = manifest
        self.rejected = 0  # chunks refused for a bad hash or length
        n = manifest.chunk_count
        self._data = os.open(directory / self.DATA, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._bits_fd = os.open(
            directory / self.BITMAP, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        if os.fstat(self._data).st_size != manifest.size_bytes:
            os.ftruncate(self._data, manifest.size_bytes)  # sparse: chunks land at offsets
        raw = os.pread(self._bits_fd, (n + 7) // 8, 0)
        if len(raw) != (n + 7) // 8:  # new, or torn: start over, chunks come again
            raw = bytes((n + 7) // 8)
            os.pwrite(self._bits_fd, raw, 0)
        self._bits = bytearray(raw)
        self._missing = {i for i in range(n) if not self._has(i)}
        self._vouched = manifest.signature is not None  # see the module docstring
        self._fresh = bytearray(n)  # 1: accepted (verified in memory) since this open
        # Unsigned only: the sha256 of chunks 0 .. _hashed - 1, fed in order.
        self._whole = hashlib.sha256()
        self._hashed = 0
        self._unflushed = 0  # bytes written since writeback was last started
        self._writeback: Future[None] | None = None  # the one under way (see ``add``)
        self.write_error: OSError | None = None  # the first one writing back reported

    @classmethod
    def create(cls, directory: Path, manifest: ModelManifest, limits: TransferLimits) -> Assembler:
        """Start (or resume, if its directory exists) the transfer of ``manifest``."""
        check_manifest(manifest, limits)
        if (directory / cls.MANIFEST).exists():
            held = cls.open(directory, limits)
            if held.manifest.model_id == manifest.model_id:
                return held
            held.discard()
        directory.mkdir(parents=True, exist_ok=True)
        # Not fsynced: this runs on the event loop, and after a power loss an unreadable
        # manifest only means this transfer starts over (``open`` refuses it).
        write_atomically(directory / cls.MANIFEST, manifest_bytes(manifest), durable=False)
        return cls(directory, manifest)

    @classmethod
    def open(cls, directory: Path, limits: TransferLimits) -> Assembler:
        """Resume the transfer persisted in ``directory`` (``ManifestError`` if unusable)."""
        try:
            manifest = manifest_from_bytes((directory / cls.MANIFEST).read_bytes())
        except (OSError, DecodeError) as exc:
            raise ManifestError(f"{directory}: no usable manifest ({exc})") from None
        check_manifest(manifest, limits)
        return cls(directory, manifest)

    # -- progress --------------------------------------------------------------------------

    def _has(self, index: int) -> bool:
        return bool(self._bits[index >> 3] & (1 << (index & 7)))

    def _mark(self, index: int, held: bool) -> None:
        byte = index >> 3
        if held:
            self._bits[byte] |= 1 << (index & 7)
        else:
            self._bits[byte] &= ~(1 << (index & 7)) & 0xFF
        os.pwrite(self._bits_fd, bytes(self._bits[byte : byte + 1]), byte)

    @property
    def complete(self) -> bool:
        return not self._missing

    def missing(self) -> list[int]:
        return sorted(self._missing)

    def holds(self, index: int) -> bool:
        return 0 <= index < self.manifest.chunk_count and index not in self._missing

    @property
    def missing_count(self) -> int:
        return len(self._missing)

    @property
    def received_count(self) -> int:
        return self.manifest.chunk_count - len(self._missing)

    @property
    def received_bytes(self) -> int:
        """Bytes held (what the partial file really uses on disk)."""
        m = self.manifest
        if not self._missing:
            return m.size_bytes
        last = m.chunk_count - 1
        held = self.received_count * m.chunk_size
        if self.holds(last):
            held -= m.chunk_size - chunk_length(m, last)
        return held

    # -- chunks ------------------------------------------------------------------------------

    def add(self, chunk: ModelChunk) -> ChunkOutcome:
        m = self.manifest
        if chunk.model_id != m.model_id:
            return ChunkOutcome.WRONG_MODEL
        if not 0 <= chunk.index < m.chunk_count:
            return ChunkOutcome.BAD_INDEX
        if chunk.index not in self._missing:
            return ChunkOutcome.DUPLICATE
        if (
            len(chunk.data) != chunk_length(m, chunk.index)
            or hashlib.sha256(chunk.data).hexdigest() != m.chunk_sha256[chunk.index]
        ):
            self.rejected += 1
            return ChunkOutcome.BAD_HASH
        # Data first, then its bit: a crash in between only costs fetching the chunk again.
        os.pwrite(self._data, chunk.data, chunk.index * m.chunk_size)
        self._mark(chunk.index, True)
        self._missing.discard(chunk.index)
        self._fresh[chunk.index] = 1
        if not self._vouched and chunk.index == self._hashed:
            self._whole.update(chunk.data)
            self._hashed += 1
            self._catch_up(_CATCH_UP_CHUNKS)
        self._unflushed += len(chunk.data)
        if self._unflushed >= WRITEBACK_BYTES and self._settled(wait=False):
            # In a worker thread, off the event loop of every node in the process.  While the
            # last one is still running, none is started: the next one covers its bytes.
            self._unflushed = 0
            self._writeback = _writeback_thread().submit(_write_back, self._data)
        return ChunkOutcome.ACCEPTED

    def read(self, index: int) -> bytes:
        """The bytes of chunk ``index``, which this assembler holds (verified)."""
        if not self.holds(index):
            raise KeyError(index)
        m = self.manifest
        return os.pread(self._data, chunk_length(m, index), index * m.chunk_size)

    def _catch_up(self, limit: int | None) -> None:
        """Feed held chunks after the in-order prefix into the whole hash (read back from
        disk), at most ``limit`` of them (None: all)."""
        m = self.manifest
        n = 0
        while self._hashed < m.chunk_count and self.holds(self._hashed):
            if limit is not None and n >= limit:
                return
            index = self._hashed
            for block in _blocks(self._data, chunk_length(m, index), index * m.chunk_size):
                self._whole.update(block)
            self._hashed += 1
            n += 1

    def finish(self) -> Path:
        """Check the whole file against the model id (``verify``), close it and return it
        (the caller moves it)."""
        self.verify()
        self.close()
        return self.directory / self.DATA

    def verify(self) -> None:
        """Check the complete file (see the module docstring for how much).

        ``ChunkMismatchError`` when chunks on disk went bad (they are missing again);
        ``IntegrityError`` when every chunk matches but the whole does not match the model id
        of an unsigned manifest (it contradicts itself: the transfer cannot succeed and
        should be discarded); ``OSError`` when writing the file back failed (an fdatasync
        reports an error once, so a later fsync would not see it): the bytes on disk cannot
        be trusted, and the transfer must start over.
        """
        if self._missing:
            raise RuntimeError(f"{len(self._missing)} chunk(s) still missing")
        self._settled(wait=True)
        if self.write_error is not None:
            raise self.write_error
        m = self.manifest
        if self._vouched:
            indexes = [i for i in range(m.chunk_count) if not self._fresh[i]]
        else:
            self._catch_up(None)
            if self._whole.hexdigest() == m.model_id:
                return
            # Hashed from memory or from disk, the whole does not match: look at the disk.
            self._whole, self._hashed = hashlib.sha256(), 0
            indexes = list(range(m.chunk_count))
        bad = [i for i in indexes if self._on_disk_sha256(i) != m.chunk_sha256[i]]
        for i in indexes:
            self._fresh[i] = 1  # checked now
        if bad:
            for i in bad:
                self._mark(i, False)
                self._missing.add(i)
            raise ChunkMismatchError(m.model_id, bad)
        if self._vouched:
            return
        raise IntegrityError(
            f"model {m.model_id[:12]}: every chunk matches its hash but the whole file does not "
            "match the model id; the manifest is inconsistent"
        )

    def _on_disk_sha256(self, index: int) -> str:
        m = self.manifest
        data = os.pread(self._data, chunk_length(m, index), index * m.chunk_size)
        return hashlib.sha256(data).hexdigest()

    def _settled(self, *, wait: bool) -> bool:
        """Whether no writeback is under way (waiting for it if ``wait``), keeping the first
        error one reported."""
        future = self._writeback
        if future is None:
            return True
        if not wait and not future.done():
            return False
        self._writeback = None
        error = future.exception()
        if isinstance(error, OSError) and self.write_error is None:
            self.write_error = error
        return True

    def close(self) -> None:
        # Never close (and let the number be reused) under a call still using the fd.
        self._settled(wait=True)
        for fd in (self._data, self._bits_fd):
            if fd >= 0:
                os.close(fd)
        self._data = self._bits_fd = -1

    def discard(self) -> None:
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)


@functools.cache
def _writeback_thread() -> ThreadPoolExecutor:
    """A few threads per process for every assembler's writeback hints.  A hint only queues
    I/O, but with the disk busy the call waits for the block layer; with one thread, ten
    nodes in a process took turns and their models were still largely dirty when the last
    chunk came (the fsync before storing then took 0.7-0.85 s at the end of a 20-node
    rollout, against 0.03-0.15 s with four: bench/model_rollout.py)."""
    return ThreadPoolExecutor(4, "ion-writeback")


def _write_back(fd: int) -> None:
    """Make what was written to ``fd`` so far durable, then drop its pages (now clean) from
    the page cache: a model passing through must not grow the page cache by its size
    (nothing reads it again soon; on a virtual machine, fresh pages cost far more than
    recycled ones).  An ``OSError`` of the fdatasync is the assembler's to keep (see
    ``Assembler.finish``)."""
    os.fdatasync(fd)
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        with contextlib.suppress(OSError):
            advise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _blocks(fd: int, size: int, offset: int = 0) -> Iterator[bytes]:
    end = offset + size
    while offset < end:
        block = os.pread(fd, min(_READ_BLOCK, end - offset), offset)
        if not block:
            raise IntegrityError("the partial file is shorter than the model")
        offset += len(block)
        yield block
