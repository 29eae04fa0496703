"""The SDK over the agent's Unix socket: ``AgentClient`` and its ``Subscription``.

Why blocking sockets and one reader thread, not an asyncio loop in a thread: components are
plain synchronous code, often several threads of it.  The caller's thread encodes and sends its
own frame; when another thread is in the middle of a send, the frame is queued and that thread
sends it right after its own, so concurrent emitters share system calls without a writer
thread in between (measured: a writer thread gave no more throughput and cost about 100 us on
every blocking emit).  The reader thread completes replies in batches under one condition
variable.  An internal event loop would cost a cross-thread hop (``call_soon_threadsafe`` and
a wake-up) on every emit and every reply, and bring a loop to start, stop and debug inside
someone else's process.

The connection is not re-established when it drops: the agent's per-job token and its
knowledge of the job die with the agent, so a lost connection fails every pending and later
request with ``UnavailableError`` and the pipeline is the agent's to restart.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ion.errors import InputError, IonError, RefusedError, UnavailableError
from ion.model.local import Delivered, Delivery, Emit, Hello, LocalFrame, LocalMessage, Reply
from ion.model.local import Subscribe as SubscribeFrame
from ion.model.messages import Envelope
from ion.wire.local import decode_frame, encode_frame
from node.local import framing

from .client import DEFAULT_TIMEOUT_S, DEFAULT_WINDOW, Client, EmitHandle, Identity, StopFlag

__all__ = ["AgentClient", "Subscription"]

log = logging.getLogger(__name__)

_READ_SIZE = 256 * 1024
_STOP_POLL_S = 0.1


class AgentClient(Client):
    """The SDK over the agent's Unix socket (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        identity: Identity,
        *,
        token: str = "",
        timeout: float = DEFAULT_TIMEOUT_S,
        max_in_flight: int = 1024,
        max_frame_size: int = framing.DEFAULT_MAX_FRAME_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(identity, clock=clock)
        self.path = Path(path)
        self._timeout = timeout
        self._max_in_flight = max_in_flight
        self._max_frame = max_frame_size
        self._ids = itertools.count(1)
        self._last_id = 0
        self._cond = threading.Condition()
        self._pending: dict[int, EmitHandle] = {}
        self._failures: list[EmitHandle] = []  # failed pipelined emits, until flush()
        self._lost: UnavailableError | None = None
        self._closed = False
        self._subscription: Subscription | None = None
        # Frames queued while another thread sends (see the module docstring).
        self._out: list[bytes] = []
        self._out_lock = threading.Lock()
        self._sending = False
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(str(self.path))
            self._sock.settimeout(None)
        except OSError as e:
            self._sock.close()
            raise UnavailableError(f"cannot reach the agent at {self.path}: {e}") from e
        self._reader = threading.Thread(
            target=self._read_loop,
            name=f"ion-sdk-reader-{identity.component or identity.pipeline}",
            daemon=True,
        )
        self._reader.start()
        hello = Hello(identity.ion, identity.pipeline, identity.component, token)
        try:
            self._request(self._next_id(), hello, record=False).result(timeout)
        except UnavailableError:
            self._shutdown()
            raise
        except IonError as e:
            self._shutdown()
            raise RefusedError(f"the agent refused this component: {e}") from e

    # -- requests -----------------------------------------------------------------------

    def _next_id(self) -> int:
        rid = next(self._ids)
        self._last_id = rid
        return rid

    def _submit(self, edge: str, envelope: Envelope, *, record: bool) -> EmitHandle:
        return self._request(self._next_id(), Emit(edge, envelope), record=record)

    def _request(self, rid: int, message: LocalMessage, *, record: bool) -> EmitHandle:
        data = framing.encode(
            encode_frame(LocalFrame(rid, message)), max_frame_size=self._max_frame
        )
        handle = EmitHandle(rid, self._cond, record=record)
        if self._closed:
            raise InputError("the SDK client is closed")
        with self._cond:
            # Back-pressure: the agent takes only so many requests per connection anyway.
            while len(self._pending) >= self._max_in_flight and self._lost is None:
                self._cond.wait()
            if self._lost is not None:
                raise UnavailableError(str(self._lost))
            # Registered before it is sent: once registered, a lost connection settles it.
            self._pending[rid] = handle
        self._enqueue(data)
        return handle

    def _enqueue(self, data: bytes) -> None:
        with self._out_lock:
            if self._lost is not None:
                return  # what was pending is failed already
            self._out.append(data)
            if self._sending:
                return  # the thread sending now sends this too
            self._sending = True
        try:
            while True:
                with self._out_lock:
                    if not self._out:
                        self._sending = False
                        return
                    batch, self._out = self._out, []
                # Outside the lock (and the GIL): others queue meanwhile, and go next round.
                self._sock.sendall(b"".join(batch))
        except OSError as e:
            with self._out_lock:
                self._sending = False
                self._out.clear()
            self._connection_lost(f"send failed: {e}")

    def flush(self, timeout: float | None = None) -> None:
        timeout = self._timeout if timeout is None else timeout
        target = self._last_id
        with self._cond:
            ok = self._cond.wait_for(
                lambda: not self._pending or min(self._pending) > target, timeout
            )
            handles, self._failures = self._failures, []
        failures = [e for e in (h.unobserved_error for h in handles) if e is not None]
        if failures:
            first = failures[0]
            if len(failures) > 1:
                first.add_note(f"{len(failures) - 1} more pipelined emit(s) failed")
            raise first
        if not ok:
            raise UnavailableError(f"the agent did not answer every emit within {timeout:g}s")

    def subscribe(
        self,
        edges: Iterable[str] = (),
        *,
        window: int = DEFAULT_WINDOW,
        stop: StopFlag | None = None,
    ) -> Subscription:
        if self._subscription is not None:
            raise InputError("this client has subscribed already (one subscription each)")
        rid = self._next_id()
        sub = Subscription(self, rid, window, stop)
        self._subscription = sub
        try:
            self._request(rid, SubscribeFrame(tuple(edges), window), record=False).result(
                self._timeout
            )
        except BaseException:
            self._subscription = None
            raise
        return sub

    def _send_delivered(self, up_to: int) -> None:
        frame = LocalFrame(0, Delivered(up_to))
        self._enqueue(framing.encode(encode_frame(frame), max_frame_size=self._max_frame))

    # -- the reader thread --------------------------------------------------------------

    def _read_loop(self) -> None:
        decoder = framing.FrameDecoder(self._max_frame)
        reason = "closed"
        try:
            while True:
                data = self._sock.recv(_READ_SIZE)
                if not data:
                    decoder.check_end()
                    reason = "the agent closed the connection"
                    break
                self._dispatch([decode_frame(p) for p in decoder.feed(data)])
        except (OSError, IonError) as e:
            reason = str(e)
        except Exception:
            log.exception("local socket reader failed")
            reason = "reader failed"
        self._connection_lost(reason)

    def _dispatch(self, frames: list[LocalFrame]) -> None:
        sub = self._subscription
        with self._cond:
            for f in frames:
                m = f.message
                if isinstance(m, Reply):
                    handle = self._pending.pop(f.request_id, None)
                    if handle is not None:
                        self._complete(handle, m)
                    elif sub is not None and f.request_id == sub.request_id:
                        sub.end(_error_of(m))
                    else:  # request 0: the agent is about to close this connection
                        log.warning("the agent says: %s", m.error or "ok")
                elif isinstance(m, Delivery) and sub is not None:
                    sub.put(m)
                else:
                    log.warning("unexpected %s frame from the agent", type(m).__name__)
            self._cond.notify_all()

    def _complete(self, handle: EmitHandle, reply: Reply) -> None:
        # Under self._cond.
        if handle.settle(_error_of(reply)):
            self._failures.append(handle)

    def _connection_lost(self, reason: str) -> None:
        with self._cond:
            if self._lost is not None:
                return
            self._lost = UnavailableError(f"connection to the agent lost: {reason}")
            if not self._closed:
                log.warning("%s", self._lost)
            for handle in self._pending.values():
                if handle.settle(UnavailableError(str(self._lost))):
                    self._failures.append(handle)
            self._pending.clear()
            self._cond.notify_all()
        if self._subscription is not None:
            self._subscription.end(None if self._closed else self._lost)

    def close(self) -> None:
        """Flush (bounded by the timeout), then close the connection and join the threads."""
        if self._closed:
            return
        try:
            if self._lost is None:
                self.flush()
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):  # already disconnected
            self._sock.shutdown(socket.SHUT_RDWR)
        if self._reader is not threading.current_thread():
            self._reader.join()
        self._sock.close()


def _error_of(reply: Reply) -> IonError | None:
    if reply.ok:
        return None
    if reply.retryable:
        return UnavailableError(reply.error)
    return InputError(reply.error)


_END = object()


class Subscription(Iterator[tuple[str, Envelope]]):
    """Deliveries from the agent, one at a time (see ``Client.subscribe``)."""

    def __init__(
        self, client: AgentClient, request_id: int, window: int, stop: StopFlag | None
    ) -> None:
        self._client = client
        self.request_id = request_id
        self._stop = stop
        # Credit goes back in batches (half a window), and always before waiting, so the agent
        # never waits on us while we wait on it.
        self._ack_every = max(1, (window or DEFAULT_WINDOW) // 2)
        self._queue: queue.SimpleQueue[Delivery | object] = queue.SimpleQueue()
        self._last = 0  # the delivery handed out last
        self._acked = 0
        self._ended: IonError | None = None
        self._finished = False

    def put(self, delivery: Delivery) -> None:
        self._queue.put(delivery)

    def end(self, error: IonError | None) -> None:
        """No more deliveries: the iterator raises ``error`` (or just ends when None)."""
        self._ended = error
        self._queue.put(_END)

    def close(self) -> None:
        self.end(None)

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> tuple[str, Envelope]:
        item = self.get(None)
        if item is None:
            raise StopIteration
        return item

    def get(self, timeout: float | None) -> tuple[str, Envelope] | None:
        """The next delivery, or None when ``timeout`` passed or the subscription ended
        (``StopIteration`` from ``next`` tells those apart).  Acknowledges the previous one."""
        if self._finished:
            return None
        self._handled(self._last)
        if self._stop is not None and self._stop.is_set():
            # Stop promptly; what is queued here but not handed out comes again later.
            self._ack()
            self._finished = True
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                self._ack()  # about to wait: give back all the credit we have
                item = self._wait(deadline)
                if item is None:
                    if self._stop is not None and self._stop.is_set():
                        self._finished = True
                    return None
            if item is _END:
                self._finished = True
                if self._ended is not None:
                    raise self._ended
                return None
            assert isinstance(item, Delivery)
            self._last = item.delivery_id
            return item.edge, item.envelope

    def _wait(self, deadline: float | None) -> Delivery | object | None:
        while True:
            step = _STOP_POLL_S if self._stop is not None else None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                step = left if step is None else min(step, left)
            try:
                return self._queue.get(timeout=step)
            except queue.Empty:
                if self._stop is not None and self._stop.is_set():
                    self._ack()
                    return None

    def _handled(self, up_to: int) -> None:
        if up_to - self._acked >= self._ack_every:
            self._ack(up_to)

    def _ack(self, up_to: int | None = None) -> None:
        up_to = self._last if up_to is None else up_to
        if up_to > self._acked and self._client._lost is None:
            self._acked = up_to
            self._client._send_delivered(up_to)
