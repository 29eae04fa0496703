"""The monitor's asyncio shell: MQTT in, the pure core in the middle, SQLite and alerts out.

One ``MqttLink`` (aiomqtt through the project's link adapter: reconnects, TCP backpressure, a
persistent session so nothing published while the monitor restarts is lost) subscribed to
``ion/v1/#``.  Named tasks in one TaskGroup:

- ``monitor-ingest``: every incoming message into ``MonitorCore.ingest`` (no awaits between
  messages other than the link's queue);
- ``monitor-flush``: every ``flush_interval_s``, or at once when ``max_batch`` messages are
  folded, ``core.take()`` and one SQLite transaction in the store's own thread (so decoding
  goes on while SQLite writes); alerts are published only once their rows are committed;
- ``monitor-tick``: liveness and alert expiry once a second;
- ``monitor-retention``: downsampling and dropping old rows;
- ``monitor-alerts``: publishes ``alert.fired`` / ``alert.resolved`` events (QoS 1), waiting
  for the link when it is down.

Exit (or cancellation) stops the tasks, commits what was folded, closes the link and the DB.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from ion import topics
from ion.config.broker import BrokerConfig
from ion.errors import UnavailableError
from ion.model.messages import new_envelope
from ion.wire.codec import encode
from node.link.base import LinkDown, LinkOptions, MqttLink

from .alerts import Alert, AlertBounds, alert_event
from .core import MonitorCore, Writes
from .retention import RetentionSettings, apply_retention
from .store import MonitorStore, counters_json

log = logging.getLogger(__name__)
T = TypeVar("T")
_MAX_PENDING_ALERTS = 10_000
_YIELD_EVERY = 200  # messages folded between two turns of the event loop


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    """Everything ``ion monitor`` is configured with (each field has a working default).

    flush_interval_s: longest wait before folded messages are committed (0.25 s).
    max_batch: messages folded before a commit is started at once (5,000).
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
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="monitor-db")
        self._wake = asyncio.Event()
        self._alerts_ready = asyncio.Event()
        self._pending_alerts: deque[Alert] = deque(maxlen=_MAX_PENDING_ALERTS)
        self._tasks: list[asyncio.Task[None]] = []
        self._folded = 0  # messages folded since the last commit started
        self.messages = 0  # MQTT messages taken from the link
        self.committed = 0  # of those, committed to the database
        self.alerts_published = 0
        self.first_received: float | None = None  # time.monotonic()
        self.last_committed: float | None = None
        self.committed_changed = asyncio.Condition()
        self.store: MonitorStore
        self.core: MonitorCore
        self.link: MqttLink

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        s = self.settings
        try:
            self.store = await self._db(MonitorStore, s.db_path)
            self._stack.callback(self._close_store)
            restored = await self._db(self.store.restore)
            self.core = MonitorCore(s.monitor_id, s.bounds, restored)
            await self._db(self.store.set_meta, {"monitor_id": s.monitor_id,
                                                 "started_ms": str(self._clock())})  # fmt: skip
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

    def _close_store(self) -> None:
        # Runs after the TaskGroup and the link are gone: commit what was folded, then close,
        # in the store's thread (a cancelled commit may still be running there).
        try:
            if hasattr(self, "core"):
                self._executor.submit(self._commit, self.core.take()).result()
                self.committed += self._folded
                self._folded = 0
        finally:
            self._executor.submit(self.store.close).result()
            self._executor.shutdown(wait=True)

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
        core, clock, max_batch = self.core, self._clock, self.settings.max_batch
        async for msg in self.link.messages():
            if self.first_received is None:
                self.first_received = time.monotonic()
            core.ingest(msg.topic, msg.payload, clock(), retained=msg.retain)
            self.messages += 1
            self._folded += 1
            if self._folded >= max_batch:
                self._wake.set()
                if self._folded >= 4 * max_batch:
                    await asyncio.sleep(0.001)  # let the commit catch up (bounded memory)
            if not self.messages % _YIELD_EVERY:
                # The link hands out a queued backlog without suspending: give the loop a turn
                # (socket reads, PUBACKs of our alerts, the link's watchdog, the flusher).
                await asyncio.sleep(0)

    async def _flusher(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that
            # arrives as its timeout expires, and this loop would then never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.flush_interval_s):
                    await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Commit everything folded so far (one transaction)."""
        folded, self._folded = self._folded, 0
        w = self.core.take()
        if w.row_count or folded:
            await self._db(self._commit, w)
        self.committed += folded
        if folded:
            self.last_committed = time.monotonic()
        async with self.committed_changed:
            self.committed_changed.notify_all()
        if w.alerts:
            self._pending_alerts.extend(w.alerts)
            self._alerts_ready.set()

    def _commit(self, w: Writes) -> None:
        w.upserts.setdefault("meta", {})[("counters_json",)] = {
            "key": "counters_json",
            "value": counters_json(dict(self.core.counters)) if hasattr(self, "core") else "{}",
        }
        self.store.apply(w)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick_interval_s)
            self.core.tick(self._clock())
            self._wake.set()

    async def _retention(self) -> None:
        while True:
            await self.run_retention()
            await asyncio.sleep(self.settings.retention_interval_s)

    async def run_retention(self) -> None:
        report = await self._db(apply_retention, self.store, self.settings.retention, self._clock())
        if report.folded or report.dropped:
            log.info("retention: %d rows folded into %d, %d dropped", report.folded,
                     report.written, report.dropped)  # fmt: skip

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

    # -- helpers ---------------------------------------------------------------------------------

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` in the store's one thread (SQLite work never blocks the event loop)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)


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
