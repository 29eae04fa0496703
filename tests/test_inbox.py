"""The inbox's pure parts: duplicate screening by message id and gap tracking per stream."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ion.errors import ConfigError
from node.inbox.dedup import DedupConfig, DedupTrim, is_message_id, screen, trim_for
from node.inbox.sequence import (
    Action,
    Deliver,
    Duplicate,
    GapFilled,
    Lost,
    RequestRetransmit,
    SequenceConfig,
    SequenceTracker,
)
from node.outbox.store import OutboxStore

A, B, C = "a" * 32, "b" * 32, "0123456789abcdef" * 2

# -- dedup ---------------------------------------------------------------------------------------


def test_screen_sorts_fresh_duplicate_and_invalid() -> None:
    got = screen([A, B, A, "nope", C, "A" * 32], already_seen={B})
    assert (got.fresh, got.duplicates, got.invalid) == ((0, 4), (1, 2), (3, 5))


def test_message_id_shape() -> None:
    assert is_message_id(C)
    assert not is_message_id(C[:-1])
    assert not is_message_id(C.upper())


def test_trim_for_uses_both_bounds() -> None:
    assert trim_for(DedupConfig(max_ids=10, max_age_ms=1000), 5000) == DedupTrim(10, 4000)


@pytest.mark.parametrize("data", [{"max_ids": 0}, {"max_age_ms": True}, {"size": 3}])
def test_dedup_config_rejects(data: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        DedupConfig.from_mapping(data)


def test_dedup_window_through_the_store(tmp_path: Path) -> None:
    now = [1_000]
    cfg = DedupConfig(max_ids=2, max_age_ms=10_000)
    with OutboxStore(tmp_path / "inbox.db", clock=lambda: now[0]) as store:
        ids = [A, B, A]
        verdict = screen(ids, store.inbox_seen(ids))
        assert verdict.fresh == (0, 1)
        store.inbox_remember([ids[i] for i in verdict.fresh], trim_for(cfg, now[0]))
    # Persisted: a restarted receiver still drops the duplicates.
    with OutboxStore(tmp_path / "inbox.db", clock=lambda: now[0]) as store:
        verdict = screen([B, C], store.inbox_seen([B, C]))
        assert (verdict.fresh, verdict.duplicates) == ((1,), (0,))
        store.inbox_remember([C], trim_for(cfg, now[0]))
        assert store.inbox_seen([A, B, C]) == {B, C}  # bounded: the oldest went


# -- sequence ------------------------------------------------------------------------------------


def tracker(**kw: object) -> SequenceTracker[str]:
    return SequenceTracker(SequenceConfig(**kw))  # type: ignore[arg-type]


def delivered(actions: list[Action[str]]) -> list[int]:
    return [a.sequence for a in actions if isinstance(a, Deliver)]


def test_in_order_arrivals_are_delivered_at_once() -> None:
    t = tracker()
    for seq in (1, 2, 3):
        assert t.arrive("n", "s", seq, f"m{seq}", 0) == [Deliver("n", "s", seq, f"m{seq}")]
    assert t.floors() == {("n", "s"): 3}


def test_a_gap_is_requested_held_and_released_in_order() -> None:
    t = tracker()
    t.arrive("n", "s", 1, "m1", 0)
    acts = t.arrive("n", "s", 4, "m4", 10)
    assert acts == [RequestRetransmit("n", "s", 2, 3, 1)]
    assert t.arrive("n", "s", 5, "m5", 11) == []
    assert t.arrive("n", "s", 3, "m3", 12) == []
    acts = t.arrive("n", "s", 2, "m2", 13)
    assert acts == [
        GapFilled("n", "s", 2, 3),
        Deliver("n", "s", 2, "m2"),
        Deliver("n", "s", 3, "m3"),
        Deliver("n", "s", 4, "m4"),
        Deliver("n", "s", 5, "m5"),
    ]


def test_duplicates_below_and_above_the_floor() -> None:
    t = tracker()
    t.arrive("n", "s", 1, "m1", 0)
    t.arrive("n", "s", 3, "m3", 0)
    assert t.arrive("n", "s", 1, "again", 0) == [Duplicate("n", "s", 1)]
    assert t.arrive("n", "s", 3, "again", 0) == [Duplicate("n", "s", 3)]


def test_unordered_streams_deliver_at_once_and_still_track_gaps() -> None:
    t = tracker(ordered=False, give_up_ms=100, retry_ms=1000)
    t.arrive("n", "s", 1, "m1", 0)
    acts = t.arrive("n", "s", 3, "m3", 0)
    assert acts == [RequestRetransmit("n", "s", 2, 2, 1), Deliver("n", "s", 3, "m3")]
    assert t.tick(100) == [Lost("n", "s", 2, 2, "not retransmitted in time")]
    assert t.floors() == {("n", "s"): 3}


def test_requests_are_repeated_then_given_up() -> None:
    t = tracker(retry_ms=100, give_up_ms=250, max_hold_ms=10_000)
    t.arrive("n", "s", 1, "m1", 0)
    t.arrive("n", "s", 3, "m3", 0)
    assert t.tick(50) == []
    assert t.tick(100) == [RequestRetransmit("n", "s", 2, 2, 2)]
    assert t.tick(200) == [RequestRetransmit("n", "s", 2, 2, 3)]
    acts = t.tick(250)
    assert acts == [Lost("n", "s", 2, 2, "not retransmitted in time"), Deliver("n", "s", 3, "m3")]


def test_hold_back_is_bounded_in_time() -> None:
    t = tracker(max_hold_ms=500)
    t.arrive("n", "s", 1, "m1", 0)
    t.arrive("n", "s", 3, "m3", 100)
    assert t.tick(599) == []
    assert t.tick(600) == [Lost("n", "s", 2, 2, "held back too long"), Deliver("n", "s", 3, "m3")]
    # A late copy of the lost message is stale now.
    assert t.arrive("n", "s", 2, "m2", 700) == [Duplicate("n", "s", 2)]


def test_hold_back_is_bounded_in_count() -> None:
    t = tracker(max_held=2)
    t.arrive("n", "s", 1, "m1", 0)
    t.arrive("n", "s", 3, "m3", 0)
    t.arrive("n", "s", 4, "m4", 0)
    acts = t.arrive("n", "s", 5, "m5", 0)
    assert acts[0] == Lost("n", "s", 2, 2, "too many held back")
    assert delivered(acts) == [3, 4, 5]


def test_a_partly_lost_gap_never_reports_filled() -> None:
    t = tracker(ordered=False, give_up_ms=100)
    t.arrive("n", "s", 1, "m1", 0)
    t.arrive("n", "s", 5, "m5", 0)  # missing 2..4
    t.arrive("n", "s", 3, "m3", 1)  # splits into 2..2 and 4..4
    assert t.tick(100) == [
        Lost("n", "s", 2, 2, "not retransmitted in time"),
        Lost("n", "s", 4, 4, "not retransmitted in time"),
    ]


def test_joining_mid_stream_or_from_the_start() -> None:
    assert delivered(tracker().arrive("n", "s", 500, "m", 0)) == [500]
    acts = tracker(join_mid_stream=False).arrive("n", "s", 3, "m", 0)
    assert acts == [RequestRetransmit("n", "s", 1, 2, 1)]


def test_unsequenced_messages_pass_through() -> None:
    t = tracker()
    assert t.arrive("n", "", 0, "retained", 0) == [Deliver("n", "", 0, "retained")]
    assert t.floors() == {}


def test_streams_are_independent_and_restored() -> None:
    t = tracker(join_mid_stream=False)
    t.arrive("n1", "s", 1, "a", 0)
    t.arrive("n2", "s", 1, "b", 0)
    t.arrive("n1", "t", 1, "c", 0)
    restored: SequenceTracker[str] = SequenceTracker(
        SequenceConfig(join_mid_stream=False), t.floors()
    )
    assert restored.arrive("n1", "s", 1, "a", 1) == [Duplicate("n1", "s", 1)]
    assert restored.arrive("n2", "s", 3, "x", 1) == [RequestRetransmit("n2", "s", 2, 2, 1)]


def test_too_many_streams_forgets_the_least_recently_active() -> None:
    t = tracker(max_streams=2)
    t.arrive("n", "a", 1, "a1", 0)
    t.arrive("n", "b", 1, "b1", 1)
    t.arrive("n", "b", 3, "b3", 2)  # b holds 3, waiting for 2
    t.arrive("n", "a", 2, "a2", 3)
    acts = t.arrive("n", "c", 1, "c1", 4)  # b is the least recently active: flushed
    assert acts == [
        Lost("n", "b", 2, 2, "stream forgotten (too many streams)"),
        Deliver("n", "b", 3, "b3"),
        Deliver("n", "c", 1, "c1"),
    ]
    assert t.floors()[("n", "b")] == 3  # remembered, so b is not re-baselined


@pytest.mark.parametrize("data", [{"ordered": 1}, {"max_held": 0}, {"hold": 3}])
def test_sequence_config_rejects(data: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        SequenceConfig.from_mapping(data)


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(2, 40),
    data=st.data(),
    ordered=st.booleans(),
)
def test_any_arrival_order_delivers_each_message_once(
    n: int, data: st.DataObject, ordered: bool
) -> None:
    """Shuffled, duplicated arrivals of 1..n, some never arriving: every message that arrives
    is delivered exactly once (in order when ordered), and exactly the rest is reported lost
    (when something after it arrived)."""
    missing = data.draw(st.sets(st.integers(2, n)))  # 1 arrives: it sets the baseline
    arrivals = [s for s in range(1, n + 1) if s not in missing]
    arrivals += data.draw(st.lists(st.sampled_from(arrivals), max_size=10))  # duplicates
    order = data.draw(st.permutations(arrivals))
    order.remove(1)
    order.insert(0, 1)
    t = tracker(ordered=ordered, max_held=1000, max_hold_ms=1000, give_up_ms=1000)
    actions: list[Action[str]] = []
    for now, seq in enumerate(order):
        actions += t.arrive("n", "s", seq, f"m{seq}", now)
    actions += t.tick(10_000)
    got = delivered(actions)
    assert sorted(got) == sorted(set(arrivals))
    if ordered:
        assert got == sorted(got)
    lost = {
        s for a in actions if isinstance(a, Lost) for s in range(a.from_sequence, a.to_sequence + 1)
    }
    # A loss at the tail is invisible to sequence numbers alone (nothing comes after it).
    assert lost == {s for s in missing if s < max(arrivals)}
    dups = [a.sequence for a in actions if isinstance(a, Duplicate)]
    assert len(dups) == len(order) - len(set(arrivals))
    assert t.floors() == {("n", "s"): max(arrivals)}  # everything settled
