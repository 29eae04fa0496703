"""Find what a test left running: child processes and asyncio tasks.

Child processes are read from /proc (Linux): every process whose parent is this pytest process.
With ``become_subreaper()`` (called once per session by tests/conftest.py) orphans of our
descendants are re-parented to us instead of to init, so a grandchild whose parent exited
(a JVM left behind by spark-submit, a daemonised helper) is caught as well.

Tasks: everything still pending in the test's event loop once its fixtures are torn down,
except tasks that existed when the test started (owned by wider-scoped fixtures).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

_PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True, slots=True)
class ProcInfo:
    """One process as /proc shows it."""

    pid: int
    ppid: int
    state: str  # R, S, D, Z (zombie: exited, not reaped), T (stopped) ...
    command: str

    def describe(self) -> str:
        """``pid 123 (zombie: exited but never waited for): sleep 5``"""
        state = {
            "Z": "zombie: exited but never waited for",
            "T": "stopped",
        }.get(self.state, "running")
        return f"pid {self.pid} ({state}): {self.command}"


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux prctl); False where unsupported."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def process_table() -> dict[int, ProcInfo]:
    """Every process visible in /proc (empty where there is no /proc)."""
    table: dict[int, ProcInfo] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return table
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        info = _read_proc(entry)
        if info is not None:
            table[info.pid] = info
    return table


def _read_proc(entry: Path) -> ProcInfo | None:
    try:
        stat = (entry / "stat").read_text()
        cmdline = (entry / "cmdline").read_bytes()
    except OSError:  # exited while we looked
        return None
    # "pid (comm) state ppid ..."; comm may itself contain spaces and parentheses.
    close = stat.rfind(")")
    comm = stat[stat.find("(") + 1 : close]
    fields = stat[close + 2 :].split()
    command = cmdline.replace(b"\0", b" ").decode(errors="replace").strip() or f"[{comm}]"
    if len(command) > 200:
        command = command[:197] + "..."
    return ProcInfo(pid=int(entry.name), ppid=int(fields[1]), state=fields[0], command=command)


def children_of(pid: int, table: dict[int, ProcInfo] | None = None) -> dict[int, ProcInfo]:
    """The direct children of ``pid``."""
    table = process_table() if table is None else table
    return {p: info for p, info in table.items() if info.ppid == pid}


def descendants_of(pid: int, table: dict[int, ProcInfo]) -> list[ProcInfo]:
    """All descendants of ``pid``, parents before children."""
    found: list[ProcInfo] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for info in table.values():
            if info.ppid == parent:
                found.append(info)
                frontier.append(info.pid)
    return found


def new_children(baseline: set[int]) -> list[ProcInfo]:
    """Children of this process that were not there at ``baseline``."""
    return sorted(
        (info for pid, info in children_of(os.getpid()).items() if pid not in baseline),
        key=lambda info: info.pid,
    )


def wait_for_no_new_children(baseline: set[int], grace: float) -> list[ProcInfo]:
    """Give children that are exiting, or about to be reaped, ``grace`` seconds; return the rest.

    (asyncio reaps its subprocesses from a watcher thread, so a correctly awaited child may
    still show as a zombie for a moment.)
    """
    deadline = time.monotonic() + grace
    while True:
        leaked = new_children(baseline)
        if not leaked or time.monotonic() >= deadline:
            return leaked
        time.sleep(0.05)


def kill_and_reap(leaked: list[ProcInfo]) -> None:
    """SIGKILL leaked children and everything below them; reap those that are ours."""
    table = process_table()
    victims: list[ProcInfo] = []
    for info in leaked:
        victims.append(info)
        victims.extend(descendants_of(info.pid, table))
    for info in victims:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(info.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    pending = {info.pid for info in leaked}
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # reaped by its owner meanwhile
                pending.discard(pid)
                continue
            if done:
                pending.discard(pid)
        time.sleep(0.02)


def describe_children(leaked: list[ProcInfo]) -> str:
    """A failure message naming each leaked child."""
    lines = [f"test leaked {len(leaked)} child process(es):"]
    lines += [f"  {info.describe()}" for info in leaked]
    lines.append(
        "Stop and wait for every process a test starts (SIGTERM, grace, SIGKILL, then wait()); "
        "the leak check has killed these."
    )
    return "\n".join(lines)


# -- asyncio tasks ------------------------------------------------------------------------


def task_snapshot() -> set[asyncio.Task[object]]:
    """The tasks of the running loop now, except the caller's own."""
    me = asyncio.current_task()
    return {task for task in asyncio.all_tasks() if task is not me}


async def leftover_tasks(
    baseline: set[asyncio.Task[object]], grace: float = 1.0
) -> list[asyncio.Task[object]]:
    """Tasks not in ``baseline`` still pending after ``grace`` seconds of this loop running.

    The grace lets tasks that were just cancelled, or are finishing, run to their end.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while True:
        left = [task for task in task_snapshot() - baseline if not task.done()]
        if not left or loop.time() >= deadline:
            return sorted(left, key=lambda task: task.get_name())
        await asyncio.sleep(0.01)


def describe_task(task: asyncio.Task[object]) -> str:
    """``Task-7 running node.session.Session._pinger at node/session.py:88``"""
    coro = task.get_coro()
    qualname = getattr(coro, "__qualname__", type(coro).__name__)
    where = ""
    stack = task.get_stack(limit=1)
    if stack:
        frame = stack[-1]
        where = f" at {frame.f_code.co_filename}:{frame.f_lineno}"
    module = getattr(getattr(coro, "cr_frame", None), "f_globals", {}).get("__name__", "")
    full = f"{module}.{qualname}" if module else qualname
    return f"{task.get_name()} running {full}{where}"


def describe_tasks(left: list[asyncio.Task[object]]) -> str:
    """A failure message naming each leaked task."""
    lines = [f"test leaked {len(left)} pending asyncio task(s):"]
    lines += [f"  {describe_task(task)}" for task in left]
    lines.append(
        "Every background task needs an owner that cancels and awaits it (a TaskGroup, or an "
        "async context manager's exit); the leak check has cancelled these."
    )
    return "\n".join(lines)


async def cancel_and_wait(tasks: list[asyncio.Task[object]], grace: float = 5.0) -> None:
    """Cancel ``tasks`` and give them ``grace`` seconds to finish."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=grace)
