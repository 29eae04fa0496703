"""End-to-end pacing of an outage's backlog by what receivers report handled.

A broker's PUBACK says the broker has a message, not that anyone processed it.  After an
outage the sender can push its backlog into the broker far faster than a receiver handles it;
the surplus then waits in the broker's queue and the receiver's socket, and every live message
sent meanwhile waits behind it.  Receivers therefore acknowledge what they handled
(``DeliveryAck``: stream, highest sequence, receiver) a few times a second, and per stream the
sender keeps the backlog that is sent but not confirmed under about ``target_delay_ms`` of the
slowest receiver's measured rate (never below ``min_items``): live traffic is never held, only
the backlog waits for receivers to catch up.  The rate is measured from the acknowledgements
themselves, so the bound follows the receiver: a fast machine drains fast, a loaded one is not
buried.

Receivers that never acknowledge (plain MQTT subscribers, older agents) do not pace anyone, and
a receiver whose acknowledgements stop (``ack_timeout_ms`` after its last one, or after the
link came back) stops pacing: a dead consumer must not stall the drain for the others.  Pure:
time is passed in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from node.outbox.classes import TrafficClass
from node.outbox.policy import ClassQueue

DEFAULT_TARGET_DELAY_MS = 250
DEFAULT_MIN_ITEMS = 1_000
DEFAULT_MIN_CHUNK = 200
"""Budget below which a stream's backlog waits for more rather than trickling out: a send
round costs about the same for 10 items as for 500 (one query, one batch)."""
DEFAULT_ACK_TIMEOUT_MS = 2_000
RATE_WINDOW_MS = 2_000
""""A receiver's rate is the best it showed over this long: what it handled while we were
holding back says less about what it can do than what it handled when it had enough."""


@dataclass
class _Receiver:
    sequence: int
    at_ms: int
    samples: deque[tuple[int, float]] = field(default_factory=deque)
    """(time, items per second between two acknowledgements), the last ``RATE_WINDOW_MS``."""

    @property
    def rate(self) -> float:
        return max((r for _, r in self.samples), default=0.0)


@dataclass
class _Stream:
    sent: int = 0
    receivers: dict[str, _Receiver] = field(default_factory=dict)


class ReceiverPacing:
    def __init__(
        self,
        target_delay_ms: int = DEFAULT_TARGET_DELAY_MS,
        min_items: int = DEFAULT_MIN_ITEMS,
        ack_timeout_ms: int = DEFAULT_ACK_TIMEOUT_MS,
        min_chunk: int = DEFAULT_MIN_CHUNK,
    ) -> None:
        self.min_chunk = min_chunk
        if min_items < 1:
            raise ValueError("min_items must be at least 1")
        if target_delay_ms < 1:
            raise ValueError("target_delay_ms must be at least 1")
        self.target_delay_ms = target_delay_ms
        self.min_items = min_items
        self.ack_timeout_ms = ack_timeout_ms
        self._streams: dict[str, _Stream] = {}
        self.held_rounds = 0
        """Send rounds in which only backlog was ready and all of it was held (a counter)."""

    def sent(self, stream: str, sequence: int) -> None:
        s = self._streams.get(stream)
        if s is None:
            s = self._streams[stream] = _Stream()
        s.sent = max(s.sent, sequence)

    def acked(self, receiver: str, stream: str, sequence: int, now_ms: int) -> None:
        s = self._streams.get(stream)
        if s is None:
            return  # not a stream we sent since start-up: nothing to pace
        r = s.receivers.get(receiver)
        if r is None:
            s.receivers[receiver] = _Receiver(sequence, now_ms)
            return
        if sequence < r.sequence:
            return  # reordered on the way
        elapsed = now_ms - r.at_ms
        if elapsed > 0 and sequence > r.sequence:
            r.samples.append((now_ms, (sequence - r.sequence) * 1000.0 / elapsed))
        while r.samples and r.samples[0][0] < now_ms - RATE_WINDOW_MS:
            r.samples.popleft()
        r.sequence, r.at_ms = sequence, now_ms

    def link_up(self, now_ms: int) -> None:
        """The link is back: every receiver known to acknowledge gets a fresh
        ``ack_timeout_ms`` to do so again.  Without this, acknowledgements older than the
        outage would count as silence, and the backlog would go out unpaced just when
        pacing matters most."""
        for s in self._streams.values():
            for r in s.receivers.values():
                r.at_ms = now_ms

    def _fresh(self, s: _Stream, now_ms: int) -> list[_Receiver]:
        horizon = now_ms - self.ack_timeout_ms
        return [r for r in s.receivers.values() if r.at_ms >= horizon]

    def stream_budget(self, stream: str, now_ms: int) -> int | None:
        """How many more backlog items of ``stream`` may go out now; None: nobody paces it."""
        s = self._streams.get(stream)
        if s is None:
            return None
        fresh = self._fresh(s, now_ms)
        if not fresh:
            return None
        slowest = min(fresh, key=lambda r: r.rate)
        bound = max(self.min_items, int(slowest.rate * self.target_delay_ms / 1000))
        unconfirmed = max(0, s.sent - min(r.sequence for r in fresh))
        budget = max(0, bound - unconfirmed)
        if unconfirmed and budget < min(self.min_chunk, bound):
            return 0  # wait for a worthwhile amount
        return budget

    def all_budgets(self, now_ms: int) -> dict[str, int]:
        """The budget of every paced stream (unpaced ones are left out)."""
        return self.budgets(self._streams, now_ms)

    def paced_budget(self, now_ms: int) -> int | None:
        """The budgets of all paced streams added up; None when nothing is paced."""
        budgets = self.all_budgets(now_ms)
        return sum(budgets.values()) if budgets else None

    def budgets(self, streams: Iterable[str], now_ms: int) -> dict[str, int]:
        """The budget of each paced stream among ``streams`` (unpaced ones are left out)."""
        out: dict[str, int] = {}
        for stream in streams:
            if stream not in out:
                budget = self.stream_budget(stream, now_ms)
                if budget is not None:
                    out[stream] = budget
        return out

    def unconfirmed(self, now_ms: int) -> int:
        """Items sent but not confirmed by the slowest fresh receiver, over all paced streams."""
        total = 0
        for s in self._streams.values():
            fresh = self._fresh(s, now_ms)
            if fresh:
                total += max(0, s.sent - min(r.sequence for r in fresh))
        return total


def trim_backlog(
    queues: Mapping[TrafficClass, ClassQueue], budgets: dict[str, int]
) -> tuple[dict[TrafficClass, ClassQueue], bool]:
    """The candidates with each paced stream's backlog cut to its budget in messages (live items
    are never cut; an agent's stream is its topic; a run that starts within the budget goes
    whole), and whether anything was held back.  ``budgets`` is used up as it goes."""
    trimmed: dict[TrafficClass, ClassQueue] = {}
    held = False
    for cls, queue in queues.items():
        backlog = []
        for p in queue.backlog:
            left = budgets.get(p.topic)
            if left is None:
                backlog.append(p)
            elif left > 0:
                backlog.append(p)
                budgets[p.topic] = left - p.items  # a run counts its messages
            else:
                held = True
        if backlog or queue.live:
            trimmed[cls] = ClassQueue(backlog, queue.live)
    return trimmed, held
