"""The agent's local socket: pipeline components (through the SDK) talk to the agent here.

``LocalServer(path, port)`` is an async context manager, serving once entry returns: the socket
file exists with mode 0600 (only this user's processes may connect; the per-job token in
``Hello`` then says which job a connection speaks for), replacing a stale socket file left by a
previous run but never a live one.  Each connection is one task in the server's TaskGroup
(the conversation itself is ``node.local.connection``); leaving the context, or cancelling the
task in it, closes every connection promptly and removes the socket file.  Nothing a client
sends can stop the server or affect other connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ion.errors import ConfigError, UnavailableError

from .connection import Connection, Counters, ServerSettings
from .port import AgentPort

__all__ = ["LocalServer", "ServerSettings", "ServerStats"]

log = logging.getLogger(__name__)

_READ_SIZE = 256 * 1024
_MAX_UNIX_PATH = 107  # sun_path is 108 bytes with its terminating NUL on Linux


@dataclass(frozen=True, slots=True)
class ServerStats:
    connections_accepted: int
    connections_open: int
    malformed_frames: int
    """Frames that could not be decoded or broke the conversation (each closed its connection)."""
    refused: int
    """Connections refused at Hello (wrong token, protocol version, first frame not Hello)."""
    emits_ok: int
    emits_failed: int
    deliveries: int


class LocalServer:
    """Serves ``port`` on the Unix socket ``path`` (see the module docstring)."""

    def __init__(self, path: Path, port: AgentPort, settings: ServerSettings | None = None) -> None:
        self.path = Path(path)
        self.port = port
        self.settings = settings or ServerSettings()
        self._tg = asyncio.TaskGroup()
        self._server: asyncio.AbstractServer | None = None
        self._inode: tuple[int, int] | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._closing = False
        self._counters = Counters()

    @property
    def stats(self) -> ServerStats:
        c = self._counters
        return ServerStats(
            connections_accepted=c.accepted,
            connections_open=c.open,
            malformed_frames=c.malformed,
            refused=c.refused,
            emits_ok=c.emits_ok,
            emits_failed=c.emits_failed,
            deliveries=c.deliveries,
        )

    async def __aenter__(self) -> LocalServer:
        await self._tg.__aenter__()
        sock: socket.socket | None = None
        try:
            await _check_not_in_use(self.path)
            sock = _bind(self.path)
            st = os.stat(self.path)
            self._inode = (st.st_dev, st.st_ino)
            self._server = await asyncio.start_unix_server(
                self._accept, sock=sock, limit=_READ_SIZE
            )
        except BaseException:
            if sock is not None and self._server is None:
                sock.close()
            self._unlink()
            await self._tg.__aexit__(None, None, None)  # no tasks yet: returns at once
            raise
        log.info("local socket %s: serving", self.path)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing = True
        server = self._server
        if server is not None:
            server.close()
        self._unlink()
        for task in list(self._conns):
            task.cancel()
        try:
            # Not the body's exception: TaskGroup would wrap it in an ExceptionGroup, and the
            # caller of `async with LocalServer(...)` should see its own exception unchanged.
            # Connection tasks never fail (they catch and log), so nothing else is lost.
            await self._tg.__aexit__(None, None, None)
        finally:
            if server is not None:
                await server.wait_closed()
            log.info("local socket %s: closed", self.path)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:
            writer.transport.abort()
            return
        self._counters.accepted += 1
        n = self._counters.accepted
        conn = Connection(
            n,
            port=self.port,
            settings=self.settings,
            counters=self._counters,
            reader=reader,
            writer=writer,
        )
        task = self._tg.create_task(conn.serve(), name=f"ion-local-conn-{n}")
        self._conns.add(task)
        task.add_done_callback(self._conns.discard)
        # A task cancelled before its first step never runs its own cleanup.
        task.add_done_callback(lambda _: writer.transport.abort())

    def _unlink(self) -> None:
        # Only our own socket: a newer server may already have replaced it.
        if self._inode is None:
            return
        with contextlib.suppress(OSError):
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:
                self.path.unlink()
        self._inode = None


async def _check_not_in_use(path: Path) -> None:
    """Refuse to replace a socket someone still serves; a stale one is fine to replace."""
    if len(os.fsencode(path)) > _MAX_UNIX_PATH:
        raise ConfigError(f"socket path {path} is longer than {_MAX_UNIX_PATH} bytes")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(f"{path} exists and is not a socket; not replacing it")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), 1.0)
    except (ConnectionRefusedError, FileNotFoundError, TimeoutError):
        return  # stale: nobody listens
    except OSError as e:
        raise ConfigError(f"cannot check socket {path}: {e}") from e
    writer.transport.abort()
    raise UnavailableError(f"socket {path} is in use by a running server")


def _bind(path: Path) -> socket.socket:
    """A listening socket at ``path``, mode 0600 before it listens (no window where another
    user could connect: connecting to a bound socket that does not listen is refused)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock.bind(os.fspath(path))
        os.chmod(path, 0o600)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {path}: {e}") from e
    return sock
