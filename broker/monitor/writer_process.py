"""The writer child (``writer.py``) as the monitor's event loop sees it: started ready, fed
frames, read for its reports, and always reaped.

Stopping: the end of its input tells it to commit and exit; its reports are read to the end
(the last commit's count matters); after ``grace_s`` without an exit it is killed.  No
SIGTERM step in between: the writer ignores SIGTERM on purpose (a process-group kill must not
stop it before its parent has handed everything over), so SIGKILL is the only one that works.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from .handover import Committed, Failed, FrameBuffer, Ready, WriterConfig, frame
from .store import StoreError

log = logging.getLogger(__name__)
_F_SETPIPE_SZ = 1031  # Linux: a bigger pipe means fewer wake-ups of either side
_PIPE_BYTES = 1 << 20
_READ = 1 << 16
_ROOT = str(Path(__file__).resolve().parents[2])  # where ``broker`` is importable from


class WriterGoneError(StoreError):
    """The writer process ended while the monitor still needed it."""


class WriterProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdin is not None
        assert proc.stdout is not None
        self.proc = proc
        self._stdin = proc.stdin
        self._stdout = proc.stdout
        self._frames = FrameBuffer()
        self._eof = False

    @classmethod
    async def start(cls, cfg: WriterConfig) -> WriterProcess:
        """Start the writer and wait until its database is open (``StoreError`` if not)."""
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": f"{_ROOT}{os.pathsep}{path}" if path else _ROOT}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "broker.monitor.writer",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        writer = cls(proc)
        try:
            writer._tune()
            writer.send(cfg)
            first = await writer.next_report()
        except BaseException:
            await writer.stop()
            raise
        if not isinstance(first, Ready):
            error = await writer.failure(first)
            await writer.stop()
            raise error
        return writer

    def _tune(self) -> None:
        transport = self._stdin.transport
        with contextlib.suppress(OSError, AttributeError):
            fd = transport.get_extra_info("pipe").fileno()
            fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_BYTES)
        transport.set_write_buffer_limits(high=_PIPE_BYTES)

    # -- to the writer --------------------------------------------------------------------------

    def send(self, obj: object) -> None:
        """Queue one frame (in order with every other); ``drain`` waits for room."""
        if self._stdin.is_closing():
            raise WriterGoneError("the monitor's writer process is not running")
        self._stdin.write(frame(obj))

    async def drain(self) -> None:
        try:
            await self._stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise WriterGoneError(f"the monitor's writer process is gone: {exc}") from exc

    # -- from the writer ------------------------------------------------------------------------

    async def next_report(self) -> object | None:
        """The writer's next report, or None when it has ended.  Safe to cancel: what was
        read stays here for the next call."""
        while True:
            obj = self._frames.next()
            if obj is not None or self._eof:
                return obj
            data = await self._stdout.read(_READ)
            if not data:
                self._eof = True
            else:
                self._frames.feed(data)

    async def _death(self) -> str:
        code = await self.proc.wait()
        return f"the monitor's writer process exited with code {code}"

    async def failure(self, last: object | None) -> StoreError:
        """The error to raise for a report stream that ended with ``last`` (None or Failed)."""
        if isinstance(last, Failed):
            return StoreError(last.message)
        return WriterGoneError(await self._death())

    # -- stopping -------------------------------------------------------------------------------

    async def stop(
        self, on_report: Callable[[Committed], None] | None = None, grace_s: float = 30.0
    ) -> Failed | None:
        """End the writer's input, pass its last reports to ``on_report``, wait for its exit
        (``grace_s``), kill it if it does not.  Returns its failure, if it reported one."""
        failed: Failed | None = None
        try:
            async with asyncio.timeout(grace_s):
                if not self._stdin.is_closing():
                    self._stdin.close()
                while (report := await self.next_report()) is not None:
                    if isinstance(report, Committed) and on_report is not None:
                        on_report(report)
                    elif isinstance(report, Failed):
                        failed = report
                await self.proc.wait()
        except TimeoutError:
            log.warning("the monitor's writer did not stop within %g s: killing it", grace_s)
        finally:
            if self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                # Shielded: a second cancellation must not leave the child unreaped.
                await asyncio.shield(self.proc.wait())
        return failed
