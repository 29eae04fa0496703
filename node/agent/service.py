"""The node agent: one asyncio process per machine.

``async with Agent(config) as agent`` opens the outbox, connects (the link keeps reconnecting
by itself), and starts the agent's named tasks in one TaskGroup; it is ready when entry
returns.  What it does:

- holds the newest ION definitions (refusing stale ones), works out which pipelines this node
  runs, subscribes to the edges they consume, and starts, restarts and stops them;
- stores everything it sends in the outbox first (group commit) and pumps it to the broker;
- takes what arrives through the receiver (decode, dedup, order, gap repair) and hands edge
  traffic to local consumers;
- answers retransmit requests from its retention, runs operator commands, and publishes a
  retained status every heartbeat (its last will marks it offline).

Cancellation is the only stop signal; ``drain`` is the polite way down (stop taking work,
flush the outbox for a bounded time).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from ion import __version__, topics
from ion.errors import InputError, UnavailableError
from ion.model.definition import EdgeKind, IonDefinition, IonDeleted, Pipeline
from ion.model.manifest import ModelChunk
from ion.model.messages import (
    Command,
    CommandResult,
    DeliveryAck,
    Event,
    LinkStatus,
    MessageIds,
    NodeState,
    NodeStatus,
    RetransmitRequest,
    Severity,
    is_message_id,
    new_envelope,
)
from ion.topics import Channel, TopicKind
from ion.wire.codec import encode
from node.config import NodeConfig
from node.engines.base import Engine
from node.inbox.dedup import DedupConfig
from node.inbox.pending import PendingInbox
from node.inbox.sequence import RequestRetransmit
from node.link.base import (
    IncomingMessage,
    LinkOptions,
    LinkRefusedError,
    LinkState,
    MqttLink,
    OutgoingMessage,
    Will,
)
from node.local.server import LocalServer
from node.outbox.policy import Rejected
from node.outbox.records import RetainedItem
from node.outbox.store import OutboxStore
from node.pipelines.lifecycle import StateReport
from node.reconcile import DefinitionBook, NodePlan, PipelineKey, plan_node
from node.runner.spec import EdgePort

from .commands import CommandGate, refusal_event_text, run_here
from .drift import NodeDrift
from .edgeports import IonEdges, resolve_edges
from .envelopes import Many, Sequencer, outbound_items, traffic_class_of
from .held import HeldDefinitions
from .jobenv import broker_env
from .jobstats import JobStatsLoop
from .models import ModelExchange
from .pipelines import PipelineSupervisor
from .port import LocalPort
from .receiver import Arrival, ArrivalQueue, Receiver
from .sender import Sender, mqtt_payload
from .status import ResourceSampler, build_status, pipeline_statuses, queue_statuses

if TYPE_CHECKING:
    from .relay import Relay
from .trigger_watch import TriggerWatch

log = logging.getLogger(__name__)

LinkFactory = Callable[..., MqttLink]
ACK_INTERVAL_S = 0.1


MAX_QUEUED_CHUNK_BYTES = 32 * 1024 * 1024


# A request waiting for the group commit (see ``envelopes.outbound_items``), with the caller's
# future last.
_Request = tuple[str, object, str, str, str | None, "asyncio.Future[None]"]


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _chunk_bytes(arrival: Arrival) -> int:
    body = arrival.envelope.body
    return len(body.data) if isinstance(body, ModelChunk) else 0


def default_link_factory(**kwargs: Any) -> MqttLink:
    from node.link.aiomqtt_link import AiomqttLink

    return AiomqttLink(**kwargs)


def local_socket_path(data_dir: Path) -> Path:
    """``DATA_DIR/agent.sock``, or a short path under the temp dir when that is too long for a
    Unix socket address (107 bytes on Linux)."""
    path = data_dir.absolute() / "agent.sock"
    if len(os.fsencode(path)) <= 100:
        return path
    digest = hashlib.sha256(os.fsencode(path)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"ion-agent-{digest}.sock"


def default_engines() -> Mapping[str, Engine]:
    """Every engine adapter; one whose engine is not installed here says so when a pipeline
    asks for it (``check_available``), so a small gateway runs without Spark or TensorFlow.
    Adapters are imported when a pipeline first needs them (an idle agent stays small)."""
    from node.engines.lazy import LazyEngines

    return LazyEngines(
        {
            "python": "node.engines.python_engine:PythonEngine",
            "spark": "node.engines.spark_engine:SparkEngine",
            "tensorflow": "node.engines.tensorflow_engine:TensorFlowEngine",
        }
    )


class Agent:
    command_gate: CommandGate | None = None  # opened with the first command (_on_command)

    def __init__(
        self,
        config: NodeConfig,
        *,
        link_factory: LinkFactory = default_link_factory,
        engines: Mapping[str, Engine] | None = None,
        clock: Callable[[], int] = wall_ms,
    ) -> None:
        self.config = config
        self.node_id = config.node_id
        self._link_factory = link_factory
        self._engines = engines if engines is not None else default_engines()
        self._clock = clock
        self._book = DefinitionBook()
        self._held = HeldDefinitions(config.data_dir / "definitions")
        self._plan: NodePlan | None = None
        self._subscribed: frozenset[str] = frozenset()
        self._pending_bodies: list[_Request] = []
        self._commit_wake = asyncio.Event()
        self._consumers: list[tuple[Callable[[Arrival], bool], ArrivalQueue]] = []
        self._queued_bytes = 0  # model chunk bytes waiting in consumer queues
        self._since: dict[PipelineKey, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._draining = False
        self._state = NodeState.ONLINE
        self._error = ""
        self._ready = False
        self._relay: Relay | None = None
        self._edge_topics: dict[tuple[str, str], str] = {}
        self._ion_edges: dict[str, IonEdges] = {}
        self._edge_readers: dict[tuple[str, str], tuple[str, ...]] = {}
        self.failed = asyncio.Event()  # set when the node cannot work (e.g. refused login)
        self._triggers = TriggerWatch(
            node_id=self.node_id,
            data_dir=config.data_dir,
            clock=clock,
            publish=self.publish,
            spawn=lambda coro, name: self._tg.create_task(coro, name=name),
            start=lambda key: self._pipelines.trigger(key),  # noqa: PLW0108 - made on entry
        )
        self.started_ms = 0

    # -- lifetime ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        cfg = self.config
        self.started_ms = self._clock()
        stack = AsyncExitStack()
        await stack.__aenter__()
        self._stack = stack
        try:
            cfg.data_dir.mkdir(parents=True, exist_ok=True)
            self._models = ModelExchange(
                self, cfg.data_dir / "models", config=cfg.models, clock=self._clock
            )
            self._models.trust = cfg.trust  # signs what it produces, checks what it consumes
            self._store = stack.enter_context(OutboxStore(cfg.data_dir / "agent.db", cfg.outbox))
            self._store.requeue_in_flight()
            self._sequencer = Sequencer(self._store.last_sequences())
            self._message_ids = MessageIds()
            self._sampler = ResourceSampler(cfg.data_dir)
            status_topic = topics.node_status(self.node_id)
            offline = self._status_payload(NodeState.OFFLINE)
            self._link = self._link_factory(
                broker=cfg.broker,
                client_id=f"ion-node-{self.node_id}",
                will=Will(status_topic, offline),
                subscriptions=[(f, 1) for f in sorted(self._wanted_subscriptions())],
                on_connect_publish=[OutgoingMessage(status_topic, self._status_payload())],
                options=LinkOptions(persistent_session=True, inflight_window=cfg.publish_window),
            )
            self._subscribed = self._wanted_subscriptions()
            await stack.enter_async_context(self._link)
            self._tg = await stack.enter_async_context(asyncio.TaskGroup())
            self._sender = Sender(
                store=self._store,
                link=self._link,
                node_id=self.node_id,
                window=cfg.publish_window,
                task_group=self._tg,
                clock=self._clock,
            )
            self._receiver = Receiver(
                store=self._store,
                node_id=self.node_id,
                on_arrival=self._on_arrival,
                on_retransmit_needed=self._request_retransmit,
                on_problem=self._problem,
                clock=self._clock,
                dedup=DedupConfig(max_ids=cfg.dedup_window),
                sequence=cfg.ordering,
                before_remember=self._flush_pending,
                remember_later=asyncio.get_running_loop().call_soon,
            )
            self._pending = stack.enter_context(PendingInbox(cfg.data_dir / "inbox.db"))
            self._port = LocalPort(
                node_id=self.node_id,
                publish=self._publish_from_pipeline,
                edges_of=self._ion_edges.get,
                pending=self._pending,
                models=self._models,
                drift=NodeDrift(
                    node_id=self.node_id,
                    edges_of=self._ion_edges.get,
                    active_model=self._models.active,
                    clock=self._clock,
                ),
            )
            self._server = LocalServer(local_socket_path(cfg.data_dir), self._port)
            await stack.enter_async_context(self._server)
            self._pipelines = PipelineSupervisor(
                node_id=self.node_id,
                work_root=cfg.data_dir / "work",
                engines=self._engines,
                task_group=self._tg,
                on_report=self._on_pipeline_report,
                agent_socket=self._server.path,
                job_env=self._job_env,
                job_edges=self._job_edges,
                on_job_end=lambda key: self._port.revoke(*key),
            )
            if cfg.relay is not None and cfg.upstream is not None:
                from .relay import Relay  # gateways only: it loads the model cache

                self._relay = Relay(
                    config=cfg,
                    relay=cfg.relay,
                    down_store=self._store,
                    down_sender=self._sender,
                    will_payload=offline,
                    link_factory=self._link_factory,
                    task_group=self._tg,
                    clock=self._clock,
                    on_failed=self._fail,
                    local_link=self._link,  # model chunks answered from the gateway cache
                )
                await self._relay.start(stack)
            for name, coro in (
                ("sender", self._sender.run()),
                ("receiver", self._receive()),
                ("committer", self._commit_loop()),
                ("heartbeat", self._heartbeat()),
                ("timers", self._pipelines.run_timers()),
                ("ticker", self._tick()),
                ("models", self._models.run()),
                ("acker", self._acknowledge_progress()),
                ("triggers", self._triggers.run()),
                ("job stats", self._job_stats_loop().run()),
            ):
                self._tasks.append(self._tg.create_task(coro, name=f"{self.node_id}: {name}"))
        except BaseException:
            await stack.__aexit__(None, None, None)
            raise
        self._ready = True
        # Before the first message is taken (no await in between): sets the version floor.
        self._restore_definitions()
        log.info("node %s started (data in %s)", self.node_id, cfg.data_dir)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await asyncio.shield(self._pipelines.stop_all())
        finally:
            for task in self._tasks:
                task.cancel()
            if self._relay is not None:
                self._relay.stop()
            if self._ready:
                try:
                    self._receiver.flush()  # what was handed on is not handed on again
                except Exception:
                    log.exception("node %s: could not remember the last arrivals", self.node_id)
            await self._stack.__aexit__(exc_type, exc, tb)
            log.info("node %s stopped", self.node_id)

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Stop taking work and flush the outbox; True when everything queued was sent."""
        self._draining = True
        self._state = NodeState.DRAINING
        await self._pipelines.stop_all()
        await self._commit_now()
        self._publish_status_soon()
        limit = self.config.drain_timeout_ms / 1000 if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.queued() == 0 and self._sender.idle():
                return True
            self._sender.wake()
            await asyncio.sleep(0.05)
        log.warning("drain: %d item(s) still queued after %.1fs", self.queued(), limit)
        return False

    # -- the application side ------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        body: object,
        *,
        ion: str = "",
        correlation_id: str = "",
        message_id: str | None = None,
    ) -> None:
        """Store ``body`` for ``topic`` in the outbox; returns once it is durable.

        ``message_id`` makes a retry idempotent: an application that is not sure whether an
        earlier call got through (it crashed before the call returned) sends again with the
        same id, and receivers drop the second copy.

        Raises ``UnavailableError`` when the outbox refuses it (full, or the agent is
        draining): the caller may try again later.

        Concurrent calls for one topic that reach the same group commit are stored as runs,
        as ``publish_many`` stores a batch: such a run is refused, dropped or expired whole.
        """
        if self._draining:
            raise UnavailableError(f"node {self.node_id} is draining")
        if message_id is not None and not is_message_id(message_id):
            raise InputError(f"message_id {message_id[:80]!r}: want 32 lowercase hex digits")
        traffic_class_of(body)  # a TypeError here, not in the commit loop
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending_bodies.append((topic, body, ion, correlation_id, message_id, fut))
        self._commit_wake.set()
        await fut

    async def publish_many(
        self,
        topic: str,
        bodies: Sequence[object],
        *,
        ion: str = "",
        message_ids: Sequence[str] | None = None,
    ) -> None:
        """``publish`` of every body in ``bodies`` for ``topic``, in order, in one request:
        returns once all of them are durable in the outbox.

        Each body is its own message (its own message id and sequence number: receivers
        deduplicate and order them one by one), but the batch costs about one ``publish``
        in the application and the outbox, not one per message: runs of small messages are
        encoded together and stored, sent, retained for retransmits and, when a full class
        drops or expires something, dropped as one outbox item (see
        ``node.outbox.policy.OutboundItem.items``; the class's ``max_items`` counts their
        messages).

        ``message_ids`` (one per body, 32 lowercase hex digits) makes a retry idempotent, as
        for ``publish``.  Raises ``InputError`` for a body that cannot be sent or ids that do
        not match the bodies, and ``UnavailableError`` when the agent is draining or the outbox
        refused any of the messages (full, or the disk): the others were stored and will be
        sent, so send the whole batch again with the same ``message_ids`` to fill in what was
        refused without duplicates.
        """
        if self._draining:
            raise UnavailableError(f"node {self.node_id} is draining")
        items = tuple(bodies)
        for body in items:
            traffic_class_of(body)  # a TypeError here, not in the commit loop
        ids = None
        if message_ids is not None:
            ids = tuple(message_ids)
            if len(ids) != len(items) or not all(is_message_id(m) for m in ids):
                raise InputError("message_ids: one id (32 lowercase hex digits) per body")
        if not items:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending_bodies.append((topic, Many(items, ids), ion, "", None, fut))
        self._commit_wake.set()
        await fut

    async def emit(
        self, ion: str, edge: str, body: object, *, message_id: str | None = None
    ) -> None:
        """Send ``body`` along the ION edge ``edge`` (from a pipeline on this node)."""
        topic = self._edge_topics.get((ion, edge))
        if topic is None:
            raise InputError(self._why_no_edge(ion, edge))
        await self.publish(topic, body, ion=ion, message_id=message_id)

    async def emit_many(
        self,
        ion: str,
        edge: str,
        bodies: Sequence[object],
        *,
        message_ids: Sequence[str] | None = None,
    ) -> None:
        """``emit`` of every body in ``bodies``, in order, as one ``publish_many``: durable in
        the outbox when it returns (see ``publish_many`` for what a refusal means)."""
        topic = self._edge_topics.get((ion, edge))
        if topic is None:
            raise InputError(self._why_no_edge(ion, edge))
        await self.publish_many(topic, bodies, ion=ion, message_ids=message_ids)

    def _why_no_edge(self, ion: str, edge: str) -> str:
        definition = self._book.active().get(ion)
        e = definition.edge(edge) if definition else None
        if e is not None and e.kind is EdgeKind.MODEL:
            return f"edge {edge!r} of ION {ion!r} carries models: publish them as a manifest"
        return f"no edge {edge!r} in ION {ion!r} on node {self.node_id}"

    def consume(self, match: Callable[[Arrival], bool]) -> AsyncIterator[Arrival]:
        """What arrives (deduplicated, in order per source) and satisfies ``match``."""
        queue = ArrivalQueue()
        entry = (match, queue)
        self._consumers.append(entry)

        async def iterate() -> AsyncIterator[Arrival]:
            try:
                while True:
                    await queue.wait()
                    while queue:
                        arrival = queue.take()
                        if self._queued_bytes:  # else no queue holds a chunk
                            self._queued_bytes -= _chunk_bytes(arrival)
                        yield arrival
            finally:
                self._stop_consuming(entry)

        return iterate()

    def consume_batches(
        self, match: Callable[[Arrival], bool], *, max_items: int = 1024
    ) -> AsyncIterator[list[Arrival]]:
        """``consume``, a list at a time: whatever has arrived (at least one, at most
        ``max_items``), in the same order.  For consumers of many small messages: it saves
        a resumption of the iterator per message."""
        if max_items < 1:
            raise InputError("max_items must be at least 1")
        queue = ArrivalQueue()
        entry = (match, queue)
        self._consumers.append(entry)

        async def iterate() -> AsyncIterator[list[Arrival]]:
            try:
                while True:
                    await queue.wait()
                    arrivals = queue.take_many(max_items)
                    if self._queued_bytes:
                        self._queued_bytes -= sum(_chunk_bytes(a) for a in arrivals)
                    yield arrivals
            finally:
                self._stop_consuming(entry)

        return iterate()

    def _stop_consuming(self, entry: tuple[Callable[[Arrival], bool], ArrivalQueue]) -> None:
        self._consumers.remove(entry)
        queue = entry[1]
        while queue:
            self._queued_bytes -= _chunk_bytes(queue.take())

    def queued(self) -> int:
        return sum(c.items for c in self._store.stats().classes.values())

    @property
    def link(self) -> MqttLink:
        return self._link

    @property
    def models(self) -> ModelExchange:
        """Model hand-off: ``publish``, ``watch`` / ``active``, ``report``."""
        return self._models

    @property
    def receiver(self) -> Receiver:
        return self._receiver

    @property
    def triggers(self) -> TriggerWatch:
        """The trigger edges this node evaluates (``node.agent.trigger_watch``)."""
        return self._triggers

    @property
    def sender(self) -> Sender:
        return self._sender

    def pipelines(self) -> dict[PipelineKey, tuple[Pipeline | None, StateReport]]:
        return self._pipelines.reports()

    # -- tasks ---------------------------------------------------------------------------------

    async def _receive(self) -> None:
        try:
            await self._receive_messages()
        except LinkRefusedError as exc:
            # Fatal: retrying the same credentials or certificate fails the same way.
            self._fail(str(exc))

    def _relay_local(self, msg: IncomingMessage) -> None:
        assert self._relay is not None
        try:
            topic = topics.parse(msg.topic)
        except topics.TopicError:
            return  # the receiver counts and reports it
        self._relay.from_local(topic, msg)

    def _fail(self, reason: str) -> None:
        if not self._error:
            log.error("node %s cannot work: %s", self.node_id, reason)
        self._error = reason
        self._state = NodeState.FAILED
        self.failed.set()

    async def _receive_messages(self) -> None:
        async for msg in self._link.messages():
            if self._relay is not None:
                self._relay_local(msg)
            self._receiver.handle(msg)
            self._flush_pending()  # unsequenced arrivals have no remember step
            if self._queued_bytes:
                # Model chunks wait for the exchange: let it verify and write them now rather
                # than after the link's whole backlog was read (the writeback then starts late
                # and the chunks pile up in memory).
                await asyncio.sleep(0)
            # Backpressure: a consumer that falls behind slows reading, which the link turns
            # into TCP backpressure instead of memory growth.
            # Counted in bytes too: 10,000 model chunks of 256 KiB would be 2.5 GB.
            while self._queued_bytes > MAX_QUEUED_CHUNK_BYTES or any(  # noqa: ASYNC110
                len(q) > 10_000 for _, q in self._consumers
            ):
                await asyncio.sleep(0.01)  # a consumer drains its own queue; poll it briefly

    async def _commit_loop(self) -> None:
        while True:
            await self._commit_wake.wait()
            self._commit_wake.clear()
            await self._commit_now()
            await asyncio.sleep(0)  # let more requests gather into the next transaction

    async def _commit_now(self) -> None:
        batch, self._pending_bodies = self._pending_bodies, []
        if not batch:
            return
        items, owners = outbound_items(
            batch, node_id=self.node_id, sequencer=self._sequencer, ids=self._message_ids,
            config=self._store.config, now_ms=self._clock(),
        )  # fmt: skip
        try:
            results = self._store.enqueue(items)
        except Exception as exc:  # the store failing must not leave callers hanging
            for *_, fut in batch:
                if not fut.done():
                    fut.set_exception(UnavailableError(f"outbox unavailable: {exc}"))
            raise
        for (start, end), (_, body, *_, fut) in zip(owners, batch, strict=True):
            if fut.done():
                continue
            refused = [
                (items[i], r) for i in range(start, end) if isinstance(r := results[i], Rejected)
            ]
            if not refused:
                fut.set_result(None)
            elif type(body) is not Many:
                why = refused[0][1].reason.value
                fut.set_exception(UnavailableError(f"outbox refused the message: {why}"))
            else:
                n = sum(item.items for item, _ in refused)
                why = ", ".join(sorted({r.reason.value for _, r in refused}))
                total = sum(item.items for item in items[start:end])
                fut.set_exception(
                    UnavailableError(f"outbox refused {n} of {total} message(s): {why}")
                )
        self._sender.wake()

    def _job_stats_loop(self) -> JobStatsLoop:
        return JobStatsLoop(
            node_id=self.node_id, jobs=self._pipelines.running_jobs, publish=self.publish
        )

    async def _heartbeat(self) -> None:
        interval = self.config.heartbeat_interval_ms / 1000
        while True:
            self._publish_status_soon()
            await asyncio.sleep(interval)

    async def _acknowledge_progress(self) -> None:
        """Tell sources what this node has handled, a few times a second (QoS 0: a lost ack
        is replaced by the next one)."""
        while True:
            await asyncio.sleep(ACK_INTERVAL_S)
            if self._link.state is not LinkState.CONNECTED:
                continue
            now = self._clock()
            for (source, stream), seq in self._receiver.take_progress().items():
                if source == self.node_id:
                    continue
                try:
                    topic = topics.node_topic(source, TopicKind.NODE_ACKS)
                except topics.TopicError:
                    continue
                ack = DeliveryAck(stream=stream, up_to_sequence=seq, receiver=self.node_id)
                env = new_envelope(ack, source_node=self.node_id, now_ms=now)
                with contextlib.suppress(UnavailableError):
                    await self._link.publish(topic, encode(env), qos=0)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self._receiver.tick()
            if self._link.state is LinkState.FAILED:
                self._fail(self._link.status.reason)

    # -- status --------------------------------------------------------------------------------

    def status(self, state: NodeState | None = None) -> NodeStatus:
        """This node's status now (before start-up completes: identity and state only)."""
        if not self._ready:
            return build_status(
                self.config, state=state or self._state, version=__version__,
                started_ms=self.started_ms,
            )  # fmt: skip
        link = self._link.status
        return build_status(
            self.config,
            state=state or self._state,
            version=__version__,
            started_ms=self.started_ms,
            pipelines=pipeline_statuses(self._pipelines.reports(), self._since),
            queues=queue_statuses(self._store.stats()),
            resources=self._sampler.sample(),
            links=[
                LinkStatus(
                    name="broker",
                    url=self.config.broker.url,
                    connected=link.state is LinkState.CONNECTED,
                    error=link.reason,
                )
            ],
            ions={n: d.version for n, d in self._book.active().items()},
            counters=dict(self._receiver.counters),
            error=self._error,
            models=self._models.statuses(),
        )

    def _status_payload(self, state: NodeState | None = None) -> bytes:
        env = new_envelope(self.status(state), source_node=self.node_id, now_ms=self._clock())
        return encode(env)

    def _publish_status_soon(self) -> None:
        payload = self._status_payload()
        topic = topics.node_status(self.node_id)
        self._link.set_on_connect_publish([OutgoingMessage(topic, payload)])
        if self._link.state is LinkState.CONNECTED:
            self._tg.create_task(self._publish_quietly(topic, payload, retain=True), name="status")

    async def _publish_quietly(self, topic: str, payload: bytes, *, retain: bool) -> None:
        with contextlib.suppress(UnavailableError):
            await self._link.publish(topic, payload, qos=1, retain=retain)

    # -- what arrives ---------------------------------------------------------------------------

    def _on_arrival(self, arrival: Arrival) -> None:
        topic, env = arrival.topic, arrival.envelope
        kind = topic.kind
        if kind is TopicKind.EDGE and topic.channel is not Channel.TRIGGER:
            # Most of what arrives: first, and without the other kinds' checks.
            if not arrival.duplicate:
                self._keep_for_pipelines(arrival)
            self._hand_to_consumers(arrival)
            return
        body = env.body
        if kind is TopicKind.DEFINITION:
            if isinstance(body, IonDefinition | IonDeleted) and body.name == topic.ion:
                self._on_definition(body)
            else:
                self._problem("message.unexpected", f"{type(body).__name__} on {topic}")
        elif kind in (TopicKind.NODE_COMMAND, TopicKind.ION_COMMAND):
            if isinstance(body, Command):
                self._on_command(body, env.source_node)
        elif kind is TopicKind.NODE_ACKS:
            if isinstance(body, DeliveryAck) and topic.node == self.node_id:
                self._sender.pacing.acked(
                    body.receiver or env.source_node,
                    body.stream,
                    body.up_to_sequence,
                    self._clock(),
                )
                self._sender.wake()
        elif kind is TopicKind.NODE_RETRANSMIT:
            if isinstance(body, RetransmitRequest):
                self._tg.create_task(self._retransmit(body), name="retransmit")
        elif kind in (TopicKind.PIPELINE, TopicKind.NODE_STATUS):
            self._triggers.on_arrival(arrival)  # what trigger edges evaluated here watch
        elif kind in (
            TopicKind.EDGE,
            TopicKind.MODEL_MANIFEST,
            TopicKind.MODEL_CHUNKS,
            TopicKind.MODEL_REQUESTS,  # consumed by the model exchange (producers answer)
            TopicKind.MODEL_DECISION,
            TopicKind.MODEL_CANARY,
        ):
            if topic.channel is Channel.TRIGGER and self._plan is not None:
                if self._triggers.accept_trigger(arrival):
                    self._on_trigger(topic.ion, topic.edge)
            elif kind is TopicKind.EDGE and not arrival.duplicate:
                self._keep_for_pipelines(arrival)
            self._hand_to_consumers(arrival)

    def _hand_to_consumers(self, arrival: Arrival) -> None:
        for match, queue in self._consumers:
            if match(arrival):
                queue.put(arrival)
                if isinstance(arrival.envelope.body, ModelChunk):
                    self._queued_bytes += _chunk_bytes(arrival)

    def _keep_for_pipelines(self, arrival: Arrival) -> None:
        """Edge traffic for pipelines of this node waits in the pending inbox until handled."""
        topic = arrival.topic
        readers = self._edge_readers.get((topic.ion, topic.edge))
        if not readers:
            return
        payload = encode(arrival.envelope)
        for pipeline in readers:
            self._pending.add(topic.ion, pipeline, topic.edge, arrival.envelope.message_id, payload)

    def _flush_pending(self) -> None:
        for key in self._pending.flush():
            self._port.notify(*key)

    def _job_env(self, key: PipelineKey) -> dict[str, str]:
        env = {"ION_AGENT_TOKEN": self._port.issue_token(*key)}
        env.update(broker_env(self.config.broker))
        return env

    def _job_edges(self, key: PipelineKey) -> tuple[EdgePort, ...]:
        edges = self._ion_edges.get(key[0])
        return edges.ports.get(key[1], ()) if edges is not None else ()

    def _on_definition(self, item: IonDefinition | IonDeleted) -> None:
        offer = self._book.offer(item, self.config.trust)
        if not offer.accepted:
            if offer.reason != "duplicate":
                self._problem("ion.refused", f"ION {item.name!r}: {offer.reason}")
            return
        log.info("ION %s: %s", item.name, offer.reason)
        self._held.save(item, node_id=self.node_id, now_ms=self._clock())
        self._replan()

    def _restore_definitions(self) -> None:
        """What this node held before a restart, checked again like anything from the
        network: it sets the version floor and runs those pipelines even while offline."""
        restored = 0
        for item in self._held.load():
            offer = self._book.offer(item, self.config.trust)
            if offer.accepted:
                restored += 1
            else:
                self._problem("ion.refused", f"held ION {item.name!r}: {offer.reason}")
        if restored:
            log.info("restored %d held ION definition(s) from disk", restored)
            self._replan()

    def _wanted_subscriptions(self) -> frozenset[str]:
        from node.reconcile import base_subscriptions

        own = base_subscriptions(self.node_id) if self._plan is None else self._plan.subscriptions
        triggers = self._triggers.subscriptions()
        return own | self._relay_filters | self._models.subscriptions() | triggers

    @property
    def _relay_filters(self) -> frozenset[str]:
        if self.config.relay is None:
            return frozenset()
        from .relay import RETRANSMIT_FILTER, STATUS_FILTER

        return frozenset({*self.config.relay.up, RETRANSMIT_FILTER, STATUS_FILTER})

    def _replan(self) -> None:
        active = self._book.active()
        previous = set(self._plan.pipelines) if self._plan is not None else set()
        self._plan = plan_node(active, self.config.identity)
        self._models.plan(active, self._plan.pipelines)  # model edges produced / consumed here
        self._triggers.plan(active, self._plan.pipelines)  # trigger edges evaluated here
        self._ion_edges = {name: resolve_edges(d) for name, d in active.items()}
        # Per arriving edge message, the local pipelines whose component port reads that edge
        # (worked out here, not on every message).
        self._edge_readers = {
            (ion, edge): placed
            for ion, edges in self._ion_edges.items()
            for edge, pipelines in edges.readers.items()
            if (placed := tuple(p for p in pipelines if (ion, p) in self._plan.pipelines))
        }
        self._port_edges_changed()
        for ion, pipeline in previous - set(self._plan.pipelines):
            dropped = self._pending.forget_pipeline(ion, pipeline)
            if dropped:
                log.info("%s/%s no longer runs here: %d pending dropped", ion, pipeline, dropped)
        # The topic of every edge this node may send along, worked out once per definition
        # change rather than on every message.
        self._edge_topics = {
            (name, e.name): topics.edge(name, e.name, Channel(e.kind.value), self.node_id)
            for name, d in active.items()
            for e in d.edges
            if e.kind is not EdgeKind.MODEL
        }
        wanted = self._wanted_subscriptions()
        for f in sorted(wanted - self._subscribed):
            self._tg.create_task(self._link.subscribe(f, 1), name=f"subscribe {f}")
        for f in sorted(self._subscribed - wanted):
            self._tg.create_task(self._link.unsubscribe(f), name=f"unsubscribe {f}")
        self._subscribed = wanted
        versions = self._plan.ion_versions
        self._pipelines.apply({k: (p, versions[k[0]]) for k, p in self._plan.pipelines.items()})
        self._publish_status_soon()

    def _port_edges_changed(self) -> None:
        # The port looks edges up through a bound method of the dict it was given.
        self._port.set_edges(self._ion_edges.get)

    def _on_trigger(self, ion: str, edge_name: str) -> None:
        definition = self._book.active().get(ion)
        edge = definition.edge(edge_name) if definition else None
        if edge is None:
            return
        for target in edge.targets:
            if self._pipelines.trigger((ion, target.pipeline)):
                log.info("trigger %s/%s started %s", ion, edge_name, target.pipeline)

    def _on_command(self, cmd: Command, issuer: str) -> None:
        # Signature, lifetime and replay checks live in node/agent/commands.py; the gate (and
        # its persisted window of command ids) is opened with the first command.
        now = self._clock()
        if self.command_gate is None:
            cfg = self.config
            self.command_gate = CommandGate.open(cfg.data_dir, cfg.trust, now_ms=now)
        admission = self.command_gate.admit(cmd, now)
        if not admission.accepted:
            log.warning("command refused: %s", refusal_event_text(cmd, issuer, admission))
            self._problem("command.refused", refusal_event_text(cmd, issuer, admission))
            self._command_result(cmd, issuer, False, f"refused: {admission.reason}")
            return
        done = run_here(cmd, self._pipelines)
        if done is None:
            # The model exchange decides (events, perhaps a swap); answered when done.
            self._tg.create_task(self._model_command(cmd, issuer), name="model command")
            return
        self._command_result(cmd, issuer, *done)

    async def _model_command(self, cmd: Command, issuer: str) -> None:
        ok, message = await self._models.rollouts.on_command(cmd, issuer)
        self._command_result(cmd, issuer, ok, message)

    def _command_result(self, cmd: Command, issuer: str, ok: bool, message: str) -> None:
        log.info("command %s from %s: %s", cmd.command_id, issuer, message)
        result = CommandResult(
            command_id=cmd.command_id, node_id=self.node_id, ok=ok, message=message
        )
        topic = topics.node_topic(self.node_id, TopicKind.NODE_RESULTS)
        self._tg.create_task(self._publish_safely(topic, result, cmd.command_id), name="result")

    async def _publish_from_pipeline(self, topic: str, body: object, **kwargs: Any) -> None:
        """What the local socket publishes for pipelines; their health and stats pass by the
        model exchange too (a canary trial watches them)."""
        await self.publish(topic, body, **kwargs)
        await self._models.rollouts.observe(topic, body)

    async def _publish_safely(self, topic: str, body: object, correlation_id: str = "") -> None:
        try:
            await self.publish(topic, body, correlation_id=correlation_id)
        except UnavailableError as exc:
            log.warning("could not queue a message for %s: %s", topic, exc)

    def _request_retransmit(self, gap: RequestRetransmit) -> None:
        try:
            topic = topics.node_topic(gap.source, TopicKind.NODE_RETRANSMIT)
        except topics.TopicError:
            return
        req = RetransmitRequest(
            stream=gap.stream,
            from_sequence=gap.from_sequence,
            to_sequence=gap.to_sequence,
            requester=self.node_id,
        )
        self._tg.create_task(self._publish_safely(topic, req), name="retransmit request")

    async def _retransmit(self, req: RetransmitRequest) -> None:
        items = self._store.retained(req.stream, req.from_sequence, req.to_sequence)
        log.info(
            "retransmitting %d of %d..%d on %s for %s",
            len(items),
            req.from_sequence,
            req.to_sequence,
            req.stream,
            req.requester,
        )
        # Pipelined, like the outbox: one round trip per chunk, not per message.
        for start in range(0, len(items), 256):
            chunk = items[start : start + 256]
            results = await asyncio.gather(
                *(self._link.publish(i.topic, self._resend_payload(i), qos=1) for i in chunk),
                return_exceptions=True,
            )
            if any(isinstance(r, BaseException) for r in results):
                return  # the link went down: the requester asks again

    def _resend_payload(self, item: RetainedItem) -> bytes:
        # A run is sent again whole (receivers drop what they have).
        return mqtt_payload([(item.payload, item.items)], source_node=self.node_id,
                            now_ms=self._clock())  # fmt: skip

    def _problem(self, kind: str, detail: str) -> None:
        event = Event(type=kind, severity=Severity.WARNING, subject=self.node_id, message=detail)
        topic = topics.node_topic(self.node_id, TopicKind.NODE_EVENTS)
        if self._ready:
            self._tg.create_task(self._publish_safely(topic, event), name="problem event")

    def _on_pipeline_report(
        self, key: PipelineKey, spec: Pipeline | None, report: StateReport
    ) -> None:
        self._since[key] = self._clock()
        detail = (
            f" ({report.detail})" if report.detail and report.detail != report.state.value else ""
        )
        log.info("pipeline %s/%s: %s%s", key[0], key[1], report.state.value, detail)
        self._publish_status_soon()
