"""The narrow interface between the agent and an MQTT broker: one protocol, its values, its errors.

``MqttLink`` is one *logical* MQTT session that outlives network connections: it reconnects by
itself, re-subscribes, republishes the node's on-connect messages (its retained "online" status)
and keeps handing out incoming messages through one iterator.  Two implementations share the
supervising logic in ``node.link.session``: ``node.link.aiomqtt_link.AiomqttLink`` (the only
module that imports aiomqtt) and ``node.link.fake.FakeLink`` (an in-memory broker for unit
tests, with scripted failures).  ``tests/link_conformance.py`` runs one suite against both.

Delivery contract, what the outbox can rely on:
- ``publish`` returns only after the broker acknowledged the message (QoS 1 PUBACK); QoS 0
  returns once the message is handed to the connection.
- It raises ``LinkDown`` (retryable) when the link is not connected at the call, or when the
  connection that took the message is lost before the acknowledgement.  It never waits for a
  later connection and never resends by itself: the caller owns retries, so a message may reach
  the broker twice (at-least-once; receivers deduplicate by message id).
- It raises ``LinkRefusedError`` (fatal) once the broker refused the login or the TLS handshake
  failed on a certificate; the link then stays in ``LinkState.FAILED``.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol, Self

from ion.errors import ConfigError, InputError, RefusedError, UnavailableError

# Largest MQTT packet is 268,435,455 bytes; keep payloads clearly below it (topic + headers).
MAX_PAYLOAD = 268_435_455 - 65_536 - 16
# Packet identifiers are 16 bits: at most 65,535 unacknowledged QoS 1 messages per connection.
MAX_PACKET_IDS = 65_535


class LinkDown(UnavailableError):  # noqa: N818 - the name the agent codes against
    """The link has no connection now, or lost the one that carried this request: retry later."""


class LinkClosed(LinkDown):
    """The link's context has exited (or was never entered)."""


class LinkRefusedError(RefusedError):
    """The broker refused us (credentials, authorisation, client id) or TLS failed on a
    certificate.  Fatal: retrying with the same configuration fails the same way."""

    def __init__(self, reason: str, *, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class SubscriptionRefusedError(RefusedError):
    """The broker answered a SUBSCRIBE with a failure code (usually its ACL)."""


class PublishRefusedError(RefusedError):
    """The broker acknowledged a publish with a failure code (MQTT 5 only, e.g. its ACL)."""


class InvalidTopicError(InputError):
    """A topic or topic filter that MQTT does not allow (a caller bug, never retryable)."""


class LinkState(enum.Enum):
    """Where the link is.  NEW before entry; CLOSED and FAILED are terminal."""

    NEW = "new"
    CONNECTING = "connecting"  # a connection attempt (or its set-up) is under way
    CONNECTED = "connected"  # subscribed and on-connect messages published: publish works
    BACKOFF = "backoff"  # waiting before the next attempt
    FAILED = "failed"  # refused: credentials, authorisation or certificate
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    topic: str
    payload: bytes
    retain: bool = False
    qos: int = 1


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message published by the link itself, on every (re)connect (e.g. the retained
    "online" status) or on a clean close (the will, see ``LinkOptions``)."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True

    def __post_init__(self) -> None:
        check_topic(self.topic)
        check_qos(self.qos)


@dataclass(frozen=True, slots=True)
class Will:
    """Published by the broker when our connection dies without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True

    def __post_init__(self) -> None:
        check_topic(self.topic)
        check_qos(self.qos)


@dataclass(frozen=True, slots=True)
class LinkStatus:
    """A snapshot for logs and the node's status message."""

    state: LinkState
    reason: str  # why it is not connected (last error, or the refusal); "" when connected
    session_present: bool | None  # the broker's flag on the last CONNACK; None before one
    connects: int  # successful connections so far
    failed_attempts: int  # failed attempts since the last successful connection
    pending_publishes: int  # publishes awaiting an acknowledgement
    queued_messages: int  # incoming messages not yet taken from ``messages()``
    reading_paused: bool  # the incoming queue is full and the network is not being read


@dataclass(frozen=True, slots=True)
class LinkOptions:
    """How a link behaves; every field has a working default.

    persistent_session: ask the broker to keep our session (subscriptions and QoS 1 messages
        queued while we are away) across connections: MQTT 3.1.1 ``clean_session=False``, MQTT 5
        ``clean_start=False`` with ``session_expiry_s``.  Needs a fixed client id (default off).
    protocol: "3.1.1" (default, works with every broker) or "5".
    session_expiry_s: MQTT 5 only: how long the broker keeps a persistent session (1 day).
    inflight_window: QoS 1/2 publishes sent and not yet acknowledged (default 1,000; at most
        65,535, the packet-id space).  Further publishes wait in the link, first come first
        served, so call order is wire order.  The link enforces it rather than paho's
        ``max_inflight_messages`` (set to 0, unlimited): paho rescans every outstanding
        message on each PUBACK when that limit is set, which costs O(window) per message.
    incoming_queue: incoming messages held for ``messages()`` (default 10,000).  When it is
        full the link stops reading the socket (TCP backpressure; nothing is dropped) and
        resumes when half of it has been taken.  It can overshoot by one network read (at
        most about ``inflight_window`` messages) because the client reads in batches.  While
        paused, PUBACKs wait unread too (publishes stall, ``ack_timeout_s`` is suspended), and
        a pause longer than about two keepalive periods ends the connection (paho's keepalive
        check); it is re-established, and a persistent session loses nothing.
    ack_timeout_s: with requests pending (publishes, subscribes) and no PUBACK, SUBACK or
        UNSUBACK for this long while we read, the connection is declared dead and dropped
        (default 20 s).  This finds a silently dead route sooner than keepalive, which needs
        up to two keepalive periods.  Suspended while reading is paused.
    backoff_initial_s, backoff_max_s, backoff_multiplier, backoff_jitter: reconnect delays,
        see ``node.link.backoff`` (0.5 s doubling to 30 s, each cut by up to 50 % at random).
    stable_after_s: a connection that lasted this long resets the backoff (default 10 s); one
        that dies sooner (e.g. two clients with one client id taking turns) keeps backing off.
    close_timeout_s: the bound on a clean close (will publish + DISCONNECT) (default 2 s).
    publish_will_on_close: on a clean close, publish the will message ourselves before the
        DISCONNECT (which suppresses the broker's will), so "offline" is published whether the
        node stops or dies (default on).
    """

    persistent_session: bool = False
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    session_expiry_s: int = 86_400
    inflight_window: int = 1000
    incoming_queue: int = 10_000
    ack_timeout_s: float = 20.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    backoff_multiplier: float = 2.0
    backoff_jitter: float = 0.5
    stable_after_s: float = 10.0
    close_timeout_s: float = 2.0
    publish_will_on_close: bool = True

    def __post_init__(self) -> None:
        if self.protocol not in ("3.1.1", "5"):
            raise ConfigError(f"link protocol must be '3.1.1' or '5', not {self.protocol!r}")
        if not 1 <= self.inflight_window <= MAX_PACKET_IDS:
            raise ConfigError(f"inflight_window must be 1..{MAX_PACKET_IDS} (16-bit packet ids)")
        if self.incoming_queue < 2:
            raise ConfigError("incoming_queue must be at least 2")
        if self.session_expiry_s < 0:
            raise ConfigError("session_expiry_s must not be negative")
        for name in ("ack_timeout_s", "backoff_initial_s", "close_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ConfigError("backoff_max_s must be at least backoff_initial_s")
        if self.backoff_multiplier < 1:
            raise ConfigError("backoff_multiplier must be at least 1")
        if not 0 <= self.backoff_jitter <= 1:
            raise ConfigError("backoff_jitter must be between 0 and 1")
        if self.stable_after_s < 0:
            raise ConfigError("stable_after_s must not be negative")


class MqttLink(Protocol):
    """One MQTT session kept alive across reconnects.  Use as ``async with link:``.

    Entry starts the connection supervisor and returns at once (the link is usable: publishes
    fail fast with ``LinkDown`` until it is connected); ``wait_connected`` waits for the
    broker.  Exit (or cancellation of the task that entered it) publishes the will if
    configured, disconnects within ``close_timeout_s`` and leaves no task behind.
    """

    @property
    def client_id(self) -> str: ...

    @property
    def state(self) -> LinkState: ...

    @property
    def status(self) -> LinkStatus: ...

    @property
    def session_present(self) -> bool | None:
        """The broker's session-present flag on the last CONNACK (None before one)."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def wait_connected(self) -> None:
        """Return once connected; raise ``LinkRefusedError`` if failed, ``LinkClosed`` if closed."""
        ...

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        """Return when the broker acknowledged (see the module docstring for the contract)."""
        ...

    def messages(self) -> AsyncIterator[IncomingMessage]:
        """Incoming messages across reconnects, in arrival order, for one consumer.  Ends when
        the link closes; raises ``LinkRefusedError`` once it failed and the queue is empty."""
        ...

    async def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """Add a subscription, kept across reconnects.  Returns once the broker confirmed it,
        or at once when the link is down (it is made on the next connection).  Raises
        ``SubscriptionRefusedError`` when the broker rejects it (then it is forgotten)."""
        ...

    async def unsubscribe(self, topic_filter: str) -> None:
        """Remove a subscription (on the broker now if connected, else on reconnect)."""
        ...

    def set_on_connect_publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Replace the messages published on every (re)connect, e.g. a fresher status."""
        ...


# -- MQTT's own rules for topics and filters (MQTT 3.1.1 section 4.7) --------------------------


def check_qos(qos: int) -> int:
    if qos not in (0, 1, 2):
        raise InvalidTopicError(f"QoS must be 0, 1 or 2, not {qos!r}")
    return qos


def check_topic(topic: str) -> str:
    """A topic name one may publish to: non-empty UTF-8 up to 65,535 bytes, no wildcards."""
    _check_common(topic, "topic")
    if "+" in topic or "#" in topic:
        raise InvalidTopicError(f"topic {topic!r} contains a wildcard")
    return topic


def check_filter(topic_filter: str) -> str:
    """A subscription filter: '+' fills a whole level, '#' only the whole last level."""
    _check_common(topic_filter, "topic filter")
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise InvalidTopicError(f"filter {topic_filter!r}: '#' must be the whole last level")
        if "+" in level and level != "+":
            raise InvalidTopicError(f"filter {topic_filter!r}: '+' must fill a whole level")
    return topic_filter


def check_payload(payload: bytes) -> bytes:
    if not isinstance(payload, bytes | bytearray):
        raise InputError(f"payload must be bytes, not {type(payload).__name__}")
    if len(payload) > MAX_PAYLOAD:
        raise InputError(f"payload of {len(payload)} bytes exceeds MQTT's packet size")
    return bytes(payload)


def _check_common(value: str, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidTopicError(f"{what} must be a non-empty string")
    if "\x00" in value:
        raise InvalidTopicError(f"{what} {value!r} contains NUL")
    if len(value.encode("utf-8", "surrogatepass")) > 65_535:
        raise InvalidTopicError(f"{what} is longer than 65,535 bytes")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidTopicError(f"{what} {value!r} is not valid UTF-8") from None


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` (topics starting with '$' match no filter
    starting with a wildcard, as brokers do)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels):
            return False
        if f != "+" and f != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)
