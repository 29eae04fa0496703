"""A gateway's model cache: one copy of each model it relays down, for all of its children.

Without it every child that misses chunks (a dropped link, a restart, a node that joins late)
asks the producer, and each answer crosses the gateway's upstream link again, which is often
the slow, metered one.  With it the gateway keeps what passes through and answers its
children itself:

- **Filling.** Every manifest the relay carries down starts a cache entry (checked against
  this node's limits and trust first; one that fails is still relayed, not cached), and every
  chunk it carries down is verified against that manifest and written to the entry, using the
  same ``Assembler`` as a consumer (on disk, resumable, never whole in memory).  An entry
  survives restarts; the newest ``gateway_cache_versions`` per model edge are kept, and the
  least recently used entries go when the cache holds more than ``gateway_cache_bytes``.
- **Answering.** A child's ``ChunkRequest`` for a model with an entry never goes up as it is.
  The chunks the entry holds are sent down from the cache (a chunk sent within
  ``resend_guard_ms`` is not sent again, whoever asks: every child reads the same topic).  For
  the rest the gateway asks upstream itself, once: an index asked for is not asked again
  while chunks of that model still arrive from upstream, nor within ``request_after_ms``.  So
  however many children miss a chunk, it crosses the upstream link once.  A request for a
  model without an entry (e.g. an older version the cache already dropped) is forwarded up.
- **Checking.** A complete entry is checked whole once (``verify``, in a worker thread):
  chunks bad on disk become missing again, and an entry whose whole does not match its model
  id (an inconsistent manifest) is dropped.

Synchronous, ``now`` passed in: the relay (``node.agent.relay``) decodes what passes, calls
this, and carries out the answer (``Plan``).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ion import topics
from ion.errors import RefusedError, UnavailableError
from ion.model.manifest import ChunkRequest, ModelChunk, ModelManifest
from ion.model.messages import new_envelope
from ion.wire.codec import encode

from .config import ModelConfig
from .errors import ChunkMismatchError, ModelError
from .policy import version_key
from .sending import DirectLink
from .transfer import Assembler, ChunkOutcome

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Entry:
    assembler: Assembler
    used_ms: int
    progress_ms: int = 0  # the last chunk that came from upstream
    asked: dict[int, int] = field(default_factory=dict)  # index -> asked upstream at
    served: dict[int, int] = field(default_factory=dict)  # index -> sent down at
    verified: bool = False
    checking: bool = False

    @property
    def manifest(self) -> ModelManifest:
        return self.assembler.manifest


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do about one child's chunk request."""

    serve: tuple[int, ...] = ()  # indexes to send down from the cache
    ask: ChunkRequest | None = None  # the gateway's own request upstream
    forward: bool = False  # no entry: forward the child's request up unchanged


class GatewayCache:
    def __init__(
        self,
        root: Path,
        config: ModelConfig,
        *,
        node_id: str,
        accept: Callable[[ModelManifest], str] = lambda m: "",
    ) -> None:
        """``root``: the cache's directory; ``accept`` says why a manifest must not be cached
        ("" when it may be), e.g. because it is not signed by a trusted key."""
        self._root = root
        self._cfg = config
        self._node_id = node_id
        self._accept = accept
        self._entries: dict[str, _Entry] = {}
        self.counters: dict[str, int] = {}
        root.mkdir(parents=True, exist_ok=True)
        for directory in sorted(root.iterdir()):
            try:
                assembler = Assembler.open(directory, config.transfer_limits)
            except ModelError as exc:
                log.warning("gateway cache: dropping an unusable entry: %s", exc)
                shutil.rmtree(directory, ignore_errors=True)
                continue
            self._entries[assembler.manifest.model_id] = _Entry(assembler, 0)
        if self._entries:
            log.info("gateway cache: %d model(s) held", len(self._entries))

    def count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n

    def __iter__(self) -> Iterator[ModelManifest]:
        return iter([e.manifest for e in self._entries.values()])

    def holds(self, model_id: str, index: int) -> bool:
        entry = self._entries.get(model_id)
        return entry is not None and entry.assembler.holds(index)

    @property
    def bytes(self) -> int:
        return sum(e.assembler.received_bytes for e in self._entries.values())

    # -- filling -----------------------------------------------------------------------------

    def on_manifest(self, m: ModelManifest, now: int) -> bool:
        """A manifest relayed down: start caching its model; False when it is not cached."""
        if m.model_id in self._entries:
            self._entries[m.model_id].used_ms = now
            return True
        why = self._accept(m)
        if not why:
            try:
                assembler = Assembler.create(self._root / m.model_id, m, self._cfg.transfer_limits)
            except (ModelError, OSError) as exc:
                why = str(exc)
        if why:
            self.count("manifest.refused")
            log.warning("gateway cache: not caching %s/%s version %s: %s",
                        m.ion, m.edge, m.version, why)  # fmt: skip
            return False
        self._entries[m.model_id] = _Entry(assembler, now)
        self.count("manifest.cached")
        self._keep_newest(m.ion, m.edge)
        self._fit(keep=m.model_id)
        return m.model_id in self._entries

    def on_chunk(self, chunk: ModelChunk, now: int) -> ChunkOutcome | None:
        """A chunk relayed down from upstream; None when its model has no entry."""
        entry = self._entries.get(chunk.model_id)
        if entry is None:
            self.count("chunk.uncached")
            return None
        outcome = entry.assembler.add(chunk)
        self.count(f"chunk.{outcome.value}")
        if outcome is ChunkOutcome.ACCEPTED:
            entry.progress_ms = now
            entry.asked.pop(chunk.index, None)
        elif outcome is ChunkOutcome.BAD_HASH:
            log.warning("gateway cache: chunk %d of %s does not match its hash",
                        chunk.index, chunk.model_id[:12])  # fmt: skip
        return outcome

    def to_verify(self) -> list[Assembler]:
        """Complete entries not checked whole yet; call ``verify`` on each (in a thread)
        and ``verified`` with the result."""
        out = []
        for entry in self._entries.values():
            if entry.assembler.complete and not entry.verified and not entry.checking:
                entry.checking = True
                out.append(entry.assembler)
        return out

    async def check(self, assembler: Assembler) -> None:
        """Check one of ``to_verify``'s entries whole in a worker thread and record it."""
        model_id = assembler.manifest.model_id
        try:
            await asyncio.to_thread(assembler.verify)
        except (ModelError, OSError, RuntimeError) as exc:
            self.verified(model_id, exc)
        else:
            self.verified(model_id, None)

    def verified(self, model_id: str, error: Exception | None) -> None:
        entry = self._entries.get(model_id)
        if entry is None:
            return
        entry.checking = False
        if error is None:
            entry.verified = True
            self.count("model.verified")
        elif isinstance(error, ChunkMismatchError):
            log.warning("gateway cache: %s", error)  # those chunks are missing again
        else:
            log.warning("gateway cache: dropping %s: %s", model_id[:12], error)
            self.drop(model_id)

    # -- answering ---------------------------------------------------------------------------

    def on_request(self, req: ChunkRequest, now: int) -> Plan:
        """A child's chunk request: what to send down and what to ask upstream."""
        entry = self._entries.get(req.model_id)
        if entry is None:
            self.count("request.forwarded")
            return Plan(forward=True)
        entry.used_ms = now
        self.count("request.answered")
        asm, count = entry.assembler, entry.manifest.chunk_count
        wanted = sorted({i for i in req.indexes if 0 <= i < count} or range(count))
        guard = self._cfg.resend_guard_ms
        serve, lacking = [], []
        for i in wanted:
            if asm.holds(i):
                if now - entry.served.get(i, now - guard) >= guard:
                    entry.served[i] = now
                    serve.append(i)
            else:
                lacking.append(i)
        self.count("chunk.served", len(serve))
        return Plan(serve=tuple(serve), ask=self._ask(entry, lacking, now))

    def _ask(self, entry: _Entry, lacking: list[int], now: int) -> ChunkRequest | None:
        wait = self._cfg.request_after_ms
        flowing = now - entry.progress_ms < wait
        ask = [
            i for i in lacking
            if i not in entry.asked or (not flowing and now - entry.asked[i] >= wait)
        ]  # fmt: skip
        ask = ask[: self._cfg.max_request_indexes]
        if not ask:
            return None
        for i in ask:
            entry.asked[i] = now
        self.count("request.upstream")
        m = entry.manifest
        indexes = () if len(ask) == m.chunk_count else tuple(ask)
        return ChunkRequest(m.model_id, indexes, requester=self._node_id)

    def read(self, model_id: str, index: int) -> ModelChunk | None:
        """Chunk ``index`` from the cache (None when it is not held any more)."""
        entry = self._entries.get(model_id)
        if entry is None or not entry.assembler.holds(index):
            return None
        try:
            return ModelChunk(model_id, index, entry.assembler.read(index))
        except OSError:
            return None

    def manifest(self, model_id: str) -> ModelManifest | None:
        entry = self._entries.get(model_id)
        return entry.manifest if entry is not None else None

    # -- limits ------------------------------------------------------------------------------

    def drop(self, model_id: str) -> None:
        entry = self._entries.pop(model_id, None)
        if entry is not None:
            entry.assembler.discard()

    def forget(self, now: int) -> None:
        """Drop the record of chunks served longer ago than the guard."""
        guard = self._cfg.resend_guard_ms
        for entry in self._entries.values():
            if entry.served:
                entry.served = {i: t for i, t in entry.served.items() if now - t < guard}

    def _keep_newest(self, ion: str, edge: str) -> None:
        key = (ion, edge)
        mine = [e for e in self._entries.values() if (e.manifest.ion, e.manifest.edge) == key]
        mine.sort(key=lambda e: version_key(e.manifest), reverse=True)
        for entry in mine[self._cfg.gateway_cache_versions :]:
            if not entry.checking:
                log.info("gateway cache: dropping %s/%s version %s (newer ones held)",
                         ion, edge, entry.manifest.version)  # fmt: skip
                self.drop(entry.manifest.model_id)

    def _fit(self, keep: str) -> None:
        """Drop least recently used entries while the cache is over its size; a model's
        full size counts (its file fills as chunks come)."""
        limit = self._cfg.gateway_cache_bytes
        by_use = sorted(self._entries.values(), key=lambda e: e.used_ms)
        total = sum(e.manifest.size_bytes for e in by_use)
        for entry in by_use:
            if total <= limit:
                return
            if entry.manifest.model_id == keep or entry.checking:
                continue
            total -= entry.manifest.size_bytes
            log.info("gateway cache: dropping %s (cache over %d bytes)",
                     entry.manifest.model_id[:12], limit)  # fmt: skip
            self.drop(entry.manifest.model_id)
        if total > limit:  # the new model alone is too large to cache
            self.drop(keep)

    def close(self) -> None:
        for entry in self._entries.values():
            entry.assembler.close()


async def send_cached(
    cache: GatewayCache,
    link: DirectLink,
    model_id: str,
    indexes: Sequence[int],
    *,
    window: int,
    source_node: str,
    clock: Callable[[], int],
) -> None:
    """Send chunks ``indexes`` of ``model_id`` from ``cache`` straight over ``link``, ``window``
    in flight; stops quietly when the link fails (whoever asked asks again).  Used by a
    gateway's relay and by the monitor's model cache."""
    m = cache.manifest(model_id)
    if m is None:
        return
    topic = topics.model_chunks(m.ion, m.edge, model_id)
    for start in range(0, len(indexes), window):
        chunks = [cache.read(model_id, i) for i in indexes[start : start + window]]
        payloads = [
            encode(new_envelope(c, source_node=source_node, now_ms=clock(), ion=m.ion))
            for c in chunks
            if c is not None
        ]
        results = await asyncio.gather(
            *(link.publish(topic, p, qos=1) for p in payloads), return_exceptions=True
        )
        for r in results:
            if isinstance(r, UnavailableError | RefusedError):
                return
            if isinstance(r, BaseException):
                raise r
        cache.count("chunk.sent", len(payloads))
