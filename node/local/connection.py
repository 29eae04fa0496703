"""One component's connection to the agent's local socket: the conversation, in one task.

::

    AWAIT_HELLO --Hello, authorised--> READY --Subscribe--> READY + delivering
         |                              |
         +-- anything else / refused ---+-- malformed frame, protocol error, EOF --> CLOSED

- Requests are pipelined: each ``Emit`` runs ``port.emit`` in its own task and is answered by
  ``request_id`` whenever it completes, so a slow commit does not hold the ones behind it.
  Tasks start in arrival order, so the port sees emits in the order the component sent them.
  At most ``max_in_flight`` emits plus unsent replies per connection; past that the connection
  stops reading, and the socket's own buffers push back on the component.
- Deliveries: at most ``window`` unacknowledged ``Delivery`` frames; the next message is pulled
  from the port only when there is credit, so messages wait in the agent's inbox, not in
  memory here.  ``Delivered`` returns credit and tells the port what was handled.
- A frame that cannot be decoded, or breaks the conversation, is answered with an error
  (request id 0 when its own cannot be trusted), counted, logged, and the connection closed.
- A frame that decodes but carries an invalid value (a ``FrameContentError``) fails only its own
  request: the stream is still in sync, so there is no reason to drop the others.
- On EOF (the component closed or half-closed its side) the emits already taken still complete
  and are answered if the socket still takes writes: the port is never cancelled mid-emit
  except when the server shuts down.
- A bug (an exception nobody expected) ends this connection, logged, and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ion.errors import DecodeError, IonError, UnavailableError
from ion.model.local import (
    PROTOCOL_VERSION,
    Delivered,
    Delivery,
    Emit,
    Hello,
    LocalFrame,
    Reply,
    Subscribe,
)
from ion.wire.local import FrameContentError, decode_frame, encode_frame

from . import framing
from .port import AgentPort, ClientInfo, Inbound

__all__ = ["Connection", "Counters", "ServerSettings"]

log = logging.getLogger(__name__)

_READ_SIZE = 256 * 1024
_MAX_ERROR_TEXT = 1000


@dataclass(frozen=True, slots=True)
class ServerSettings:
    max_frame_size: int = framing.DEFAULT_MAX_FRAME_SIZE
    max_in_flight: int = 1024
    """Emits being stored plus replies not yet written, per connection."""
    default_window: int = 64
    """Deliveries in flight when ``Subscribe.window`` is 0."""
    max_window: int = 1024
    """A larger requested window is reduced to this."""
    hello_timeout_s: float = 10.0
    """A connection that has not said Hello by then is closed."""
    close_timeout_s: float = 1.0
    """How long closing a connection may wait for its last replies to be written."""

    def __post_init__(self) -> None:
        if self.max_in_flight < 1 or self.default_window < 1 or self.max_window < 1:
            raise ValueError("max_in_flight, default_window and max_window must be positive")
        if self.hello_timeout_s <= 0 or self.close_timeout_s < 0:
            raise ValueError("timeouts must be positive")


@dataclass(slots=True)
class Counters:
    """Running totals over every connection of one server (mutable: bumped on every frame)."""

    accepted: int = 0
    open: int = 0
    malformed: int = 0
    refused: int = 0
    emits_ok: int = 0
    emits_failed: int = 0
    deliveries: int = 0


def _error_text(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:_MAX_ERROR_TEXT]


class Connection:
    """One component's connection (see the module docstring for the states)."""

    def __init__(
        self,
        conn_id: int,
        *,
        port: AgentPort,
        settings: ServerSettings,
        counters: Counters,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self._id = conn_id
        self._port = port
        self._settings = settings
        self._counters = counters
        self._reader = reader
        self._writer = writer
        self._decoder = framing.FrameDecoder(settings.max_frame_size)
        self._client: ClientInfo | None = None
        self._tg: asyncio.TaskGroup | None = None
        # Output: frames queued here are written in batches by the writer task.
        self._out: list[bytes] = []
        self._out_ready = asyncio.Event()
        self._room = asyncio.Event()
        self._in_flight = 0
        self._closing = False
        self._broken = False
        # Subscription state.
        self._sub_task: asyncio.Task[None] | None = None
        self._window = 0
        self._sent_id = 0
        self._acked_id = 0
        self._unacked: deque[tuple[int, Inbound]] = deque()
        self._credit = asyncio.Event()

    @property
    def _label(self) -> str:
        who = self._client.label if self._client is not None else "no hello yet"
        return f"local connection {self._id} ({who})"

    async def serve(self) -> None:
        self._counters.open += 1
        reason = "cancelled"
        cancelled = True
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._write_loop(), name=f"ion-local-write-{self._id}")
                reason = await self._read_loop()
                self._closing = True
                if self._sub_task is not None:
                    self._sub_task.cancel()
                self._out_ready.set()
            cancelled = False
        except Exception:
            # A bug on our side (the port's errors are caught where it is called): this
            # connection ends, the server goes on.
            log.exception("%s: failed", self._label)
            reason = "internal error"
        finally:
            self._counters.open -= 1
            await self._close(abort=cancelled)
            log.info("%s: closed: %s", self._label, reason)

    async def _close(self, *, abort: bool) -> None:
        if abort or self._broken:
            self._writer.transport.abort()
            return
        self._writer.close()  # sends what is buffered (the last replies), then closes
        try:
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(self._writer.wait_closed(), self._settings.close_timeout_s)
        finally:
            self._writer.transport.abort()  # a no-op once closed; else the peer is not reading

    # -- reading ------------------------------------------------------------------------

    async def _read_loop(self) -> str:
        """Handle frames until the connection must end; returns why."""
        loop = asyncio.get_running_loop()
        hello_deadline = loop.time() + self._settings.hello_timeout_s
        while True:
            try:
                if self._client is None:
                    async with asyncio.timeout_at(hello_deadline):
                        data = await self._reader.read(_READ_SIZE)
                else:
                    data = await self._reader.read(_READ_SIZE)
            except TimeoutError:
                self._counters.refused += 1
                return f"no Hello within {self._settings.hello_timeout_s:g}s"
            except OSError as e:
                self._broken = True
                return f"read failed: {e}"
            if not data:
                try:
                    self._decoder.check_end()
                except framing.FramingError as e:
                    return self._malformed(0, str(e))
                return "closed by the component"
            try:
                payloads = self._decoder.feed(data)
            except framing.FramingError as e:
                return self._malformed(0, str(e))
            for payload in payloads:
                reason = await self._handle(payload)
                if reason is not None:
                    return reason

    async def _handle(self, payload: bytes) -> str | None:
        try:
            frame = decode_frame(payload)
        except FrameContentError as e:
            if self._client is None:
                return self._malformed(e.request_id, str(e))
            log.warning("%s: request %d refused: %s", self._label, e.request_id, e)
            self._reply(e.request_id, Reply.failure(f"invalid request: {_error_text(e)}"))
            return None
        except DecodeError as e:
            return self._malformed(0, str(e))
        rid, msg = frame.request_id, frame.message
        if self._client is None:
            if isinstance(msg, Hello):
                return self._hello(rid, msg)
            return self._refuse(rid, f"the first frame must be Hello, not {type(msg).__name__}")
        if isinstance(msg, Emit):
            await self._wait_for_room()
            assert self._tg is not None
            self._in_flight += 1
            self._tg.create_task(self._emit(rid, msg), name=f"ion-local-emit-{self._id}-{rid}")
            return None
        if isinstance(msg, Delivered):
            return self._delivered(msg.up_to_delivery_id)
        if isinstance(msg, Subscribe):
            self._subscribe(rid, msg)
            return None
        # Hello again, or frames that only go agent -> component.
        return self._malformed(rid, f"unexpected {type(msg).__name__} frame from a component")

    async def _wait_for_room(self) -> None:
        limit = self._settings.max_in_flight
        while self._in_flight + len(self._out) >= limit:
            self._room.clear()
            await self._room.wait()

    def _malformed(self, rid: int, reason: str) -> str:
        self._counters.malformed += 1
        log.warning("%s: malformed frame, closing: %s", self._label, reason)
        self._reply(rid, Reply.failure(f"malformed frame: {reason[:_MAX_ERROR_TEXT]}"))
        return f"malformed frame: {reason}"

    def _refuse(self, rid: int, reason: str, *, retryable: bool = False) -> str:
        self._counters.refused += 1
        log.warning("%s: refused: %s", self._label, reason)
        self._reply(rid, Reply.failure(reason, retryable=retryable))
        return f"refused: {reason}"

    def _hello(self, rid: int, hello: Hello) -> str | None:
        if hello.protocol_version != PROTOCOL_VERSION:
            return self._refuse(
                rid,
                f"protocol version {hello.protocol_version} is not supported "
                f"(this agent speaks {PROTOCOL_VERSION})",
            )
        try:
            client = self._port.authorize(hello)
        except UnavailableError as e:
            return self._refuse(rid, _error_text(e), retryable=True)
        except IonError as e:
            return self._refuse(rid, _error_text(e))
        except Exception:
            log.exception("%s: authorize failed", self._label)
            return self._refuse(rid, "agent error while authorising")
        self._client = client
        self._reply(rid, Reply.success())
        log.info("%s: connected", self._label)
        return None

    # -- requests -----------------------------------------------------------------------

    async def _emit(self, rid: int, msg: Emit) -> None:
        assert self._client is not None
        try:
            await self._port.emit(self._client, msg.edge, msg.envelope)
        except UnavailableError as e:
            reply = Reply.failure(_error_text(e), retryable=True)
        except IonError as e:
            reply = Reply.failure(_error_text(e))
        except Exception:
            log.exception("%s: emit %d failed", self._label, rid)
            reply = Reply.failure("agent error while storing the message")
        else:
            reply = Reply.success()
        finally:
            self._in_flight -= 1
        if reply.ok:
            self._counters.emits_ok += 1
        else:
            self._counters.emits_failed += 1
        self._reply(rid, reply)

    def _subscribe(self, rid: int, msg: Subscribe) -> None:
        assert self._client is not None
        assert self._tg is not None
        if self._sub_task is not None:
            self._reply(rid, Reply.failure("this connection has subscribed already"))
            return
        try:
            items = self._port.deliveries(self._client, msg.edges)
        except UnavailableError as e:
            self._reply(rid, Reply.failure(_error_text(e), retryable=True))
            return
        except IonError as e:
            self._reply(rid, Reply.failure(_error_text(e)))
            return
        except Exception:
            log.exception("%s: subscribe failed", self._label)
            self._reply(rid, Reply.failure("agent error while subscribing"))
            return
        self._window = min(msg.window or self._settings.default_window, self._settings.max_window)
        self._reply(rid, Reply.success())
        self._sub_task = self._tg.create_task(
            self._deliver(rid, items), name=f"ion-local-deliver-{self._id}"
        )

    async def _deliver(self, rid: int, items: AsyncIterator[Inbound]) -> None:
        assert self._client is not None
        reason = "subscription ended by the agent"
        try:
            while True:
                # Credit first, then pull: what the component cannot take stays in the agent.
                while self._sent_id - self._acked_id >= self._window:
                    self._credit.clear()
                    await self._credit.wait()
                try:
                    item = await anext(items)
                except StopAsyncIteration:
                    break
                self._sent_id += 1
                self._unacked.append((self._sent_id, item))
                self._counters.deliveries += 1
                self._send(
                    encode_frame(LocalFrame(rid, Delivery(self._sent_id, item.edge, item.envelope)))
                )
        except IonError as e:
            reason = f"subscription ended: {_error_text(e)}"
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()
        # A second reply to the Subscribe request tells the component its subscription ended.
        log.info("%s: %s", self._label, reason)
        self._reply(rid, Reply.failure(reason, retryable=True))

    def _delivered(self, up_to: int) -> str | None:
        if self._sub_task is None:
            return self._malformed(0, "Delivered without a subscription")
        if up_to > self._sent_id:
            return self._malformed(
                0, f"Delivered up to {up_to}, but only {self._sent_id} were delivered"
            )
        if up_to <= self._acked_id:
            return None  # cumulative: an older acknowledgement says nothing new
        handled: list[Inbound] = []
        while self._unacked and self._unacked[0][0] <= up_to:
            handled.append(self._unacked.popleft()[1])
        self._acked_id = up_to
        self._credit.set()
        assert self._tg is not None
        self._tg.create_task(self._acknowledge(handled), name=f"ion-local-ack-{self._id}-{up_to}")
        return None

    async def _acknowledge(self, handled: list[Inbound]) -> None:
        assert self._client is not None
        try:
            await self._port.delivered(self._client, handled)
        except Exception:
            # Not acknowledged means delivered again later: at least once still holds.
            log.exception("%s: acknowledging %d deliveries failed", self._label, len(handled))

    # -- writing ------------------------------------------------------------------------

    def _reply(self, rid: int, reply: Reply) -> None:
        self._send(encode_frame(LocalFrame(rid, reply)))

    def _send(self, payload: bytes) -> None:
        if not self._broken:
            self._out.append(framing.encode(payload, max_frame_size=self._settings.max_frame_size))
        self._out_ready.set()

    async def _write_loop(self) -> None:
        writer = self._writer
        while True:
            await self._out_ready.wait()
            self._out_ready.clear()
            if self._out:
                data = b"".join(self._out)
                self._out = []
                if not self._broken:
                    try:
                        writer.write(data)
                        await writer.drain()
                    except OSError as e:
                        self._broken = True
                        log.info("%s: write failed: %s", self._label, e)
                if self._out:
                    self._out_ready.set()  # more arrived while draining
            self._room.set()
            if self._closing and self._in_flight == 0 and not self._out:
                return
