"""Gap tracking and in-order release per (source, stream): pure, clock injected.

Every sequenced envelope carries ``sequence``, counting 1, 2, 3 ... per (source node, stream)
without gaps.  A receiver feeds arrivals (after the message-id filter) to ``SequenceTracker``
and gets actions back: deliver this, that was a duplicate, ask the source to retransmit this
range, that gap is filled, that range is lost.

State per stream, and its invariants:

``floor``
    Every sequence <= floor was delivered or given up as lost.  Arrivals at or under it are
    duplicates (late or repeated).
``top``
    The highest sequence seen; ``floor <= top``.
``gaps``
    Sorted, disjoint ranges of missing sequences, all inside (floor, top].  When there are
    gaps, the first starts at floor + 1; when there are none, floor == top.
``held`` (ordered streams only)
    Messages that arrived above the first gap, waiting for it.  Held back at most
    ``max_hold_ms`` and at most ``max_held`` of them: then the first gap is declared ``Lost``
    and what follows it is released in order.  Unordered streams deliver at once.

A missing range is requested when first seen and again every ``retry_ms``; after
``give_up_ms`` it is reported lost.  The first arrival of an unknown stream sets the baseline:
sequence 1 starts from the beginning; a higher one means we joined mid-stream and nothing
before it is requested (``join_mid_stream``; set False to request the history too).  Sequence 0
means "not sequenced": delivered at once, not tracked.  At most ``max_streams`` streams are
tracked; the least recently active one is flushed (its gaps reported lost, its held messages
released) and forgotten.

``floors()`` / ``restore`` carry the floors across restarts (persist them with the store).
"""

from __future__ import annotations

import bisect
import heapq
import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Generic, TypeVar

from ion.config.overlay import overlay
from ion.errors import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")
StreamKey = tuple[str, str]  # (source node, stream)


@dataclass(frozen=True, slots=True)
class SequenceConfig:
    """Keys and defaults: ``ordered`` (true), ``max_held`` (20000), ``max_hold_ms`` (5000),
    ``retry_ms`` (1000), ``give_up_ms`` (30000), ``max_gaps`` (1000), ``max_streams`` (10000),
    ``join_mid_stream`` (true)."""

    ordered: bool = True
    # Messages held back behind a gap, per stream.  Sized for a fast stream to keep flowing
    # for the round trip a retransmission takes (at 10k msg/s, 2 s); time bounds it anyway.
    max_held: int = 20_000
    max_hold_ms: int = 5_000
    retry_ms: int = 1_000
    give_up_ms: int = 30_000
    max_gaps: int = 1000
    max_streams: int = 10_000
    join_mid_stream: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("ordered", "join_mid_stream"):
                if not isinstance(value, bool):
                    raise ConfigError(f"{f.name} must be true or false")
            elif isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{f.name} must be a positive integer, not {value!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str = "sequence") -> SequenceConfig:
        return overlay(cls, data, where=where)


@dataclass(frozen=True, slots=True)
class Deliver(Generic[T]):
    source: str
    stream: str
    sequence: int
    message: T


@dataclass(frozen=True, slots=True)
class Duplicate:
    source: str
    stream: str
    sequence: int


@dataclass(frozen=True, slots=True)
class RequestRetransmit:
    source: str
    stream: str
    from_sequence: int
    to_sequence: int  # inclusive
    attempt: int  # 1 when the gap is first seen


@dataclass(frozen=True, slots=True)
class GapFilled:
    """Every sequence of a gap, as first detected, has arrived."""

    source: str
    stream: str
    from_sequence: int
    to_sequence: int


@dataclass(frozen=True, slots=True)
class Lost:
    """A range given up: the source did not retransmit it in time.  Report it as an event."""

    source: str
    stream: str
    from_sequence: int
    to_sequence: int
    reason: str


Action = Deliver[T] | Duplicate | RequestRetransmit | GapFilled | Lost


@dataclass(slots=True)
class _Gap:
    lo: int
    hi: int
    detected_ms: int
    requested_ms: int
    attempts: int
    origin: tuple[int, int]


class _Stream(Generic[T]):
    __slots__ = ("active_ms", "floor", "gaps", "held", "held_order", "lossy", "missing", "top")

    def __init__(self, floor: int, now_ms: int) -> None:
        self.floor = floor
        self.top = floor
        self.gaps: list[_Gap] = []
        self.held: dict[int, T] = {}
        self.held_order: list[int] = []  # a heap of held sequences
        self.missing: dict[tuple[int, int], int] = {}  # gap origin -> sequences still missing
        self.lossy: set[tuple[int, int]] = set()  # origins with a piece given up
        self.active_ms = now_ms


class SequenceTracker(Generic[T]):
    def __init__(
        self, config: SequenceConfig, floors: Mapping[StreamKey, int] | None = None
    ) -> None:
        self._config = config
        self._streams: dict[StreamKey, _Stream[T]] = {}
        self._restored = dict(floors or {})

    def floors(self) -> dict[StreamKey, int]:
        """What to persist: per stream, the sequence up to which everything is settled."""
        result = dict(self._restored)
        result.update({key: s.floor for key, s in self._streams.items()})
        return result

    def arrive(
        self, source: str, stream: str, sequence: int, message: T, now_ms: int
    ) -> list[Action[T]]:
        if sequence <= 0:
            return [Deliver(source, stream, sequence, message)]
        key = (source, stream)
        st = self._streams.get(key)
        actions: list[Action[T]] = []
        if st is None:
            st = self._open(key, sequence, now_ms, actions)
        st.active_ms = now_ms
        if sequence <= st.floor:
            return [*actions, Duplicate(source, stream, sequence)]
        if sequence > st.top:
            if sequence > st.top + 1:
                origin = (st.top + 1, sequence - 1)
                st.gaps.append(_Gap(origin[0], origin[1], now_ms, now_ms, 1, origin))
                st.missing[origin] = origin[1] - origin[0] + 1
                actions.append(RequestRetransmit(source, stream, *origin, 1))
            st.top = sequence
        elif not self._fill(st, key, sequence, actions):
            return [*actions, Duplicate(source, stream, sequence)]
        if self._config.ordered and st.gaps and st.gaps[0].lo < sequence:
            st.held[sequence] = message
            heapq.heappush(st.held_order, sequence)
        else:
            actions.append(Deliver(source, stream, sequence, message))
        self._advance(st, key, actions)
        while len(st.held) > self._config.max_held or len(st.gaps) > self._config.max_gaps:
            self._lose_first(st, key, "too many held back" if st.held else "too many gaps", actions)
        return actions

    def tick(self, now_ms: int) -> list[Action[T]]:
        """Re-request gaps, and give up on those waited on too long."""
        cfg = self._config
        actions: list[Action[T]] = []
        for key, st in self._streams.items():
            while st.gaps:
                first = st.gaps[0]
                if now_ms - first.detected_ms >= cfg.give_up_ms:
                    self._lose_first(st, key, "not retransmitted in time", actions)
                elif st.held and now_ms - first.detected_ms >= cfg.max_hold_ms:
                    self._lose_first(st, key, "held back too long", actions)
                else:
                    break
            # Gaps are found in sequence order, so the first is the oldest: none left is due.
            for gap in st.gaps:
                if now_ms - gap.requested_ms >= cfg.retry_ms:
                    gap.requested_ms = now_ms
                    gap.attempts += 1
                    actions.append(RequestRetransmit(*key, gap.lo, gap.hi, gap.attempts))
        return actions

    def _open(
        self, key: StreamKey, sequence: int, now_ms: int, actions: list[Action[T]]
    ) -> _Stream[T]:
        if len(self._streams) >= self._config.max_streams:
            victim = min(self._streams, key=lambda k: self._streams[k].active_ms)
            old = self._streams[victim]
            while old.gaps:
                self._lose_first(old, victim, "stream forgotten (too many streams)", actions)
            self._restored[victim] = old.floor
            del self._streams[victim]
            log.info("forgot sequence state of %s/%s: too many streams", *victim)
        floor = self._restored.pop(key, None)
        if floor is None:
            start_here = self._config.join_mid_stream and sequence > 1
            floor = sequence - 1 if start_here else 0
        st: _Stream[T] = _Stream(floor, now_ms)
        self._streams[key] = st
        return st

    def _fill(self, st: _Stream[T], key: StreamKey, seq: int, actions: list[Action[T]]) -> bool:
        """Take ``seq`` out of its gap; False when it was not missing (a duplicate)."""
        i = bisect.bisect_right([g.lo for g in st.gaps], seq) - 1
        if i < 0 or st.gaps[i].hi < seq:
            return False
        gap = st.gaps[i]
        pieces = [
            replace(gap, lo=lo, hi=hi)
            for lo, hi in ((gap.lo, seq - 1), (seq + 1, gap.hi))
            if lo <= hi
        ]
        st.gaps[i : i + 1] = pieces
        st.missing[gap.origin] -= 1
        if st.missing[gap.origin] == 0:
            del st.missing[gap.origin]
            if gap.origin in st.lossy:
                st.lossy.discard(gap.origin)
            else:
                actions.append(GapFilled(*key, *gap.origin))
        return True

    def _advance(self, st: _Stream[T], key: StreamKey, actions: list[Action[T]]) -> None:
        st.floor = st.gaps[0].lo - 1 if st.gaps else st.top
        while st.held_order and st.held_order[0] <= st.floor:
            seq = heapq.heappop(st.held_order)
            actions.append(Deliver(key[0], key[1], seq, st.held.pop(seq)))

    def _lose(
        self, st: _Stream[T], key: StreamKey, gap: _Gap, reason: str, actions: list[Action[T]]
    ) -> None:
        actions.append(Lost(key[0], key[1], gap.lo, gap.hi, reason))
        log.warning("lost %s/%s %d..%d: %s", key[0], key[1], gap.lo, gap.hi, reason)
        left = st.missing.pop(gap.origin, 0) - (gap.hi - gap.lo + 1)
        if left > 0:
            st.missing[gap.origin] = left
            st.lossy.add(gap.origin)  # never reported as filled
        else:
            st.lossy.discard(gap.origin)

    def _lose_first(
        self, st: _Stream[T], key: StreamKey, reason: str, actions: list[Action[T]]
    ) -> None:
        self._lose(st, key, st.gaps.pop(0), reason, actions)
        self._advance(st, key, actions)
