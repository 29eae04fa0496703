"""Everything that arrives from the broker, made safe before the agent acts on it.

For each MQTT message: parse the topic, decode the envelope, unpack a batch, drop duplicates
by message id (a persisted window), and put sequenced messages back in order per
(source, stream), asking the source to retransmit what is missing.  Anything malformed is
counted, logged once per kind, and reported; it never reaches the agent's logic and never
stops the loop.  Unsequenced envelopes (retained state such as definitions, manifests,
status) skip the sequence tracking: only their newest value matters.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass

from ion import topics
from ion.errors import DecodeError
from ion.model.messages import Envelope
from ion.topics import Topic, TopicError
from ion.wire.codec import decode, unbatched
from node.agent.envelopes import decode_chunk_envelope
from node.inbox.dedup import DedupConfig, screen, trim_for
from node.inbox.sequence import (
    Deliver,
    Duplicate,
    GapFilled,
    Lost,
    RequestRetransmit,
    SequenceConfig,
    SequenceTracker,
)
from node.link.base import IncomingMessage
from node.outbox.store import OutboxStore

log = logging.getLogger(__name__)

_CHUNK_IDS = 8192  # model chunk message ids remembered (in memory) to drop duplicates
_MAX_UNREMEMBERED = 4096  # handed on and not yet remembered: remembered now, whatever the loop


@dataclass(frozen=True, slots=True)
class Arrival:
    """A message ready for the agent: where it came in and what it is."""

    topic: Topic
    envelope: Envelope
    # Already delivered once under this message id, but sent again under a new sequence number
    # (an application retried after a crash): it still fills its place in the sequence.
    duplicate: bool = False


class ArrivalQueue:
    """What one consumer has not taken yet: ``asyncio.Queue`` without its bookkeeping (it
    cost ~1.5 us per arrival, a twentieth of what a receiving agent spends on one), unbounded
    (the agent's read loop bounds it by waiting while ``len`` is large), one reader."""

    def __init__(self) -> None:
        self._items: deque[Arrival] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def put(self, arrival: Arrival) -> None:
        self._items.append(arrival)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def take(self) -> Arrival:
        """The oldest arrival; ``IndexError`` when there is none."""
        return self._items.popleft()

    def take_many(self, limit: int) -> list[Arrival]:
        """The oldest arrivals, at most ``limit`` of them (all there are when fewer)."""
        items = self._items
        if len(items) <= limit:
            taken = list(items)
            items.clear()
            return taken
        return [items.popleft() for _ in range(limit)]

    async def wait(self) -> None:
        """Until something is there to take."""
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None


class Receiver:
    def __init__(
        self,
        *,
        store: OutboxStore,
        node_id: str,
        on_arrival: Callable[[Arrival], None],
        on_retransmit_needed: Callable[[RequestRetransmit], None],
        on_problem: Callable[[str, str], None],
        clock: Callable[[], int],
        dedup: DedupConfig | None = None,
        sequence: SequenceConfig | None = None,
        before_remember: Callable[[], None] | None = None,
        remember_later: Callable[[Callable[[], None]], object] | None = None,
    ) -> None:
        # Called after arrivals were handed on and before their ids are remembered as seen:
        # whoever keeps arrivals durably (the pending inbox) writes them here, so a crash
        # between the two can only make a message come again, never lose it.
        self._before_remember = before_remember
        # Given (e.g. ``loop.call_soon``): the ids handed on are remembered by one commit per
        # burst of MQTT messages (when the loop next gets round to it) instead of one per
        # message; a commit costs ~100 us besides ~2 us per id.  Until then they count as seen
        # all the same; a crash in between can make them come again, as it can now.
        self._remember_later = remember_later
        self._unremembered: dict[str, None] = {}  # handed on, not yet remembered; in order
        self._remember_error: Exception | None = None
        self._store = store
        self._node_id = node_id
        self._on_arrival = on_arrival
        self._on_retransmit_needed = on_retransmit_needed
        self._on_problem = on_problem
        self._clock = clock
        self._dedup = dedup or DedupConfig()
        self._tracker: SequenceTracker[Arrival] = SequenceTracker(
            sequence or SequenceConfig(), floors=store.load_stream_floors()
        )
        self.counters: Counter[str] = Counter()
        self._held_ids: set[str] = set()  # bounded by the tracker's max_held
        # (source, stream) -> highest sequence handed on since the last ``take_progress``.
        self._progress: dict[tuple[str, str], int] = {}
        self._logged: set[str] = set()
        self._chunk_ids: dict[str, None] = {}  # recent model chunk ids, oldest first

    # -- the hot path ----------------------------------------------------------------------------

    def handle(self, msg: IncomingMessage) -> None:
        if self._remember_error is not None:
            error, self._remember_error = self._remember_error, None
            raise error  # what remembering later met, as if it had happened here
        try:
            topic = topics.parse(msg.topic)
        except TopicError as exc:
            self._malformed("topic", str(exc))
            return
        if not msg.payload:
            # A cleared retained message; ours are never empty (deletion is a tombstone).
            self._malformed("empty", f"empty payload on {msg.topic}")
            return
        try:
            env = None
            if topic.kind is topics.TopicKind.MODEL_CHUNKS:
                env = decode_chunk_envelope(msg.payload)  # without copying the chunk twice
            if env is None:
                env = decode(msg.payload)
        except DecodeError as exc:
            self._malformed("payload", f"{msg.topic}: {exc}")
            return
        self.counters["received"] += 1
        envelopes = unbatched(env)
        if topic.kind is topics.TopicKind.MODEL_CHUNKS:
            self._chunks(topic, envelopes)
            return
        sequenced: list[Envelope] = []
        for e in envelopes:
            if e.sequence == 0:
                self._on_arrival(Arrival(topic, e))
            elif e.source_node == self._node_id and topic.kind is not topics.TopicKind.EDGE:
                continue  # our own traffic echoed back by a wildcard subscription
            else:
                sequenced.append(e)
        if sequenced:
            self._sequenced(topic, sequenced)

    def _chunks(self, topic: Topic, envelopes: Sequence[Envelope]) -> None:
        """Model chunks, sequenced or not: delivered as they come, without ordering or gap
        repair (also this node's own: a gateway's cache answers its own node too).  A chunk is
        written at its offset whenever it comes and the model exchange asks for missing ones
        by index, so holding chunks back behind a gap (up to ``max_hold_ms``) or asking the
        sender's retention for them would only delay and repeat that work.  Duplicates are
        dropped by message id in a window kept in memory: a chunk is idempotent (the exchange
        ignores an index it holds, before hashing), so the persisted window, a SQLite commit
        per 256 KiB chunk, would buy nothing across restarts."""
        for e in envelopes:
            if e.message_id in self._chunk_ids:
                self.counters["duplicate"] += 1
                continue
            self._chunk_ids[e.message_id] = None
            if len(self._chunk_ids) > _CHUNK_IDS:
                del self._chunk_ids[next(iter(self._chunk_ids))]
            self.counters["delivered"] += 1
            self._on_arrival(Arrival(topic, e))

    def _sequenced(self, topic: Topic, envelopes: list[Envelope]) -> None:
        ids = [e.message_id for e in envelopes]
        seen = self._store.inbox_seen(ids)
        if self._unremembered:
            seen.update(i for i in ids if i in self._unremembered)
        if not seen and len(set(ids)) == len(ids):
            # Nothing seen before, nothing twice: all fresh (the usual case; decoded envelopes
            # have valid ids, so ``screen`` would only check them again).
            everything = range(len(ids))
            order: Iterable[int] = everything
            fresh: Container[int] = everything
        else:
            screening = screen(ids, seen)
            fresh = set(screening.fresh)
            order = sorted(fresh.union(screening.duplicates))
        now = self._clock()
        delivered: list[str] = []
        held_ids, progress, arrive = self._held_ids, self._progress, self._tracker.arrive
        handed_on = 0
        for index in order:
            e = envelopes[index]
            stream = e.stream or topic_string(topic)
            # A message already handled, or still held back behind a gap, may come again under
            # a new sequence number (its sender retried after a crash).  It is not delivered
            # twice, but it still fills its place in the sequence.  Ids enter the persisted
            # window only once delivered, hence the set of held ids.
            duplicate = index not in fresh or e.message_id in held_ids
            arrival = Arrival(topic, e, duplicate=duplicate)
            actions = arrive(e.source_node, stream, e.sequence, arrival, now)
            if not duplicate and len(actions) == 1:
                action = actions[0]
                if type(action) is Deliver and action.message is arrival:
                    # In order and handed on at once: what ``_act`` does for it, inline.
                    progress[(e.source_node, stream)] = e.sequence
                    handed_on += 1
                    self._on_arrival(arrival)
                    delivered.append(e.message_id)
                    continue
            delivered.extend(self._act(actions))
            if not duplicate and not _settled(actions, arrival):
                held_ids.add(e.message_id)
        if handed_on:
            self.counters["delivered"] += handed_on
        if delivered:
            # Remembered only once handled: a message held back for ordering and lost in a
            # crash must not be refused as a duplicate when it is sent again.
            self._remember(delivered)

    def _remember(self, delivered: list[str]) -> None:
        if self._remember_later is None:
            self._write(delivered)
            return
        if not self._unremembered:
            self._remember_later(self._flush_soon)
        self._unremembered.update(dict.fromkeys(delivered))
        if len(self._unremembered) >= _MAX_UNREMEMBERED:
            self.flush()

    def flush(self) -> None:
        """Remember now what was handed on and is not remembered yet (see ``remember_later``;
        also call it before stopping)."""
        if self._unremembered:
            ids = list(self._unremembered)
            self._write(ids)
            self._unremembered.clear()

    def _flush_soon(self) -> None:
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 - raised again by the next ``handle``
            self._remember_error = exc

    def _write(self, ids: list[str]) -> None:
        if self._before_remember is not None:
            self._before_remember()
        self._store.inbox_remember(ids, trim_for(self._dedup, self._clock()))

    def _act(self, actions: Sequence[object]) -> list[str]:
        delivered: list[str] = []
        for action in actions:
            match action:
                case Deliver(message=arrival):
                    assert isinstance(arrival, Arrival)
                    if arrival.duplicate:
                        self.counters["duplicate"] += 1
                        continue
                    e = arrival.envelope
                    self._held_ids.discard(e.message_id)
                    self._progress[(e.source_node, e.stream or topic_string(arrival.topic))] = (
                        e.sequence
                    )
                    self.counters["delivered"] += 1
                    self._on_arrival(arrival)
                    delivered.append(arrival.envelope.message_id)
                case Duplicate():
                    self.counters["duplicate"] += 1
                case RequestRetransmit():
                    self.counters["retransmit_requested"] += 1
                    self._on_retransmit_needed(action)
                case GapFilled():
                    self.counters["gap_filled"] += 1
                case Lost(source=source, stream=stream, from_sequence=a, to_sequence=b):
                    self.counters["lost"] += b - a + 1
                    self._on_problem(
                        "delivery.lost",
                        f"{b - a + 1} message(s) {a}..{b} of {stream} from {source} were lost: "
                        f"{action.reason}",
                    )
        return delivered

    # -- periodic ------------------------------------------------------------------------------

    def take_progress(self) -> dict[tuple[str, str], int]:
        """(source, stream) -> the highest sequence handed on since the last call (for the
        ``DeliveryAck``s that pace senders; see ``node.outbox.pacing``)."""
        progress, self._progress = self._progress, {}
        return progress

    def tick(self) -> None:
        """Retry retransmit requests, give up on old gaps, persist the stream floors."""
        now = self._clock()
        delivered = self._act(self._tracker.tick(now))
        if delivered:
            self._remember(delivered)
        self.flush()
        self._store.save_stream_floors(self._tracker.floors())

    def _malformed(self, kind: str, detail: str) -> None:
        self.counters[f"malformed.{kind}"] += 1
        if kind not in self._logged:  # once per kind: a flood must not flood the log
            self._logged.add(kind)
            log.warning("dropped a malformed message (%s): %s", kind, detail)
            self._on_problem(f"message.malformed.{kind}", detail)


def _settled(actions: Sequence[object], arrival: Arrival) -> bool:
    """Whether ``arrival`` was delivered at once or refused as a duplicate (not held)."""
    seq = arrival.envelope.sequence
    return any(
        (isinstance(a, Deliver) and a.message is arrival)
        or (isinstance(a, Duplicate) and a.sequence == seq)
        for a in actions
    )


def topic_string(topic: Topic) -> str:
    return topics.format_topic(topic)
