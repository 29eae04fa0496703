"""The outbox pump: from the SQLite outbox to the broker, at least once, pipelined.

Decide, then do I/O: the pure ``SendScheduler`` picks what goes next across traffic classes
(weighted, live traffic interleaved with an outage's backlog); this loop marks those rows in
flight, publishes them without awaiting one at a time (up to ``window`` unacknowledged), and
deletes a row only after the broker's PUBACK.  A publish that fails because the link dropped
puts its rows back in the queue.  Acks and releases are collected and written in one
transaction per round, so the SQLite cost is per batch, not per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from math import ceil

from ion import topics
from ion.model.messages import new_message_id
from ion.wire.batch import batch_around, batch_inner
from node.link.base import LinkDown, LinkState, MqttLink
from node.outbox.pacing import ReceiverPacing, trim_backlog
from node.outbox.policy import SendScheduler
from node.outbox.store import OutboxStore

log = logging.getLogger(__name__)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _retained(topic: str) -> bool:
    """Whether ``topic`` carries the latest state of something (then it is sent retained)."""
    try:
        return topics.is_retained(topics.parse(topic))
    except topics.TopicError:
        return False


class Sender:
    def __init__(
        self,
        *,
        store: OutboxStore,
        link: MqttLink,
        node_id: str,
        window: int,
        task_group: asyncio.TaskGroup,
        clock: Callable[[], int] = wall_ms,
        pacing: ReceiverPacing | None = None,
    ) -> None:
        self.pacing = pacing or ReceiverPacing()
        self._store = store
        self._link = link
        self._node_id = node_id
        self._window = window
        self._tg = task_group
        self._clock = clock
        self._scheduler = SendScheduler(store.config)
        self._wake = asyncio.Event()
        self._in_flight = 0
        self._acked: list[int] = []
        self._released: list[int] = []
        self._connects = -1
        self._down_newest: int | None = None  # the newest id stored while the link was down
        self._items_per_row = 1.0  # messages per backlog row lately (runs hold several)
        self.published = 0  # MQTT messages acknowledged
        self.items_acked = 0  # outbox items acknowledged (a batch holds many)

    def wake(self) -> None:
        """Something changed (new items, a finished publish, a link state): look again."""
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def idle(self) -> bool:
        return self._in_flight == 0 and not self._acked and not self._released

    async def run(self) -> None:
        while True:
            if self._link.state is not LinkState.CONNECTED:
                self._flush_results()
                # What is stored while the link is down is backlog.  Noted on every wake (each
                # enqueue wakes us), so that what is stored once the link is back counts as
                # live even if it is stored before this loop notices the reconnection.
                self._down_newest = self._store.newest_id()
                await self._wait_for_link()
                continue
            # One commit per round: the acks that came in and the next sends marked in flight.
            with self._store.transaction():
                self._flush_results()
                connects = self._link.status.connects
                if connects != self._connects:
                    # The link (re)connected: what was queued is backlog, what comes next live.
                    self._connects = connects
                    backlog_until, self._down_newest = self._down_newest, None
                    if backlog_until is None:  # back before we saw it go
                        backlog_until = self._store.newest_id()
                    self._scheduler.link_up(backlog_until)
                    self.pacing.link_up(self._clock())
                free = self._window - self._in_flight
                sent = self._send_round(free) if free > 0 else 0
            if sent == 0:
                self._wake.clear()
                if not (self._acked or self._released):
                    await self._wait(1.0)
            else:
                await asyncio.sleep(0)  # let acknowledgements in before the next round

    def _send_round(self, free: int) -> int:
        limit = self._scheduler.candidate_limit(free)
        now = self._clock()
        # Only an outage's backlog is paced; with no outage behind us everything is FIFO.
        budgets = self.pacing.all_budgets(now) if self._scheduler.live_after_id is not None else {}
        backlog_limit = None
        if budgets:
            # Reading tens of thousands of candidates to send a paced few costs more than the
            # sending: read about what the budgets allow (in rows: a run holds many messages),
            # plus room for live traffic.
            allowed = sum(budgets.values())
            limit = min(limit, allowed + self._window)
            backlog_limit = min(limit, ceil(allowed / self._items_per_row) + 1)
        queues = self._store.candidates(
            self._scheduler.live_after_id, limit, backlog_limit=backlog_limit
        )
        if not queues:
            return 0
        held = False
        if budgets:
            backlog = [p for q in queues.values() for p in q.backlog]
            if len(backlog) > 1:  # what the next paced round may expect a row to hold
                self._items_per_row = max(1.0, sum(p.items for p in backlog) / len(backlog))
            # Receivers acknowledge what they handle: send no more of a stream's backlog
            # than keeps them within the bound, so what is live now does not queue behind it
            # at their end (see node.outbox.pacing).
            queues, held = trim_backlog(queues, budgets)
            if not queues:
                self.pacing.held_rounds += 1
                return 0
        plan = self._scheduler.next_sends(queues, free, now, backlog_held=held)
        if plan.expired:
            self._store.expire(list(plan.expired))
        if not plan.sends:
            return 0
        taken = self._store.take([i for s in plan.sends for i in s.ids])
        count = 0
        for send in plan.sends:
            ids = [i for i in send.ids if i in taken]
            if not ids:
                continue
            last = taken[ids[-1]]
            if last[2]:
                self.pacing.sent(last[1], last[2])
            rows = [taken[i] for i in ids]
            payload = self._payload(rows, now)
            self._in_flight += 1
            count += 1
            self._tg.create_task(
                self._publish(send.topic, payload, ids, sum(r[3] for r in rows)),
                name=f"publish {send.topic}",
            )
        return count

    def _payload(self, rows: list[tuple[bytes, str, int, int]], now: int) -> bytes:
        """One MQTT payload for ``rows`` (payload, stream, sequence, items)."""
        return mqtt_payload([(r[0], r[3]) for r in rows], source_node=self._node_id, now_ms=now)

    async def _publish(self, topic: str, payload: bytes, ids: list[int], items: int) -> None:
        try:
            await self._link.publish(topic, payload, qos=1, retain=_retained(topic))
        except LinkDown:
            self._released.extend(ids)
        except Exception:
            # A refusal (ACL, oversized): keep the rows and let the link's state say why.
            log.exception("publish to %s failed; the items stay queued", topic)
            self._released.extend(ids)
        else:
            self._acked.extend(ids)
            self.published += 1
            self.items_acked += items
        finally:
            self._in_flight -= 1
            self._wake.set()

    def _flush_results(self) -> None:
        if self._acked:
            acked, self._acked = self._acked, []
            self._store.ack(acked)
        if self._released:
            released, self._released = self._released, []
            self._store.release(released)

    async def _wait_for_link(self) -> None:
        self._wake.clear()
        if self._link.state in (LinkState.FAILED, LinkState.CLOSED):
            await self._wait(1.0)
            return
        waiter = asyncio.ensure_future(self._link.wait_connected())
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({waiter, woken}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in (waiter, woken):
                fut.cancel()
            await asyncio.gather(waiter, woken, return_exceptions=True)

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            # Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that arrives
            # in the same loop turn as the wake-up, and the sender task would never end.
            async with asyncio.timeout(seconds):
                await self._wake.wait()


def mqtt_payload(stored: Sequence[tuple[bytes, int]], *, source_node: str, now_ms: int) -> bytes:
    """One MQTT payload for stored outbox payloads ``(payload, items)``: a lone envelope as it
    was stored, else a new batch around them (a run, ``items`` > 1, is stored framed as a
    batch's inside already).  For sending and for answering retransmit requests alike."""
    if len(stored) == 1 and stored[0][1] == 1:
        return stored[0][0]
    inner = b"".join(p if n > 1 else batch_inner((p,)) for p, n in stored)
    return batch_around(inner, message_id=new_message_id(), source_node=source_node,
                        now_ms=now_ms)  # fmt: skip
