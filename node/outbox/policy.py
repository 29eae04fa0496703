"""The outbox's decisions, as plain synchronous code: admission, expiry and the send schedule.

No I/O here.  ``node.outbox.store`` gathers the facts (usage per class, the oldest queued items,
the next candidates to send), calls these functions, and carries out what they return.

Admission (``plan_enqueue``)
    Each item of a batch, in order, against the running usage of its class (queued plus in
    flight, including earlier items of the same batch).  An item larger than its class's
    ``max_bytes`` or already expired is rejected.  If it does not fit: ``reject`` refuses it;
    ``drop_oldest`` evicts the oldest *queued* items (stored ones first, then earlier items of
    the same batch, which are then reported as ``DISPLACED``); ``compact`` first evicts the
    oldest queued items with the same compaction key, then falls back to the oldest.  Items in
    flight are never evicted: they are on their way and will be acked.  If nothing evictable is
    left the item is refused as ``FULL`` and nothing is evicted for it.  The store hands the
    stored candidates in eviction order: lowest priority within the class first, oldest first.

Expiry
    An item expires at ``expires_ms`` (given, or ``created_ms`` + the class ``ttl_ms``).  It is
    never sent once ``expires_ms <= now``; items already in flight are left to finish.

Sending (``SendScheduler``)
    Deficit round robin across classes, in units of one MQTT message (an in-flight slot): each
    class with something queued gets ``priority`` slots per round, higher priorities first.
    A round is at most the sum of priorities long, so every class is served at least once per
    round: none starves.  Inside a class, items wait in two segments: *backlog* (ids up to the
    newest id when the link last came back) and *live* (everything enqueued since).  While both
    are non-empty, ``live_share`` of the class's slots go to the live segment, kept as a credit
    across calls so the share is exact over time even when a call hands out one slot.  Each
    segment is served in (priority within class, id) order: FIFO.  We deliberately serve live
    items oldest-first, not newest-first: newest-first would reorder each stream and could leave
    older live items behind forever, while FIFO over the live segment keeps a live item's wait
    bounded whenever live traffic is below its share of the drain rate.
    When a class has more queued than free slots (a backlog), small items (<
    ``batch_item_max_bytes``) that share a topic group are handed out together, up to
    ``batch_max_items`` / ``batch_max_bytes``, for the caller to pack into one MQTT message;
    when idle, items go one by one for the lowest latency.  Items of one topic group keep their
    order: a batch never skips an item of its own group.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from ion.errors import InputError
from node.outbox.classes import ClassConfig, OutboxConfig, TrafficClass

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutboundItem:
    """One message to send.  ``payload`` is opaque (an encoded envelope, usually).

    ``stream``/``sequence`` repeat what the caller embedded in the payload so that sent items can
    be found again for a retransmit request; ``sequence`` 0 means "not sequenced".
    ``compaction_key`` names what a newer item supersedes (e.g. ``stats/<pipeline>``).

    ``items`` > 1: the payload is a run of that many envelopes of ``stream``, framed as the
    inside of a batch (``ion.wire.batch.batch_inner``), numbered ``sequence - items + 1`` to
    ``sequence``.  Such a run (``Agent.publish_many``, and the agent's group commit) is
    stored, sent, retained, evicted and expired as one item; ``max_items``, usage and
    counters count its messages.
    """

    topic: str
    payload: bytes
    traffic_class: TrafficClass
    created_ms: int
    priority: int = 0
    expires_ms: int | None = None
    stream: str = ""
    sequence: int = 0
    compaction_key: str | None = None
    items: int = 1
    size: int = field(init=False, repr=False, compare=False)  # counted against max_bytes

    def __post_init__(self) -> None:
        if not self.topic or "+" in self.topic or "#" in self.topic or "\0" in self.topic:
            raise InputError(f"outbox item: invalid topic {self.topic!r}")
        if not isinstance(self.payload, bytes):
            raise InputError("outbox item: payload must be bytes")
        if self.sequence < 0 or (self.sequence > 0 and not self.stream):
            raise InputError("outbox item: a sequence needs a stream, and is >= 0")
        if self.created_ms < 0:
            raise InputError("outbox item: created_ms must be >= 0")
        if self.items != 1 and not 1 < self.items <= self.sequence:
            raise InputError("outbox item: a run of items needs that many sequence numbers")
        object.__setattr__(self, "size", len(self.payload) + len(self.topic.encode()))


class RejectReason(enum.Enum):
    FULL = "full"  # class full and its rule is reject, or nothing evictable is left
    TOO_LARGE = "too_large"  # larger than the class's max_bytes
    EXPIRED = "expired"  # expires_ms already passed
    DISK_FULL = "disk_full"  # SQLite could not grow the database
    DISPLACED = "displaced"  # admitted, then pushed out by a later item of the same batch
    COMPACTED = "compacted"  # superseded by a later item of the same batch with the same key


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: RejectReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ClassUsage:
    """What a class holds on disk: queued and in flight (``items`` counts messages)."""

    items: int = 0
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class Resident:
    """A stored, queued (so evictable) item: just what eviction needs."""

    id: int
    size: int
    items: int = 1  # messages (a run holds several)


@dataclass(frozen=True, slots=True)
class EvictionNeed:
    """An upper bound on what a batch may have to evict from one class's stored items."""

    items: int
    bytes: int
    keys: Mapping[str, int] = field(default_factory=dict)  # compaction key -> at most this many


@dataclass(frozen=True, slots=True)
class Admit:
    """Store the item; first delete ``evicts`` (stored ids).  ``replaces``: the stored item
    with the same compaction key that this one supersedes, if any."""

    expires_ms: int | None
    evicts: tuple[int, ...] = ()
    replaces: int | None = None


@dataclass(frozen=True, slots=True)
class EnqueuePlan:
    outcomes: tuple[Admit | Rejected, ...]
    # Every stored id to delete, including those evicted for an item later displaced itself.
    evicted: tuple[int, ...]
    usage: Mapping[TrafficClass, ClassUsage]  # after the plan is carried out
    counts: Mapping[tuple[TrafficClass, str], int]  # enqueued / rejected / dropped / compacted


def expiry_of(item: OutboundItem, config: OutboxConfig) -> int | None:
    if item.expires_ms is not None:
        return item.expires_ms
    ttl = config.of(item.traffic_class).ttl_ms
    return None if ttl is None else item.created_ms + ttl


def is_expired(expires_ms: int | None, now_ms: int) -> bool:
    return expires_ms is not None and expires_ms <= now_ms


def eviction_need(
    usage: Mapping[TrafficClass, ClassUsage],
    items: Sequence[OutboundItem],
    config: OutboxConfig,
) -> dict[TrafficClass, EvictionNeed]:
    """Which classes may need evictions for this batch, and at most how much."""
    incoming: dict[TrafficClass, list[OutboundItem]] = {}
    for item in items:
        incoming.setdefault(item.traffic_class, []).append(item)
    needs: dict[TrafficClass, EvictionNeed] = {}
    for cls, batch in incoming.items():
        cfg = config.of(cls)
        if cfg.on_full == "reject":
            continue
        now = usage.get(cls, ClassUsage())
        over_items = now.items + sum(i.items for i in batch) - cfg.max_items
        over_bytes = now.bytes + sum(i.size for i in batch) - cfg.max_bytes
        if over_items <= 0 and over_bytes <= 0:
            continue
        keys: dict[str, int] = {}
        if cfg.on_full == "compact":
            for i in batch:
                if i.compaction_key is not None:
                    keys[i.compaction_key] = keys.get(i.compaction_key, 0) + 1
        needs[cls] = EvictionNeed(max(over_items, 0), max(over_bytes, 0), keys)
    return needs


# A victim is a stored item (Resident) or an earlier item of the batch (its index).
_Victim = Resident | int


class _Room:
    """The running usage of one class while a batch is planned."""

    def __init__(
        self,
        config: ClassConfig,
        usage: ClassUsage,
        oldest: Sequence[Resident],
        by_key: Mapping[str, Sequence[Resident]],
    ) -> None:
        self.config = config
        self.items = usage.items
        self.bytes = usage.bytes
        self.oldest: deque[Resident] = deque(oldest)
        self.by_key: dict[str, deque[Resident]] = {k: deque(v) for k, v in by_key.items()}
        self.batch: deque[int] = deque()
        self.batch_by_key: dict[str, deque[int]] = {}
        self.gone: set[int] = set()  # evicted stored ids
        self.displaced: set[int] = set()  # displaced batch indices
        self.counts = dict.fromkeys(("enqueued", "rejected", "dropped", "compacted"), 0)

    def candidates(self, key: str | None) -> Iterator[tuple[_Victim, bool]]:
        """Victims in eviction order, flagged True when they share ``key``."""
        while self.oldest and self.oldest[0].id in self.gone:
            self.oldest.popleft()
        while self.batch and self.batch[0] in self.displaced:
            self.batch.popleft()
        if key is not None:
            yield from ((r, True) for r in self.by_key.get(key, ()) if r.id not in self.gone)
            yield from (
                (i, True) for i in self.batch_by_key.get(key, ()) if i not in self.displaced
            )
        yield from ((r, False) for r in self.oldest if r.id not in self.gone)
        yield from ((i, False) for i in self.batch if i not in self.displaced)

    def choose(
        self, key: str | None, size: int, count: int, sizes: list[int], counts: list[int]
    ) -> list[tuple[_Victim, bool]]:
        """The fewest victims, in eviction order, that make room for ``size`` bytes and
        ``count`` messages; [] if none can."""
        need_items = self.items + count - self.config.max_items
        need_bytes = self.bytes + size - self.config.max_bytes
        chosen: list[tuple[_Victim, bool]] = []
        seen: set[_Victim] = set()
        for victim, same_key in self.candidates(key):
            if victim not in seen:
                seen.add(victim)
                chosen.append((victim, same_key))
                if isinstance(victim, Resident):
                    need_items -= victim.items
                    need_bytes -= victim.size
                else:
                    need_items -= counts[victim]
                    need_bytes -= sizes[victim]
                if need_items <= 0 and need_bytes <= 0:
                    return chosen
        return []


def plan_enqueue(
    items: Sequence[OutboundItem],
    usage: Mapping[TrafficClass, ClassUsage],
    config: OutboxConfig,
    now_ms: int,
    *,
    oldest: Mapping[TrafficClass, Sequence[Resident]] | None = None,
    by_key: Mapping[TrafficClass, Mapping[str, Sequence[Resident]]] | None = None,
) -> EnqueuePlan:
    """Decide every item of a batch.  ``oldest``: queued stored items per class in eviction
    order, covering at least ``eviction_need``; ``by_key``: per compaction key, oldest first."""
    rooms: dict[TrafficClass, _Room] = {}
    outcomes: list[Admit | Rejected] = []
    sizes = [item.size for item in items]
    counts = [item.items for item in items]
    evicted: list[int] = []
    for index, item in enumerate(items):
        cls = item.traffic_class
        room = rooms.get(cls)
        if room is None:
            room = rooms[cls] = _Room(
                config.of(cls),
                usage.get(cls, ClassUsage()),
                (oldest or {}).get(cls, ()),
                (by_key or {}).get(cls, {}),
            )
        cfg, tally, size, count = room.config, room.counts, sizes[index], counts[index]
        expires = item.expires_ms
        if expires is None and cfg.ttl_ms is not None:
            expires = item.created_ms + cfg.ttl_ms
        rejected: Rejected | None = None
        chosen: list[tuple[_Victim, bool]] = []
        if size > cfg.max_bytes:
            rejected = Rejected(RejectReason.TOO_LARGE, f"{size} > {cfg.max_bytes} bytes")
        elif expires is not None and expires <= now_ms:
            rejected = Rejected(RejectReason.EXPIRED, "expired before it was stored")
        elif room.items + count > cfg.max_items or room.bytes + size > cfg.max_bytes:
            if cfg.on_full == "reject":
                rejected = Rejected(RejectReason.FULL, f"{cls.value} is full")
            else:
                key = item.compaction_key if cfg.on_full == "compact" else None
                chosen = room.choose(key, size, count, sizes, counts)
                if not chosen:
                    rejected = Rejected(RejectReason.FULL, f"{cls.value}: nothing evictable")
        if rejected is not None:
            outcomes.append(rejected)
            tally["rejected"] += count
            continue
        evicts: list[int] = []
        replaces: int | None = None
        for victim, same_key in chosen:
            if isinstance(victim, Resident):
                room.gone.add(victim.id)
                evicts.append(victim.id)
                room.bytes -= victim.size
                gone = victim.items
                if same_key and replaces is None:
                    replaces = victim.id
            else:
                room.displaced.add(victim)
                room.bytes -= sizes[victim]
                gone = counts[victim]
                reason = RejectReason.COMPACTED if same_key else RejectReason.DISPLACED
                outcomes[victim] = Rejected(reason, f"superseded by item {index} of the batch")
                tally["enqueued"] -= gone
            room.items -= gone
            tally["compacted" if same_key else "dropped"] += gone
        evicted += evicts
        outcomes.append(Admit(expires, tuple(evicts), replaces))
        tally["enqueued"] += count
        room.items += count
        room.bytes += size
        room.batch.append(index)
        if item.compaction_key is not None:
            room.batch_by_key.setdefault(item.compaction_key, deque()).append(index)
    final = dict(usage)
    all_counts: dict[tuple[TrafficClass, str], int] = {}
    for cls, room in rooms.items():
        final[cls] = ClassUsage(room.items, room.bytes)
        all_counts.update(((cls, what), n) for what, n in room.counts.items() if n)
    return EnqueuePlan(tuple(outcomes), tuple(evicted), final, all_counts)


@dataclass(frozen=True, slots=True)
class Pending:
    """A queued item as the scheduler sees it (no payload)."""

    id: int
    topic: str
    size: int
    priority: int = 0
    expires_ms: int | None = None
    items: int = 1  # messages (a run holds several)


@dataclass(frozen=True, slots=True)
class ClassQueue:
    """The next candidates of one class, each segment in send order (priority desc, id)."""

    backlog: Sequence[Pending] = ()
    live: Sequence[Pending] = ()


@dataclass(frozen=True, slots=True)
class Send:
    """One MQTT message to publish: a single item, or several to pack into one batch.

    ``topic`` is the item's topic, or for a batch the shared topic group."""

    traffic_class: TrafficClass
    ids: tuple[int, ...]
    topic: str

    @property
    def batched(self) -> bool:
        return len(self.ids) > 1


@dataclass(frozen=True, slots=True)
class SendPlan:
    sends: tuple[Send, ...]
    expired: tuple[int, ...]  # candidates found expired: delete them, never send


def topic_group(topic: str, levels: int) -> str:
    """The batching group of a topic: its first ``levels`` levels, or all of it for 0."""
    return "/".join(topic.split("/")[:levels]) if levels else topic


class _Segment:
    """One segment's candidates for one call, with batching by topic group."""

    def __init__(self, items: Sequence[Pending], config: OutboxConfig) -> None:
        self._config = config
        self._order: deque[Pending] = deque(items)
        self._groups: dict[str, deque[Pending]] = {}
        for item in items:
            self._groups.setdefault(self._group(item), deque()).append(item)
        self._taken: set[int] = set()

    def _group(self, item: Pending) -> str:
        return topic_group(item.topic, self._config.batch_topic_levels)

    def __bool__(self) -> bool:
        while self._order and self._order[0].id in self._taken:
            self._order.popleft()
        return bool(self._order)

    def take(self, cls: TrafficClass, batching: bool) -> Send:
        assert self
        head = self._order.popleft()
        group = self._groups[self._group(head)]
        assert group[0] is head
        group.popleft()
        if not batching or head.size >= self._config.batch_item_max_bytes:
            return Send(cls, (head.id,), head.topic)
        ids, total = [head.id], head.size
        cfg = self._config
        while group and len(ids) < cfg.batch_max_items:
            nxt = group[0]
            if nxt.size >= cfg.batch_item_max_bytes or total + nxt.size > cfg.batch_max_bytes:
                break  # never skip an item of the group: its order is kept
            group.popleft()
            self._taken.add(nxt.id)
            ids.append(nxt.id)
            total += nxt.size
        if len(ids) == 1:
            return Send(cls, (head.id,), head.topic)
        return Send(cls, tuple(ids), topic_group(head.topic, cfg.batch_topic_levels))


class SendScheduler:
    """Which queued items to hand to the MQTT client next (see the module docstring).

    Mutable but pure: it remembers the round-robin position, each class's deficit and live
    credit, and where the backlog ends.  Feed it every class that has queued items.
    """

    def __init__(self, config: OutboxConfig) -> None:
        self._config = config
        self._order = sorted(TrafficClass, key=lambda c: (-config.of(c).priority, c.code))
        self._cursor = 0
        self._granted = False  # the class at the cursor already got its quantum this round
        self._deficit = dict.fromkeys(TrafficClass, 0)
        self._credit = dict.fromkeys(TrafficClass, 0.0)
        self.live_after_id: int | None = None

    def link_up(self, newest_id: int) -> None:
        """The link is back: everything stored so far (ids <= ``newest_id``) is backlog."""
        self.live_after_id = newest_id
        log.debug("link up: backlog is ids <= %d", newest_id)

    def candidate_limit(self, free_slots: int) -> int:
        """How many candidates per class and segment a call with ``free_slots`` can use."""
        return max(1, min(free_slots * self._config.batch_max_items, self._config.max_candidates))

    def next_sends(
        self,
        queues: Mapping[TrafficClass, ClassQueue],
        free_slots: int,
        now_ms: int,
        *,
        backlog_held: bool = False,
    ) -> SendPlan:
        """``backlog_held``: some backlog exists but was left out of ``queues`` (paced), so an
        empty backlog here does not mean it has drained."""
        cfg = self._config
        expired: list[int] = []
        segments: dict[TrafficClass, tuple[_Segment, _Segment]] = {}
        batching: dict[TrafficClass, bool] = {}
        for cls, queue in queues.items():
            lists: list[list[Pending]] = [[], []]
            for seg, items in zip(lists, (queue.backlog, queue.live), strict=True):
                for p in items:
                    if is_expired(p.expires_ms, now_ms):
                        expired.append(p.id)
                    else:
                        seg.append(p)
            segments[cls] = (_Segment(lists[0], cfg), _Segment(lists[1], cfg))
            # Paced backlog is batched too: what is held back is a backlog all the same.
            batching[cls] = len(lists[0]) + len(lists[1]) > free_slots or backlog_held
        drained = not backlog_held and not any(q.backlog for q in queues.values())
        if self.live_after_id is not None and drained:
            log.debug("backlog drained: back to FIFO")
            self.live_after_id = None

        sends: list[Send] = []
        slots = free_slots
        idle_visits = 0
        while slots > 0 and idle_visits < len(self._order):
            cls = self._order[self._cursor]
            pair = segments.get(cls)
            if pair is None or not (pair[0] or pair[1]):
                self._deficit[cls] = 0
                self._advance()
                idle_visits += 1
                continue
            idle_visits = 0
            if not self._granted:
                self._deficit[cls] += cfg.of(cls).priority
                self._granted = True
            while self._deficit[cls] >= 1 and slots > 0 and (pair[0] or pair[1]):
                sends.append(self._take(cls, pair, batching[cls]))
                self._deficit[cls] -= 1
                slots -= 1
            if not (pair[0] or pair[1]):
                self._deficit[cls] = 0
                self._advance()
            elif self._deficit[cls] < 1:
                self._advance()
        return SendPlan(tuple(sends), tuple(expired))

    def _advance(self) -> None:
        self._cursor = (self._cursor + 1) % len(self._order)
        self._granted = False

    def _take(self, cls: TrafficClass, pair: tuple[_Segment, _Segment], batching: bool) -> Send:
        backlog, live = pair
        if backlog and live:
            self._credit[cls] += self._config.live_share
            if self._credit[cls] >= 1.0:
                self._credit[cls] -= 1.0
                return live.take(cls, batching)
            return backlog.take(cls, batching)
        return (backlog if backlog else live).take(cls, batching)
