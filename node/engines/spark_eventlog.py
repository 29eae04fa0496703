"""Spark's event log, read as the driver writes it, into counters, without pyspark.

The driver (``spark.eventLog.enabled``, ``compress=false``, ``rolling.enabled=false``: the
engine forces these) appends one JSON object per line to ``<dir>/<app id>.inprogress`` and
renames the file to ``<dir>/<app id>`` when the application ends.  We keep a byte offset and
read what was appended since the last poll:

- the last line may be incomplete (the writer is mid-line, or its buffer was flushed in the
  middle of one): bytes after the last newline wait for the next poll;
- the rename keeps the inode and the contents, so the offset stays valid: each poll looks for
  the in-progress name first, then the final one;
- lines can be large (SQL plans run to hundreds of KB) and most are of no interest: the event
  name is read from the line's first bytes (Spark writes ``{"Event":"..."`` first) and only
  events we count are parsed; a line over ``MAX_LINE_BYTES`` is skipped unread;
- a line that is not JSON is counted and skipped: it comes from another process and must never
  crash the agent.

``EventLogStats`` is the pure fold (events in, counters out); ``EventLogTail`` is the file side.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

INPROGRESS_SUFFIX = ".inprogress"
MAX_LINE_BYTES = 32 << 20
"""Longer lines are skipped (no event we count comes near this; a huge plan might)."""
READ_CHUNK_BYTES = 1 << 20

_EVENT_NAME = re.compile(rb'^\s*\{\s*"Event"\s*:\s*"([^"\\]{1,200})"')
_COUNTED = frozenset(
    {
        "SparkListenerApplicationStart",
        "SparkListenerApplicationEnd",
        "SparkListenerJobStart",
        "SparkListenerJobEnd",
        "SparkListenerStageSubmitted",
        "SparkListenerStageCompleted",
        "SparkListenerTaskEnd",
        "SparkListenerExecutorAdded",
        "SparkListenerExecutorRemoved",
    }
)

# Task metrics summed over every finished task: (stat name, path in "Task Metrics", scale).
_TASK_METRICS: tuple[tuple[str, tuple[str, ...], float], ...] = (
    ("spark.records.read", ("Input Metrics", "Records Read"), 1.0),
    ("spark.bytes.read", ("Input Metrics", "Bytes Read"), 1.0),
    ("spark.records.written", ("Output Metrics", "Records Written"), 1.0),
    ("spark.bytes.written", ("Output Metrics", "Bytes Written"), 1.0),
    ("spark.shuffle.records_read", ("Shuffle Read Metrics", "Total Records Read"), 1.0),
    ("spark.shuffle.bytes_read", ("Shuffle Read Metrics", "Remote Bytes Read"), 1.0),
    ("spark.shuffle.bytes_read", ("Shuffle Read Metrics", "Local Bytes Read"), 1.0),
    ("spark.shuffle.records_written", ("Shuffle Write Metrics", "Shuffle Records Written"), 1.0),
    ("spark.shuffle.bytes_written", ("Shuffle Write Metrics", "Shuffle Bytes Written"), 1.0),
    ("spark.executor.run_time_s", ("Executor Run Time",), 1e-3),  # milliseconds
    ("spark.executor.cpu_time_s", ("Executor CPU Time",), 1e-9),  # nanoseconds
    ("spark.executor.gc_time_s", ("JVM GC Time",), 1e-3),
    ("spark.spilled.memory_bytes", ("Memory Bytes Spilled",), 1.0),
    ("spark.spilled.disk_bytes", ("Disk Bytes Spilled",), 1.0),
)

STAT_NAMES: tuple[str, ...] = (
    "spark.jobs.started",
    "spark.jobs.succeeded",
    "spark.jobs.failed",
    "spark.jobs.active",
    "spark.stages.submitted",
    "spark.stages.completed",
    "spark.stages.failed",
    "spark.tasks.completed",
    "spark.tasks.failed",
    "spark.tasks.killed",
    "spark.executors.added",
    "spark.executors.active",
    *dict.fromkeys(name for name, _, _ in _TASK_METRICS),
)
"""Every value ``EventLogStats.values`` reports (all of them, from the first event on)."""


def event_name(line: bytes) -> str | None:
    """The ``Event`` of a line, read from its first bytes (None: not Spark's usual layout)."""
    match = _EVENT_NAME.match(line[:256])
    return match.group(1).decode("ascii", "replace") if match else None


@dataclass
class EventLogStats:
    """Counters folded from event-log events.  Pure: ``feed`` events, read ``values()``."""

    app_id: str = ""
    app_name: str = ""
    app_ended: bool = False
    last_event_ms: int = 0
    """The newest timestamp seen in an event (0: none carried one yet)."""
    bad_lines: int = 0
    counts: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAT_NAMES, 0.0))
    _executors: set[str] = field(default_factory=set)
    _open_jobs: set[int] = field(default_factory=set)

    def feed_line(self, line: bytes) -> None:
        """One line of the log (without its newline); lines we do not count are not parsed."""
        if not line.strip():
            return
        name = event_name(line)
        if name is not None and name not in _COUNTED:
            return
        try:
            event = json.loads(line)
        except ValueError:
            self.bad_lines += 1
            return
        if isinstance(event, dict):
            self.feed(event)
        else:
            self.bad_lines += 1

    def feed(self, event: Mapping[str, Any]) -> None:
        """One parsed event.  Unknown events and missing fields are ignored."""
        name = event.get("Event")
        c = self.counts
        for key in ("Timestamp", "Completion Time", "Submission Time"):
            stamp = event.get(key)
            if isinstance(stamp, int) and stamp > self.last_event_ms:
                self.last_event_ms = stamp
        if name == "SparkListenerApplicationStart":
            self.app_id = str(event.get("App ID", ""))
            self.app_name = str(event.get("App Name", ""))
        elif name == "SparkListenerApplicationEnd":
            self.app_ended = True
        elif name == "SparkListenerJobStart":
            c["spark.jobs.started"] += 1
            self._open_jobs.add(_int(event.get("Job ID")))
        elif name == "SparkListenerJobEnd":
            result = _get(event, "Job Result", "Result")
            c["spark.jobs.succeeded" if result == "JobSucceeded" else "spark.jobs.failed"] += 1
            self._open_jobs.discard(_int(event.get("Job ID")))
        elif name == "SparkListenerStageSubmitted":
            c["spark.stages.submitted"] += 1
        elif name == "SparkListenerStageCompleted":
            failed = _get(event, "Stage Info", "Failure Reason") is not None
            c["spark.stages.failed" if failed else "spark.stages.completed"] += 1
        elif name == "SparkListenerTaskEnd":
            self._task_end(event)
        elif name == "SparkListenerExecutorAdded":
            c["spark.executors.added"] += 1
            self._executors.add(str(event.get("Executor ID")))
        elif name == "SparkListenerExecutorRemoved":
            self._executors.discard(str(event.get("Executor ID")))
        c["spark.jobs.active"] = float(len(self._open_jobs))
        c["spark.executors.active"] = float(len(self._executors))

    def _task_end(self, event: Mapping[str, Any]) -> None:
        c = self.counts
        reason = _get(event, "Task End Reason", "Reason")
        if reason == "Success":
            c["spark.tasks.completed"] += 1
        elif reason == "TaskKilled" or _get(event, "Task Info", "Killed") is True:
            c["spark.tasks.killed"] += 1
        else:
            c["spark.tasks.failed"] += 1
        metrics = event.get("Task Metrics")
        if not isinstance(metrics, Mapping):
            return
        for stat, path, scale in _TASK_METRICS:
            value = _get(metrics, *path)
            if isinstance(value, int | float) and not isinstance(value, bool):
                c[stat] += value * scale

    def values(self) -> dict[str, float]:
        return dict(self.counts)


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _int(value: Any) -> int:
    return value if isinstance(value, int) else -1


@dataclass
class LineSplitter:
    """Bytes in, complete lines out; keeps the unfinished last line for the next ``feed``."""

    max_line_bytes: int = MAX_LINE_BYTES
    skipped: int = 0
    """Lines dropped for being longer than ``max_line_bytes``."""
    _pending: bytearray = field(default_factory=bytearray)
    _skipping: bool = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            if self._skipping:
                self._skipping = False
            elif self._pending:
                self._pending += data[start:end]
                yield bytes(self._pending)
                self._pending.clear()
            else:
                yield data[start:end]
            start = end + 1
        rest = data[start:]
        if self._skipping or not rest:
            return
        if len(self._pending) + len(rest) > self.max_line_bytes:
            self.skipped += 1
            self._skipping = True  # drop the rest of this line as it arrives
            self._pending.clear()
        else:
            self._pending += rest

    @property
    def pending_bytes(self) -> int:
        return len(self._pending)


class EventLogTail:
    """Follows one application's event log in ``directory`` (blocking I/O: call from a
    thread).  ``app_id`` may be learnt later (``follow``); until then nothing is read."""

    def __init__(self, directory: Path, app_id: str = "") -> None:
        self.directory = directory
        self.app_id = app_id
        self.offset = 0
        self.stats = EventLogStats()
        self._lines = LineSplitter()
        self._read_errors = 0

    def follow(self, app_id: str) -> None:
        """Start following ``app_id``'s log (a new app id starts over)."""
        if app_id and app_id != self.app_id:
            self.app_id = app_id
            self.offset = 0
            self.stats = EventLogStats()
            self._lines = LineSplitter()

    def path(self) -> Path | None:
        """The log's current file: in progress, else final; None while neither exists."""
        if not self.app_id or "/" in self.app_id or self.app_id.startswith("."):
            return None
        for name in (self.app_id + INPROGRESS_SUFFIX, self.app_id):
            candidate = self.directory / name
            if candidate.is_file():
                return candidate
        return None

    @property
    def finished(self) -> bool:
        """The driver renamed the log (it wrote its last event) and we read all of it."""
        path = self.path()
        if path is None or path.name.endswith(INPROGRESS_SUFFIX):
            return False
        try:
            return path.stat().st_size <= self.offset
        except OSError:
            return False

    def poll(self, budget_bytes: int | None = None) -> int:
        """Read what was appended (at most ``budget_bytes``); the number of bytes read."""
        path = self.path()
        if path is None:
            return 0
        read = 0
        try:
            with path.open("rb") as f:
                size = f.seek(0, 2)
                if size < self.offset:  # replaced by another file of the same name: restart
                    log.warning("event log %s shrank; reading it again from the start", path)
                    app_id, self.app_id = self.app_id, ""
                    self.follow(app_id)
                f.seek(self.offset)
                while budget_bytes is None or read < budget_bytes:
                    want = READ_CHUNK_BYTES
                    if budget_bytes is not None:
                        want = min(want, budget_bytes - read)
                    chunk = f.read(want)
                    if not chunk:
                        break
                    read += len(chunk)
                    self.offset += len(chunk)
                    for line in self._lines.feed(chunk):
                        self.stats.feed_line(line)
        except OSError as e:  # renamed between path() and open(), or unreadable: next poll
            self._read_errors += 1
            if self._read_errors == 1:
                log.info("cannot read event log %s (will retry): %s", path, e)
        return read

    def values(self) -> dict[str, float]:
        return self.stats.values()


def newest_log(directory: Path, since_ns: int) -> str | None:
    """The app id of the newest event log in ``directory`` modified after ``since_ns``
    (a fallback for when the driver could not say which application is its own)."""
    best: tuple[int, str] | None = None
    try:
        entries = list(directory.iterdir())
    except OSError:
        return None
    for entry in entries:
        name = entry.name
        if name.startswith(".") or name.endswith(".crc"):
            continue
        try:
            mtime = entry.stat().st_mtime_ns
        except OSError:
            continue
        if mtime >= since_ns and (best is None or mtime > best[0]):
            best = (mtime, name.removesuffix(INPROGRESS_SUFFIX))
    return best[1] if best else None
