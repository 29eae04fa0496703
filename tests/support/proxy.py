"""A TCP proxy that injects network faults between a client and a server (usually a broker).

It runs its own asyncio loop on its own thread, so the code under test may be synchronous,
asyncio-based (in the test's loop) or another process: point it at ``proxy.host:proxy.port``.
Control methods are called from the test's thread and take effect before they return.

Modes (``proxy.mode``):

- ``pass``: bytes flow, after ``set_delay`` seconds of one-way latency in each direction (so a
  request/response round trip grows by twice that).  Order is always kept.
- ``cut()``: every open connection is reset (RST to both ends) and new connections are reset
  right after the handshake, as when a link or a NAT entry dies and the peers are told.
- ``blackhole()``: nothing moves and nobody is told, as with a silent dead link.  Open
  connections stay open with their bytes held; new connections are accepted but not forwarded.
  Only keepalive timeouts can notice.  ``restore()`` releases the held bytes, in order, as TCP
  would after a short outage.
- ``restore()``: back to ``pass`` (the delay stays as set).

``bytes_up`` (client to target) and ``bytes_down`` (target to client) count forwarded bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Literal, TypeVar

log = logging.getLogger(__name__)

Mode = Literal["pass", "cut", "blackhole"]
T = TypeVar("T")

_CHUNK = 64 * 1024
_CONTROL_TIMEOUT = 10.0


class FaultProxy:
    """A fault-injecting TCP proxy on a loopback port in front of ``target_host:target_port``."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = listen_host
        self._mode: Mode = "pass"
        self._delay = 0.0
        self.bytes_up = 0
        self.bytes_down = 0
        self.accepted = 0
        self._links: set[_Link] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run_loop, name=f"FaultProxy->{target_host}:{target_port}", daemon=True
        )
        self._listener: socket.socket | None = None
        self._flowing: asyncio.Event | None = None
        self._closed = False
        self._thread.start()
        try:
            self.port: int = self._call(self._start(listen_port))
        except BaseException:
            self._stop_loop()
            raise

    # -- controls (any thread but the proxy's) -------------------------------------------

    @property
    def mode(self) -> Mode:
        """``pass``, ``cut`` or ``blackhole``."""
        return self._mode

    @property
    def delay(self) -> float:
        """One-way latency added in each direction, in seconds."""
        return self._delay

    @property
    def connections(self) -> int:
        """Client connections open through the proxy now."""
        return len(self._links)

    @property
    def url(self) -> str:
        """``mqtt://host:port`` of the proxy's listening side."""
        return f"mqtt://{self.host}:{self.port}"

    def cut(self) -> None:
        """Reset every connection and refuse new ones until ``restore()``."""
        self._call(self._set_mode("cut"))

    def blackhole(self) -> None:
        """Silently stop forwarding, in both directions, for old and new connections."""
        self._call(self._set_mode("blackhole"))

    def restore(self) -> None:
        """Forward again (held bytes first)."""
        self._call(self._set_mode("pass"))

    def set_delay(self, seconds: float) -> None:
        """Add ``seconds`` of latency to each direction, for bytes read from now on."""
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        self._delay = float(seconds)

    def reset_counters(self) -> None:
        """Zero ``bytes_up`` and ``bytes_down``."""
        self._call(self._reset_counters())

    def close(self) -> None:
        """Reset every connection, stop listening and stop the thread.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._call(self._shutdown())
        finally:
            self._stop_loop()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<FaultProxy {self.host}:{self.port} -> {self.target_host}:{self.target_port} "
            f"{self._mode} delay={self._delay}s>"
        )

    # -- thread plumbing -----------------------------------------------------------------

    def _call(self, coro: Coroutine[object, object, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("FaultProxy controls cannot be called from its own thread")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(_CONTROL_TIMEOUT)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
            tasks = asyncio.all_tasks(self._loop)
            for task in tasks:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            for link in list(self._links):  # normally none: close() reset them all
                link.abort()
                link.reset_unwrapped_socket()
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        finally:
            self._loop.close()

    def _stop_loop(self) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_CONTROL_TIMEOUT)

    # -- inside the proxy's loop ---------------------------------------------------------

    async def _start(self, listen_port: int) -> int:
        self._flowing = asyncio.Event()
        self._flowing.set()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, listen_port))
            listener.listen(128)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        # Accept in a plain reader callback rather than asyncio.start_server: every accepted
        # socket is ours the moment accept() returns, so none can slip through a shutdown
        # (Python 3.11's Server.close() leaks connections accepted but not yet wrapped).
        self._loop.add_reader(listener.fileno(), self._accept_ready)
        port: int = listener.getsockname()[1]
        return port

    def _accept_ready(self) -> None:
        assert self._listener is not None
        while True:
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors: keep serving the rest
                log.warning("accept failed: %s", exc)
                return
            self._on_accept(conn)

    def _on_accept(self, conn: socket.socket) -> None:
        self.accepted += 1
        if self._mode == "cut" or self._closed:
            _reset_socket(conn)
            return
        conn.setblocking(False)
        link = _Link(self, conn)
        self._links.add(link)
        link.task = self._loop.create_task(self._serve(link), name=f"proxy-link-{self.accepted}")

    async def _set_mode(self, mode: Mode) -> None:
        assert self._flowing is not None
        self._mode = mode
        if mode == "blackhole":
            self._flowing.clear()
            return
        self._flowing.set()
        if mode == "cut":
            await self._abort_all()

    async def _reset_counters(self) -> None:
        self.bytes_up = 0
        self.bytes_down = 0

    async def _shutdown(self) -> None:
        if self._listener is not None:
            self._loop.remove_reader(self._listener.fileno())
            self._listener.close()
        await self._abort_all()

    async def _abort_all(self) -> None:
        links = list(self._links)
        for link in links:
            link.abort()
        tasks = [link.task for link in links if link.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=_CONTROL_TIMEOUT)
        for link in links:
            link.reset_unwrapped_socket()  # a task cancelled before it ever ran
        self._links.difference_update(links)

    async def _serve(self, link: _Link) -> None:
        try:
            await link.run()
        except asyncio.CancelledError:
            pass  # aborted by cut() or close(); the sockets are already reset
        finally:
            self._links.discard(link)
            link.abort()
            link.reset_unwrapped_socket()

    async def _wait_flowing(self) -> None:
        assert self._flowing is not None
        await self._flowing.wait()


class _Link:
    """One client connection and its upstream twin, pumping bytes both ways.

    The client socket is wrapped in asyncio streams by the link's task; until then (or if the
    task never runs) the link owns the bare socket and resets it itself.
    """

    def __init__(self, proxy: FaultProxy, conn: socket.socket) -> None:
        self.proxy = proxy
        self.conn = conn
        self.task: asyncio.Task[None] | None = None
        self.client_writer: asyncio.StreamWriter | None = None
        self.upstream_writer: asyncio.StreamWriter | None = None

    async def run(self) -> None:
        client_reader, client_writer = await asyncio.open_connection(sock=self.conn)
        self.client_writer = client_writer
        _nodelay(client_writer)
        # A connection made during a blackhole goes nowhere until restore().
        await self.proxy._wait_flowing()  # the link is part of the proxy
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.proxy.target_host, self.proxy.target_port
            )
        except OSError as exc:
            log.debug("target %s:%d down: %s", self.proxy.target_host, self.proxy.target_port, exc)
            return  # the finally in _serve resets the client, as a refused connect would
        self.upstream_writer = up_writer
        _nodelay(up_writer)
        reset = False
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pump(client_reader, up_writer, "up"))
                group.create_task(self._pump(up_reader, client_writer, "down"))
        except* (ConnectionError, OSError):
            reset = True  # one side reset: the finally in _serve resets the other
        if not reset:
            # Both sides said goodbye (FIN each way): close politely, no reset needed.
            client_writer.close()
            up_writer.close()

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        direction: Literal["up", "down"],
    ) -> None:
        """Copy ``source`` to ``sink`` in order, each chunk held until its delay has passed."""
        loop = asyncio.get_running_loop()
        # Bounded, so a slow sink pushes back on the source as TCP would.
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=1024)

        async def read_side() -> None:
            while True:
                await self.proxy._wait_flowing()
                data = await source.read(_CHUNK)
                await held.put((loop.time() + self.proxy.delay, data))
                if not data:
                    return

        async def write_side() -> None:
            while True:
                due, data = await held.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self.proxy._wait_flowing()
                if not data:
                    if sink.can_write_eof():
                        sink.write_eof()
                    return
                sink.write(data)
                await sink.drain()
                if direction == "up":
                    self.proxy.bytes_up += len(data)
                else:
                    self.proxy.bytes_down += len(data)

        async with asyncio.TaskGroup() as group:
            group.create_task(read_side())
            group.create_task(write_side())

    def abort(self) -> None:
        """Reset both connections now and stop pumping."""
        for writer in (self.client_writer, self.upstream_writer):
            if writer is not None:
                _reset(writer)
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()

    def reset_unwrapped_socket(self) -> None:
        """Reset the client socket if no stream ever took it over (call once the task is done).

        Closing is idempotent: a stream that did take it over closed this same socket object.
        """
        if self.client_writer is None:
            _reset_socket(self.conn)


def _reset_socket(sock: socket.socket) -> None:
    """Close a bare socket with an RST."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST rather than a FIN: the peer learns at once, as on a dropped link."""
    transport = writer.transport
    if transport.is_closing():
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _nodelay(writer: asyncio.StreamWriter) -> None:
    # Small MQTT packets must not wait for Nagle: latency is what we inject, nothing else.
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
