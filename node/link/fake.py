"""An in-memory MQTT broker and a link to it, for fast tests of code that uses ``MqttLink``.

``FakeLink`` is the real ``ReconnectingLink`` over a ``FakeConnector``: the same supervisor,
backoff, subscription sync, incoming queue and flow control as ``AiomqttLink``; only the network
and the broker are replaced.  ``tests/link_conformance.py`` holds both to the same behaviour.

The broker models what the agent relies on: wildcard filters, retained messages (an empty
payload clears one), QoS 0/1 with acknowledgements, persistent sessions (subscriptions kept and
QoS 1 messages queued while away, ``session_present`` on reconnect), wills on abrupt loss, and
session take-over by client id.  A client that stops reading (``pause_reading``) leaves its
messages with the broker, unacknowledged, as TCP backpressure does.

Scripted failures, all synchronous calls a test makes on the broker:

- ``drop(client_id=None)``: the connection(s) die abruptly; wills are published.
- ``partition(client_id)`` / ``heal(client_id)``, ``set_down(bool)``: connections drop and new
  attempts fail (retryable) until healed; ``fail_connects(n)`` fails the next n attempts.
- ``refuse(reason, code=134)`` / ``accept()``: attempts are refused (fatal), as with bad
  credentials; ``credentials={user: password}`` checks logins for real.
- ``ack_delay_s = 0.5`` (slow acks); ``hold_acks()`` ... ``release_acks()`` (no acks until
  released, or until the connection drops).
- ``deny_subscribe(filter)``: SUBACK failure for that filter (an ACL).
- ``inject(topic, payload)``: deliver any bytes (a malformed payload) to subscribers, as if a
  third client had published them.
- ``restart(keep_state=False)``: every connection drops; sessions and retained messages are
  forgotten unless ``keep_state``.
"""

from __future__ import annotations

import asyncio
import random as _random
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from node.link.base import (
    IncomingMessage,
    LinkDown,
    LinkOptions,
    LinkRefusedError,
    OutgoingMessage,
    Will,
    check_topic,
    topic_matches,
)
from node.link.connection import SUBACK_FAILURE, Clock, Connection, Sink, Sleep
from node.link.session import ReconnectingLink


@dataclass(frozen=True, slots=True)
class Published:
    """One message the broker accepted, in order (the broker's log, for assertions)."""

    client_id: str
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(eq=False, slots=True)
class _Session:
    client_id: str
    persistent: bool
    subscriptions: dict[str, int] = field(default_factory=dict)
    queued: deque[IncomingMessage] = field(default_factory=deque)
    conn: FakeConnection | None = None


class FakeBroker:
    def __init__(
        self,
        *,
        credentials: Mapping[str, str] | None = None,
        max_queued: int = 100_000,
        clock: Clock = time.monotonic,
    ) -> None:
        self.published: list[Published] = []
        self.retained: dict[str, IncomingMessage] = {}
        self.connect_attempts: Counter[str] = Counter()
        self.ack_delay_s = 0.0
        self._credentials = dict(credentials) if credentials is not None else None
        self._max_queued = max_queued
        self._clock = clock
        self._sessions: dict[str, _Session] = {}
        self._refusals: dict[str | None, tuple[str, int]] = {}
        self._partitioned: set[str] = set()
        self._down = False
        self._failing_connects = 0
        self._held: list[asyncio.Future[None]] | None = None
        self._denied: set[str] = set()

    # -- observation --------------------------------------------------------------------------

    def connected(self, client_id: str) -> bool:
        session = self._sessions.get(client_id)
        return session is not None and session.conn is not None

    def subscriptions(self, client_id: str) -> dict[str, int]:
        session = self._sessions.get(client_id)
        return dict(session.subscriptions) if session else {}

    def published_on(self, topic: str) -> list[bytes]:
        return [p.payload for p in self.published if p.topic == topic]

    # -- scripted failures ----------------------------------------------------------------

    def drop(self, client_id: str | None = None) -> int:
        """Kill the connection of ``client_id`` (or all) abruptly; returns how many died."""
        victims = [
            s.conn
            for s in self._sessions.values()
            if s.conn is not None and (client_id is None or s.client_id == client_id)
        ]
        for conn in victims:
            self._gone(conn, clean=False)
            conn.mark_lost("connection reset by the (fake) broker")
        return len(victims)

    def partition(self, client_id: str) -> None:
        self._partitioned.add(client_id)
        self.drop(client_id)

    def heal(self, client_id: str) -> None:
        self._partitioned.discard(client_id)

    def set_down(self, down: bool) -> None:
        self._down = down
        if down:
            self.drop()

    def fail_connects(self, n: int) -> None:
        self._failing_connects = n

    def refuse(
        self,
        reason: str = "bad user name or password",
        *,
        code: int = 134,
        client_id: str | None = None,
    ) -> None:
        self._refusals[client_id] = (reason, code)

    def accept(self, client_id: str | None = None) -> None:
        self._refusals.pop(client_id, None)

    def hold_acks(self) -> None:
        if self._held is None:
            self._held = []

    def release_acks(self) -> None:
        held, self._held = self._held or [], None
        for fut in held:
            if not fut.done():
                fut.set_result(None)

    def deny_subscribe(self, topic_filter: str) -> None:
        self._denied.add(topic_filter)

    def allow_subscribe(self, topic_filter: str) -> None:
        self._denied.discard(topic_filter)

    def inject(self, topic: str, payload: bytes, *, retain: bool = False, qos: int = 1) -> None:
        self._route("(injected)", check_topic(topic), bytes(payload), qos, retain)

    def restart(self, *, keep_state: bool = False) -> None:
        self.drop()
        if not keep_state:
            self._sessions.clear()
            self.retained.clear()

    def link(self, client_id: str, **kwargs: object) -> FakeLink:
        return FakeLink(self, client_id, **kwargs)  # type: ignore[arg-type]

    # -- what connections call ----------------------------------------------------------

    def _connect(
        self,
        client_id: str,
        *,
        clean: bool,
        will: Will | None,
        username: str | None,
        password: str | None,
        sink: Sink,
    ) -> FakeConnection:
        self.connect_attempts[client_id] += 1
        if self._down or client_id in self._partitioned:
            raise LinkDown("[Errno 111] Connection refused (fake broker unreachable)")
        if self._failing_connects > 0:
            self._failing_connects -= 1
            raise LinkDown("[Errno 104] Connection reset by peer (scripted)")
        refusal = self._refusals.get(client_id) or self._refusals.get(None)
        if refusal is not None:
            raise LinkRefusedError(f"broker refused the connection: {refusal[0]}", code=refusal[1])
        if self._credentials is not None and (
            username is None or self._credentials.get(username) != password
        ):
            raise LinkRefusedError(
                "broker refused the connection: Bad user name or password", code=134
            )
        session = self._sessions.get(client_id)
        if session is not None and session.conn is not None:
            old = session.conn
            self._gone(old, clean=True)
            old.mark_lost("session taken over by another connection")
        present = session is not None and session.persistent and not clean
        if not present:
            session = _Session(client_id, persistent=not clean)
            self._sessions[client_id] = session
        assert session is not None
        conn = FakeConnection(self, session, sink, will, session_present=present)
        session.conn = conn
        while session.queued:
            conn.deliver(session.queued.popleft())
        return conn

    def _gone(self, conn: FakeConnection, *, clean: bool) -> None:
        session = conn.session
        if session.conn is not conn:
            return
        session.conn = None
        unread = conn.take_unread()
        if session.persistent:
            session.queued.extendleft(reversed([m for m in unread if m.qos > 0]))
        else:
            self._sessions.pop(session.client_id, None)
        if not clean and conn.will is not None:
            w = conn.will
            self._route(session.client_id, w.topic, w.payload, w.qos, w.retain)

    def _route(self, sender: str, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self.published.append(Published(sender, topic, payload, qos, retain))
        if retain:
            if payload:
                self.retained[topic] = IncomingMessage(topic, payload, retain=True, qos=qos)
            else:
                self.retained.pop(topic, None)
        for session in list(self._sessions.values()):
            granted = [q for f, q in session.subscriptions.items() if topic_matches(f, topic)]
            if not granted:
                continue
            msg = IncomingMessage(topic, payload, retain=False, qos=min(qos, max(granted)))
            if session.conn is not None:
                session.conn.deliver(msg)
            elif session.persistent and msg.qos > 0:
                session.queued.append(msg)
                if len(session.queued) > self._max_queued:
                    session.queued.popleft()  # as Mosquitto does past max_queued_messages

    def _ack(self, fut: asyncio.Future[None]) -> None:
        if self._held is not None:
            self._held.append(fut)
        elif self.ack_delay_s > 0:
            asyncio.get_running_loop().call_later(self.ack_delay_s, _settle, fut)
        else:
            asyncio.get_running_loop().call_soon(_settle, fut)

    def _subscribe(self, session: _Session, filters: Sequence[tuple[str, int]]) -> list[int]:
        granted: list[int] = []
        for f, q in filters:
            if f in self._denied:
                granted.append(SUBACK_FAILURE)
                continue
            session.subscriptions[f] = q
            granted.append(q)
            conn = session.conn
            for topic, m in list(self.retained.items()):
                if conn is not None and topic_matches(f, topic):
                    conn.deliver(IncomingMessage(topic, m.payload, retain=True, qos=min(q, m.qos)))
        return granted


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class FakeConnection(Connection):
    """One fake network connection.  Messages to the client wait in ``_inbound`` (the socket)
    until read; reading stops while paused."""

    def __init__(
        self,
        broker: FakeBroker,
        session: _Session,
        sink: Sink,
        will: Will | None,
        *,
        session_present: bool,
    ) -> None:
        super().__init__(session_present=session_present, clock=broker._clock)
        self._broker = broker
        self.session = session
        self.will = will
        self._sink = sink
        self._inbound: deque[IncomingMessage] = deque()
        self._paused = False
        self._flush_scheduled = False

    def deliver(self, msg: IncomingMessage) -> None:
        if self.is_lost:
            return
        self._inbound.append(msg)
        self._schedule_flush()

    def take_unread(self) -> list[IncomingMessage]:
        unread = list(self._inbound)
        self._inbound.clear()
        return unread

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and not self._paused:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        while self._inbound and not self._paused and not self.is_lost:
            self._sink(self._inbound.popleft())

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> asyncio.Future[None]:
        if self.is_lost:
            return self.failed()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._broker._route(self.session.client_id, topic, payload, qos, retain)
        if qos == 0:
            fut.set_result(None)
        else:
            self.acks.track(fut)
            self._broker._ack(fut)
        return fut

    async def subscribe(self, filters: Sequence[tuple[str, int]]) -> list[int]:
        await asyncio.sleep(0)  # the round trip
        if self.is_lost:
            raise LinkDown(f"connection lost: {self.lost.result()}")
        return self._broker._subscribe(self.session, filters)

    async def unsubscribe(self, filters: Sequence[str]) -> None:
        await asyncio.sleep(0)
        if self.is_lost:
            raise LinkDown(f"connection lost: {self.lost.result()}")
        for f in filters:
            self.session.subscriptions.pop(f, None)

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        self._paused = False
        self._schedule_flush()

    async def close(self) -> None:
        await asyncio.sleep(0)
        self._broker._gone(self, clean=True)
        self.mark_lost("closed by us")

    def abort(self, reason: str) -> None:
        self._broker._gone(self, clean=False)
        self.mark_lost(reason)


class FakeConnector:
    def __init__(
        self,
        broker: FakeBroker,
        client_id: str,
        *,
        will: Will | None,
        clean: bool,
        username: str | None,
        password: str | None,
    ) -> None:
        self._broker = broker
        self._client_id = client_id
        self._will = will
        self._clean = clean
        self._username = username
        self._password = password

    @property
    def target(self) -> str:
        return "fake-broker"

    async def connect(self, sink: Sink) -> Connection:
        await asyncio.sleep(0)  # the round trip
        return self._broker._connect(
            self._client_id,
            clean=self._clean,
            will=self._will,
            username=self._username,
            password=self._password,
            sink=sink,
        )


class FakeLink(ReconnectingLink):
    """``MqttLink`` on a ``FakeBroker``.  ``sleep`` and ``random`` are injectable so backoff
    can be observed without waiting."""

    def __init__(
        self,
        broker: FakeBroker,
        client_id: str,
        *,
        will: Will | None = None,
        subscriptions: Sequence[tuple[str, int]] = (),
        on_connect_publish: Sequence[OutgoingMessage] = (),
        options: LinkOptions | None = None,
        username: str | None = None,
        password: str | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        random: Callable[[], float] = _random.random,
    ) -> None:
        options = options or LinkOptions()
        connector = FakeConnector(
            broker,
            client_id,
            will=will,
            clean=not options.persistent_session,
            username=username,
            password=password,
        )
        super().__init__(
            connector,
            client_id=client_id,
            will=will,
            subscriptions=subscriptions,
            on_connect_publish=on_connect_publish,
            options=options,
            sleep=sleep,
            clock=clock,
            random=random,
        )
