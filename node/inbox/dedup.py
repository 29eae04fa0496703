"""The inbox's duplicate filter by message id: the pure half.

Delivery is at-least-once, so a receiver sees some messages twice (a PUBACK lost, a retransmit,
a relay restarted).  Every envelope carries a message id (32 lowercase hex digits); a receiver
remembers the ids it has *handled* in a bounded, persisted window and drops any id it finds
there.  The window is bounded by count (``max_ids``, the newest kept) and age (``max_age_ms``):
a duplicate older than that is not caught here (sequence numbers still notice it as stale).

The window lives in SQLite (``OutboxStore.inbox_seen`` / ``inbox_remember``) rather than in
memory: 100,000 ids as Python strings in a set cost ~15 MB, far too much for an edge agent,
while an indexed lookup of a batch of ids costs microseconds per id.

Use, per batch of arrivals::

    seen = store.inbox_seen(ids)
    verdict = screen(ids, seen)
    ... hand verdict.fresh to the core, persist what must be ...
    store.inbox_remember([ids[i] for i in verdict.fresh], trim_for(config, now))

Remember an id only once its message is handled or durably stored: an id remembered before a
crash that lost its message would make the retransmitted copy look like a duplicate.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, fields
from typing import Any

from ion.config.overlay import overlay
from ion.errors import ConfigError

log = logging.getLogger(__name__)

_MESSAGE_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class DedupConfig:
    """``max_ids`` (100000): ids kept; ``max_age_ms`` (7 days): ids older are forgotten."""

    max_ids: int = 100_000
    max_age_ms: int = 7 * 24 * 3_600_000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{f.name} must be a positive integer, not {value!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str = "dedup") -> DedupConfig:
        return overlay(cls, data, where=where)


@dataclass(frozen=True, slots=True)
class Screening:
    """Indices into the screened batch: new, already seen (or repeated in the batch), bad."""

    fresh: tuple[int, ...]
    duplicates: tuple[int, ...]
    invalid: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class DedupTrim:
    """What to forget after remembering: keep the newest ``keep_newest`` ids, and none seen
    before ``forget_before_ms``."""

    keep_newest: int
    forget_before_ms: int


def is_message_id(value: str) -> bool:
    return _MESSAGE_ID.fullmatch(value) is not None


def screen(message_ids: Sequence[str], already_seen: Set[str]) -> Screening:
    """Sort a batch: ids in ``already_seen`` or earlier in the batch are duplicates."""
    fresh: list[int] = []
    duplicates: list[int] = []
    invalid: list[int] = []
    batch: set[str] = set()
    for index, message_id in enumerate(message_ids):
        if not is_message_id(message_id):
            invalid.append(index)
        elif message_id in already_seen or message_id in batch:
            duplicates.append(index)
        else:
            batch.add(message_id)
            fresh.append(index)
    return Screening(tuple(fresh), tuple(duplicates), tuple(invalid))


def trim_for(config: DedupConfig, now_ms: int) -> DedupTrim:
    return DedupTrim(config.max_ids, now_ms - config.max_age_ms)
