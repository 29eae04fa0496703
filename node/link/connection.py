"""The seam under ``ReconnectingLink``: one connection attempt (``Connector``) and one network
connection (``Connection``), which the aiomqtt adapter and the fake implement; plus the small
pieces both sides share (the ack tracker and the publish window).
"""

from __future__ import annotations

import abc
import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from node.link.base import IncomingMessage, LinkDown

Sink = Callable[[IncomingMessage], None]
Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

# A SUBACK return code at or above this means "refused".
SUBACK_FAILURE = 0x80


class AckTracker:
    """The futures of one connection's requests that await the broker's answer."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._waiting: set[asyncio.Future[Any]] = set()
        self._progress_at = clock()

    def track(self, fut: asyncio.Future[Any]) -> None:
        if not self._waiting:
            self._progress_at = self._clock()
        self._waiting.add(fut)
        fut.add_done_callback(self._settled)

    def _settled(self, fut: asyncio.Future[Any]) -> None:
        self._waiting.discard(fut)
        self._progress_at = self._clock()

    def __len__(self) -> int:
        return len(self._waiting)

    def touch(self) -> None:
        """Count now as progress (while we are not reading, no answer can arrive)."""
        self._progress_at = self._clock()

    def stalled_for(self, now: float) -> float:
        """Seconds without any answer while something waits for one (0 when nothing waits)."""
        return now - self._progress_at if self._waiting else 0.0

    def fail_all(self, reason: str) -> None:
        for fut in list(self._waiting):
            if fut.done():
                continue
            if isinstance(fut, asyncio.Task):  # a request in flight: its owner sees LinkDown
                fut.cancel()
            else:
                fut.set_exception(LinkDown(f"connection lost before the acknowledgement: {reason}"))


class Window:
    """At most ``size`` holders at once; the others wait first come, first served.  O(1) per
    operation (Python 3.11's ``asyncio.Semaphore`` scans its waiters on every release, which
    dominated a profile with thousands of waiting publishes).  A released slot is handed to
    the next waiter directly, so a newcomer never overtakes a waiter."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed a slot as we were cancelled: pass it on
            raise  # (a cancelled waiter stays queued; release() skips it)

    def release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self._free += 1

    @property
    def waiting(self) -> int:
        return sum(1 for f in self._waiters if not f.done())


class Connection(abc.ABC):
    """One network connection with an accepted CONNACK.  Implementations call ``mark_lost``
    exactly when it ends, for whatever reason, which fails every request still waiting."""

    def __init__(self, *, session_present: bool, clock: Clock) -> None:
        self.session_present = session_present
        self.acks = AckTracker(clock)
        self.lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @property
    def is_lost(self) -> bool:
        return self.lost.done()

    def mark_lost(self, reason: str) -> None:
        if self.lost.done():
            return
        self.lost.set_result(reason)
        self.acks.fail_all(reason)

    def failed(self) -> asyncio.Future[None]:
        """A future already failed with LinkDown (for calls on a lost connection)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        reason = self.lost.result() if self.lost.done() else "not connected"
        fut.set_exception(LinkDown(f"connection lost: {reason}"))
        return fut

    @abc.abstractmethod
    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> asyncio.Future[None]:
        """Hand the message to the connection now (synchronously, so call order is wire
        order).  The future resolves on the acknowledgement (QoS 0: at once) and fails with
        ``LinkDown`` when the connection is lost first."""

    @abc.abstractmethod
    async def subscribe(self, filters: Sequence[tuple[str, int]]) -> list[int]:
        """Granted QoS per filter; ``SUBACK_FAILURE`` or more means refused."""

    @abc.abstractmethod
    async def unsubscribe(self, filters: Sequence[str]) -> None: ...

    @abc.abstractmethod
    def pause_reading(self) -> None: ...

    @abc.abstractmethod
    def resume_reading(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None:
        """A clean DISCONNECT (the broker discards our will).  The caller bounds the time."""

    @abc.abstractmethod
    def abort(self, reason: str) -> None:
        """Drop the connection at once, without DISCONNECT (the broker publishes our will)."""


class Connector(Protocol):
    @property
    def target(self) -> str:
        """Where we connect, for logs (no credentials)."""
        ...

    async def connect(self, sink: Sink) -> Connection:
        """One attempt.  Raises ``LinkDown`` (retryable) or ``LinkRefusedError`` (fatal).  ``sink``
        receives incoming messages, possibly before this returns (a persistent session's)."""
        ...
