"""The gateway role: forwarding between the local broker and the upstream one.

Custody passes hop by hop: a message to forward is first stored in this gateway's own outbox
for that direction (``upstream.db`` going up, the node's ordinary outbox going down) and is
deleted only after the next broker acknowledged it.  Payloads are forwarded byte for byte, so
message ids and per-source sequence numbers survive every hop and the final receiver's
deduplication and gap repair work end to end.  See ``routing`` for why no loop can form.

Models are the exception to "byte for byte, nothing more": the gateway keeps a copy of every
model it relays down (``node.models.gateway``) and answers its children's chunk requests from
it, sending upstream only its own requests for what it lacks, so a chunk crosses the upstream
link once however many children miss it.  Answers go straight to the local broker (not
through the outbox: the cache is their durable copy, and a child asks again for what it
misses).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack

from ion import topics
from ion.errors import DecodeError, RefusedError, UnavailableError
from ion.model.manifest import ChunkRequest, ModelChunk, ModelManifest
from ion.model.messages import Envelope, new_envelope
from ion.topics import Topic, TopicError, TopicKind
from ion.wire.codec import decode_all, encode
from node.config import NodeConfig, RelayConfig
from node.link.base import (
    IncomingMessage,
    LinkOptions,
    LinkRefusedError,
    LinkState,
    MqttLink,
    Will,
)
from node.models.gateway import GatewayCache, send_cached
from node.models.transfer import ChunkOutcome
from node.outbox.policy import OutboundItem, Rejected
from node.outbox.store import OutboxStore

from .routing import matches, retransmit_goes_down, traffic_class_of_topic
from .sender import Sender

log = logging.getLogger(__name__)

RETRANSMIT_FILTER = "ion/v1/nodes/+/retransmit"
STATUS_FILTER = topics.ALL_NODE_STATUS
_CACHED = frozenset({TopicKind.MODEL_MANIFEST, TopicKind.MODEL_CHUNKS})


class _Forwarder:
    """Stores raw messages for one direction in one transaction per burst."""

    def __init__(self, store: OutboxStore, sender: Sender, clock: Callable[[], int]) -> None:
        self.store = store
        self.sender = sender
        self._clock = clock
        self._pending: list[OutboundItem] = []
        self._wake = asyncio.Event()
        self.forwarded = 0
        self.refused = 0

    def add(self, topic: Topic, msg: IncomingMessage) -> None:
        item = OutboundItem(msg.topic, msg.payload, traffic_class_of_topic(topic), self._clock())
        self._pending.append(item)
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self.flush()
            await asyncio.sleep(0)  # let a burst gather into one transaction

    def flush(self) -> None:
        items, self._pending = self._pending, []
        if not items:
            return
        results = self.store.enqueue(items)
        refused = sum(isinstance(r, Rejected) for r in results)
        self.forwarded += len(items) - refused
        if refused:
            self.refused += refused
            log.warning("relay: outbox refused %d message(s)", refused)
        self.sender.wake()


class Relay:
    def __init__(
        self,
        *,
        config: NodeConfig,
        relay: RelayConfig,
        down_store: OutboxStore,
        down_sender: Sender,
        will_payload: bytes,
        link_factory: Callable[..., MqttLink],
        task_group: asyncio.TaskGroup,
        clock: Callable[[], int],
        on_failed: Callable[[str], None],
        local_link: MqttLink | None = None,
    ) -> None:
        """``local_link``: the node's link to its local broker, for model chunks answered from
        the gateway cache (without it the cache fills but answers nothing)."""
        assert config.upstream is not None
        self._on_failed = on_failed
        self._config = config
        self._relay = relay
        self._node_id = config.node_id
        self._tg = task_group
        self._clock = clock
        self._link_factory = link_factory
        self._will_payload = will_payload
        self.children: set[str] = set()
        self.down = _Forwarder(down_store, down_sender, clock)
        self._local_link = local_link
        self.cache: GatewayCache | None = None
        if config.models.gateway_cache:
            self.cache = GatewayCache(
                config.data_dir / "models" / "gateway",
                config.models,
                node_id=config.node_id,
                accept=lambda m: _refusal(config, m),
            )

    def local_subscriptions(self) -> frozenset[str]:
        """What the gateway reads on its local broker for the relay."""
        return frozenset({*self._relay.up, RETRANSMIT_FILTER, STATUS_FILTER})

    async def start(self, stack: AsyncExitStack) -> None:
        cfg = self._config
        assert cfg.upstream is not None
        up_store = stack.enter_context(OutboxStore(cfg.data_dir / "upstream.db", cfg.outbox))
        up_store.requeue_in_flight()
        self.upstream = self._link_factory(
            broker=cfg.upstream,
            client_id=f"ion-relay-{self._node_id}",
            # If this gateway dies, its local broker's will cannot travel up: say it here too.
            will=Will(topics.node_status(self._node_id), self._will_payload),
            subscriptions=[(f, 1) for f in (*self._relay.down, RETRANSMIT_FILTER)],
            options=LinkOptions(persistent_session=True, inflight_window=cfg.publish_window),
        )
        await stack.enter_async_context(self.upstream)
        up_sender = Sender(
            store=up_store,
            link=self.upstream,
            node_id=self._node_id,
            window=cfg.publish_window,
            task_group=self._tg,
            clock=self._clock,
        )
        self.up = _Forwarder(up_store, up_sender, self._clock)
        self._tasks = [
            self._tg.create_task(up_sender.run(), name=f"{self._node_id}: relay up sender"),
            self._tg.create_task(self.up.run(), name=f"{self._node_id}: relay up store"),
            self._tg.create_task(self.down.run(), name=f"{self._node_id}: relay down store"),
            self._tg.create_task(self._from_upstream(), name=f"{self._node_id}: relay down"),
        ]

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.cache is not None:
            self.cache.close()

    def from_local(self, topic: Topic, msg: IncomingMessage) -> None:
        """Every message from the local broker passes here; forward what goes up."""
        if topic.kind is TopicKind.NODE_STATUS and topic.node != self._node_id:
            self.children.add(topic.node)
        if topic.kind is TopicKind.NODE_RETRANSMIT:
            target = topic.node
            if target != self._node_id and not retransmit_goes_down(target, self.children):
                self.up.add(topic, msg)
            return
        if not matches(msg.topic, self._relay.up):
            return
        cached = topic.kind is TopicKind.MODEL_REQUESTS and self.cache is not None
        if cached and self._answer_requests(topic, msg):
            return
        self.up.add(topic, msg)

    async def _from_upstream(self) -> None:
        try:
            async for msg in self.upstream.messages():
                try:
                    topic = topics.parse(msg.topic)
                except TopicError:
                    continue  # not ours; the final receiver would drop it anyway
                if topic.kind is TopicKind.NODE_RETRANSMIT:
                    if topic.node == self._node_id or retransmit_goes_down(
                        topic.node, self.children
                    ):
                        self.down.add(topic, msg)
                elif matches(msg.topic, self._relay.down):
                    if self.cache is not None and topic.kind in _CACHED:
                        self._fill_cache(topic, msg)
                    self.down.add(topic, msg)
        except LinkRefusedError as exc:
            self._on_failed(f"the upstream broker refused this gateway: {exc}")

    # -- the model cache ---------------------------------------------------------------------

    def _fill_cache(self, topic: Topic, msg: IncomingMessage) -> None:
        """Keep what a model message going down carries (it is forwarded all the same)."""
        assert self.cache is not None
        now = self._clock()
        for env in _envelopes(msg.payload):
            body = env.body
            if isinstance(body, ModelManifest) and (body.ion, body.edge) == (topic.ion, topic.edge):
                self.cache.on_manifest(body, now)
            elif isinstance(body, ModelChunk) and body.model_id == topic.model_id:
                outcome = self.cache.on_chunk(body, now)
                if outcome is not ChunkOutcome.ACCEPTED:
                    continue
                for assembler in self.cache.to_verify():
                    self._tg.create_task(
                        self.cache.check(assembler), name=f"{self._node_id}: verify cached model"
                    )

    def _answer_requests(self, topic: Topic, msg: IncomingMessage) -> bool:
        """Answer the chunk requests in ``msg`` from the cache; False when it must be
        forwarded up as it is (a model the cache does not know)."""
        assert self.cache is not None
        requests = [e.body for e in _envelopes(msg.payload) if isinstance(e.body, ChunkRequest)]
        if not requests:
            return False
        now = self._clock()
        self.cache.forget(now)
        plans = [(req, self.cache.on_request(req, now)) for req in requests]
        if any(plan.forward for _, plan in plans):
            return False
        for req, plan in plans:
            if plan.serve:
                self._tg.create_task(
                    self._serve(req.model_id, plan.serve),
                    name=f"{self._node_id}: chunks from the gateway cache",
                )
            if plan.ask is not None and self.upstream.state is LinkState.CONNECTED:
                # Straight up, never queued: a request that waited out an outage would only
                # make its answer come twice (the children ask again, and so does the cache).
                env = new_envelope(plan.ask, source_node=self._node_id, now_ms=now, ion=topic.ion)
                self._tg.create_task(
                    self._ask_upstream(msg.topic, encode(env)),
                    name=f"{self._node_id}: chunk request upstream",
                )
        return True

    async def _ask_upstream(self, topic: str, payload: bytes) -> None:
        with contextlib.suppress(UnavailableError, RefusedError):
            await self.upstream.publish(topic, payload, qos=1)

    async def _serve(self, model_id: str, indexes: tuple[int, ...]) -> None:
        """Send cached chunks down, ``publish_window`` at a time, straight to the local broker;
        stops when that link goes down (the children ask again)."""
        assert self.cache is not None
        link = self._local_link
        if link is None or link.state is not LinkState.CONNECTED:
            return
        await send_cached(self.cache, link, model_id, indexes,
                          window=self._config.models.publish_window, source_node=self._node_id,
                          clock=self._clock)  # fmt: skip


def _envelopes(payload: bytes) -> tuple[Envelope, ...]:
    try:
        return decode_all(payload)
    except DecodeError:
        return ()  # the final receiver counts and reports it


def _refusal(config: NodeConfig, m: ModelManifest) -> str:
    """Why the gateway must not cache ``m`` ("" when it may)."""
    verdict = config.trust.check(m)
    return "" if verdict.accepted else verdict.reason
