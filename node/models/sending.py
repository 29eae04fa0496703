"""Sending a stored model through the outbox: the manifest, then its chunks, a few at a time.

Publishing waits until each message is durable in the outbox, ``publish_window`` chunks at a
time (so memory holds at most that many chunks; the outbox's group commit stores each batch in
one transaction).  A producer's own publish waits for room while the outbox refuses (full),
for ``publish_retry_ms``; answers to chunk requests try once (the requester asks again).

Every consumer of an edge reads the same chunk topic, so a chunk sent serves all of them:
``fresh`` leaves out chunks sent within ``resend_guard_ms``, however many consumers ask.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from ion import topics
from ion.errors import UnavailableError
from ion.model.manifest import ModelChunk

from .config import ModelConfig
from .store import StoredVersion
from .transfer import read_chunks

log = logging.getLogger(__name__)

Publish = Callable[[str, object, str], Awaitable[None]]
"""(topic, body, ION) -> durable in the outbox; ``UnavailableError`` when refused."""


class ChunkSender:
    def __init__(self, publish: Publish, config: ModelConfig, clock: Callable[[], int]) -> None:
        self._publish = publish
        self._cfg = config
        self._clock = clock
        self._sent: dict[str, dict[int, int]] = {}  # model id -> chunk index -> sent at

    async def publish_model(self, stored: StoredVersion) -> None:
        """The retained manifest, then every chunk (waiting for room in a full outbox)."""
        m = stored.manifest
        await self._durable(topics.model_manifest(m.ion, m.edge), m, m.ion)
        await self._send(stored, range(m.chunk_count), retry=True)

    def fresh(self, stored: StoredVersion, indexes: Iterable[int], now: int) -> list[int]:
        """Which of ``indexes`` (all when empty) to send now; they count as sent from now."""
        guard = self._cfg.resend_guard_ms
        sent = self._sent.setdefault(stored.model_id, {})
        count = stored.manifest.chunk_count
        wanted = set(indexes) or set(range(count))
        out = sorted(
            i for i in wanted if 0 <= i < count and now - sent.get(i, now - guard) >= guard
        )
        for i in out:
            sent[i] = now
        return out

    async def answer(self, stored: StoredVersion, indexes: list[int]) -> None:
        try:
            await self._send(stored, indexes, retry=False)
        except (UnavailableError, OSError) as exc:  # the requester asks again
            # OSError: the version was pruned while its chunks were being read.
            log.warning("could not queue chunks of %s: %s", stored.model_id[:12], exc)

    def forget(self, now: int) -> None:
        """Drop the record of chunks sent longer ago than the guard."""
        guard = self._cfg.resend_guard_ms
        for model_id, sent in list(self._sent.items()):
            recent = {i: t for i, t in sent.items() if now - t < guard}
            if recent:
                self._sent[model_id] = recent
            else:
                del self._sent[model_id]

    async def _send(self, stored: StoredVersion, indexes: Iterable[int], *, retry: bool) -> None:
        m = stored.manifest
        topic = topics.model_chunks(m.ion, m.edge, m.model_id)
        sent = self._sent.setdefault(m.model_id, {})
        send = self._durable if retry else self._publish
        batch: list[ModelChunk] = []
        for chunk in read_chunks(stored.blob_path, m, indexes):
            batch.append(chunk)
            sent[chunk.index] = self._clock()
            if len(batch) >= self._cfg.publish_window:
                await asyncio.gather(*(send(topic, c, m.ion) for c in batch))
                batch = []
        if batch:
            await asyncio.gather(*(send(topic, c, m.ion) for c in batch))

    async def _durable(self, topic: str, body: object, ion: str) -> None:
        """Publish, waiting for room while the outbox refuses (full), for a bounded time."""
        deadline = time.monotonic() + self._cfg.publish_retry_ms / 1000
        delay = 0.05
        while True:
            try:
                await self._publish(topic, body, ion)
            except UnavailableError:
                if time.monotonic() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            else:
                return
