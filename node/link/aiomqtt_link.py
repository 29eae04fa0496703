"""``MqttLink`` over aiomqtt 2.5 (paho-mqtt 2.x underneath): the only module importing aiomqtt.

What aiomqtt gives us, and what this module adds (read against aiomqtt 2.5.1, paho-mqtt 2.2):

- ``aiomqtt.Client`` connects in an executor thread, then drives paho from the event loop.
  A negative CONNACK raises ``MqttConnectError`` with a paho ``ReasonCode``; MQTT 3.1.1 return
  codes arrive mapped to MQTT 5 reason codes (4 -> 134 "Bad user name or password",
  5 -> 135 "Not authorized").  Socket and TLS errors become ``MqttError(str(exc))`` raised
  ``from None``; the original stays on ``__context__``, where we look for certificate errors.
- Its ``publish`` waits for the PUBACK, but a dropped connection does not wake it: it waits
  for its timeout (10 s by default, forever with ``math.inf``) and then raises a bare
  ``MqttError``.  It also logs a warning per call beyond 10 pending calls.  So we publish with
  paho directly and keep our own packet-id -> future table, failed at once on loss; paho's
  ``max_inflight_messages`` is 0 (unlimited) because the link's own FIFO window bounds what is
  in flight: with a limit set, paho rescans all outstanding messages on every PUBACK.
- Its incoming queue either grows without bound or, when bounded, drops messages paho has
  already acknowledged.  We hand each message straight to the link's queue and, when that is
  full, stop reading the socket so the broker keeps (and does not get acknowledgements for)
  what we cannot take yet.
- A connection closed by the broker before its CONNACK (a TLS 1.3 alert on a rejected client
  certificate, a broker at its connection limit) leaves aiomqtt waiting for the CONNACK until
  its timeout; we fail the attempt at once, with paho's logged reason.

For that, ``_Client`` overrides aiomqtt 2.5 private hooks: ``_on_connect`` (session-present
flag), ``_on_disconnect``, ``_on_message``, ``_on_publish`` and the four ``_on_socket_*``
callbacks (so reading can pause and a cancelled connect leaves no socket behind), and uses
``_client`` (the paho client), ``_connected``, ``_disconnected``, ``_misc_loop`` and paho's
``_sock`` / ``_sock_close``; for TLS it replaces paho's ``_ssl_wrap_socket``, which leaks the
socket of a failed handshake.  ``aiomqtt~=2.5`` is pinned, and ``missing_internals()`` (run by a
test) names any of these an upgrade has moved.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random as _random
import select
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ion.config.broker import BrokerConfig
from node.link import paho_publish
from node.link.base import (
    IncomingMessage,
    LinkDown,
    LinkOptions,
    OutgoingMessage,
    PublishRefusedError,
    Will,
)
from node.link.connection import Clock, Connection, Sink, Sleep
from node.link.refusals import check_client_id, connack_error, connect_error, tls_context
from node.link.session import ReconnectingLink

log = logging.getLogger(__name__)
paho_publish.install()  # one copy of each incoming payload instead of three

READ_BURST = 1000
"""Packets read per readable event at most."""
READ_BUDGET_S = 0.005
"""...and for this long at most: big packets (model chunks) must not let one link hold the
event loop (other links in the process, the agent's own tasks) for a whole model."""
# paho logs every packet at DEBUG; like aiomqtt's own "mqtt" logger, quiet unless asked.
_paho_log = logging.getLogger("node.link.paho")
_paho_log.setLevel(logging.WARNING)


class _PahoLogger(logging.Logger):
    """paho's logger for one connection: records go on to ``node.link.paho``, and the last
    error is kept, as paho reports a failed read (a TLS alert, a reset) only in its log."""

    def __init__(self, client_id: str) -> None:
        super().__init__(f"node.link.paho.{client_id}")
        self.parent = _paho_log
        self.last_error = ""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if level >= logging.ERROR:
            try:
                self.last_error = str(msg) % args if args else str(msg)
            except (TypeError, ValueError):
                self.last_error = str(msg)
        if self.isEnabledFor(level):  # paho calls this twice per packet: keep it short
            self._log(level, msg, args, **kwargs)


class _Client(aiomqtt.Client):
    """aiomqtt's client with the hooks listed in the module docstring."""

    def __init__(self, *args: Any, sink: Sink, paho_logger: _PahoLogger, **kwargs: Any) -> None:
        super().__init__(*args, logger=paho_logger, **kwargs)
        self.pending_calls_threshold = 1 << 30  # no warning per subscribe
        self.paho_logger = paho_logger
        self.session_present = False
        self.on_lost: Callable[[str], None] | None = None
        self.lost_reason: str | None = None
        self._sink = sink
        self._loop_thread = threading.get_ident()
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._sock: Any = None  # the socket we watch; None when closed or not yet open
        self._fd = -1
        self._reading = False
        self._writing = False
        self._paused = False
        self._abandoned = False
        self._bad_messages = 0

    # -- publishing without aiomqtt's wait --------------------------------------------------

    def publish_now(
        self, topic: str, payload: bytes, qos: int, retain: bool
    ) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = self._loop.create_future()
        info = self._client.publish(topic, payload, qos, retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            fut.set_exception(LinkDown(f"publish not accepted: {paho.error_string(info.rc)}"))
        elif qos == 0:
            fut.set_result(None)
        else:
            self._acks[info.mid] = fut
        return fut

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        fut = self._acks.pop(mid, None)
        if fut is None or fut.done():
            return
        if reason_code.is_failure:
            fut.set_exception(PublishRefusedError(f"broker rejected the publish: {reason_code}"))
        else:
            fut.set_result(None)

    # -- connection events ------------------------------------------------------------------

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        if not self._connected.done() and not reason_code.is_failure:
            self.session_present = bool(flags.session_present)
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        reason = str(reason_code)
        if self.paho_logger.last_error:
            reason = f"{reason}: {self.paho_logger.last_error}"
        if not self._connected.done() and not self._abandoned:
            # aiomqtt would wait for a CONNACK that cannot come any more until its timeout.
            self._connected.set_exception(
                aiomqtt.MqttError(f"connection closed before CONNACK ({reason})")
            )
        super()._on_disconnect(client, userdata, flags, reason_code, properties)
        self._retrieve()
        self._lost(reason)

    def _retrieve(self) -> None:
        # Nobody awaits aiomqtt's futures once we have taken the news from them; mark their
        # exceptions seen, or asyncio logs "Future exception was never retrieved".
        for fut in (self._connected, self._disconnected):
            if fut.done() and not fut.cancelled():
                fut.exception()

    def _lost(self, reason: str) -> None:
        if self.lost_reason is None:
            self.lost_reason = reason
            if self.on_lost is not None:
                self.on_lost(reason)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        # Raising here would make paho drop the connection: never raise.
        try:
            msg = IncomingMessage(
                topic=message.topic,  # UnicodeDecodeError for a non-UTF-8 topic
                payload=bytes(message.payload),
                retain=bool(message.retain),
                qos=int(message.qos),
            )
        except (UnicodeDecodeError, TypeError, ValueError) as exc:
            self._bad_messages += 1
            if self._bad_messages == 1:
                log.warning("dropping a message we cannot represent: %s", exc)
            return
        try:
            self._sink(msg)
        except Exception:
            log.exception("the link's message sink failed")

    # -- socket callbacks: paho calls them from the connect thread or the event loop --------

    def _in_loop(self, fn: Callable[..., None], *args: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # Always deferred: _opened may close the socket, which must not happen inside paho's
        # callback lock.
        self._loop.call_soon_threadsafe(self._opened, sock)

    def _opened(self, sock: Any) -> None:
        current: Any = self._client._sock
        if self._abandoned or current is not sock:
            if current is sock:
                self._client._sock_close()
            return
        self._sock, self._fd = sock, sock.fileno()
        if not self._paused:
            self._start_reading()
        self._misc_task = self._loop.create_task(self._misc_loop(), name="mqtt-link:keepalive")

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._closed, sock)

    def _closed(self, sock: Any) -> None:
        if sock is not self._sock:
            return
        self._stop_reading()
        if self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False
        self._sock, self._fd = None, -1
        if self._misc_task is not None and not self._misc_task.done():
            self._misc_task.cancel()

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._want_write, sock)

    def _want_write(self, sock: Any) -> None:
        if sock is self._sock and not self._writing:
            self._loop.add_writer(self._fd, self._on_writable)
            self._writing = True

    def _on_socket_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._no_write, sock)

    def _no_write(self, sock: Any) -> None:
        if sock is self._sock and self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False

    def _start_reading(self) -> None:
        if self._sock is not None and not self._reading:
            self._loop.add_reader(self._fd, self._on_readable)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def _on_readable(self) -> None:
        if self._paused or self._sock is None:
            self._stop_reading()
            return
        paho_client = self._client
        try:
            # paho reads one packet per loop_read(): read on while the socket holds more
            # (bounded in packets and time, so one busy link cannot starve the loop), so a
            # burst costs one event-loop turn, not one per message, and its PUBACKs go out in
            # one write.
            # Measured on the monitor's ingest: 66 -> 15 us of CPU per message in the link.
            until = time.monotonic() + READ_BUDGET_S
            for _ in range(READ_BURST):
                paho_client.loop_read()
                sock = paho_client._sock
                if self._paused or sock is None or time.monotonic() > until:
                    break
                if hasattr(sock, "pending") and sock.pending() > 0:
                    continue  # TLS holds decrypted bytes the selector cannot see
                if not select.select([sock], [], [], 0)[0]:
                    break
        except Exception as exc:  # noqa: BLE001 - any failure here ends this connection
            self._fail(exc)

    def _on_writable(self) -> None:
        try:
            self._client.loop_write()
        except Exception as exc:  # noqa: BLE001 - any failure here ends this connection
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self._abandoned:
            return
        if not self._connected.done():
            self._connected.set_exception(exc)
        elif not self._disconnected.done():
            self._disconnected.set_exception(exc)
        self._client._sock_close()
        self._lost(f"network error: {exc}")

    # -- flow control and teardown -----------------------------------------------------------

    def pause_reading(self) -> None:
        self._paused = True
        self._stop_reading()

    def resume_reading(self) -> None:
        self._paused = False
        if self._sock is not None and not self._reading:
            self._start_reading()
            self._loop.call_soon(self._on_readable)  # TLS may hold bytes already read

    def abandon(self) -> None:
        """Close at once without DISCONNECT; also a socket a cancelled connect opens later."""
        self._abandoned = True
        self._client._sock_close()
        self._retrieve()
        for fut in self._acks.values():
            if not fut.done():
                fut.set_exception(LinkDown("connection aborted"))
        self._acks.clear()


class _AiomqttConnection(Connection):
    def __init__(self, client: _Client, clock: Clock) -> None:
        super().__init__(session_present=client.session_present, clock=clock)
        self._client = client
        client.on_lost = self._on_lost
        if client.lost_reason is not None:
            self._on_lost(client.lost_reason)

    def _on_lost(self, reason: str) -> None:
        self.mark_lost(reason)  # first: pending publishes fail with the real reason
        # Called from inside a paho callback, which holds paho's (non-reentrant) callback
        # lock; closing the socket now would take that lock again.
        asyncio.get_running_loop().call_soon(self._client.abandon)

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> asyncio.Future[None]:
        if self.is_lost:
            return self.failed()
        fut = self._client.publish_now(topic, payload, qos, retain)
        if not fut.done():
            self.acks.track(fut)
        return fut

    async def subscribe(self, filters: Sequence[tuple[str, int]]) -> list[int]:
        codes = await self._race(self._client.subscribe(list(filters), timeout=math.inf))
        return [c.value if isinstance(c, ReasonCode) else int(c) for c in codes]

    async def unsubscribe(self, filters: Sequence[str]) -> None:
        await self._race(self._client.unsubscribe(list(filters), timeout=math.inf))

    async def _race(self, coro: Any) -> Any:
        """Await an aiomqtt call, failing with LinkDown as soon as the connection is lost
        (aiomqtt itself would wait for its timeout)."""
        if self.is_lost:
            coro.close()
            raise LinkDown(f"connection lost: {self.lost.result()}")
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(
            coro, name="mqtt-link:request"
        )
        self.acks.track(task)  # the link's watchdog bounds SUBACK/UNSUBACK waits too
        try:
            await asyncio.wait({task, self.lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            finished = task.done()
            if not finished:
                task.cancel()
        if not finished or task.cancelled():
            reason = self.lost.result() if self.is_lost else "cancelled"
            raise LinkDown(f"connection lost: {reason}")
        try:
            return task.result()
        except aiomqtt.MqttError as exc:
            raise LinkDown(f"request failed: {exc}") from exc

    def pause_reading(self) -> None:
        self._client.pause_reading()

    def resume_reading(self) -> None:
        self._client.resume_reading()

    async def close(self) -> None:
        try:
            await self._client.__aexit__(None, None, None)
        except aiomqtt.MqttError as exc:
            raise LinkDown(f"clean disconnect failed: {exc}") from exc
        finally:
            self.mark_lost("closed by us")
            self._client.abandon()

    def abort(self, reason: str) -> None:
        self.mark_lost(reason)
        self._client.abandon()


class AiomqttConnector:
    """Makes one aiomqtt connection per attempt (a fresh paho client each time, so nothing
    that failed with LinkDown is silently resent by paho)."""

    def __init__(
        self,
        broker: BrokerConfig,
        client_id: str,
        *,
        will: Will | None,
        options: LinkOptions,
        clock: Clock = time.monotonic,
    ) -> None:
        self._broker = broker
        self._client_id = client_id
        self._will = will
        self._options = options
        self._clock = clock
        self._tls = tls_context(broker.tls) if broker.tls is not None else None

    @property
    def target(self) -> str:
        return self._broker.url

    def _client(self, sink: Sink) -> _Client:
        b, o = self._broker, self._options
        v5 = o.protocol == "5"
        props: Properties | None = None
        if v5 and o.persistent_session:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = o.session_expiry_s
        will = self._will
        client = _Client(
            b.host,
            b.port,
            sink=sink,
            paho_logger=_PahoLogger(self._client_id),
            username=b.username,
            password=b.password,
            identifier=self._client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            will=aiomqtt.Will(will.topic, will.payload, will.qos, will.retain) if will else None,
            clean_session=None if v5 else not o.persistent_session,
            clean_start=(not o.persistent_session) if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=props,
            keepalive=b.keepalive_s,
            timeout=b.connect_timeout_s,
            # 0 = unlimited: the link's own window bounds what is in flight (see LinkOptions).
            max_inflight_messages=0,
            tls_context=self._tls,
            tls_insecure=True if b.tls is not None and b.tls.insecure_skip_verify else None,
        )
        paho_client = client._client
        paho_client.connect_timeout = b.connect_timeout_s  # its TCP/TLS part
        if self._tls is not None:
            paho_client._ssl_wrap_socket = _closing_ssl_wrap(paho_client)  # type: ignore[method-assign,assignment]
        return client

    async def connect(self, sink: Sink) -> Connection:
        client = self._client(sink)
        try:
            await client.__aenter__()
        except MqttConnectError as exc:
            client.abandon()
            rc = exc.rc
            code = rc.value if isinstance(rc, ReasonCode) else rc
            raise connack_error(code, str(rc)) from exc
        except (aiomqtt.MqttError, OSError) as exc:
            client.abandon()
            raise connect_error(exc, client.paho_logger.last_error) from exc
        except BaseException:
            client.abandon()
            raise
        return _AiomqttConnection(client, self._clock)


class AiomqttLink(ReconnectingLink):
    """``MqttLink`` to a real broker.  ``broker`` is the node's ``BrokerConfig`` (host, port,
    TLS files, credentials, keepalive, connect timeout); see ``LinkOptions`` for the rest."""

    def __init__(
        self,
        broker: BrokerConfig,
        client_id: str,
        *,
        will: Will | None = None,
        subscriptions: Sequence[tuple[str, int]] = (),
        on_connect_publish: Sequence[OutgoingMessage] = (),
        options: LinkOptions | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        random: Callable[[], float] = _random.random,
    ) -> None:
        options = options or LinkOptions()
        check_client_id(client_id)
        connector = AiomqttConnector(broker, client_id, will=will, options=options, clock=clock)
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


def _closing_ssl_wrap(client: paho.Client) -> Callable[[Any], ssl.SSLSocket]:
    """paho 2.2's ``_ssl_wrap_socket`` without its leak: a failed handshake there leaves the
    TLS socket open for the garbage collector.  Same steps otherwise; paho's extra hostname
    check is skipped because our context checks the hostname itself (or is told not to)."""

    def wrap(tcp_sock: Any) -> ssl.SSLSocket:
        ctx = client._ssl_context
        assert ctx is not None
        ssl_sock = ctx.wrap_socket(
            tcp_sock, server_hostname=client._host, do_handshake_on_connect=False
        )
        try:
            ssl_sock.settimeout(client.connect_timeout)
            ssl_sock.do_handshake()
        except BaseException:
            ssl_sock.close()
            raise
        return ssl_sock

    return wrap


def missing_internals() -> list[str]:
    """The aiomqtt/paho private names this module relies on that this install lacks (a test
    asserts the list is empty, so an upgrade that moves them fails there, not in the field)."""
    hooks = ["connect", "disconnect", "message", "publish", "socket_open", "socket_close"]
    hooks += ["socket_register_write", "socket_unregister_write"]
    wanted = [f"_on_{h}" for h in hooks] + ["_misc_loop"]
    missing = [f"aiomqtt.Client.{n}" for n in wanted if not hasattr(aiomqtt.Client, n)]
    probe = paho.Client(CallbackAPIVersion.VERSION2)
    names = ("_sock", "_sock_close", "_ssl_wrap_socket", "_ssl_context", "_host")
    missing += [f"paho.Client.{n}" for n in (*names, "connect_timeout") if not hasattr(probe, n)]
    if not aiomqtt.__version__.startswith("2."):
        missing.append(f"aiomqtt 2.x (found {aiomqtt.__version__})")
    return missing


__all__ = ["AiomqttConnector", "AiomqttLink", "missing_internals"]
