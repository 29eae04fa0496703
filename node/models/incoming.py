"""The transfers a node has under way: one ``Assembler`` each, resumed after a restart, plus
the staging of early chunks and the timers that ask for missing chunks.

Synchronous, with ``now`` passed in: the exchange calls it from the event loop and carries
out what it returns (chunk requests to publish, transfers ready to finish).

Asking: a transfer that made no progress for ``request_after_ms`` asks for what it misses
(all of it as an empty index list, else at most ``max_request_indexes``); the wait then
doubles up to ``request_max_interval_ms`` and falls back to ``request_after_ms`` as soon as a
chunk is accepted.  A manifest created long ago (a late joiner reading the retained one) is
due at once, since its chunks have passed already; so is a transfer resumed after a restart
(what the node's broker session still holds for it may then come twice, bounded by that
session's queue).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ion.model.manifest import ChunkRequest, ModelChunk, ModelManifest

from .config import ModelConfig
from .errors import ModelError
from .policy import newer
from .staging import ChunkStaging
from .transfer import Assembler, ChunkOutcome

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Incoming:
    assembler: Assembler
    last_activity_ms: int
    interval_ms: int
    requests: int = 0
    finishing: bool = False  # being checked and stored (in a worker thread): hands off

    @property
    def manifest(self) -> ModelManifest:
        return self.assembler.manifest


class Transfers:
    def __init__(self, root: Path, config: ModelConfig) -> None:
        self._root = root / "incoming"
        self._cfg = config
        self._staging = ChunkStaging(
            root / "staging", max_bytes=config.staging_max_bytes, ttl_ms=config.staging_ttl_ms
        )
        self._by_id: dict[str, Incoming] = {}
        self._root.mkdir(parents=True, exist_ok=True)
        for directory in sorted(self._root.iterdir()):
            try:
                assembler = Assembler.open(directory, config.transfer_limits)
            except ModelError as exc:
                log.warning("dropping an unusable partial transfer: %s", exc)
                shutil.rmtree(directory, ignore_errors=True)
                continue
            self._by_id[assembler.manifest.model_id] = Incoming(
                assembler, 0, config.request_after_ms
            )
            log.info(
                "resuming model %s: %d of %d chunk(s) held",
                assembler.manifest.model_id[:12],
                assembler.received_count,
                assembler.manifest.chunk_count,
            )

    def get(self, model_id: str) -> Incoming | None:
        return self._by_id.get(model_id)

    def __iter__(self) -> Iterator[Incoming]:
        return iter(list(self._by_id.values()))

    def newest(self, ion: str, edge: str) -> ModelManifest | None:
        """The newest version of (``ion``, ``edge``) on its way."""
        found: ModelManifest | None = None
        for inc in self:
            m = inc.manifest
            if (m.ion, m.edge) == (ion, edge) and newer(m, found):
                found = m
        return found

    def start(self, m: ModelManifest, now: int) -> Incoming:
        """Begin fetching ``m`` (checked by the caller), taking in its staged chunks.
        Unfinished transfers of older versions on the same edge are dropped: a newer one
        supersedes them."""
        for other in self:
            o = other.manifest
            if (o.ion, o.edge) == (m.ion, m.edge) and not other.finishing and not newer(o, m):
                self.drop(o.model_id)
        assembler = Assembler.create(self._root / m.model_id, m, self._cfg.transfer_limits)
        first = min(now, m.created_ms) if m.created_ms > 0 else now
        inc = self._by_id[m.model_id] = Incoming(assembler, first, self._cfg.request_after_ms)
        for chunk in self._staging.take(m.model_id):
            self.add(inc, chunk, now)
        return inc

    def stage(self, chunk: ModelChunk, now: int) -> bool:
        """Keep a chunk whose manifest has not come yet; False when there is no room."""
        return self._staging.put(chunk, now)

    def add(self, inc: Incoming, chunk: ModelChunk, now: int) -> ChunkOutcome:
        outcome = inc.assembler.add(chunk)
        if outcome is ChunkOutcome.ACCEPTED:
            inc.last_activity_ms = now
            inc.interval_ms = self._cfg.request_after_ms
        elif outcome is ChunkOutcome.BAD_HASH:
            log.warning(
                "model %s: chunk %d does not match its hash; refused",
                chunk.model_id[:12],
                chunk.index,
            )
        return outcome

    def drop(self, model_id: str) -> None:
        inc = self._by_id.pop(model_id, None)
        if inc is not None:
            inc.assembler.discard()

    def due(
        self, now: int, wanted: Callable[[ModelManifest], bool], requester: str
    ) -> list[tuple[ModelManifest, ChunkRequest]]:
        """Chunk requests to send now, for the transfers ``wanted`` still wants; expires
        staged chunks too."""
        self._staging.expire(now)
        out = []
        for inc in self:
            m = inc.manifest
            if inc.finishing or not wanted(m) or now - inc.last_activity_ms < inc.interval_ms:
                continue
            missing = inc.assembler.missing()
            if len(missing) == m.chunk_count:
                indexes: tuple[int, ...] = ()  # all
            else:
                indexes = tuple(missing[: self._cfg.max_request_indexes])
            inc.last_activity_ms = now
            inc.interval_ms = min(inc.interval_ms * 2, self._cfg.request_max_interval_ms)
            inc.requests += 1
            out.append((m, ChunkRequest(m.model_id, indexes, requester=requester)))
        return out
