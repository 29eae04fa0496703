"""The SQLite outbox store: real SQLite in tmp_path, an injected clock."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from node.outbox.classes import DEFAULT_CLASSES, ClassConfig, OutboxConfig, TrafficClass
from node.outbox.policy import OutboundItem, Rejected, RejectReason, SendScheduler
from node.outbox.store import OutboxStore

C = TrafficClass
T0 = 1_700_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[OutboxStore]:
    with OutboxStore(tmp_path / "outbox.db", clock=clock) as s:
        yield s


def item(
    n: int = 0,
    cls: TrafficClass = C.DATA,
    *,
    topic: str = "ion/v1/x/edge/e/data",
    stream: str = "",
    seq: int = 0,
    key: str | None = None,
    priority: int = 0,
    size: int = 20,
    created: int = T0,
    expires: int | None = None,
) -> OutboundItem:
    payload = f"{n}:".encode().ljust(size, b".")
    return OutboundItem(
        topic, payload, cls, created, priority, expires, stream, seq, key
    )  # fmt: skip


def ids_of(results: list[int | Rejected]) -> list[int]:
    assert all(isinstance(r, int) for r in results), results
    return [r for r in results if isinstance(r, int)]


def with_class(cls: TrafficClass, cfg: ClassConfig, **kw: object) -> OutboxConfig:
    return replace(OutboxConfig(classes={**DEFAULT_CLASSES, cls: cfg}), **kw)  # type: ignore[arg-type]


def test_enqueue_send_ack_round_trip(store: OutboxStore) -> None:
    ids = ids_of(store.enqueue([item(i) for i in range(5)]))
    assert ids == [1, 2, 3, 4, 5]
    queues = store.candidates(None, 10)
    assert [p.id for p in queues[C.DATA].backlog] == ids
    sent = store.mark_in_flight([3, 1, 99])
    assert [(s.id, s.payload[:2], s.in_flight, s.attempts) for s in sent] == [
        (3, b"2:", True, 1),
        (1, b"0:", True, 1),
    ]
    assert [p.id for p in store.candidates(None, 10)[C.DATA].backlog] == [2, 4, 5]
    assert store.ack([1, 3, 42]) == 2
    assert [i.id for i in store.items()] == [2, 4, 5]
    stats = store.stats().classes[C.DATA]
    assert (stats.items, stats.in_flight) == (3, 0)
    assert stats.counters == {"enqueued": 5, "sent": 2, "acked": 2}


def test_in_flight_items_are_sent_again_after_a_restart(tmp_path: Path, clock: Clock) -> None:
    with OutboxStore(tmp_path / "o.db", clock=clock) as s:
        s.enqueue([item(i) for i in range(3)])
        s.mark_in_flight([1, 2])
    with OutboxStore(tmp_path / "o.db", clock=clock) as s:
        assert [i.id for i in s.items() if i.in_flight] == [1, 2]
        assert s.requeue_in_flight() == 2
        assert [p.id for p in s.candidates(None, 10)[C.DATA].backlog] == [1, 2, 3]
        assert s.stats().classes[C.DATA].counters["requeued"] == 2


def test_release_puts_failed_publishes_back(store: OutboxStore) -> None:
    store.enqueue([item(1), item(2)])
    store.mark_in_flight([1, 2])
    assert store.release([2]) == 1
    assert [p.id for p in store.candidates(None, 10)[C.DATA].backlog] == [2]


def test_ids_are_never_reused_even_after_the_newest_was_acked(tmp_path: Path, clock: Clock) -> None:
    with OutboxStore(tmp_path / "o.db", clock=clock) as s:
        s.enqueue([item(1), item(2)])
        s.ack([1, 2])
        assert s.newest_id() == 2
    with OutboxStore(tmp_path / "o.db", clock=clock) as s:
        assert ids_of(s.enqueue([item(3)])) == [3]


def test_candidates_split_backlog_and_live_by_priority(store: OutboxStore) -> None:
    store.enqueue([item(1), item(2, priority=5), item(3)])
    boundary = store.newest_id()
    store.enqueue([item(4), item(5, priority=7), item(6, priority=5)])
    queue = store.candidates(boundary, 10)[C.DATA]
    assert [p.id for p in queue.backlog] == [2, 1, 3]
    assert [p.id for p in queue.live] == [5, 6, 4]
    limited = store.candidates(boundary, 2)[C.DATA]
    assert ([p.id for p in limited.backlog], [p.id for p in limited.live]) == ([2, 1], [5, 6])


def test_drain_interleaves_live_traffic_with_a_backlog(store: OutboxStore) -> None:
    store.enqueue([item(i, size=5000) for i in range(200)])  # too big to batch: one per message
    scheduler = SendScheduler(store._config)
    scheduler.link_up(store.newest_id())
    live = ids_of(store.enqueue([item(1000 + i, size=5000) for i in range(5)]))
    plan = scheduler.next_sends(store.candidates(scheduler.live_after_id, 10), 10, T0)
    sent = [s.ids[0] for s in plan.sends]
    assert set(live) <= set(sent)  # live items are not stuck behind 200 backlog items
    assert sent[:4] == [1, live[0], 2, live[1]]


def test_reject_rule_refuses_when_full(tmp_path: Path, clock: Clock) -> None:
    cfg = with_class(C.CONTROL, ClassConfig(32, None, 2, 10_000, "reject"))
    with OutboxStore(tmp_path / "o.db", cfg, clock=clock) as s:
        got = s.enqueue([item(i, C.CONTROL) for i in range(3)])
        assert got[:2] == [1, 2]
        assert got[2] == Rejected(RejectReason.FULL, "control is full")
        assert s.stats().classes[C.CONTROL].counters == {"enqueued": 2, "rejected": 1}


def test_drop_oldest_evicts_lowest_priority_then_oldest(tmp_path: Path, clock: Clock) -> None:
    cfg = with_class(C.DATA, ClassConfig(1, None, 3, 10_000, "drop_oldest"))
    with OutboxStore(tmp_path / "o.db", cfg, clock=clock) as s:
        s.enqueue([item(1, priority=1), item(2), item(3)])
        s.mark_in_flight([2])  # in flight: never evicted
        assert s.enqueue([item(4)]) == [4]
        assert [i.id for i in s.items()] == [1, 2, 4]
        assert s.enqueue([item(5)]) == [5]
        assert [i.id for i in s.items()] == [1, 2, 5]  # 1 has the higher priority
        stats = s.stats().classes[C.DATA]
        assert (stats.items, stats.counters["dropped"]) == (3, 2)


def test_compact_replaces_the_same_key(tmp_path: Path, clock: Clock) -> None:
    cfg = with_class(C.STATS, ClassConfig(2, None, 2, 10_000, "compact"))
    with OutboxStore(tmp_path / "o.db", cfg, clock=clock) as s:
        s.enqueue([item(1, C.STATS, key="p1"), item(2, C.STATS, key="p2")])
        s.enqueue([item(3, C.STATS, key="p1")])
        assert [(i.id, i.compaction_key) for i in s.items()] == [(2, "p2"), (3, "p1")]
        assert s.stats().classes[C.STATS].counters["compacted"] == 1


def test_byte_cap_drops_as_many_as_needed(tmp_path: Path, clock: Clock) -> None:
    cfg = with_class(C.DATA, ClassConfig(1, None, 1000, 500, "drop_oldest"))
    with OutboxStore(tmp_path / "o.db", cfg, clock=clock) as s:
        s.enqueue([item(i, size=100) for i in range(4)])  # 4 x (100 + topic 20) = 480
        s.enqueue([item(9, size=300)])  # 320 more: 300 to free, three of the four go
        assert [i.id for i in s.items()] == [4, 5]
        assert s.stats().classes[C.DATA].bytes <= 500


def test_expiry(store: OutboxStore, clock: Clock) -> None:
    store.enqueue([item(1, expires=T0 + 10), item(2, expires=T0 + 10), item(3)])
    store.mark_in_flight([2])
    clock.now = T0 + 10
    assert store.expire() == 1  # the in-flight one is left to finish
    assert [i.id for i in store.items()] == [2, 3]
    store.enqueue([item(4, expires=T0 + 20)])
    clock.now = T0 + 20
    assert store.expire([3]) == 0  # only the ids given, and only if expired
    assert store.expire([4]) == 1
    assert store.stats().classes[C.DATA].counters["expired"] == 2


def test_retention_serves_retransmit_requests(store: OutboxStore, clock: Clock) -> None:
    ids = ids_of(store.enqueue([item(i, stream="s1", seq=i) for i in range(1, 6)]))
    store.enqueue([item(99)])  # not sequenced: not retained
    store.mark_in_flight(ids)
    store.ack(ids)
    store.ack([6])
    got = store.retained("s1", 2, 4)
    assert [(r.sequence, r.payload[:2], r.sent_ms) for r in got] == [
        (2, b"2:", T0),
        (3, b"3:", T0),
        (4, b"4:", T0),
    ]
    assert store.retained("other", 1, 10) == []
    assert store.stats().retained_items == 5


def test_retention_is_bounded_by_count_bytes_and_age(tmp_path: Path, clock: Clock) -> None:
    cfg = replace(OutboxConfig(), retention_max_items=3, retention_max_bytes=10_000)
    with OutboxStore(tmp_path / "o.db", cfg, clock=clock) as s:
        ids = ids_of(s.enqueue([item(i, stream="s", seq=i) for i in range(1, 6)]))
        s.ack(ids)
        assert [r.sequence for r in s.retained("s", 1, 10)] == [3, 4, 5]
        # The same sequence sent twice (a retransmit) is kept once.
        s.ack(ids_of(s.enqueue([item(5, stream="s", seq=5)])))
        assert [r.sequence for r in s.retained("s", 1, 10)] == [3, 4, 5]
        assert s.stats().retained_items == 3
    cfg = replace(OutboxConfig(), retention_max_bytes=100, retention_max_age_ms=1000)
    with OutboxStore(tmp_path / "o2.db", cfg, clock=clock) as s:
        s.ack(ids_of(s.enqueue([item(i, stream="s", seq=i, size=30) for i in range(1, 6)])))
        assert [r.sequence for r in s.retained("s", 1, 10)] == [4, 5]  # 2 x 50 bytes
        clock.now += 1001
        s.expire()
        assert s.retained("s", 1, 10) == []
        assert (s.stats().retained_items, s.stats().retained_bytes) == (0, 0)


def test_stats_and_counters_survive_a_restart(tmp_path: Path, clock: Clock) -> None:
    with OutboxStore(tmp_path / "o.db", clock=clock) as s:
        s.enqueue([item(1), item(2, C.EVENTS, created=T0 - 500)])
        s.mark_in_flight([2])
    clock.now = T0 + 1000
    with OutboxStore(tmp_path / "o.db", clock=clock) as s:
        stats = s.stats()
        events = stats.classes[C.EVENTS]
        assert (events.items, events.in_flight, events.oldest_age_ms) == (1, 1, 1500)
        assert events.counters == {"enqueued": 1, "sent": 1}
        assert stats.classes[C.DATA].oldest_age_ms == 1000
        assert stats.classes[C.MODEL].oldest_age_ms is None


def test_synchronous_is_configurable(tmp_path: Path) -> None:
    for mode, code in (("NORMAL", 1), ("FULL", 2)):
        cfg = replace(OutboxConfig(), synchronous=mode)  # type: ignore[arg-type]
        with OutboxStore(tmp_path / f"{mode}.db", cfg) as s:
            assert s._db.execute("PRAGMA synchronous").fetchone()[0] == code
            assert s._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_full_disk_refuses_cleanly_and_loses_nothing(tmp_path: Path, clock: Clock) -> None:
    cfg = replace(OutboxConfig(), max_db_bytes=256 * 1024)
    with OutboxStore(tmp_path / "o.db", cfg, clock=clock) as s:
        stored: list[int] = []
        refused: list[int | Rejected] = []
        for n in range(200):
            got = s.enqueue([item(n * 10 + i, size=1000) for i in range(10)])
            if isinstance(got[0], Rejected):
                refused = got
                break
            stored += ids_of(got)
        assert refused, "max_db_bytes never reached"
        assert all(isinstance(r, Rejected) and r.reason is RejectReason.DISK_FULL for r in refused)
        assert "full" in refused[0].detail  # type: ignore[union-attr]
        assert [i.id for i in s.items()] == stored
        assert s.integrity_check() == "ok"
        assert s.stats().classes[C.DATA].counters["rejected"] == 10
        # Acks free pages; enqueueing works again.
        s.ack(stored[:100])
        assert isinstance(s.enqueue([item(1)])[0], int)
    with OutboxStore(tmp_path / "o.db", clock=clock) as s:
        assert len(s.items()) == len(stored) - 100 + 1


def test_full_disk_from_sqlite_itself(tmp_path: Path, clock: Clock) -> None:
    """The same with the limit set behind the store's back, as a real full disk would be."""
    with OutboxStore(tmp_path / "o.db", clock=clock) as s:
        s.enqueue([item(1)])
        pages = s._db.execute("PRAGMA page_count").fetchone()[0]
        s._db.execute(f"PRAGMA max_page_count={pages}")
        got = s.enqueue([item(i, size=4000) for i in range(50)])
        assert {r.reason for r in got if isinstance(r, Rejected)} == {RejectReason.DISK_FULL}
        assert [i.id for i in s.items()] == [1]
        assert s.integrity_check() == "ok"


def test_inbox_window_tables(store: OutboxStore, clock: Clock) -> None:
    from node.inbox.dedup import DedupTrim

    a, b, c = "a" * 32, "b" * 32, "c" * 32
    assert store.inbox_seen([a, b]) == set()
    store.inbox_remember([a, b], DedupTrim(10, T0 - 1))
    assert store.inbox_seen([a, b, c]) == {a, b}
    clock.now = T0 + 100
    store.inbox_remember([c], DedupTrim(10, T0 + 50))  # a and b are now too old
    assert store.inbox_seen([a, b, c]) == {c}
    store.inbox_remember([a, b], DedupTrim(2, 0))  # count bound: newest two kept
    assert store.inbox_seen([a, b, c]) == {a, b}
    assert store.inbox_size() == 2


def test_stream_floors_round_trip(store: OutboxStore) -> None:
    store.save_stream_floors({("n1", "s"): 5, ("n2", "s"): 7})
    store.save_stream_floors({("n1", "s"): 9})
    assert store.load_stream_floors() == {("n1", "s"): 9, ("n2", "s"): 7}


def test_opening_something_that_is_not_a_database_is_unavailable(tmp_path: Path) -> None:
    from node.outbox.records import OutboxUnavailableError

    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a database at all" * 100)
    with pytest.raises(OutboxUnavailableError):
        OutboxStore(bad)


def test_only_one_index_on_the_hot_table(store: OutboxStore) -> None:
    # Every index costs every insert, state change and delete (see the store's docstring).
    rows = store._db.execute("PRAGMA index_list(outbox)").fetchall()
    assert sorted(r[1] for r in rows) == ["outbox_key", "outbox_send"]
    plan = store._db.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM outbox WHERE cls = 5 AND state = 0"
        " ORDER BY priority DESC, id LIMIT 10"
    ).fetchall()
    assert "outbox_send" in str(plan)
    assert "TEMP B-TREE" not in str(plan)
    assert isinstance(sqlite3.sqlite_version, str)


def test_sequence_numbering_survives_sending_trimming_and_reopening(tmp_path: Path) -> None:
    import time

    from node.outbox.policy import OutboundItem
    from node.outbox.store import OutboxStore

    now = time.time_ns() // 1_000_000
    path = tmp_path / "seq.db"
    with OutboxStore(path) as store:
        ids = store.enqueue(
            [
                OutboundItem("t/a", b"x", TrafficClass.DATA, now, stream="t/a", sequence=n)
                for n in (1, 2, 3)
            ]
            + [OutboundItem("t/b", b"y", TrafficClass.DATA, now, stream="t/b", sequence=7)]
        )
        store.mark_in_flight([i for i in ids if isinstance(i, int)])
        store.ack([i for i in ids if isinstance(i, int)])
        assert store.items() == []
    with OutboxStore(path) as store:
        assert store.last_sequences() == {"t/a": 3, "t/b": 7}
