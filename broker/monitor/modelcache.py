"""The monitor's model cache: chunks for nodes whose model's producer is gone.

Producers are often short-lived (a Spark training job on a cloud node that is stopped when it
is done) or behind a link that is down, while consumers that were offline during a rollout ask
for the model's chunks days later.  The monitor sees every model message on the broker it
watches, so it keeps a copy of each model published there and answers chunk requests that
nobody else answers:

- **Filling.** Its own MQTT session (``<monitor client id>-models``, persistent, a small
  incoming queue because chunks are large) reads manifests, chunks, chunk requests and node
  statuses.  Each manifest (checked against ``trust`` when keys are given) starts an entry of a
  ``node.models.gateway.GatewayCache`` (on disk, verified chunk by chunk, resumable, the newest
  ``versions`` per model edge, at most ``max_bytes``); each chunk seen fills it.  A complete
  entry is checked whole once (its SHA-256 is its model id) in a worker thread.
- **Answering** (``ChunkAnswers``, pure).  A request for chunks the cache holds is answered
  after a delay, only for the chunks nobody sent meanwhile: ``answer_offline_ms`` (1 s) when
  the model's producer node is offline or unknown, ``answer_online_ms`` (5 s) when it is
  online, since it answers itself; every chunk of that model seen on the wire pushes the rest
  of its answer back again, so a producer that is busy answering is not answered over.  A chunk
  seen (from anyone) within ``resend_guard_ms`` of a request is not sent again: every consumer
  reads the same topic.
- **Sending**: straight to the broker, ``publish_window`` chunks in flight, as a gateway's
  cache does; consumers check every chunk against their own (signed) manifest, so the monitor
  cannot give them anything they did not ask for.

Under ``ion deploy`` ACLs a monitor may write chunk topics only with ``commands: [models]`` in
the inventory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ion import topics
from ion.config.broker import BrokerConfig
from ion.errors import DecodeError
from ion.model.manifest import ChunkRequest, ModelChunk, ModelManifest
from ion.model.status import NodeState, NodeStatus
from ion.security.trust import TrustConfig
from ion.topics import TopicError, TopicKind
from ion.wire.codec import decode_all
from node.link.base import IncomingMessage, LinkOptions, LinkState, MqttLink
from node.models.config import GiB, ModelConfig
from node.models.errors import ModelError
from node.models.gateway import GatewayCache, send_cached
from node.models.transfer import ChunkOutcome

log = logging.getLogger(__name__)

_MODELS = f"{topics.ROOT}/ions/+/edges/+/model"
SUBSCRIPTIONS = (
    f"{_MODELS}/manifest",
    f"{_MODELS}/chunks/+",
    f"{_MODELS}/requests",
    topics.ALL_NODE_STATUS,
)


@dataclass(frozen=True, slots=True)
class ModelCacheSettings:
    """``root``: the cache's directory.  ``trust``: manifests to keep must pass it; None keeps
    every manifest (consumers still check each chunk against their own signed manifest)."""

    root: Path
    max_bytes: int = 8 * GiB
    versions: int = 2  # per model edge
    answer_online_ms: int = 5_000
    answer_offline_ms: int = 1_000
    resend_guard_ms: int = 1_000
    publish_window: int = 8
    tick_ms: int = 250
    trust: TrustConfig | None = None
    limits: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        for name in ("max_bytes", "versions", "publish_window", "tick_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"model cache: {name} must be positive")
        if min(self.answer_online_ms, self.answer_offline_ms, self.resend_guard_ms) < 0:
            raise ValueError("model cache: delays must not be negative")

    def model_config(self) -> ModelConfig:
        """The gateway cache's settings with this cache's size and versions."""
        return replace(self.limits, gateway_cache_bytes=self.max_bytes,
                       gateway_cache_versions=self.versions)  # fmt: skip


class ChunkAnswers:
    """When to answer which chunk requests (pure: ``now`` in ms is passed in).

    ``holds(model_id, index)`` says what the cache can send; ``chunk_count(model_id)`` how many
    chunks a model has (None when the cache has no entry for it).
    """

    def __init__(
        self,
        holds: Callable[[str, int], bool],
        chunk_count: Callable[[str], int | None],
        *,
        online_ms: int,
        offline_ms: int,
        guard_ms: int,
    ) -> None:
        self._holds = holds
        self._count = chunk_count
        self._online_ms = online_ms
        self._offline_ms = offline_ms
        self._guard_ms = guard_ms
        self._due: dict[str, dict[int, int]] = {}  # model id -> index -> answer at
        self._seen: dict[str, dict[int, int]] = {}  # model id -> index -> last sent by anyone
        self._delay: dict[str, int] = {}  # model id -> the delay of its newest request

    def request(self, req: ChunkRequest, now: int, *, producer_online: bool) -> int:
        """Note a chunk request; returns how many of its chunks this cache will answer unless
        someone else sends them first."""
        count = self._count(req.model_id)
        if count is None:
            return 0
        seen = self._seen.get(req.model_id, {})
        wanted = {i for i in req.indexes if 0 <= i < count} if req.indexes else range(count)
        delay = self._online_ms if producer_online else self._offline_ms
        self._delay[req.model_id] = delay
        due = self._due.setdefault(req.model_id, {})
        added = 0
        for i in wanted:
            if not self._holds(req.model_id, i) or now - seen.get(i, now - self._guard_ms) < (
                self._guard_ms
            ):
                continue
            if i not in due:
                due[i] = now + delay
                added += 1
        if not due:
            del self._due[req.model_id]
        return added

    def seen(self, model_id: str, index: int, now: int) -> None:
        """A chunk went over the broker (from anyone, this cache included)."""
        self._seen.setdefault(model_id, {})[index] = now
        due = self._due.get(model_id)
        if due is None:
            return
        due.pop(index, None)
        if not due:
            del self._due[model_id]
            return
        # Someone is answering: give them time before answering the rest over them.
        later = now + self._delay.get(model_id, self._online_ms)
        for i, at in due.items():
            due[i] = max(at, later)

    def take_due(self, now: int) -> list[tuple[str, tuple[int, ...]]]:
        """The chunks to send now, per model (taken: not answered twice)."""
        out = []
        for model_id in list(self._due):
            due = self._due[model_id]
            ready = sorted(i for i, at in due.items() if at <= now)
            for i in ready:
                del due[i]
            if not due:
                del self._due[model_id]
            ready = [i for i in ready if self._holds(model_id, i)]
            if ready:
                out.append((model_id, tuple(ready)))
        return out

    def forget(self, now: int) -> None:
        """Drop the record of chunks seen longer ago than the guard."""
        for model_id in list(self._seen):
            kept = {i: t for i, t in self._seen[model_id].items() if now - t < self._guard_ms}
            if kept:
                self._seen[model_id] = kept
            else:
                del self._seen[model_id]
                self._delay.pop(model_id, None)

    @property
    def pending(self) -> int:
        return sum(len(d) for d in self._due.values())


LinkFactory = Callable[..., MqttLink]


def _aiomqtt_link(**kwargs: Any) -> MqttLink:
    from node.link.aiomqtt_link import AiomqttLink

    return AiomqttLink(**kwargs)


class ModelCache:
    """``async with ModelCache(settings, broker, client_id=...) as c:`` fills and answers until
    the block exits."""

    def __init__(
        self,
        settings: ModelCacheSettings,
        broker: BrokerConfig,
        *,
        client_id: str,
        link_factory: LinkFactory = _aiomqtt_link,
        clock: Callable[[], int],
    ) -> None:
        self.settings = settings
        self._broker = broker
        self._client_id = client_id
        self._link_factory = link_factory
        self._clock = clock
        self._stack = AsyncExitStack()
        self._tg: asyncio.TaskGroup
        self._tasks: list[asyncio.Task[None]] = []
        self._states: dict[str, NodeState] = {}
        self._wake = asyncio.Event()
        self.cache = GatewayCache(
            settings.root, settings.model_config(), node_id=client_id, accept=self._refusal
        )
        self.answers = ChunkAnswers(
            self.cache.holds,
            self._chunk_count,
            online_ms=settings.answer_online_ms,
            offline_ms=settings.answer_offline_ms,
            guard_ms=settings.resend_guard_ms,
        )
        self.link: MqttLink
        self.counters = self.cache.counters

    async def __aenter__(self) -> ModelCache:
        try:
            self._stack.callback(self.cache.close)
            self.link = self._link_factory(
                broker=self._broker,
                client_id=self._client_id,
                subscriptions=[(s, 1) for s in SUBSCRIPTIONS],
                # Chunks are up to max_chunk_bytes each: hold few in memory.
                options=LinkOptions(persistent_session=True, incoming_queue=64),
            )
            await self._stack.enter_async_context(self.link)
            self._tg = await self._stack.enter_async_context(asyncio.TaskGroup())
            for name, coro in (("model-cache-read", self._read()),
                               ("model-cache-answer", self._answer())):  # fmt: skip
                self._tasks.append(self._tg.create_task(coro, name=name))
        except BaseException:
            await self._stack.aclose()
            raise
        if self.settings.trust is None:
            log.info("model cache: manifests are kept unchecked (no trusted keys given); "
                     "consumers check every chunk against their own signed manifest")  # fmt: skip
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await self._stack.aclose()

    def _refusal(self, m: ModelManifest) -> str:
        if self.settings.trust is None:
            return ""
        verdict = self.settings.trust.check(m)
        return "" if verdict.accepted else verdict.reason

    def _chunk_count(self, model_id: str) -> int | None:
        m = self.cache.manifest(model_id)
        return None if m is None else m.chunk_count

    # -- reading ---------------------------------------------------------------------------------

    async def _read(self) -> None:
        async for msg in self.link.messages():
            try:
                self.on_message(msg)
            except (ModelError, OSError) as exc:  # a full disk, a bad entry: keep answering
                self.cache.count("error")
                log.warning("model cache: %s", exc)

    def on_message(self, msg: IncomingMessage) -> None:
        try:
            topic = topics.parse(msg.topic)
            envelopes = decode_all(msg.payload)
        except (TopicError, DecodeError):
            self.cache.count("malformed")
            return
        now = self._clock()
        for env in envelopes:
            body = env.body
            if topic.kind is TopicKind.NODE_STATUS and isinstance(body, NodeStatus):
                if body.node_id == topic.node:
                    self._states[body.node_id] = body.state
            elif topic.kind is TopicKind.MODEL_MANIFEST and isinstance(body, ModelManifest):
                if (body.ion, body.edge) == (topic.ion, topic.edge):
                    self.cache.on_manifest(body, now)
            elif topic.kind is TopicKind.MODEL_CHUNKS and isinstance(body, ModelChunk):
                if body.model_id == topic.model_id:
                    self._on_chunk(body, now)
            elif topic.kind is TopicKind.MODEL_REQUESTS and isinstance(body, ChunkRequest):
                self._on_request(body, now)

    def _on_chunk(self, chunk: ModelChunk, now: int) -> None:
        self.answers.seen(chunk.model_id, chunk.index, now)
        if self.cache.on_chunk(chunk, now) is not ChunkOutcome.ACCEPTED:
            return
        for assembler in self.cache.to_verify():
            self._tg.create_task(self.cache.check(assembler), name="model-cache-verify")

    def _on_request(self, req: ChunkRequest, now: int) -> None:
        m = self.cache.manifest(req.model_id)
        if m is None:
            self.cache.count("request.unknown")
            return
        online = self._states.get(m.producer_node) is NodeState.ONLINE
        if self.answers.request(req, now, producer_online=online):
            self.cache.count("request.noted")
            self._wake.set()

    # -- answering -------------------------------------------------------------------------------

    async def _answer(self) -> None:
        tick = self.settings.tick_ms / 1000
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(tick):
                    await self._wake.wait()
            self._wake.clear()
            now = self._clock()
            self.answers.forget(now)
            for model_id, indexes in self.answers.take_due(now):
                await self._send(model_id, indexes)

    async def _send(self, model_id: str, indexes: tuple[int, ...]) -> None:
        m = self.cache.manifest(model_id)
        if m is None or self.link.state is not LinkState.CONNECTED:
            return  # the consumers ask again
        log.info("model cache: sending %d chunk(s) of %s/%s version %s", len(indexes), m.ion,
                 m.edge, m.version)  # fmt: skip
        await send_cached(self.cache, self.link, model_id, indexes,
                          window=self.settings.publish_window, source_node=self._client_id,
                          clock=self._clock)  # fmt: skip
