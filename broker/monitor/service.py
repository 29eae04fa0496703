"""The monitor's asyncio shell: MQTT in, the writer process in the middle, alerts out.

One ``MqttLink`` (aiomqtt through the project's link adapter: reconnects, TCP backpressure, a
persistent session so nothing published while the monitor restarts is lost) subscribed to
``ion/v1/#``, and one child process, the writer (``writer.py``: decode, the pure core, the
SQLite store), which gets every message in chunks in the order they arrived, stamped with
the monitor's clock.  Two processes, because the link and the fold together need more than one
core at 10,000 messages/s (docs/benchmarks.md).  Named tasks in one TaskGroup:

- ``monitor-ingest``: messages from the link into chunks of ``_CHUNK`` for the writer (the pipe
  and then the link's queue push back when the writer is behind);
- ``monitor-flush``: every ``flush_interval_s``, the chunk begun and a commit request;
- ``monitor-tick``: liveness and alert expiry once a second (with the monitor's clock);
- ``monitor-retention``: downsampling and dropping old rows;
- ``monitor-reports``: the writer's reports (commits, with their alert transitions), and its
  end, which ends the monitor with ``StoreError``;
- ``monitor-alerts``: publishes ``alert.fired`` / ``alert.resolved`` events (QoS 1) once their
  rows are committed, waiting for the link when it is down.

Exit (or cancellation) stops the tasks and closes the link, then ends the writer's input: it
commits what it has, closes the database and exits (killed after a grace period if not).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ion import topics
from ion.config.broker import BrokerConfig
from ion.errors import UnavailableError
from ion.model.messages import new_envelope
from ion.wire.codec import encode
from node.link.base import LinkDown, LinkOptions, MqttLink

from .alerts import Alert, AlertBounds, alert_event
from .handover import Committed, Failed, Fold, WriterConfig
from .retention import RetentionSettings
from .store import StoreError
from .writer_process import WriterGoneError, WriterProcess

log = logging.getLogger(__name__)
_MAX_PENDING_ALERTS = 10_000
_CHUNK = 256  # messages per frame to the writer


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    """Everything ``ion monitor`` is configured with (each field has a working default).

    flush_interval_s: longest wait before folded messages are committed (0.25 s).
    max_batch: messages folded before a commit is made at once (5,000).
    tick_interval_s: how often liveness and alert expiry are checked (1 s).
    retention_interval_s: how often old time series are downsampled and dropped (60 s).
    """

    broker: BrokerConfig = field(default_factory=BrokerConfig)
    db_path: Path = Path("monitor.db")
    monitor_id: str = "monitor"
    bounds: AlertBounds = field(default_factory=AlertBounds)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    flush_interval_s: float = 0.25
    max_batch: int = 5_000
    tick_interval_s: float = 1.0
    retention_interval_s: float = 60.0

    def __post_init__(self) -> None:
        topics.monitor_alerts(self.monitor_id)  # refuses an id that cannot be a topic level
        if self.flush_interval_s <= 0 or self.tick_interval_s <= 0:
            raise ValueError("monitor intervals must be positive")
        if self.max_batch < 1:
            raise ValueError("max_batch must be at least 1")


LinkFactory = Callable[..., MqttLink]


def _aiomqtt_link(**kwargs: Any) -> MqttLink:
    from node.link.aiomqtt_link import AiomqttLink

    return AiomqttLink(**kwargs)


class Monitor:
    """``async with Monitor(settings) as m:`` subscribes and folds until the block exits."""

    def __init__(
        self,
        settings: MonitorSettings,
        *,
        link_factory: LinkFactory = _aiomqtt_link,
        clock: Callable[[], int] = wall_ms,
    ) -> None:
        self.settings = settings
        self._link_factory = link_factory
        self._clock = clock
        self._stack = AsyncExitStack()
        self._alerts_ready = asyncio.Event()
        self._pending_alerts: deque[Alert] = deque(maxlen=_MAX_PENDING_ALERTS)
        self._tasks: list[asyncio.Task[None]] = []
        self._chunk: list[Fold] = []
        self._flush_sent = 0  # the last flush request sent to the writer
        self._flushed = 0  # the last one it answered
        self._writer_gone: StoreError | None = None
        self.messages = 0  # MQTT messages taken from the link
        self.committed = 0  # of those, committed to the database
        self.counters: dict[str, int] = {}  # the fold's counters, as of the last commit
        self.alerts_published = 0
        self.first_received: float | None = None  # time.monotonic()
        self.last_committed: float | None = None
        self.committed_changed = asyncio.Condition()
        self.writer: WriterProcess
        self.link: MqttLink

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        s = self.settings
        try:
            self.writer = await WriterProcess.start(WriterConfig(
                db_path=s.db_path, monitor_id=s.monitor_id, bounds=s.bounds,
                retention=s.retention, max_batch=s.max_batch, started_ms=self._clock(),
                log_level=logging.getLogger().getEffectiveLevel(),
            ))  # fmt: skip
            self._stack.push_async_callback(self._stop_writer)
            self.link = self._link_factory(
                broker=s.broker,
                client_id=f"ion-monitor-{s.monitor_id}",
                subscriptions=[(topics.EVERYTHING, 1)],
                options=LinkOptions(persistent_session=True, incoming_queue=50_000),
            )
            await self._stack.enter_async_context(self.link)
            tg = await self._stack.enter_async_context(asyncio.TaskGroup())
            for name, coro in (
                ("monitor-ingest", self._ingest()),
                ("monitor-flush", self._flusher()),
                ("monitor-tick", self._ticker()),
                ("monitor-retention", self._retention()),
                ("monitor-reports", self._reports()),
                ("monitor-alerts", self._publisher()),
            ):
                self._tasks.append(tg.create_task(coro, name=name))
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        await self._stack.__aexit__(exc_type, exc, tb)

    async def _stop_writer(self) -> None:
        # Runs after the TaskGroup and the link are gone: hand over the chunk begun, then the
        # writer commits everything and exits.
        with contextlib.suppress(WriterGoneError):
            self._ship()
        failed = await self.writer.stop(self._on_report)
        self._writer_gone = self._writer_gone or WriterGoneError("the monitor has stopped")
        if isinstance(failed, Failed):
            raise StoreError(failed.message)

    async def wait_connected(self, timeout: float) -> None:  # noqa: ASYNC109 - one clear error
        """Wait for the broker; ``UnavailableError`` after ``timeout`` seconds, the link's
        ``LinkRefusedError`` at once when the broker refuses us."""
        try:
            async with asyncio.timeout(timeout):
                await self.link.wait_connected()
        except TimeoutError:
            reason = self.link.status.reason or "no answer"
            raise UnavailableError(
                f"broker {self.settings.broker.url} is unreachable after {timeout:g} s: {reason}"
            ) from None

    # -- tasks -----------------------------------------------------------------------------------

    async def _ingest(self) -> None:
        clock = self._clock
        async for msg in self.link.messages():
            if self.first_received is None:
                self.first_received = time.monotonic()
            self._chunk.append((msg.topic, msg.payload, msg.retain, clock()))
            self.messages += 1
            if len(self._chunk) >= _CHUNK:
                self._ship()
                await self.writer.drain()  # the writer is behind: wait (the link queues)
                # The link hands out a queued backlog without suspending: give the loop a turn
                # (socket reads, PUBACKs of our alerts, the link's watchdog, the flusher).
                await asyncio.sleep(0)

    def _ship(self) -> None:
        if self._chunk:
            chunk, self._chunk = self._chunk, []
            self.writer.send(("m", chunk))

    def _request_flush(self) -> int:
        """Hand over the chunk begun and ask for a commit; returns the request's id."""
        self._ship()
        self._flush_sent += 1
        self.writer.send(("f", self._flush_sent))
        return self._flush_sent

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flush_interval_s)
            if self._flushed == self._flush_sent:  # (a writer behind has one to answer)
                self._request_flush()
                await self.writer.drain()

    async def flush(self) -> None:
        """Commit everything taken from the link so far (one transaction) and wait for it."""
        wanted = self._request_flush()
        await self.writer.drain()
        async with self.committed_changed:
            await self.committed_changed.wait_for(
                lambda: self._flushed >= wanted or self._writer_gone is not None
            )
        if self._flushed < wanted and self._writer_gone is not None:
            raise self._writer_gone

    async def _reports(self) -> None:
        last: object | None = None
        while (report := await self.writer.next_report()) is not None:
            last = report
            if isinstance(report, Committed):
                self._on_report(report)
                async with self.committed_changed:
                    self.committed_changed.notify_all()
            elif isinstance(report, Failed):
                break
        self._writer_gone = await self.writer.failure(last)
        async with self.committed_changed:
            self.committed_changed.notify_all()
        raise self._writer_gone

    def _on_report(self, r: Committed) -> None:
        if r.messages > self.committed:
            self.committed = r.messages
            self.last_committed = time.monotonic()
        self._flushed = max(self._flushed, r.flush_id)
        self.counters = r.counters
        if r.alerts:
            self._pending_alerts.extend(r.alerts)
            self._alerts_ready.set()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick_interval_s)
            self.writer.send(("t", self._clock()))
            if self._flushed == self._flush_sent:
                self._request_flush()  # alerts the tick raised go out now
            await self.writer.drain()

    async def _retention(self) -> None:
        while True:
            await self.run_retention()
            await asyncio.sleep(self.settings.retention_interval_s)

    async def run_retention(self) -> None:
        """Ask the writer for a retention pass (it logs what it folded and dropped)."""
        self.writer.send(("r", self._clock()))
        await self.writer.drain()

    async def _publisher(self) -> None:
        topic = topics.monitor_alerts(self.settings.monitor_id)
        while True:
            await self._alerts_ready.wait()
            self._alerts_ready.clear()
            while self._pending_alerts:
                alert = self._pending_alerts[0]
                body = alert_event(alert, self.settings.monitor_id)
                envelope = new_envelope(
                    body, source_node=self.settings.monitor_id, now_ms=self._clock(), ion=alert.ion
                )
                payload = encode(envelope)
                try:
                    await self.link.publish(topic, payload, qos=1)
                except LinkDown:
                    await self.link.wait_connected()
                    continue
                self._pending_alerts.popleft()
                self.alerts_published += 1


async def run_until_cancelled(
    settings: MonitorSettings,
    *,
    connect_timeout_s: float,
    started: Callable[[Monitor], None] | None = None,
    extra: Callable[[Monitor], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """Run a monitor (and ``extra``, e.g. the dashboard, in the same loop) until cancelled."""
    async with Monitor(settings) as monitor:
        await monitor.wait_connected(connect_timeout_s)
        if started is not None:
            started(monitor)
        if extra is None:
            await asyncio.Event().wait()
        else:
            await extra(monitor)
            await asyncio.Event().wait()
