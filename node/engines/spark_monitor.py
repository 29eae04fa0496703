"""Watches one Spark job from a thread: its statistics, its driver, its processes.

Every ``interval_s`` the thread
- reads the driver's info file (``spark_driver``: its pid, then the app id and UI address),
- reads what the event log gained (``spark_eventlog``),
- asks the driver's REST API for live progress (``spark_rest``) while the app runs,
- walks the job's process tree in /proc: CPU and memory of the whole tree (the JVM, the Python
  driver, Python workers), and every process seen, so none is left behind at the end.

``snapshot`` hands the merged values to the event loop without blocking (a lock around one
reference).  ``close`` (blocking: run it in a thread once the job's leader exited) stops the
thread, reads the event log to its end, and kills and reaps what is left of the job's
processes: Python workers of pyspark (``pyspark.daemon`` leads a process group of its own, so
the group kill at exit does not reach them), and group members that were re-parented to us
when the agent is a subreaper.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .base import JobStats
from .spark_eventlog import EventLogTail, newest_log
from .spark_rest import fetch_progress

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 1.0
POLL_BUDGET_BYTES = 8 << 20
"""Event-log bytes read per poll (a long log is caught up over a few polls)."""
REAP_TIMEOUT_S = 3.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_PROC = Path("/proc")

Fetch = Callable[[str, str], dict[str, float] | None]


@dataclass(frozen=True, slots=True)
class Proc:
    """One process as /proc/<pid>/stat shows it."""

    pid: int
    ppid: int
    pgrp: int
    state: str
    start: int
    """Start time in clock ticks since boot: with the pid, it names a process for good."""
    cpu_ticks: int
    rss_pages: int


def read_proc(pid: int, proc: Path = _PROC) -> Proc | None:
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    try:
        # The command (field 2) may hold spaces and parentheses: split after the last ')'.
        f = stat[stat.rindex(")") + 2 :].split()
        return Proc(
            pid=pid,
            ppid=int(f[1]),
            pgrp=int(f[2]),
            state=f[0],
            start=int(f[19]),
            cpu_ticks=int(f[11]) + int(f[12]) + int(f[13]) + int(f[14]),
            rss_pages=int(f[21]),
        )
    except (ValueError, IndexError):
        return None


def process_tree(root: int, proc: Path = _PROC) -> list[Proc]:
    """``root`` and its descendants, plus members of its process group (empty: no /proc)."""
    table: dict[int, Proc] = {}
    try:
        entries = [e.name for e in proc.iterdir() if e.name.isdigit()]
    except OSError:
        return []
    for name in entries:
        p = read_proc(int(name), proc)
        if p is not None:
            table[p.pid] = p
    children: dict[int, list[int]] = {}
    for p in table.values():
        children.setdefault(p.ppid, []).append(p.pid)
    found: dict[int, Proc] = {p.pid: p for p in table.values() if p.pgrp == root}
    visited: set[int] = set()
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        if pid in visited:
            continue
        visited.add(pid)
        if pid in table:
            found[pid] = table[pid]
        frontier.extend(children.get(pid, ()))
    return list(found.values())


class SparkMonitor:
    """One job's watcher (see the module docstring).  ``start`` it once, ``close`` it once."""

    def __init__(
        self,
        *,
        leader_pid: int,
        info_path: Path,
        event_dir: Path,
        started_ns: int,
        interval_s: float = DEFAULT_INTERVAL_S,
        fetch: Fetch = fetch_progress,
        job_id: str = "",
        node_id: str = "",
    ) -> None:
        self.leader_pid = leader_pid
        self.info_path = info_path
        self.tail = EventLogTail(event_dir)
        self._started_ns = started_ns
        self._interval_s = interval_s
        self._fetch = fetch
        self._job_id = job_id
        self._extra = {"pipeline_id": job_id, "node_id": node_id}
        self._stop = threading.Event()
        self._poll_lock = threading.Lock()  # the thread's last poll may overlap close()
        self._thread = threading.Thread(
            target=self._run, name=f"spark-monitor {job_id}".strip(), daemon=True
        )
        self._snapshot: JobStats | None = None
        self._info: dict[str, object] = {}
        self._seen: dict[int, int] = {}  # pid -> start time: every process of the job seen
        self._proc_values: dict[str, float] = {}
        self._rest_values: dict[str, float] = {}
        self._closed = False

    def start(self) -> None:
        self._thread.start()

    def snapshot(self) -> JobStats | None:
        return self._snapshot

    def driver_pid(self) -> int | None:
        """The Python driver's pid, if it said so and still runs in the job's process group.
        Blocking (reads two small files)."""
        self._read_info()
        pid = self._info.get("pid")
        if not isinstance(pid, int) or pid <= 0 or pid == self.leader_pid:
            return None
        p = read_proc(pid)
        if p is None or p.pgrp != self.leader_pid or p.state == "Z":
            return None  # gone, or the pid now belongs to someone else
        return pid

    @property
    def app_id(self) -> str:
        return self.tail.app_id

    def close(self) -> None:
        """Stop watching; read the event log to its end; kill and reap leftovers.  Blocking."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        with self._poll_lock:
            # Nothing runs any more: no live progress, no memory in use; CPU time stays.
            self._rest_values = {}
            self._proc_values = {
                k: v for k, v in self._proc_values.items() if k == "process.cpu_seconds"
            }
            self._poll(final=True)
        self._reap_leftovers()

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self._poll_lock:
                    if not self._stop.is_set():
                        self._poll(final=False)
            except Exception:  # a bug here must not end the watching for good
                log.exception(
                    "%s: polling Spark statistics failed", self._job_id, extra=self._extra
                )
            self._stop.wait(self._interval_s)

    def _poll(self, *, final: bool) -> None:
        self._read_info()
        app_id = self._info.get("app_id")
        if isinstance(app_id, str) and app_id:
            self.tail.follow(app_id)
        elif not self.tail.app_id:
            found = newest_log(self.tail.directory, self._started_ns)
            if found:
                self.tail.follow(found)
        self.tail.poll(None if final else POLL_BUDGET_BYTES)
        if not final:
            self._watch_processes()
            ui_url = self._info.get("ui_url")
            if isinstance(ui_url, str) and ui_url and self.tail.app_id and not self._ended():
                self._rest_values = self._fetch(ui_url, self.tail.app_id) or {}
            else:
                self._rest_values = {}
        values = dict(self._proc_values)
        if self.tail.app_id:
            values.update(self.tail.values())
        values.update(self._rest_values)
        if values:
            self._snapshot = JobStats(updated_ms=time.time_ns() // 1_000_000, values=values)

    def _ended(self) -> bool:
        return self.tail.stats.app_ended

    def _read_info(self) -> None:
        try:
            info = json.loads(self.info_path.read_text())
        except (OSError, ValueError):
            return  # not written yet, or mid-replace: keep what we had
        if isinstance(info, dict):
            self._info = info

    def _watch_processes(self) -> None:
        tree = process_tree(self.leader_pid)
        live = [p for p in tree if p.state != "Z"]
        for p in live:
            self._seen.setdefault(p.pid, p.start)
        if live:
            self._proc_values = {
                "process.cpu_seconds": sum(p.cpu_ticks for p in live) / _CLOCK_TICKS,
                "process.rss_bytes": float(sum(p.rss_pages for p in live) * _PAGE_SIZE),
                "process.count": float(len(live)),
            }

    def _reap_leftovers(self) -> None:
        mine = os.getpid()
        left = {pid: start for pid, start in self._seen.items() if pid != self.leader_pid}
        # Whatever started in the job's group after our last look is ours too.
        for member in process_tree(self.leader_pid):
            if member.pid != self.leader_pid and member.pgrp == self.leader_pid:
                left.setdefault(member.pid, member.start)
        deadline = time.monotonic() + REAP_TIMEOUT_S
        while left:
            for pid, start in list(left.items()):
                p = read_proc(pid)
                if p is None or p.start != start:
                    left.pop(pid)  # gone (reaped by its parent), or the pid was reused
                    continue
                if p.state != "Z":
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                elif p.ppid == mine:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, os.WNOHANG)
                elif p.ppid != mine:
                    left.pop(pid)  # a zombie its own parent (or init) will reap
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        if left:
            log.warning(
                "%s: processes of the job still there after it ended: %s",
                self._job_id,
                ", ".join(map(str, sorted(left))),
                extra=self._extra,
            )
