"""The child process behind every job, owned completely: every engine adapter starts its job here.

- The child leads a new session, hence its own process group: we signal the group as a whole,
  so nothing the job starts (Spark's JVM, Python workers) outlives it, and a terminal's Ctrl-C
  reaches only the agent, which decides how jobs stop.
- stdout and stderr are split into lines as they arrive and logged with the job's pipeline and
  node ids on every record; the last lines of both are kept, in order, for its error report.
- Stop is SIGTERM to the group (plus SIGCONT, or a frozen job would hold it pending forever),
  a grace period, then SIGKILL.  Cancelling ``stop`` sends SIGKILL before it re-raises.
- Always reaped: asyncio's child watcher reaps the leader the moment it exits, whoever waits.
  We SIGKILL the group right then, so stragglers die too.  The group id cannot be reused while
  a straggler holds it; once the group is empty it could in principle be handed to a new
  process, but Linux hands out pids in sequence: that takes a wrap-around of the whole pid space
  in the instant between the reap and our signal.

Why the low-level ``loop.subprocess_exec`` with our own protocol rather than
``create_subprocess_exec``: ``Process.wait()`` (3.11) returns only once the pipes are closed
too, so a grandchild holding stdout would hide the leader's exit, and we would never get to
kill the grandchild.  The protocol learns of the exit at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .base import JobExit, JobStartError

log = logging.getLogger(__name__)
output_log = log.getChild("output")
"""The logger job output goes to (``node.engines.process.output``), one record per line."""

MAX_LINE_BYTES = 8192
"""Longer lines are cut here (and marked) so one runaway line cannot exhaust memory."""
DRAIN_TIMEOUT_S = 2.0
"""After the job's exit, how long its remaining output may take to arrive; bounded, since a
process that left the group (a daemon that called setsid) may hold our pipes forever."""
_TRUNCATED = " [...line truncated]"
_STREAMS = {1: "stdout", 2: "stderr"}


def _die_with_parent_hook() -> Callable[[], None] | None:
    """On Linux, a hook run in the child before exec: SIGTERM it when the agent dies.

    A child in its own session outlives a kill -9 of the agent otherwise; with this it gets
    SIGTERM (and drains, or its engine's own shutdown kills the rest of its group).  libc is
    loaded here, in the parent, so the hook itself only makes one system call.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return hook


_DIE_WITH_PARENT = _die_with_parent_hook()


class ChildProcess:
    """One job's child process.  Create it with ``spawn``; ``wait``/``stop`` leave it reaped."""

    def __init__(self, *, job_id: str, node_id: str, tail_lines: int) -> None:
        self.job_id = job_id
        self.node_id = node_id
        self.pid = 0
        self.started_at = time.monotonic()
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.SubprocessTransport | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=max(tail_lines, 0))
        self._buffers: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}
        self._skipping: dict[int, bool] = {1: False, 2: False}  # inside an over-long line
        self._status: int | None = None  # the leader's exit status, once it exited
        self._pipes_closed = False
        self._drain_timer: asyncio.TimerHandle | None = None
        self._done: asyncio.Future[int] = self._loop.create_future()
        self._finalizer: weakref.finalize[[int, signal.Signals], ChildProcess] | None = None

    @classmethod
    async def spawn(
        cls,
        argv: Sequence[str],
        *,
        job_id: str,
        node_id: str,
        cwd: Path,
        env: Mapping[str, str],
        tail_lines: int,
    ) -> ChildProcess:
        """Start ``argv`` in its own session; ``JobStartError`` if it cannot be executed."""
        if not argv:
            raise JobStartError("empty command line")
        child = cls(job_id=job_id, node_id=node_id, tail_lines=tail_lines)
        try:
            await child._loop.subprocess_exec(
                lambda: _Protocol(child),
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=cwd,
                env=dict(env),
                start_new_session=True,
                preexec_fn=_DIE_WITH_PARENT,
            )
        except OSError as e:
            raise JobStartError(f"cannot execute {argv[0]}: {e.strerror or e}") from e
        # A safety net for an owner that forgets to stop its job: collected or at interpreter
        # exit, the group is killed.  Detached once the job has ended.
        child._finalizer = weakref.finalize(child, signal_group, child.pid, signal.SIGKILL)
        log.info(
            "%s: started %s (pid %d)",
            job_id,
            Path(argv[0]).name,
            child.pid,
            extra=child._extra(),
        )
        return child

    @property
    def returncode(self) -> int | None:
        """The exit status once the job ended and its output is drained; negative: a signal."""
        return self._done.result() if self._done.done() else None

    def tail(self) -> tuple[str, ...]:
        """The last lines the job wrote on stdout and stderr, oldest first."""
        return tuple(self._tail)

    async def wait(self) -> int:
        """The exit status.  Cancelling a waiter leaves the process alone."""
        return await asyncio.shield(self._done)

    async def stop(self, grace_s: float) -> int:
        """SIGTERM (and SIGCONT) the group, wait up to ``grace_s``, SIGKILL; the exit status."""
        if self._status is None:
            self._signal(signal.SIGTERM)
            self._signal(signal.SIGCONT)
            try:
                async with asyncio.timeout(max(grace_s, 0.0)):
                    await asyncio.shield(self._done)
            except TimeoutError:
                log.warning(
                    "%s: pid %d ignored SIGTERM for %.1fs; sending SIGKILL",
                    self.job_id,
                    self.pid,
                    grace_s,
                    extra=self._extra(),
                )
                self._signal(signal.SIGKILL)
            except asyncio.CancelledError:
                # Whoever cancels us will not wait out the grace period: make sure it dies.
                self._signal(signal.SIGKILL)
                raise
        return await asyncio.shield(self._done)

    def kill(self) -> None:
        """SIGKILL the group now (the watcher still reaps it; ``wait`` returns the status)."""
        self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        if self._status is None:  # once reaped, the group id is no longer ours to signal
            signal_group(self.pid, sig)

    # Protocol callbacks ----------------------------------------------------------------------

    def _connected(self, transport: asyncio.SubprocessTransport) -> None:
        self._transport = transport
        self.pid = transport.get_pid()

    def _data(self, fd: int, data: bytes) -> None:
        buf = self._buffers[fd]
        buf += data
        while (end := buf.find(b"\n")) >= 0:
            if not self._skipping[fd]:
                self._emit(bytes(buf[:end]), fd)
            self._skipping[fd] = False
            del buf[: end + 1]
        if len(buf) > MAX_LINE_BYTES:
            if not self._skipping[fd]:
                self._emit(bytes(buf), fd)
            self._skipping[fd] = True  # drop the rest of this line as it arrives
            buf.clear()

    def _pipe_closed(self, fd: int) -> None:
        buf = self._buffers.get(fd)
        if buf:
            if not self._skipping[fd]:
                self._emit(bytes(buf), fd)
            buf.clear()

    def _exited(self) -> None:
        assert self._transport is not None
        self._status = self._transport.get_returncode()
        # The leader is reaped; kill whatever else is left in its group at once.
        signal_group(self.pid, signal.SIGKILL)
        if self._pipes_closed:
            self._finish()
        else:
            self._drain_timer = self._loop.call_later(DRAIN_TIMEOUT_S, self._finish)

    def _all_closed(self) -> None:
        self._pipes_closed = True
        if self._status is not None:
            self._finish()

    def _finish(self) -> None:
        if self._done.done():
            return
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        for fd in self._buffers:
            self._pipe_closed(fd)
        if not self._pipes_closed:
            log.warning(
                "%s: output pipes still open %.1fs after exit; closing them",
                self.job_id,
                DRAIN_TIMEOUT_S,
                extra=self._extra(),
            )
        assert self._transport is not None
        assert self._status is not None
        self._transport.close()
        if self._finalizer is not None:
            self._finalizer.detach()
        log.info(
            "%s: pid %d exited with status %d after %.1fs",
            self.job_id,
            self.pid,
            self._status,
            time.monotonic() - self.started_at,
            extra=self._extra(),
        )
        self._done.set_result(self._status)

    def _emit(self, raw: bytes, fd: int) -> None:
        text = raw[:MAX_LINE_BYTES].decode("utf-8", errors="replace").rstrip("\r")
        if len(raw) > MAX_LINE_BYTES:
            text += _TRUNCATED
        self._tail.append(text)
        stream = _STREAMS.get(fd, str(fd))
        output_log.info(
            "%s [%s] %s", self.job_id, stream, text, extra={**self._extra(), "stream": stream}
        )

    def _extra(self) -> dict[str, object]:
        return {"pipeline_id": self.job_id, "node_id": self.node_id, "pid": self.pid}


class _Protocol(asyncio.SubprocessProtocol):
    def __init__(self, child: ChildProcess) -> None:
        self._child = child

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)
        self._child._connected(transport)

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        self._child._data(fd, data.encode() if isinstance(data, str) else data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._child._pipe_closed(fd)

    def process_exited(self) -> None:
        self._child._exited()

    def connection_lost(self, exc: Exception | None) -> None:
        self._child._all_closed()


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Signal a process group, ignoring one that is already gone."""
    if pgid <= 0:
        return  # never signal our own group (0) or every process (-1)
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:  # the leader changed user; signal it alone
        with contextlib.suppress(ProcessLookupError):
            os.kill(pgid, sig)


def exit_from_status(status: int, tail: tuple[str, ...]) -> JobExit:
    """The usual mapping of an exit status: 0 succeeded, negative killed, else failed."""
    if status == 0:
        return JobExit.succeeded(tail)
    if status < 0:
        return JobExit.killed(-status, tail)
    return JobExit.failed(status, tail)
