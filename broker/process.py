"""A broker child process: its own process group, stopped with SIGTERM, grace, SIGKILL, reaped.

The child leads a new session (so a terminal's Ctrl-C reaches only us, and we decide how the
broker stops) and therefore its own process group, which we signal as a whole so nothing it
might start outlives it.  The group is signalled only while its leader is unreaped: until then
the kernel cannot hand the leader's pid, which is the group id, to an unrelated process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

_POLL = 0.02


class ChildProcess:
    """One running child; ``stop`` and ``kill`` always leave it reaped."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        console_log: Path,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.argv = tuple(argv)
        with console_log.open("ab") as out:
            self._popen = subprocess.Popen(  # noqa: S603 - argv is built by us, never a shell
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                start_new_session=True,
                close_fds=True,
            )
        self.pid = self._popen.pid
        # Safety net for a forgotten stop(): kill the group when we are collected or exit.
        self._finalizer = weakref.finalize(self, _kill_and_reap, self._popen)
        log.debug("started %s (pid %d)", self.argv[0], self.pid)

    @property
    def returncode(self) -> int | None:
        """The exit status once the child has exited (reaping it), else ``None``."""
        return self._popen.poll()

    def alive(self) -> bool:
        """True while the child runs (a stopped, i.e. SIGSTOPped, child counts as running)."""
        return not self._exited()

    def send_signal(self, sig: signal.Signals) -> None:
        """Signal the child's whole process group, if the child is still unreaped."""
        if self._popen.returncode is None:
            _signal_group(self.pid, sig)

    def stop(self, grace: float = 5.0) -> int:
        """SIGTERM the group, wait up to ``grace`` seconds, then SIGKILL; reap; return status."""
        if self._popen.returncode is None:
            _signal_group(self.pid, signal.SIGTERM)
            # A frozen (SIGSTOPped) broker would hold SIGTERM pending forever; wake it.
            _signal_group(self.pid, signal.SIGCONT)
            deadline = time.monotonic() + grace
            while not self._exited() and time.monotonic() < deadline:
                time.sleep(_POLL)
            if not self._exited():
                log.warning("pid %d ignored SIGTERM for %.1fs; sending SIGKILL", self.pid, grace)
        return self._kill_group_and_reap()

    def kill(self) -> int:
        """SIGKILL the group at once (a crash, as far as the child is concerned); reap."""
        return self._kill_group_and_reap()

    def _kill_group_and_reap(self) -> int:
        # Also clears any straggler in the group after a clean exit of the leader.
        self.send_signal(signal.SIGKILL)
        code = self._popen.wait()
        self._finalizer.detach()
        return code

    def _exited(self) -> bool:
        """Has the child exited?  Does not reap it, so its group id stays reserved."""
        if self._popen.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped elsewhere (e.g. by a SIGCHLD handler)
            self._popen.poll()
            return True
        return info is not None


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:  # a member changed user; signal the leader alone
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _kill_and_reap(popen: subprocess.Popen[bytes]) -> None:
    if popen.returncode is None:
        _signal_group(popen.pid, signal.SIGKILL)
        popen.wait()


def read_tail(path: Path, max_bytes: int = 8192, *, since: int = 0) -> str:
    """The last ``max_bytes`` of a text log written after byte offset ``since``, starting at a
    line boundary; "" if unreadable."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(since, size - max_bytes, 0)
            f.seek(start)
            data = f.read()
    except OSError:
        return ""
    if start > since and b"\n" in data:
        data = data.split(b"\n", 1)[1]
    return data.decode("utf-8", errors="replace")
