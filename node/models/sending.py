"""Sending a stored model: the manifest, then its chunks, a few at a time.

Chunks go straight to the broker over the node's link (QoS 1, not sequenced), not through the
outbox.  The model store already keeps them durably (it is what chunk requests are answered
from, also after a restart), and a consumer asks for whatever it misses, so a second durable
copy would only cost: storing a 256 KiB chunk in SQLite, reading it back and copying it to the
retention table wrote each model byte four times and made publishing a 50 MB model take about
a second, against 0.3 s now, most of it hashing and storing the file (bench/model_rollout.py).
At most ``publish_window`` chunks are in flight at once, so memory holds that many and the
link's window stays open for other traffic.

The manifest goes first and, when the link is up, straight to the broker too (retained), so
that it is on the broker before any chunk: online consumers then verify every chunk as it
arrives instead of staging it.  When the link is down (or drops on the way) the manifest goes
through the outbox, which delivers it once the link is back, and the remaining chunks are not
sent now: consumers ask for them when the manifest reaches them.

Without a link (a host that offers only ``publish``, such as the tests' fake), everything goes
through ``publish``: durable in the outbox, chunks ``publish_window`` at a time.

Every consumer of an edge reads the same chunk topic, so a chunk sent serves all of them:
``fresh`` leaves out chunks queued to be sent or sent within ``resend_guard_ms`` (counted from
the broker's acknowledgement), however many consumers ask.
``counters`` and ``times_sent`` say what was sent (for status and for tests that count bytes).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Protocol

from ion import topics
from ion.errors import RefusedError, UnavailableError
from ion.model.manifest import ChunkRequest, ModelChunk, ModelManifest
from ion.model.messages import new_envelope
from ion.wire.codec import encode

from .config import ModelConfig
from .store import StoredVersion
from .transfer import read_chunks

log = logging.getLogger(__name__)

Publish = Callable[[str, object, str], Awaitable[None]]
"""(topic, body, ION) -> durable in the outbox; ``UnavailableError`` when refused."""

_TRACKED_MODELS = 8  # models whose per-chunk send counts are kept (``times_sent``)
_QUEUED = 1 << 62  # "sent at" of a chunk waiting to be sent: always within the guard


class DirectLink(Protocol):
    """What the sender needs of an MQTT link (``node.link.base.MqttLink`` is one)."""

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None: ...


class ChunkSender:
    def __init__(
        self,
        publish: Publish,
        config: ModelConfig,
        clock: Callable[[], int],
        *,
        link: Callable[[], DirectLink | None] | None = None,
        node_id: str = "",
    ) -> None:
        """``link``, for a host with an MQTT link, returns it when it can publish now
        (connected), else None; ``node_id`` is the source named in what is sent on it."""
        self._publish = publish
        self._cfg = config
        self._clock = clock
        self._link = link
        self._node_id = node_id
        self._sent: dict[str, dict[int, int]] = {}  # model id -> chunk index -> sent at
        self.counters: Counter[str] = Counter()
        self.times_sent: dict[str, Counter[int]] = {}  # model id -> index -> times sent

    async def publish_model(self, m: ModelManifest, blob: Path) -> None:
        """The retained manifest, then every chunk, read from ``blob`` (the store's copy, or
        the file it is being copied from; see the module docstring)."""
        manifest_topic = topics.model_manifest(m.ion, m.edge)
        if self._link is None:
            await self._durable(manifest_topic, m, m.ion)
            await self._send_outbox(m, blob, range(m.chunk_count), retry=True)
            return
        link = self._link()
        if link is not None:
            try:
                await self._direct(link, manifest_topic, m, m.ion, retain=True)
            except (UnavailableError, RefusedError) as exc:
                log.info("model %s: the manifest goes through the outbox (%s)",
                         m.model_id[:12], exc)  # fmt: skip
            else:
                await self._send_direct(link, m, blob, range(m.chunk_count))
                return
        # Delivered once the link is back; consumers then ask for the chunks.
        await self._durable(manifest_topic, m, m.ion)

    def can_send(self) -> bool:
        """Whether anything sent now would go out now (no link concept: always)."""
        return self._link is None or self._link() is not None

    async def send_request(self, topic: str, req: ChunkRequest, ion: str) -> None:
        """A chunk request, straight over the link (never queued: a request that waited out
        an outage would only make its answer come twice); the requester asks again."""
        try:
            if self._link is None:
                await self._publish(topic, req, ion)
            elif (link := self._link()) is not None:
                env = new_envelope(req, source_node=self._node_id, now_ms=self._clock(), ion=ion)
                await link.publish(topic, encode(env), qos=1)
        except (UnavailableError, RefusedError) as exc:
            log.info("could not send a chunk request: %s", exc)

    def fresh(self, stored: StoredVersion, indexes: Iterable[int], now: int) -> list[int]:
        """Which of ``indexes`` (all when empty) to send now: not those queued to be sent, nor
        those sent within ``resend_guard_ms``.  The ones returned count as queued until sent."""
        guard = self._cfg.resend_guard_ms
        sent = self._sent.setdefault(stored.model_id, {})
        count = stored.manifest.chunk_count
        wanted = set(indexes) or set(range(count))
        out = sorted(
            i for i in wanted if 0 <= i < count and now - sent.get(i, now - guard) >= guard
        )
        for i in out:
            sent[i] = _QUEUED
        return out

    async def answer(self, stored: StoredVersion, indexes: list[int]) -> None:
        """Send chunks someone asked for (``fresh`` chose them), once: the requester asks
        again for what it misses (also when the link is down now)."""
        try:
            if self._link is None:
                await self._send_outbox(stored.manifest, stored.blob_path, indexes, retry=False)
            elif (link := self._link()) is not None:
                await self._send_direct(link, stored.manifest, stored.blob_path, indexes)
        except (UnavailableError, OSError) as exc:
            # OSError: the version was pruned while its chunks were being read.
            log.warning("could not send chunks of %s: %s", stored.model_id[:12], exc)
        finally:
            self._unqueue(stored.model_id, indexes)

    def forget(self, now: int) -> None:
        """Drop the record of chunks sent longer ago than the guard.  In place: a send under
        way holds its model's record and marks chunks in it as they go."""
        guard = self._cfg.resend_guard_ms
        for model_id, sent in list(self._sent.items()):
            for i in [i for i, t in sent.items() if t != _QUEUED and now - t >= guard]:
                del sent[i]
            if not sent:
                del self._sent[model_id]

    def _unqueue(self, model_id: str, indexes: Iterable[int]) -> None:
        """Chunks still marked queued were not sent after all: a later request may have them."""
        sent = self._sent.get(model_id)
        if sent is not None:
            for i in indexes:
                if sent.get(i) == _QUEUED:
                    del sent[i]

    # -- the two paths ----------------------------------------------------------------------

    async def _send_direct(
        self, link: DirectLink, m: ModelManifest, blob: Path, indexes: Iterable[int]
    ) -> None:
        """Chunks straight to the broker, ``publish_window`` in flight; stops quietly when
        the link goes down (consumers ask for what they miss)."""
        topic = topics.model_chunks(m.ion, m.edge, m.model_id)
        room = asyncio.Semaphore(self._cfg.publish_window)
        failed: list[BaseException] = []
        sent = self._sent.setdefault(m.model_id, {})

        async def one(chunk: ModelChunk) -> None:
            try:
                await self._direct(link, topic, chunk, m.ion)
                sent[chunk.index] = self._clock()  # the guard runs from the broker's ack
                self._count(m, chunk)
            except (UnavailableError, RefusedError) as exc:
                failed.append(exc)
                sent.pop(chunk.index, None)
            finally:
                room.release()

        wanted = list(indexes)
        try:
            async with asyncio.TaskGroup() as tg:
                for chunk in read_chunks(blob, m, wanted):
                    await room.acquire()
                    if failed:
                        room.release()
                        break
                    sent[chunk.index] = _QUEUED
                    tg.create_task(one(chunk), name=f"model chunk {chunk.index}")
        finally:
            self._unqueue(m.model_id, wanted)
        if failed:
            self.counters["chunks.unsent"] += 1
            log.info("model %s: the link went down while sending chunks (%s); consumers ask "
                     "for what they miss", m.model_id[:12], failed[0])  # fmt: skip

    async def _direct(
        self,
        link: DirectLink,
        topic: str,
        body: ModelManifest | ModelChunk,
        ion: str,
        *,
        retain: bool = False,
    ) -> None:
        env = new_envelope(body, source_node=self._node_id, now_ms=self._clock(), ion=ion)
        await link.publish(topic, encode(env), qos=1, retain=retain)

    async def _send_outbox(
        self, m: ModelManifest, blob: Path, indexes: Iterable[int], *, retry: bool
    ) -> None:
        topic = topics.model_chunks(m.ion, m.edge, m.model_id)
        sent = self._sent.setdefault(m.model_id, {})
        send = self._durable if retry else self._publish
        batch: list[ModelChunk] = []
        for chunk in read_chunks(blob, m, indexes):
            batch.append(chunk)
            sent[chunk.index] = self._clock()  # durable in the outbox: as good as sent
            if len(batch) >= self._cfg.publish_window:
                await self._outbox_batch(send, topic, m, batch)
                batch = []
        if batch:
            await self._outbox_batch(send, topic, m, batch)

    async def _outbox_batch(
        self,
        send: Callable[[str, object, str], Awaitable[None]],
        topic: str,
        m: ModelManifest,
        batch: list[ModelChunk],
    ) -> None:
        results = await asyncio.gather(
            *(send(topic, c, m.ion) for c in batch), return_exceptions=True
        )
        for chunk, result in zip(batch, results, strict=True):
            if not isinstance(result, BaseException):
                self._count(m, chunk)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def _count(self, m: ModelManifest, chunk: ModelChunk) -> None:
        self.counters["chunks.sent"] += 1
        self.counters["chunks.bytes"] += len(chunk.data)
        per = self.times_sent.get(m.model_id)
        if per is None:
            per = self.times_sent[m.model_id] = Counter()
            while len(self.times_sent) > _TRACKED_MODELS:
                del self.times_sent[next(iter(self.times_sent))]
        per[chunk.index] += 1

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
