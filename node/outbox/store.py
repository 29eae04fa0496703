"""The outbox and inbox tables in SQLite: the only module of the agent that talks to SQLite.

Every decision is made in ``node.outbox.policy`` / ``node.inbox``; this module gathers the facts
they need, calls them, and carries out the result, each public write in one transaction
(``BEGIN IMMEDIATE``: the write lock first, so facts and writes cannot interleave with another
writer), or several writes in one inside ``transaction()``.  Plain synchronous methods, safe
to call from any one thread at a time (a lock serialises them): the agent calls them directly
in small batches or from a worker thread.

Durability.  WAL mode.  With ``synchronous=NORMAL`` (the default) a commit is appended to the
WAL but only fsync'ed at checkpoints: a killed process (kill -9, OOM, crash) loses nothing,
since the commit is already in the operating system's cache; a power loss or kernel panic can
lose the transactions since the last fsync (never corrupt the database).  That costs about
nothing per commit; ``synchronous=FULL`` fsyncs every commit and also survives power loss, at
~4k commits/s on SSD and much less on SD cards, which is why writes are batched.

The schema, and why it has one index only, is described in ``node.outbox.records``.

A full disk (or ``max_db_bytes`` reached) makes an enqueue return ``DISK_FULL`` rejections
(the transaction is rolled back: nothing stored is lost); other writes raise
``OutboxFullError``.  Other SQLite operational errors raise ``OutboxUnavailableError``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from node.inbox.dedup import DedupTrim
from node.outbox.classes import OutboxConfig, TrafficClass
from node.outbox.policy import (
    Admit,
    ClassQueue,
    ClassUsage,
    EvictionNeed,
    OutboundItem,
    Pending,
    Rejected,
    RejectReason,
    Resident,
    eviction_need,
    plan_enqueue,
)
from node.outbox.records import (
    ADDED_COLUMNS,
    CLASSES,
    MAX_RUN_ITEMS,
    SCHEMA,
    ClassStats,
    Clock,
    OutboxFullError,
    OutboxStats,
    OutboxUnavailableError,
    RetainedItem,
    StoredItem,
    stored_item,
    wall_clock_ms,
)

log = logging.getLogger(__name__)

_COUNTER_FLUSH_MS = 1000


def _is_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as exc:
        if _is_full(exc):
            raise OutboxFullError(f"outbox database full: {exc}") from exc
        raise OutboxUnavailableError(f"outbox database: {exc}") from exc


class OutboxStore:
    """The outbox, its retention and the inbox tables of one node, in one SQLite file."""

    def __init__(
        self, path: str | Path, config: OutboxConfig | None = None, *, clock: Clock = wall_clock_ms
    ) -> None:
        self._config = config or OutboxConfig()
        self._clock = clock
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise OutboxUnavailableError(f"cannot open outbox {path}: {exc}") from exc
        try:
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":  # e.g. a network file system: still correct, slower
                log.warning("outbox %s: journal_mode is %s, not wal", path, mode)
            self._db.execute(f"PRAGMA synchronous={self._config.synchronous}")
            self._db.execute("PRAGMA busy_timeout=5000")
            # Debian builds SQLite with SECURE_DELETE on: every ack would zero-fill the deleted
            # payload, doubling what the outbox writes (measured: 51 MiB of WAL for 50 MiB of
            # acked model chunks, 0.6 MiB with FAST).  Payloads are bound for a broker anyway.
            self._db.execute("PRAGMA secure_delete=FAST")
            self._db.execute("PRAGMA journal_size_limit=67108864")  # truncate the WAL to 64 MiB
            # Checkpoint every ~40 MiB of WAL rather than SQLite's 4 MiB: the hot pages (the
            # head and tail of the queue, the inbox window's end) are rewritten by nearly every
            # commit, and a checkpoint copies each distinct page back once and fsyncs, so fewer
            # checkpoints write less (measured: commit time on a busy agent -40 %, -60 % on a
            # receiving one).  The price: up to 40 MiB of WAL on disk.
            self._db.execute("PRAGMA wal_autocheckpoint=10000")
            self._db.executescript(SCHEMA)
            self._add_columns()
            if self._config.max_db_bytes is not None:
                page = self._db.execute("PRAGMA page_size").fetchone()[0]
                pages = max(1, self._config.max_db_bytes // page)
                self._db.execute(f"PRAGMA max_page_count={pages}")
            self._usage = self._read_usage()
            self._unsaved: Counter[tuple[str, str]] = Counter()  # counted, not yet written
            self._txn_counts: Counter[tuple[str, str]] = Counter()  # counted in this txn
            self._flushed_ms = self._clock()
            self._saved_id = int(
                self._db.execute("SELECT coalesce(max(value), 0) FROM meta").fetchone()[0]
            )
            last = self._db.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()[0]
            self._next_id = 1 + max(int(last), self._saved_id)
            self._saving_id = self._saved_id
            self._grouping = False  # inside transaction()
            self._open = False  # a write transaction is open
            self._retained: tuple[int, int] = self._db.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM retained"
            ).fetchone()
            self._undo = (self._usage, self._retained, self._next_id)
            # The largest message id in the inbox window (None: read it when next needed).
            self._seen_max: str | None = None
        except sqlite3.Error as exc:
            self._db.close()
            raise OutboxUnavailableError(f"cannot open outbox {path}: {exc}") from exc

    @property
    def config(self) -> OutboxConfig:
        return self._config

    def _add_columns(self) -> None:
        """Bring a file written by an older version up to the schema (columns only added)."""
        for table, column, definition in ADDED_COLUMNS:
            have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

    def close(self) -> None:
        with self._lock:
            if self._unsaved:
                self._flushed_ms = -(2**62)  # makes the next commit write them
                try:
                    with self._txn():
                        pass
                except OutboxUnavailableError as exc:
                    log.warning("outbox: counters not saved at close: %s", exc)
            self._db.close()

    def __enter__(self) -> OutboxStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- transactions ------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Make every write inside one transaction, begun by the first of them.

        Each commit appends every page it dirtied to the WAL, so the send loop groups a round
        (the acks of the last round, then marking the next sends in flight, pages both touch)
        into one commit instead of two or three.  If anything inside fails, none of its writes
        happened and the store's in-memory figures are put back.  Never await inside: the
        store's lock is held throughout."""
        with self._lock:
            if self._grouping:  # already inside one: join it
                yield
                return
            self._grouping = True
            try:
                with _translated():
                    yield
                    if self._open:
                        self._commit()
            except BaseException:
                if self._open:
                    self._rollback()
                raise
            finally:
                self._grouping = False

    @contextmanager
    def _txn(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (or a part of the one ``transaction`` holds open).  Counters
        counted in it (``_count``) reach the table with the first commit at least
        ``_COUNTER_FLUSH_MS`` after the last: one statement less per transaction, at the
        price of the last second of counts after a crash (never items)."""
        db = self._db
        with self._lock, _translated():
            if self._open:  # inside transaction(): its commit covers this
                yield db
                return
            self._begin()
            if self._grouping:
                yield db  # transaction() commits or rolls back
                return
            try:
                yield db
                self._commit()
            except BaseException:
                self._rollback()
                raise

    def _begin(self) -> None:
        self._txn_counts = Counter()
        self._saving_id = self._saved_id
        self._undo = (self._usage, self._retained, self._next_id)
        self._db.execute("BEGIN IMMEDIATE")
        self._open = True

    def _commit(self) -> None:
        now = self._clock()
        flush = now - self._flushed_ms >= _COUNTER_FLUSH_MS
        if flush:
            self._write_counters(self._db, self._unsaved + self._txn_counts)
        self._db.execute("COMMIT")
        self._open = False
        self._saved_id = self._saving_id
        if flush:
            self._unsaved.clear()
            self._flushed_ms = now
        else:
            self._unsaved.update(self._txn_counts)

    def _rollback(self) -> None:
        self._open = False
        self._seen_max = None  # read again: what this transaction remembered is undone
        self._usage, self._retained, self._next_id = self._undo
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def _save_last_id(self, db: sqlite3.Connection) -> None:
        """Before deleting rows: remember the highest id given, so it is never given again."""
        if self._saved_id < self._next_id - 1:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('last_id', ?)", (self._next_id - 1,))
            self._saving_id = self._next_id - 1  # becomes _saved_id when the commit succeeds

    def _count(self, counts: Mapping[tuple[TrafficClass, str], int]) -> None:
        for (cls, name), n in counts.items():
            self._txn_counts[cls.value, name] += n

    @staticmethod
    def _write_counters(db: sqlite3.Connection, counts: Mapping[tuple[str, str], int]) -> None:
        db.executemany(
            "INSERT INTO counters VALUES (?, ?, ?) "
            "ON CONFLICT (cls, name) DO UPDATE SET value = value + excluded.value",
            [(c, name, n) for (c, name), n in counts.items() if n],
        )

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _read_usage(self) -> dict[TrafficClass, ClassUsage]:
        rows = self._db.execute(
            "SELECT cls, sum(items), sum(size) FROM outbox GROUP BY cls"
        ).fetchall()
        return {TrafficClass.from_code(c): ClassUsage(n, b) for c, n, b in rows}

    @staticmethod
    def _tally(
        rows: Iterable[Sequence[Any]], what: str, items_at: int
    ) -> dict[tuple[TrafficClass, str], int]:
        """Count the messages of rows ``(cls, ...)`` (``row[items_at]`` each) per class as
        counter ``what``."""
        per_code: Counter[int] = Counter()
        for row in rows:
            per_code[row[0]] += row[items_at]
        return {(CLASSES[code], what): n for code, n in per_code.items()}

    def _forget(self, removed: Sequence[Sequence[Any]]) -> None:
        """Take deleted rows ``(cls, size, items, ...)`` out of the in-memory usage."""
        items: Counter[int] = Counter()
        sizes: Counter[int] = Counter()
        for row in removed:
            items[row[0]] += row[2]
            sizes[row[0]] += row[1]
        usage = dict(self._usage)
        for code, n in items.items():
            old = usage[CLASSES[code]]
            usage[CLASSES[code]] = ClassUsage(old.items - n, old.bytes - sizes[code])
        self._usage = usage

    # -- outbox ------------------------------------------------------------------------------

    def enqueue(self, items: Sequence[OutboundItem]) -> list[int | Rejected]:
        """Store a batch in one transaction: per item, its new id or why it was refused."""
        if not items:
            return []
        now = self._clock()
        with self._lock:
            try:
                with self._txn() as db:
                    need = eviction_need(self._usage, items, self._config)
                    oldest, by_key = self._victims(db, need) if need else ({}, {})
                    plan = plan_enqueue(
                        items, self._usage, self._config, now, oldest=oldest, by_key=by_key
                    )
                    if plan.evicted:
                        self._save_last_id(db)
                        db.execute(
                            "DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?))",
                            (json.dumps(plan.evicted),),
                        )
                    next_id = self._next_id
                    results: list[int | Rejected] = []
                    rows = []
                    for item, outcome in zip(items, plan.outcomes, strict=True):
                        if isinstance(outcome, Admit):
                            rows.append((
                                next_id, item.traffic_class.code, item.priority, item.topic,
                                item.payload, item.size, item.created_ms, outcome.expires_ms,
                                item.stream, item.sequence, item.compaction_key, item.items,
                            ))  # fmt: skip
                            results.append(next_id)
                            next_id += 1
                        else:
                            results.append(outcome)
                    db.executemany(
                        "INSERT INTO outbox (id, cls, priority, topic, payload, size, created_ms,"
                        " expires_ms, stream, sequence, ckey, items)"
                        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                        rows,
                    )
                    self._save_sequences(db, rows)
                    self._count(plan.counts)
            except OutboxFullError as exc:
                if self._grouping:
                    raise  # the rest of the group must not commit without this
                log.warning("outbox: refused %d item(s): %s", len(items), exc)
                for i in items:
                    self._unsaved[i.traffic_class.value, "rejected"] += i.items
                return [Rejected(RejectReason.DISK_FULL, str(exc)) for _ in items]
            self._next_id = next_id
            self._usage = dict(plan.usage)
            if plan.evicted:
                log.info("outbox: evicted %d queued item(s) to make room", len(plan.evicted))
            return results

    @staticmethod
    def _save_sequences(db: sqlite3.Connection, rows: Sequence[Sequence[Any]]) -> None:
        """The highest sequence stored per stream, in the transaction that stores it: a
        sender's numbering must never go back, even after its items were sent and trimmed."""
        highest: dict[str, int] = {}
        for row in rows:
            stream, sequence = row[8], row[9]
            if sequence > 0 and sequence > highest.get(stream, 0):
                highest[stream] = sequence
        if highest:
            db.executemany(
                "INSERT INTO stream_seq (stream, last_sequence) VALUES (?, ?) ON CONFLICT(stream)"
                " DO UPDATE SET last_sequence = max(last_sequence, excluded.last_sequence)",
                list(highest.items()),
            )

    def last_sequences(self) -> dict[str, int]:
        """The highest sequence number ever stored per stream (to continue numbering)."""
        return dict(self._db.execute("SELECT stream, last_sequence FROM stream_seq").fetchall())

    def _priorities(self, cls: TrafficClass, *, ascending: bool = False) -> list[int]:
        """The distinct priorities of queued items of a class, by skipping through the index."""
        sql = (
            "SELECT min(priority) FROM outbox WHERE cls = ? AND state = 0 AND priority > ?"
            if ascending
            else "SELECT max(priority) FROM outbox WHERE cls = ? AND state = 0 AND priority < ?"
        )
        found = [-(2**63) if ascending else 2**63 - 1]
        while (p := self._db.execute(sql, (cls.code, found[-1])).fetchone()[0]) is not None:
            found.append(p)
        return found[1:]

    def _range(self, cls: TrafficClass, priority: int, after: int, limit: int) -> list[Any]:
        """Queued items of one class and priority with id > ``after``, by id."""
        return self._db.execute(
            "SELECT id, topic, size, priority, expires_ms, items FROM outbox"
            " INDEXED BY outbox_send"
            " WHERE cls = ? AND state = 0 AND priority = ? AND id > ? ORDER BY id LIMIT ?",
            (cls.code, priority, after, limit),
        ).fetchall()

    def _victims(
        self, db: sqlite3.Connection, needs: Mapping[TrafficClass, EvictionNeed]
    ) -> tuple[dict[TrafficClass, list[Resident]], dict[TrafficClass, dict[str, list[Resident]]]]:
        """Queued items in eviction order (lowest priority, then oldest), enough to cover what
        each class may need to evict, and the oldest per compaction key."""
        oldest: dict[TrafficClass, list[Resident]] = {}
        by_key: dict[TrafficClass, dict[str, list[Resident]]] = {}
        for cls, need in needs.items():
            found: list[Resident] = []
            total = 0
            for priority in self._priorities(cls, ascending=True):
                after = 0
                while len(found) < need.items or total < need.bytes:
                    page = self._range(cls, priority, after, 512)
                    if not page:
                        break
                    found.extend(Resident(r[0], r[2], r[5]) for r in page)
                    total += sum(r[2] for r in page)
                    after = page[-1][0]
            oldest[cls] = found
            by_key[cls] = {
                key: [
                    Resident(i, s, n)
                    for i, s, n in db.execute(
                        "SELECT id, size, items FROM outbox INDEXED BY outbox_key WHERE cls = ?"
                        " AND ckey = ? AND state = 0 ORDER BY id LIMIT ?",
                        (cls.code, key, n),
                    )
                ]
                for key, n in need.keys.items()
            }
        return oldest, by_key

    def newest_id(self) -> int:
        """The highest id ever given (0 for none): pass it to ``SendScheduler.link_up``."""
        return self._next_id - 1

    def candidates(
        self, live_after_id: int | None, limit: int, *, backlog_limit: int | None = None
    ) -> dict[TrafficClass, ClassQueue]:
        """The next queued items of every non-empty class, for ``SendScheduler.next_sends``:
        per class at most ``limit`` live ones and ``backlog_limit`` (default ``limit``) of the
        backlog.

        With ``live_after_id`` None everything is backlog (plain FIFO)."""
        backlog_rows = limit if backlog_limit is None else backlog_limit
        queues: dict[TrafficClass, ClassQueue] = {}
        with self._lock:
            for cls, usage in self._usage.items():
                if usage.items == 0:
                    continue
                backlog = self._db.execute(
                    "SELECT id, topic, size, priority, expires_ms, items"
                    " FROM outbox INDEXED BY outbox_send WHERE cls = ?"
                    " AND state = 0 AND id <= ? ORDER BY priority DESC, id LIMIT ?",
                    (cls.code, 2**63 - 1 if live_after_id is None else live_after_id,
                     backlog_rows),
                ).fetchall()  # fmt: skip
                live: list[Any] = []
                for priority in self._priorities(cls) if live_after_id is not None else ():
                    assert live_after_id is not None
                    live += self._range(cls, priority, live_after_id, limit - len(live))
                    if len(live) >= limit:
                        break
                if backlog or live:
                    queues[cls] = ClassQueue(
                        [Pending(*r) for r in backlog], [Pending(*r) for r in live]
                    )
        return queues

    def mark_in_flight(self, ids: Sequence[int]) -> list[StoredItem]:
        """Hand items to the MQTT client: they become in flight; returns them in ``ids`` order
        (ids no longer queued, e.g. expired meanwhile, are left out)."""
        if not ids:
            return []
        with self._txn() as db:
            rows = db.execute(
                "UPDATE outbox SET state = 1, attempts = attempts + 1"
                " WHERE id IN (SELECT value FROM json_each(?)) AND state = 0 RETURNING id, cls,"
                " topic, payload, priority, created_ms, expires_ms, stream, sequence, ckey, state,"
                " attempts, items",
                (json.dumps(list(ids)),),
            ).fetchall()
            self._count(self._tally([(r[1], r[12]) for r in rows], "sent", 1))
        by_id = {r[0]: r for r in rows}
        return [stored_item(by_id[i]) for i in ids if i in by_id]

    def take(self, ids: Sequence[int]) -> dict[int, tuple[bytes, str, int, int]]:
        """``mark_in_flight`` for the send loop: the payload, stream, sequence and number of
        messages (``OutboundItem.items``) of each item that was still queued, by id.  A plain
        read and an update without ``RETURNING`` of whole rows cost about two thirds as much
        (SQLite materialises what an update returns)."""
        if not ids:
            return {}
        doc = json.dumps(list(ids))
        with self._txn() as db:
            rows = db.execute(
                "SELECT id, cls, payload, stream, sequence, items FROM outbox"
                " WHERE id IN (SELECT value FROM json_each(?)) AND state = 0",
                (doc,),
            ).fetchall()
            db.execute(
                "UPDATE outbox SET state = 1, attempts = attempts + 1"
                " WHERE id IN (SELECT value FROM json_each(?)) AND state = 0",
                (doc,),
            )
            self._count(self._tally([(r[1], r[5]) for r in rows], "sent", 1))
        return {r[0]: (r[2], r[3], r[4], r[5]) for r in rows}

    def release(self, ids: Sequence[int]) -> int:
        """In-flight items whose publish failed (link lost): queued again, sent again later."""
        if not ids:
            return 0
        with self._txn() as db:
            cur = db.execute(
                "UPDATE outbox SET state = 0"
                " WHERE id IN (SELECT value FROM json_each(?)) AND state = 1",
                (json.dumps(list(ids)),),
            )
            return cur.rowcount

    def requeue_in_flight(self) -> int:
        """At start-up: whatever was in flight at a crash is queued to be sent again."""
        with self._txn() as db:
            rows = db.execute(
                "UPDATE outbox SET state = 0 WHERE state = 1 RETURNING cls, items"
            ).fetchall()
            self._count(self._tally(rows, "requeued", 1))
        if rows:
            log.info("outbox: %d item(s) in flight at the last stop will be sent again", len(rows))
        return len(rows)

    def ack(self, ids: Sequence[int]) -> int:
        """The broker acknowledged these: delete them, keeping sequenced ones for retransmits."""
        if not ids:
            return 0
        now = self._clock()
        doc = json.dumps(list(ids))
        with self._lock:
            with self._txn() as db:
                # A sequence already retained (sent twice: a retransmit, or two copies acked
                # together) keeps its first copy.  Checking for that first, row by row, cost
                # about as much as the insert itself; conflicts show in the count instead.
                inserted = db.execute(
                    "INSERT INTO retained (stream, sequence, topic, payload, size, sent_ms, items)"
                    " SELECT stream, sequence, topic, payload, size, ?, items FROM outbox"
                    " WHERE id IN (SELECT value FROM json_each(?)) AND sequence > 0 ORDER BY id"
                    " ON CONFLICT (stream, sequence) DO NOTHING",
                    (now, doc),
                ).rowcount
                self._save_last_id(db)
                removed = db.execute(
                    "DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?))"
                    " RETURNING cls, size, items, sequence",
                    (doc,),
                ).fetchall()
                self._count(self._tally(removed, "acked", 2))
                sequenced = [r[1] for r in removed if r[3] > 0]
                count, size = self._retained
                if inserted == len(sequenced):
                    count, size = count + inserted, size + sum(sequenced)
                else:  # some were retained already: rare, so count again
                    count, size = db.execute(
                        "SELECT count(*), coalesce(sum(size), 0) FROM retained"
                    ).fetchone()
                retained = self._trim_retained(db, count, size)
            self._forget(removed)
            self._retained = retained
        return len(removed)

    def _trim_retained(self, db: sqlite3.Connection, count: int, size: int) -> tuple[int, int]:
        cfg = self._config
        while count > cfg.retention_max_items or size > cfg.retention_max_bytes:
            over_items, over_bytes = count - cfg.retention_max_items, size - cfg.retention_max_bytes
            last = None
            for rid, sz in db.execute("SELECT rid, size FROM retained ORDER BY rid LIMIT 512"):
                last, count, size = rid, count - 1, size - sz
                over_items, over_bytes = over_items - 1, over_bytes - sz
                if over_items <= 0 and over_bytes <= 0:
                    break
            if last is None:
                return 0, 0
            db.execute("DELETE FROM retained WHERE rid <= ?", (last,))
        return count, size

    def expire(self, ids: Sequence[int] | None = None) -> int:
        """Delete queued items whose time is up (all, or just these ``ids``), and sent items
        older than the retention age.  Returns how many queued items expired."""
        now = self._clock()
        with self._lock:
            with self._txn() as db:
                self._save_last_id(db)
                if ids is None:
                    rows = db.execute(
                        "DELETE FROM outbox WHERE expires_ms <= ? AND state = 0"
                        " RETURNING cls, size, items",
                        (now,),
                    ).fetchall()
                    gone = db.execute(
                        "DELETE FROM retained WHERE sent_ms < ? RETURNING size",
                        (now - self._config.retention_max_age_ms,),
                    ).fetchall()
                else:
                    rows = db.execute(
                        "DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?))"
                        " AND expires_ms <= ? AND state = 0"
                        " RETURNING cls, size, items",
                        (json.dumps(list(ids)), now),
                    ).fetchall()
                    gone = []
                self._count(self._tally(rows, "expired", 2))
            self._forget(rows)
            count, size = self._retained
            self._retained = (count - len(gone), size - sum(g[0] for g in gone))
            if rows:
                log.info("outbox: %d item(s) expired", len(rows))
            return len(rows)

    def retained(self, stream: str, from_seq: int, to_seq: int) -> list[RetainedItem]:
        """Sent items of ``stream`` with ``from_seq <= sequence <= to_seq`` still retained
        (a retransmit request is answered with these; the rest is gone for good).  A run
        (``items`` > 1) is returned whole when any of its messages is in the range."""
        rows = self._read(
            "SELECT stream, sequence, topic, payload, sent_ms, items FROM retained"
            " WHERE stream = ? AND sequence BETWEEN ? AND ? AND sequence - items < ?"
            " ORDER BY sequence",
            (stream, from_seq, to_seq + MAX_RUN_ITEMS - 1, to_seq),
        )
        return [RetainedItem(*r) for r in rows]

    def items(self, traffic_class: TrafficClass | None = None) -> list[StoredItem]:
        """Every stored item (of one class), by id: for inspection and tests, not hot paths."""
        rows = self._read(
            "SELECT id, cls, topic, payload, priority, created_ms, expires_ms, stream,"
            " sequence, ckey, state, attempts FROM outbox WHERE ? IS NULL OR cls = ? ORDER BY id",
            (traffic_class and traffic_class.code,) * 2,
        )
        return [stored_item(r) for r in rows]

    def stats(self) -> OutboxStats:
        now = self._clock()
        counters: dict[str, dict[str, int]] = {}
        result: dict[TrafficClass, ClassStats] = {}
        with self._lock:
            for cls_name, name, value in self._db.execute("SELECT * FROM counters"):
                counters.setdefault(cls_name, {})[name] = value
            for (cls_name, name), value in self._unsaved.items():
                per_class = counters.setdefault(cls_name, {})
                per_class[name] = per_class.get(name, 0) + value
            for cls in TrafficClass:
                usage = self._usage.get(cls, ClassUsage())
                in_flight, oldest = 0, None
                if usage.items:
                    in_flight, first = self._db.execute(
                        "SELECT coalesce(sum(items), 0), min(created_ms) FROM outbox"
                        " WHERE cls = ? AND state = 1",
                        (cls.code,),
                    ).fetchone()
                    created = [first] if first is not None else []
                    for priority in self._priorities(cls):
                        created += self._db.execute(
                            "SELECT created_ms FROM outbox INDEXED BY outbox_send WHERE cls = ?"
                            " AND state = 0 AND priority = ? ORDER BY id LIMIT 1",
                            (cls.code, priority),
                        ).fetchone()
                    oldest = max(0, now - min(created)) if created else None
                result[cls] = ClassStats(
                    usage.items, usage.bytes, in_flight, oldest, counters.get(cls.value, {})
                )
        return OutboxStats(result, *self._retained)

    def integrity_check(self) -> str:
        return str(self._read("PRAGMA integrity_check")[0][0])

    # -- inbox -------------------------------------------------------------------------------

    def inbox_seen(self, message_ids: Sequence[str]) -> set[str]:
        """Which of these message ids the inbox has already handled.

        Only ids up to the largest one in the window are looked up: the agent's ids grow
        (``ion.model.messages.MessageIds``), so new ones from a busy source are above it
        and cost no lookup at all (about a microsecond each otherwise)."""
        if self._seen_max is None:
            row = self._read("SELECT coalesce(max(message_id), '') FROM inbox_seen")[0]
            self._seen_max = str(row[0])
        top = self._seen_max
        wanted = [m for m in message_ids if m <= top]
        if not wanted:
            return set()
        rows = self._read(
            "SELECT message_id FROM inbox_seen"
            " WHERE message_id IN (SELECT value FROM json_each(?))",
            (json.dumps(wanted),),
        )
        return {r[0] for r in rows}

    def inbox_remember(self, message_ids: Sequence[str], trim: DedupTrim) -> None:
        """Add handled ids to the window, then cut it down to ``trim``."""
        if not message_ids:
            return
        now = self._clock()
        if self._seen_max is not None:  # raised first: never below an id the window holds
            self._seen_max = max(self._seen_max, *message_ids)
        with self._txn() as db:
            db.execute(
                "INSERT OR IGNORE INTO inbox_seen (message_id, seen_ms)"
                " SELECT value, ? FROM json_each(?)",
                (now, json.dumps(list(message_ids))),
            )
            # n grows with time, so the old ids are a prefix: find where it ends without a scan.
            trimmed = db.execute(
                "DELETE FROM inbox_seen WHERE n <= (SELECT max(n) FROM inbox_seen) - ? OR n <"
                " coalesce((SELECT n FROM inbox_seen WHERE seen_ms >= ? ORDER BY n LIMIT 1),"
                " (SELECT max(n) + 1 FROM inbox_seen))",
                (trim.keep_newest, trim.forget_before_ms),
            ).rowcount
        if trimmed > 0 and not self._open:
            # The largest id may have been trimmed (e.g. an application's own id that is
            # not time-ordered): read it again, after the commit, so it is never too low.
            self._seen_max = None

    def inbox_size(self) -> int:
        return int(self._read("SELECT count(*) FROM inbox_seen")[0][0])

    def load_stream_floors(self) -> dict[tuple[str, str], int]:
        rows = self._read("SELECT source, stream, floor FROM inbox_stream")
        return {(s, st): f for s, st, f in rows}

    def save_stream_floors(self, floors: Mapping[tuple[str, str], int]) -> None:
        with self._txn() as db:
            db.executemany(
                "INSERT INTO inbox_stream VALUES (?, ?, ?)"
                " ON CONFLICT (source, stream) DO UPDATE SET floor = excluded.floor",
                [(s, st, f) for (s, st), f in floors.items()],
            )
