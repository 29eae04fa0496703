"""Runs of messages stored as one outbox item (``Agent.publish_many``), without a network: the
encoding, how a batch is cut into runs, the store's run rows and retention, the inbox window's
lookups, and the receiver remembering ids once per burst."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from ion import topics
from ion.errors import InputError
from ion.model.event import DataRecords, Event, Severity
from ion.model.health import HealthReport
from ion.model.messages import Envelope, EnvelopeBatch, MessageIds, is_message_id, new_envelope
from ion.topics import Channel
from ion.wire.batch import batch_around, batch_inner, batch_payload, encode_records_run
from ion.wire.codec import decode, encode
from node.agent.envelopes import Sequencer, encode_many, run_items
from node.agent.receiver import Arrival, Receiver
from node.inbox.dedup import DedupTrim
from node.link.base import IncomingMessage
from node.outbox.classes import OutboxConfig, TrafficClass
from node.outbox.policy import OutboundItem, Rejected
from node.outbox.records import SCHEMA
from node.outbox.store import OutboxStore

T0 = 1_700_000_000_000
TOPIC = topics.edge("flow", "feed", Channel.DATA, "src-1")


def records(rng: random.Random) -> DataRecords:
    kind = rng.randrange(4)
    if kind == 0:
        return DataRecords(payload=rng.randbytes(rng.randrange(0, 300)))
    if kind == 1:
        return DataRecords(payload=rng.randbytes(5), content_type="application/x-test")
    if kind == 2:
        return DataRecords(content_type="text/plain")
    n = rng.randrange(1, 4)
    return DataRecords(
        columns=tuple(f"c{i}" for i in range(n)),
        values=tuple(rng.uniform(-1e9, 1e9) for _ in range(2 * n)),
        timestamps_ms=(T0, T0 + 1),
        payload=rng.randbytes(3),
    )


# -- the wire --------------------------------------------------------------------------------


def test_a_run_encodes_as_codec_encode_does() -> None:
    rng = random.Random(3)
    ids = MessageIds()
    for trial in range(60):
        bodies = [records(rng) for _ in range(rng.randrange(1, 40))]
        mids = ids.take(T0 + trial, len(bodies))
        first = rng.choice([1, 127, 128, 2**40])
        got = encode_records_run(
            bodies, message_ids=mids, ion=rng.choice(["", "flow"]), source_node="src-1",
            stream=TOPIC, first_sequence=first, now_ms=rng.choice([0, T0]),
        )  # fmt: skip
        for i, (body, data) in enumerate(zip(bodies, got, strict=True)):
            env = decode(data)
            assert env.body == body
            assert env.sequence == first + i
            assert env.message_id == mids[i]
            assert data == encode(env)


def test_a_run_refuses_what_it_cannot_encode() -> None:
    with pytest.raises(TypeError):
        encode_records_run(
            [Event(type="t", severity=Severity.INFO, subject="s")],  # type: ignore[list-item]
            message_ids=["0" * 32], ion="", source_node="n", stream="s", first_sequence=1,
            now_ms=1,
        )  # fmt: skip
    with pytest.raises(ValueError, match="out of range"):
        encode_records_run(
            [DataRecords()], message_ids=["0" * 32], ion="", source_node="n", stream="s",
            first_sequence=0, now_ms=1,
        )  # fmt: skip


def test_inner_parts_concatenate_into_one_batch() -> None:
    envs = [
        new_envelope(DataRecords(payload=bytes([i])), source_node="n", sequence=i + 1,
                     stream="s", now_ms=T0)
        for i in range(7)
    ]  # fmt: skip
    encoded = [encode(e) for e in envs]
    inner = batch_inner(encoded[:3]) + batch_inner(encoded[3:4]) + batch_inner(encoded[4:])
    mid = "a" * 32
    whole = batch_around(inner, message_id=mid, source_node="n", now_ms=5)
    assert whole == batch_payload(encoded, message_id=mid, source_node="n", now_ms=5)
    body = decode(whole).body
    assert isinstance(body, EnvelopeBatch)
    assert list(body.envelopes) == envs


# -- ids, numbers and runs ---------------------------------------------------------------------


def test_message_ids_grow_even_within_a_millisecond_and_when_the_clock_steps_back() -> None:
    ids = MessageIds()
    got = ids.take(T0, 5) + ids.take(T0, 3) + ids.take(T0 - 10_000, 2) + ids.take(T0 + 1)
    assert all(is_message_id(m) for m in got)
    assert got == sorted(got)
    assert len(set(got)) == len(got)
    assert got[0].startswith(f"{T0:012x}")


def test_sequencer_hands_out_a_block() -> None:
    seq = Sequencer({"s": 4})
    assert seq.take("s", 10) == 5
    assert seq.next("s") == 15
    assert seq.take("t", 3) == 1
    assert seq.next("t") == 4


def test_a_batch_becomes_runs_within_the_senders_batch_limits() -> None:
    config = OutboxConfig(batch_max_items=4, batch_max_bytes=10_000, batch_item_max_bytes=500)
    bodies: list[object] = [DataRecords(payload=b"x" * 10) for _ in range(9)]
    bodies[5] = DataRecords(payload=b"y" * 600)  # too large to share an MQTT message
    encoded = encode_many(
        bodies, message_ids=MessageIds().take(T0, 9), source_node="src-1", ion="flow",
        stream=TOPIC, first_sequence=11, now_ms=T0,
    )  # fmt: skip
    items = run_items(TOPIC, bodies, encoded, first_sequence=11, now_ms=T0, config=config)
    assert [(i.items, i.sequence) for i in items] == [(4, 14), (1, 15), (1, 16), (3, 19)]
    assert items[2].payload == encoded[5]
    # A run's payload is a batch's inside: wrapped, it decodes to its messages in order.
    wrapped = decode(batch_around(items[0].payload, message_id="b" * 32, source_node="src-1",
                                  now_ms=T0))  # fmt: skip
    assert isinstance(wrapped.body, EnvelopeBatch)
    assert [e.sequence for e in wrapped.body.envelopes] == [11, 12, 13, 14]
    assert all(i.stream == TOPIC and i.traffic_class is TrafficClass.DATA for i in items)


def test_other_bodies_make_runs_per_class_and_compacted_ones_stay_single() -> None:
    bodies: list[object] = [
        Event(type="a", severity=Severity.INFO, subject="s"),
        Event(type="b", severity=Severity.INFO, subject="s"),
        HealthReport(pipeline="p", sample_count=1),
        HealthReport(pipeline="p", sample_count=2),
        Event(type="c", severity=Severity.INFO, subject="s"),
    ]
    encoded = encode_many(
        bodies, message_ids=MessageIds().take(T0, 5), source_node="n", ion="", stream="st",
        first_sequence=1, now_ms=T0,
    )  # fmt: skip
    assert [decode(e).body for e in encoded] == bodies
    items = run_items("st", bodies, encoded, first_sequence=1, now_ms=T0, config=OutboxConfig())
    got = [(i.traffic_class, i.items, i.sequence, i.compaction_key) for i in items]
    assert got == [
        (TrafficClass.EVENTS, 2, 2, None),
        (TrafficClass.HEALTH, 1, 3, "st"),
        (TrafficClass.HEALTH, 1, 4, "st"),
        (TrafficClass.EVENTS, 1, 5, None),
    ]


def test_a_run_needs_as_many_sequence_numbers() -> None:
    with pytest.raises(InputError, match="run of items"):
        OutboundItem("t", b"x", TrafficClass.DATA, T0, stream="s", sequence=2, items=3)
    with pytest.raises(InputError, match="run of items"):
        OutboundItem("t", b"x", TrafficClass.DATA, T0, stream="s", sequence=2, items=0)


# -- the store -------------------------------------------------------------------------------


def run_item(first: int, n: int) -> OutboundItem:
    envs = [
        encode(new_envelope(DataRecords(payload=bytes([i % 256])), source_node="src-1",
                            sequence=first + i, stream=TOPIC, now_ms=T0))
        for i in range(n)
    ]  # fmt: skip
    payload = batch_inner(envs) if n > 1 else envs[0]
    return OutboundItem(TOPIC, payload, TrafficClass.DATA, T0, stream=TOPIC,
                        sequence=first + n - 1, items=n)  # fmt: skip


def stored(results: list[int | Rejected]) -> list[int]:
    ids = [r for r in results if isinstance(r, int)]
    assert len(ids) == len(results), results
    return ids


def test_a_run_is_sent_acked_and_retained_as_one(tmp_path: Path) -> None:
    with OutboxStore(tmp_path / "o.db", clock=lambda: T0) as store:
        ids = stored(store.enqueue([run_item(1, 50), run_item(51, 1), run_item(52, 30)]))
        assert store.last_sequences() == {TOPIC: 81}
        taken = store.take(ids)
        assert [(t[2], t[3]) for t in taken.values()] == [(50, 50), (51, 1), (81, 30)]
        assert store.ack(ids) == 3
        assert store.stats().retained_items == 3
        # Every run with a message in the range comes back whole.
        assert [(r.sequence, r.items) for r in store.retained(TOPIC, 40, 60)] == [
            (50, 50), (51, 1), (81, 30)
        ]  # fmt: skip
        assert [(r.sequence, r.items) for r in store.retained(TOPIC, 51, 51)] == [(51, 1)]
        assert [r.sequence for r in store.retained(TOPIC, 1, 1)] == [50]
        assert store.retained(TOPIC, 82, 90) == []


def test_a_run_in_flight_at_a_crash_goes_again_whole(tmp_path: Path) -> None:
    with OutboxStore(tmp_path / "o.db", clock=lambda: T0) as store:
        [rid] = stored(store.enqueue([run_item(1, 20)]))
        store.take([rid])
    with OutboxStore(tmp_path / "o.db", clock=lambda: T0) as store:
        assert store.requeue_in_flight() == 1
        assert store.take([rid])[rid][2:] == (20, 20)


def test_a_file_from_before_runs_is_brought_up_to_date(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = SCHEMA.replace(",\n    items INTEGER NOT NULL DEFAULT 1", "")
    assert old != SCHEMA
    db = sqlite3.connect(path)
    db.executescript(old)
    db.execute(
        "INSERT INTO outbox (id, cls, priority, topic, payload, size, created_ms, stream,"
        " sequence) VALUES (1, ?, 0, 't/x', x'00', 4, 1, 's', 1)",
        (TrafficClass.DATA.code,),
    )
    db.commit()
    db.close()
    with OutboxStore(path, clock=lambda: T0) as store:
        assert store.take([1]) == {1: (b"\x00", "s", 1, 1)}
        store.ack([1])
        assert [(r.sequence, r.items) for r in store.retained("s", 1, 1)] == [(1, 1)]


def test_the_inbox_finds_old_ids_after_the_largest_was_trimmed(tmp_path: Path) -> None:
    trim = DedupTrim(keep_newest=3, forget_before_ms=0)
    with OutboxStore(tmp_path / "o.db", clock=lambda: T0) as store:
        store.inbox_remember(["f" * 32], trim)  # an application's own id, not time-ordered
        store.inbox_remember(["1" * 32, "2" * 32], trim)
        assert store.inbox_seen(["1" * 32, "3" * 32, "f" * 32]) == {"1" * 32, "f" * 32}
        store.inbox_remember(["4" * 32, "5" * 32], trim)  # "f..." falls out of the window
        assert store.inbox_seen(["f" * 32, "2" * 32, "5" * 32]) == {"2" * 32, "5" * 32}
        assert store.inbox_seen(["6" * 32]) == set()
    with OutboxStore(tmp_path / "o.db", clock=lambda: T0) as store:  # read again at open
        assert store.inbox_seen(["4" * 32, "6" * 32]) == {"4" * 32}


# -- the receiver: ids remembered once per burst ------------------------------------------------


class Later:
    def __init__(self) -> None:
        self.calls: list[object] = []

    def __call__(self, fn: object) -> None:
        self.calls.append(fn)

    def run(self) -> None:
        calls, self.calls = self.calls, []
        for fn in calls:
            assert callable(fn)
            fn()


def batch_message(envs: list[Envelope]) -> IncomingMessage:
    inner = batch_inner([encode(e) for e in envs])
    return IncomingMessage(TOPIC, batch_around(inner, message_id=MessageIds().take(T0)[0],
                                               source_node="src-1", now_ms=T0))  # fmt: skip


def envelopes(first: int, n: int, ids: list[str] | None = None) -> list[Envelope]:
    mids = ids or MessageIds().take(T0, n)
    return [
        new_envelope(DataRecords(payload=bytes([first + i])), source_node="src-1", ion="flow",
                     sequence=first + i, stream=TOPIC, now_ms=T0, message_id=mids[i])
        for i in range(n)
    ]  # fmt: skip


def receiver(store: OutboxStore, got: list[Arrival], later: Later | None) -> Receiver:
    return Receiver(
        store=store, node_id="dst-1", on_arrival=got.append,
        on_retransmit_needed=lambda _: None, on_problem=lambda *_: None, clock=lambda: T0,
        remember_later=later,
    )  # fmt: skip


def test_ids_handed_on_count_as_seen_until_remembered_in_one_go(tmp_path: Path) -> None:
    got: list[Arrival] = []
    later = Later()
    with OutboxStore(tmp_path / "o.db", clock=lambda: T0) as store:
        r = receiver(store, got, later)
        first = envelopes(1, 5)
        r.handle(batch_message(first))
        # The sender retried the same messages under new numbers: dropped, not remembered yet.
        r.handle(batch_message(envelopes(6, 5, [e.message_id for e in first])))
        r.handle(batch_message(envelopes(11, 2)))
        assert [a.envelope.sequence for a in got] == [1, 2, 3, 4, 5, 11, 12]
        assert r.counters["duplicate"] == 5
        assert store.inbox_size() == 0
        assert len(later.calls) == 1  # one commit for the burst
        later.run()
        assert store.inbox_size() == 7
        assert store.inbox_seen([e.message_id for e in first]) == {e.message_id for e in first}


def test_a_failure_to_remember_later_is_raised_by_the_next_message(tmp_path: Path) -> None:
    got: list[Arrival] = []
    later = Later()
    with OutboxStore(tmp_path / "o.db", clock=lambda: T0) as store:
        r = receiver(store, got, later)
        r.handle(batch_message(envelopes(1, 3)))

        def broken(*_: object) -> None:
            raise sqlite3.OperationalError("disk I/O error")

        store.inbox_remember = broken  # type: ignore[method-assign,assignment]
        later.run()
        with pytest.raises(sqlite3.OperationalError):
            r.handle(batch_message(envelopes(4, 1)))


def test_without_remember_later_ids_are_remembered_at_once(tmp_path: Path) -> None:
    got: list[Arrival] = []
    with OutboxStore(tmp_path / "o.db", clock=lambda: T0) as store:
        r = receiver(store, got, None)
        r.handle(batch_message(envelopes(1, 4)))
        assert store.inbox_size() == 4
        assert len(got) == 4


def small_data(max_items: int, on_full: str) -> OutboxConfig:
    return OutboxConfig.from_mapping(
        {"classes": {"data": {"max_items": max_items, "on_full": on_full}}}
    )


def test_caps_and_counters_count_the_messages_of_runs(tmp_path: Path) -> None:
    with OutboxStore(tmp_path / "o.db", small_data(100, "drop_oldest"), clock=lambda: T0) as s:
        first = stored(s.enqueue([run_item(1, 40), run_item(41, 40)]))
        data = s.stats().classes[TrafficClass.DATA]
        assert (data.items, data.counters["enqueued"]) == (80, 80)
        # 30 more do not fit: the oldest run goes, whole.
        later = stored(s.enqueue([run_item(81, 30)]))
        data = s.stats().classes[TrafficClass.DATA]
        assert (data.items, data.counters["dropped"]) == (70, 40)
        assert [i.id for i in s.items()] == [first[1], later[0]]
        s.take([first[1]])
        assert s.stats().classes[TrafficClass.DATA].in_flight == 40
        s.ack([first[1]])
        data = s.stats().classes[TrafficClass.DATA]
        assert (data.items, data.counters["acked"], data.counters["sent"]) == (30, 40, 40)
    with OutboxStore(tmp_path / "o.db", small_data(100, "drop_oldest"), clock=lambda: T0) as s:
        assert s.stats().classes[TrafficClass.DATA].items == 30  # read again at open


def test_a_run_that_does_not_fit_is_refused_whole(tmp_path: Path) -> None:
    with OutboxStore(tmp_path / "o.db", small_data(50, "reject"), clock=lambda: T0) as s:
        stored(s.enqueue([run_item(1, 40)]))
        [refused] = s.enqueue([run_item(41, 11)])
        assert isinstance(refused, Rejected)
        assert s.stats().classes[TrafficClass.DATA].counters["rejected"] == 11
        stored(s.enqueue([run_item(41, 10)]))
    with OutboxStore(tmp_path / "p.db", small_data(50, "drop_oldest"), clock=lambda: T0) as s:
        [refused] = s.enqueue([run_item(1, 51)])  # more than the class ever holds
        assert isinstance(refused, Rejected)


def test_paced_backlog_counts_the_messages_of_runs() -> None:
    from node.outbox.pacing import trim_backlog
    from node.outbox.policy import ClassQueue, Pending

    backlog = [Pending(1, "s", 100, items=50), Pending(2, "s", 100, items=50), Pending(3, "s", 1)]
    queues = {TrafficClass.DATA: ClassQueue(backlog, [])}
    trimmed, held = trim_backlog(queues, {"s": 60})
    assert [p.id for p in trimmed[TrafficClass.DATA].backlog] == [1, 2]
    assert held


def test_one_commit_stores_consecutive_publishes_of_a_topic_as_runs() -> None:
    from node.agent.envelopes import Many, Request, outbound_items

    other = topics.edge("flow", "other", Channel.DATA, "src-1")
    given = "d" * 32
    requests: list[Request] = [
        (TOPIC, DataRecords(payload=b"0"), "flow", "", None, None),
        (TOPIC, DataRecords(payload=b"1"), "flow", "", given, None),
        (TOPIC, Many((DataRecords(payload=b"2"), DataRecords(payload=b"3")), None), "flow",
         "", None, None),
        (TOPIC, DataRecords(payload=b"4"), "flow", "", None, None),
        (other, DataRecords(payload=b"x"), "flow", "", None, None),
        (TOPIC, DataRecords(payload=b"5"), "flow", "corr", None, None),  # alone: correlated
        (TOPIC, DataRecords(payload=b"6"), "flow", "", None, None),
    ]  # fmt: skip
    items, owners = outbound_items(
        requests, node_id="src-1", sequencer=Sequencer({}), ids=MessageIds(),
        config=OutboxConfig(), now_ms=T0,
    )  # fmt: skip
    assert [(i.topic == TOPIC, i.items, i.sequence) for i in items] == [
        (True, 2, 2), (True, 2, 4), (True, 1, 5), (False, 1, 1), (True, 1, 6), (True, 1, 7)
    ]  # fmt: skip
    assert owners == [(0, 1), (0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6)]
    first = decode(batch_around(items[0].payload, message_id="e" * 32, source_node="src-1",
                                now_ms=T0)).body  # fmt: skip
    assert isinstance(first, EnvelopeBatch)
    assert first.envelopes[1].message_id == given
    assert [e.body for e in first.envelopes] == [
        DataRecords(payload=b"0"),
        DataRecords(payload=b"1"),
    ]
    assert decode(items[4].payload).correlation_id == "corr"
