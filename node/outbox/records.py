"""What the outbox store reads and writes, without the I/O: its schema, row values and errors.

Pure (no sqlite3 here); ``node.outbox.store`` is the one module that executes any of it.

Ids are never reused (the highest id given is saved in ``meta`` by any transaction that
deletes rows, when it has grown: the only case where ``max(id)`` alone would forget it; much
cheaper than ``AUTOINCREMENT``'s per-row bookkeeping), so an id names one item
for ever (an ack for an old id can never hit a new row) and "newer than the newest id when the
link came back" defines live traffic.  One process owns the database: usage per class and the
next id are kept in memory (read at open, updated after each commit).

One index serves the hot paths, (cls, state, priority DESC, id): every index costs each
insert, each state change and each delete (measured: four indexes and AUTOINCREMENT made
inserts ~1.5x slower).  Send order walks it directly; live items (id above a boundary) and
eviction order (lowest priority first, then oldest) are range scans per distinct priority,
found by skipping through the index (one seek per priority in use, usually just one).
``expire`` scans the table: run it every minute or so, not per message (the scheduler already
skips expired items as it meets them).

A row is one message, or a run of ``items`` messages of one stream stored together
(``OutboundItem.items``; ``sequence`` is then the run's last).

Rows: ``state`` 0 = queued, 1 = in flight (handed to the MQTT client, no PUBACK yet).  An item
is deleted only by ``ack`` (after the broker acknowledged it), by eviction or by expiry.
``requeue_in_flight`` at start-up makes every in-flight item queued again: at-least-once.
Acked items with a stream sequence move to ``retained`` (bounded by count, bytes and age) to
answer retransmit requests.  ``inbox_seen`` is the inbox's duplicate window, ``inbox_stream``
the inbox's per-stream floors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ion.errors import UnavailableError
from node.outbox.classes import TrafficClass

Clock = Callable[[], int]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class OutboxUnavailableError(UnavailableError):
    """SQLite failed (I/O error, locked for too long); retrying later may work."""


class OutboxFullError(OutboxUnavailableError):
    """The disk (or ``max_db_bytes``) is full."""


SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    cls INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER,
    stream TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    ckey TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    items INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS outbox_send ON outbox (cls, state, priority DESC, id);
CREATE INDEX IF NOT EXISTS outbox_key ON outbox (cls, ckey, state, id) WHERE ckey IS NOT NULL;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS retained (
    rid INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    sent_ms INTEGER NOT NULL,
    items INTEGER NOT NULL DEFAULT 1,
    UNIQUE (stream, sequence)
);
CREATE TABLE IF NOT EXISTS counters (
    cls TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL, PRIMARY KEY (cls, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox_seen (
    n INTEGER PRIMARY KEY, message_id TEXT NOT NULL UNIQUE, seen_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS stream_seq (
    stream TEXT PRIMARY KEY, last_sequence INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox_stream (
    source TEXT NOT NULL, stream TEXT NOT NULL, floor INTEGER NOT NULL,
    PRIMARY KEY (source, stream)
) WITHOUT ROWID;
"""
# Columns added since the first schema: (table, column, definition), added to older files.
ADDED_COLUMNS = (
    ("outbox", "items", "INTEGER NOT NULL DEFAULT 1"),
    ("retained", "items", "INTEGER NOT NULL DEFAULT 1"),
)
# A run of items (``OutboundItem.items``) holds at most this many: retransmit requests find
# the runs that overlap a range by a bounded scan of the retained index.
MAX_RUN_ITEMS = 4096
# SQL is written out in full (no string building); ``IN (SELECT value FROM json_each(?))`` passes a
# list of ids as one JSON parameter, so one prepared statement serves every batch size.


class StoredItem(NamedTuple):
    """A stored item with its payload.  A NamedTuple rather than a frozen dataclass: the drain
    path builds tens of thousands per second and this is ~4x cheaper to construct."""

    id: int
    traffic_class: TrafficClass
    topic: str
    payload: bytes
    priority: int
    created_ms: int
    expires_ms: int | None
    stream: str
    sequence: int
    compaction_key: str | None
    in_flight: bool
    attempts: int  # times handed to the MQTT client


@dataclass(frozen=True, slots=True)
class RetainedItem:
    """A sent item kept for retransmits; with ``items`` > 1 a run whose last sequence is
    ``sequence`` and whose payload is the inside of a batch (see ``OutboundItem``)."""

    stream: str
    sequence: int
    topic: str
    payload: bytes
    sent_ms: int
    items: int = 1


@dataclass(frozen=True, slots=True)
class ClassStats:
    items: int  # queued and in flight
    bytes: int
    in_flight: int
    oldest_age_ms: int | None  # now - the oldest created_ms among the first item of each priority
    counters: Mapping[str, int]  # enqueued, rejected, dropped, compacted, expired, sent, ...


@dataclass(frozen=True, slots=True)
class OutboxStats:
    classes: Mapping[TrafficClass, ClassStats]
    retained_items: int
    retained_bytes: int


CLASSES = tuple(TrafficClass)  # by storage code


def stored_item(row: Sequence[Any]) -> StoredItem:
    return StoredItem(
        row[0], CLASSES[row[1]], row[2], row[3], row[4], row[5], row[6], row[7], row[8],
        row[9], row[10] == 1, row[11],
    )  # fmt: skip
