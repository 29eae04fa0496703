"""One logical MQTT session kept alive across network connections, over any ``Connector``.

``ReconnectingLink`` implements ``MqttLink`` once for every transport: the aiomqtt adapter and
the in-memory fake only provide a ``Connector`` (one connection attempt) and a ``Connection``
(one network connection from its CONNACK until it ends).

States (``LinkState``) and transitions::

    NEW --enter--> CONNECTING --CONNACK, subscribed, on-connect messages acked--> CONNECTED
    CONNECTING --network error, timeout, retryable CONNACK--> BACKOFF --delay--> CONNECTING
    CONNECTED --connection lost or no ack for ack_timeout_s--> BACKOFF
    CONNECTING --refused login / not authorised / certificate--> FAILED   (terminal, no retry)
    any --exit--> CLOSED                                                   (terminal)

Invariants:
- A publish goes to the connection that is current when it is called, or fails with ``LinkDown``
  at once; when that connection is lost before the ack it fails with ``LinkDown`` at once.  It
  never migrates to a later connection: the caller's outbox owns retries and ordering.
- Nothing is dropped from the incoming queue.  When it is full the connection stops reading
  its socket (TCP backpressure) until the consumer has taken half of it.
- The wanted subscriptions are remembered; after each CONNACK the broker's set is made equal
  to them (all of them again when the broker kept no session for us).
- One supervisor task per link, named after the client id, cancelled and awaited on exit.
"""

from __future__ import annotations

import asyncio
import logging
import random as _random
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from node.link.backoff import Backoff, BackoffPolicy
from node.link.base import (
    IncomingMessage,
    LinkClosed,
    LinkDown,
    LinkOptions,
    LinkRefusedError,
    LinkState,
    LinkStatus,
    MqttLink,
    OutgoingMessage,
    PublishRefusedError,
    SubscriptionRefusedError,
    Will,
    check_filter,
    check_payload,
    check_qos,
    check_topic,
)
from node.link.connection import (
    SUBACK_FAILURE,
    Clock,
    Connection,
    Connector,
    Sleep,
    Window,
)

log = logging.getLogger(__name__)

# Failed attempts between two "still cannot connect" summaries in the log.
_SUMMARY_EVERY = 10


class ReconnectingLink:
    """``MqttLink`` over a ``Connector``; see the module docstring for its states."""

    def __init__(
        self,
        connector: Connector,
        *,
        client_id: str,
        will: Will | None = None,
        subscriptions: Sequence[tuple[str, int]] = (),
        on_connect_publish: Sequence[OutgoingMessage] = (),
        options: LinkOptions | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self._connector = connector
        self._client_id = client_id
        self.will = will
        self.options = options or LinkOptions()
        self._sleep = sleep
        self._clock = clock
        self._random = random
        self._wanted: dict[str, int] = {check_filter(f): check_qos(q) for f, q in subscriptions}
        self._confirmed: dict[str, int] = {}
        self._refused_filters: set[str] = set()
        self._on_connect: tuple[OutgoingMessage, ...] = ()
        self.set_on_connect_publish(on_connect_publish)

        self._state = LinkState.NEW
        self._reason = "not started"
        self._refusal: LinkRefusedError | None = None
        self._changed = asyncio.Event()
        self._live: Connection | None = None  # past its CONNACK (set-up may still run)
        self._conn: Connection | None = None  # CONNECTED: takes publishes
        self._session_present: bool | None = None
        self._connects = 0
        self._failed_attempts = 0
        self._closing = False
        self._task: asyncio.Task[None] | None = None

        self._queue: deque[IncomingMessage] = deque()
        self._arrived = asyncio.Event()
        self._paused = False
        self._window = Window(self.options.inflight_window)
        self._sub_lock = asyncio.Lock()

    # -- observation ----------------------------------------------------------------------

    @property
    def client_id(self) -> str:
        return self._client_id

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def session_present(self) -> bool | None:
        return self._session_present

    @property
    def status(self) -> LinkStatus:
        conn = self._conn
        return LinkStatus(
            state=self._state,
            reason=self._reason,
            session_present=self._session_present,
            connects=self._connects,
            failed_attempts=self._failed_attempts,
            pending_publishes=len(conn.acks) if conn is not None else 0,
            queued_messages=len(self._queue),
            reading_paused=self._paused,
        )

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state is not LinkState.NEW:
            raise RuntimeError("a link can be entered only once")
        self._set_state(LinkState.CONNECTING, "first attempt")
        self._task = asyncio.create_task(self._run(), name=f"mqtt-link:{self._client_id}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing = True
        task = self._task
        try:
            if task is not None:
                task.cancel()
                # wait() rather than ``await task``: a second cancellation of *our* task must
                # propagate, not be mistaken for the supervisor's own CancelledError.
                await asyncio.wait({task})
            # Read after the supervisor stopped: it keeps ``_live`` when closing, even one
            # connected just before the cancellation arrived.
            conn = self._live
            if conn is not None and not conn.is_lost:
                await self._close_cleanly(conn)
        finally:
            conn = self._live
            if conn is not None and not conn.is_lost:
                conn.abort("link closed")
            self._live = self._conn = None
            self._set_state(LinkState.CLOSED, "closed")
        if task is not None and not task.cancelled():
            error = task.exception()
            if error is not None:
                raise error  # a bug in the supervisor: surface it

    async def _close_cleanly(self, conn: Connection) -> None:
        """Publish the will ourselves (a DISCONNECT suppresses the broker's), then disconnect;
        bounded by close_timeout_s.  A second cancellation falls back to an abort."""
        try:
            async with asyncio.timeout(self.options.close_timeout_s):
                if self.will is not None and self.options.publish_will_on_close:
                    w = self.will
                    await conn.publish(w.topic, w.payload, w.qos, w.retain)
                await conn.close()
        except (TimeoutError, LinkDown) as exc:
            log.info("%s: clean close failed (%s); dropping the connection", self._client_id, exc)
            conn.abort("clean close failed")

    async def wait_connected(self) -> None:
        while True:
            conn = self._conn
            if conn is not None and not conn.is_lost:
                return
            if self._state in (LinkState.FAILED, LinkState.CLOSED, LinkState.NEW):
                raise self._not_connected()
            await self._changed.wait()

    # -- publish / subscribe --------------------------------------------------------------

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        check_topic(topic)
        check_qos(qos)
        data = check_payload(payload)
        conn = self._conn
        if conn is None or conn.is_lost:
            raise self._not_connected()
        await self._window.acquire()
        try:
            if conn is not self._conn:
                raise LinkDown(f"connection lost before the message was sent: {self._reason}")
            await conn.publish(topic, data, qos, retain)
        finally:
            self._window.release()

    async def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        check_filter(topic_filter)
        check_qos(qos)
        async with self._sub_lock:
            self._wanted[topic_filter] = qos
            self._refused_filters.discard(topic_filter)
            conn = self._live
            if conn is None or conn.is_lost:
                return
            try:  # (bounded by the watchdog: it drops a connection that stops answering)
                (granted,) = await conn.subscribe([(topic_filter, qos)])
            except LinkDown:
                return  # the next connection subscribes
            if granted >= SUBACK_FAILURE:
                if self._wanted.get(topic_filter) == qos:
                    del self._wanted[topic_filter]
                raise SubscriptionRefusedError(
                    f"broker refused the subscription to {topic_filter!r} (code {granted:#x})"
                )
            self._confirmed[topic_filter] = qos

    async def unsubscribe(self, topic_filter: str) -> None:
        check_filter(topic_filter)
        async with self._sub_lock:
            self._wanted.pop(topic_filter, None)
            conn = self._live
            if conn is None or conn.is_lost or topic_filter not in self._confirmed:
                return
            try:
                await conn.unsubscribe([topic_filter])
            except LinkDown:
                return  # the next connection unsubscribes (if the broker kept the session)
            self._confirmed.pop(topic_filter, None)

    def set_on_connect_publish(self, messages: Sequence[OutgoingMessage]) -> None:
        for m in messages:
            if not isinstance(m, OutgoingMessage):
                raise TypeError("on-connect messages must be OutgoingMessage values")
        self._on_connect = tuple(messages)

    # -- incoming ------------------------------------------------------------------------

    def messages(self) -> _MessageIterator:
        return _MessageIterator(self)

    def _deliver(self, msg: IncomingMessage) -> None:
        self._queue.append(msg)
        self._arrived.set()
        if not self._paused and len(self._queue) >= self.options.incoming_queue:
            self._pause()

    def _pause(self) -> None:
        self._paused = True
        log.info(
            "%s: %d incoming messages unread: pausing reads from the broker",
            self._client_id,
            len(self._queue),
        )
        if self._live is not None:
            self._live.pause_reading()

    def _taken(self) -> None:
        if self._paused and len(self._queue) <= self.options.incoming_queue // 2:
            self._paused = False
            log.info("%s: incoming queue drained: reading again", self._client_id)
            if self._live is not None:
                self._live.resume_reading()

    # -- the supervisor ------------------------------------------------------------------

    async def _run(self) -> None:
        o = self.options
        backoff = Backoff(
            BackoffPolicy(
                o.backoff_initial_s, o.backoff_max_s, o.backoff_multiplier, o.backoff_jitter
            ),
            random=self._random,
        )
        down_since = self._clock()
        while not self._closing:
            self._set_state(LinkState.CONNECTING, self._reason)
            try:
                conn = await self._connector.connect(self._deliver)
            except LinkRefusedError as exc:
                self._refusal = exc
                self._set_state(LinkState.FAILED, exc.reason)
                return
            except LinkDown as exc:
                self._attempt_failed(str(exc), down_since)
            except Exception as exc:  # a bug must not leave the node unreachable for good
                log.exception("%s: unexpected error while connecting", self._client_id)
                self._attempt_failed(f"unexpected error: {exc!r}", down_since)
            else:
                started = self._clock()
                try:
                    reason = await self._serve(conn)
                except Exception as exc:  # as above: log loudly, keep the node reachable
                    log.exception("%s: unexpected error on a connection", self._client_id)
                    reason = f"unexpected error: {exc!r}"
                if self._is_closing():  # (set by __aexit__ while we awaited)
                    return
                if self._clock() - started >= o.stable_after_s:
                    backoff.reset()
                down_since = self._clock()
                log.warning(
                    "%s: connection to %s lost: %s; reconnecting",
                    self._client_id,
                    self._connector.target,
                    reason,
                )
                self._reason = reason
            self._set_state(LinkState.BACKOFF, self._reason)
            await self._sleep(backoff.next_delay())

    def _attempt_failed(self, reason: str, down_since: float) -> None:
        self._failed_attempts += 1
        self._reason = reason
        n = self._failed_attempts
        if n == 1:
            log.warning(
                "%s: cannot connect to %s: %s; retrying with backoff",
                self._client_id,
                self._connector.target,
                reason,
            )
        elif n % _SUMMARY_EVERY == 0:
            log.warning(
                "%s: still cannot connect to %s after %d attempts over %.0f s: %s",
                self._client_id,
                self._connector.target,
                n,
                self._clock() - down_since,
                reason,
            )
        else:
            log.debug("%s: attempt %d failed: %s", self._client_id, n, reason)

    async def _serve(self, conn: Connection) -> str:
        """Set the connection up, run it until it is lost, and say why it was."""
        self._live = conn
        self._session_present = conn.session_present
        if self._paused or len(self._queue) >= self.options.incoming_queue:
            self._paused = True
            conn.pause_reading()
        # Set-up runs beside the watchdog, which bounds its SUBACK and PUBACK waits as it
        # bounds every other (and knows not to while reading is paused).
        setup = asyncio.create_task(self._setup(conn), name=f"mqtt-link:{self._client_id}:setup")
        try:
            return await self._watch(conn, setup)
        finally:
            self._conn = None
            if not setup.done():
                setup.cancel()
                await asyncio.wait({setup})
            if not self._closing:
                self._live = None
                if not conn.is_lost:
                    conn.abort("link stopped")

    async def _setup(self, conn: Connection) -> None:
        try:
            async with self._sub_lock:
                await self._sync_subscriptions(conn)
            await self._publish_on_connect(conn)
        except LinkDown:
            return  # lost meanwhile: _watch returns its reason
        if conn.is_lost:
            return
        self._conn = conn
        self._connects += 1
        attempts, self._failed_attempts = self._failed_attempts, 0
        log.info(
            "%s: connected to %s (session present: %s%s)",
            self._client_id,
            self._connector.target,
            conn.session_present,
            f", after {attempts} failed attempts" if attempts else "",
        )
        self._set_state(LinkState.CONNECTED, "")

    async def _publish_on_connect(self, conn: Connection) -> None:
        for m in self._on_connect:
            try:
                await conn.publish(m.topic, m.payload, m.qos, m.retain)
            except PublishRefusedError as exc:  # an MQTT 5 ACL: say so, keep the connection
                log.error(  # noqa: TRY400 - an expected refusal; a traceback adds nothing
                    "%s: on-connect message to %s refused: %s", self._client_id, m.topic, exc
                )

    async def _watch(self, conn: Connection, setup: asyncio.Task[None]) -> str:
        """Wait for the loss of ``conn``; drop it when the broker stops answering (no PUBACK,
        SUBACK or UNSUBACK for ack_timeout_s while we are reading)."""
        limit = self.options.ack_timeout_s
        interval = min(1.0, limit / 4)
        waiting: set[asyncio.Future[Any]] = {conn.lost, setup}
        while True:
            done, _ = await asyncio.wait(
                waiting, timeout=interval, return_when=asyncio.FIRST_COMPLETED
            )
            if conn.lost.done():
                return conn.lost.result()
            if setup in done:
                setup.result()  # a bug in set-up surfaces here
                waiting = {conn.lost}
            if self._paused:  # answers wait unread in the socket with everything else
                conn.acks.touch()
                continue
            stalled = conn.acks.stalled_for(self._clock())
            if stalled >= limit:
                conn.abort(f"no answer from the broker for {stalled:.1f} s")

    async def _sync_subscriptions(self, conn: Connection) -> None:
        """Make the broker's subscriptions for our session equal to the wanted ones."""
        if not conn.session_present:
            self._confirmed.clear()
        stale = [f for f in self._confirmed if f not in self._wanted]
        if stale:
            await conn.unsubscribe(stale)
            for f in stale:
                self._confirmed.pop(f, None)
        todo = [(f, q) for f, q in self._wanted.items() if self._confirmed.get(f) != q]
        if not todo:
            return
        granted = await conn.subscribe(todo)
        for (f, q), code in zip(todo, granted, strict=True):
            if code >= SUBACK_FAILURE:
                if f not in self._refused_filters:
                    self._refused_filters.add(f)
                    log.error(
                        "%s: broker refused the subscription to %r (code %#x)",
                        self._client_id,
                        f,
                        code,
                    )
            else:
                self._confirmed[f] = q

    # -- helpers ---------------------------------------------------------------------------

    def _set_state(self, state: LinkState, reason: str) -> None:
        self._reason = reason
        if state is self._state:
            return
        old, self._state = self._state, state
        if state is LinkState.FAILED:
            log.error(
                "%s: connection to %s refused, giving up: %s",
                self._client_id,
                self._connector.target,
                reason,
            )
        elif state is LinkState.CLOSED:
            log.info("%s: link closed", self._client_id)
        else:
            log.debug("%s: %s -> %s (%s)", self._client_id, old.value, state.value, reason)
        self._changed.set()
        self._changed = asyncio.Event()
        if state in (LinkState.FAILED, LinkState.CLOSED):
            self._arrived.set()

    def _is_closing(self) -> bool:
        return self._closing

    def _not_connected(self) -> Exception:
        if self._state is LinkState.FAILED and self._refusal is not None:
            return LinkRefusedError(self._refusal.reason, code=self._refusal.code)
        if self._state is LinkState.NEW:
            return LinkClosed(f"link {self._client_id} has not been entered")
        if self._state is LinkState.CLOSED:
            return LinkClosed(f"link {self._client_id} is closed")
        conn = self._conn
        if conn is not None and conn.is_lost:  # the supervisor has not noticed yet
            return LinkDown(f"link {self._client_id} lost its connection: {conn.lost.result()}")
        return LinkDown(f"link {self._client_id} is {self._state.value}: {self._reason}")


class _MessageIterator:
    """``messages()``: the queue first, then the link's end (stop when closed, raise when
    refused)."""

    def __init__(self, link: ReconnectingLink) -> None:
        self._link = link

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> IncomingMessage:
        link = self._link
        while not link._queue:  # the iterator is part of the link
            if link.state is LinkState.CLOSED:
                raise StopAsyncIteration
            if link.state is LinkState.FAILED:
                raise link._not_connected()
            link._arrived.clear()
            await link._arrived.wait()
        msg = link._queue.popleft()
        link._taken()
        return msg


if TYPE_CHECKING:  # the supervisor must keep satisfying the published protocol

    def _conforms(link: ReconnectingLink) -> MqttLink:
        return link
