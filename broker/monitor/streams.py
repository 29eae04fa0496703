"""Delivery per source stream as the monitor sees it (pure): gaps, repairs, lag, hops.

Every sequenced envelope carries ``(source_node, stream, sequence)``; a source numbers each
stream from 1 with no holes, so a jump ahead is a gap, and a number inside an earlier gap
arriving later (a retransmission, or a relay draining its backlog) repairs part of it.
Missing ranges are kept per stream up to ``MAX_RANGES`` (the oldest dropped first): a repair
of a range forgotten that way is not counted.  The first message the monitor ever sees of a
stream sets its starting point without counting a gap (it joined mid-stream), and a stream
that starts again from 1 (a node whose data was wiped) starts over rather than counting
everything as duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_RANGES = 64


@dataclass(slots=True, eq=False)  # identity: kept in a set of dirty streams
class StreamState:
    source_node: str
    stream: str
    last_sequence: int = 0
    received: int = 0
    gaps: int = 0
    repaired: int = 0
    duplicates: int = 0
    lag_ms: int = 0
    hops: int = 0
    updated_ms: int = 0
    missing: list[list[int]] = field(default_factory=list)  # [first, last] inclusive, in order

    def arrive(self, sequence: int, *, lag_ms: int, hops: int, now_ms: int) -> None:
        self.received += 1
        self.lag_ms = lag_ms
        self.hops = hops
        self.updated_ms = now_ms
        last = self.last_sequence
        if sequence == last + 1 or last == 0:
            self.last_sequence = sequence
        elif sequence > last:
            self.gaps += sequence - last - 1
            self.missing.append([last + 1, sequence - 1])
            if len(self.missing) > MAX_RANGES:
                del self.missing[0]
            self.last_sequence = sequence
        elif sequence == 1:
            self.last_sequence = 1
            self.missing.clear()
        elif not self._fill(sequence):
            self.duplicates += 1

    def _fill(self, sequence: int) -> bool:
        for i, (lo, hi) in enumerate(self.missing):
            if lo <= sequence <= hi:
                self.repaired += 1
                if lo == hi:
                    del self.missing[i]
                elif sequence == lo:
                    self.missing[i][0] = lo + 1
                elif sequence == hi:
                    self.missing[i][1] = hi - 1
                else:
                    self.missing[i : i + 1] = [[lo, sequence - 1], [sequence + 1, hi]]
                return True
        return False

    @property
    def outstanding(self) -> int:
        """Sequence numbers still missing (of the ranges remembered)."""
        return sum(hi - lo + 1 for lo, hi in self.missing)

    def row(self) -> dict[str, Any]:
        return {
            "source_node": self.source_node,
            "stream": self.stream,
            "last_sequence": self.last_sequence,
            "received": self.received,
            "gaps": self.gaps,
            "repaired": self.repaired,
            "lag_ms": self.lag_ms,
            "hops": self.hops,
            "updated_ms": self.updated_ms,
        }
