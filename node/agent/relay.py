"""The gateway role: forwarding between the local broker and the upstream one.

Custody passes hop by hop: a message to forward is first stored in this gateway's own outbox
for that direction (``upstream.db`` going up, the node's ordinary outbox going down) and is
deleted only after the next broker acknowledged it.  Payloads are forwarded byte for byte, so
message ids and per-source sequence numbers survive every hop and the final receiver's
deduplication and gap repair work end to end.  See ``routing`` for why no loop can form.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack

from ion import topics
from ion.topics import Topic, TopicError, TopicKind
from node.config import NodeConfig, RelayConfig
from node.link.base import IncomingMessage, LinkOptions, LinkRefusedError, MqttLink, Will
from node.outbox.policy import OutboundItem, Rejected
from node.outbox.store import OutboxStore

from .routing import matches, retransmit_goes_down, traffic_class_of_topic
from .sender import Sender

log = logging.getLogger(__name__)

RETRANSMIT_FILTER = "ion/v1/nodes/+/retransmit"
STATUS_FILTER = topics.ALL_NODE_STATUS


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
    ) -> None:
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

    def from_local(self, topic: Topic, msg: IncomingMessage) -> None:
        """Every message from the local broker passes here; forward what goes up."""
        if topic.kind is TopicKind.NODE_STATUS and topic.node != self._node_id:
            self.children.add(topic.node)
        if topic.kind is TopicKind.NODE_RETRANSMIT:
            target = topic.node
            if target != self._node_id and not retransmit_goes_down(target, self.children):
                self.up.add(topic, msg)
            return
        if matches(msg.topic, self._relay.up):
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
                    self.down.add(topic, msg)
        except LinkRefusedError as exc:
            self._on_failed(f"the upstream broker refused this gateway: {exc}")
