"""The backlog pacing rule (pure): receivers' acknowledgements bound the unconfirmed backlog."""

from __future__ import annotations

import pytest

from node.outbox.pacing import ReceiverPacing


def test_without_acknowledgements_nothing_is_paced() -> None:
    p = ReceiverPacing(min_items=10)
    p.sent("s", 1_000)
    assert p.stream_budget("s", 0) is None
    assert p.budgets(["s", "t"], 0) == {}
    assert p.unconfirmed(0) == 0


def test_the_bound_follows_the_best_rate_the_receiver_showed_lately() -> None:
    p = ReceiverPacing(target_delay_ms=250, min_items=100, min_chunk=10, ack_timeout_ms=2_000)
    p.sent("s", 50)
    p.acked("b", "s", 0, now_ms=0)
    assert p.stream_budget("s", 0) == 50  # no rate yet: the floor, minus what is unconfirmed
    p.sent("s", 4_000)
    p.acked("b", "s", 2_000, now_ms=100)  # 20,000 items/s: a bound of 5,000
    assert p.unconfirmed(100) == 2_000
    assert p.stream_budget("s", 100) == 3_000
    # Held back, it handled less for a while: its best recent rate still counts...
    p.acked("b", "s", 2_100, now_ms=200)
    assert p.stream_budget("s", 200) == 3_100
    # ...until that is older than the rate window.
    p.acked("b", "s", 2_200, now_ms=2_150)
    assert p.stream_budget("s", 2_150) == 0  # bound 100 (floor) < 1,800 unconfirmed


def test_a_small_budget_waits_for_a_worthwhile_amount() -> None:
    p = ReceiverPacing(target_delay_ms=250, min_items=1_000, min_chunk=200)
    p.sent("s", 900)
    p.acked("b", "s", 0, now_ms=0)
    assert p.stream_budget("s", 0) == 0  # 100 left: wait
    p.acked("b", "s", 500, now_ms=50)  # 10,000/s: bound 2,500, 400 unconfirmed
    assert p.stream_budget("s", 50) == 2_100
    assert p.paced_budget(50) == 2_100


def test_the_slowest_receiver_paces_and_a_silent_one_stops_pacing() -> None:
    p = ReceiverPacing(min_items=100, min_chunk=1, ack_timeout_ms=2_000)
    p.sent("s", 1_000)
    p.acked("fast", "s", 990, now_ms=0)
    p.acked("slow", "s", 100, now_ms=0)
    assert p.unconfirmed(0) == 900
    assert p.stream_budget("s", 0) == 0
    # The slow one goes quiet (dead, disconnected): after the timeout only the fast one counts.
    p.acked("fast", "s", 1_000, now_ms=2_500)
    assert p.unconfirmed(2_500) == 0
    assert p.stream_budget("s", 2_500) == 100


def test_streams_are_paced_separately_and_old_acks_never_move_back() -> None:
    p = ReceiverPacing(min_items=10, min_chunk=1)
    p.sent("a", 20)
    p.sent("b", 30)
    p.acked("r", "a", 15, now_ms=0)
    p.acked("r", "b", 25, now_ms=0)
    p.acked("r", "b", 5, now_ms=1)  # reordered on the way: ignored
    assert p.budgets(["a", "b", "c"], 1) == {"a": 5, "b": 5}
    p.acked("r", "unknown", 5, now_ms=1)  # a stream we never sent: ignored
    assert p.unconfirmed(1) == 10


def test_after_an_outage_known_receivers_pace_the_backlog_from_the_first_round() -> None:
    p = ReceiverPacing(min_items=100, ack_timeout_ms=2_000)
    p.sent("s", 10)
    p.acked("b", "s", 10, now_ms=0)
    p.sent("s", 10_000)  # stored during a long outage, now going out
    assert p.stream_budget("s", 60_000) is None  # the old ack alone says nothing any more
    p.link_up(60_000)
    assert p.stream_budget("s", 60_000) == 0
    assert p.stream_budget("s", 62_001) is None  # and a receiver that stays silent stops pacing


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ReceiverPacing(min_items=0)
    with pytest.raises(ValueError, match="at least 1"):
        ReceiverPacing(target_delay_ms=0)


def test_trim_cuts_only_paced_backlog_and_says_when_it_held_something() -> None:
    from node.outbox.classes import TrafficClass
    from node.outbox.pacing import trim_backlog
    from node.outbox.policy import ClassQueue, Pending

    backlog = [Pending(i, "paced" if i % 2 else "free", 100) for i in range(1, 7)]
    live = [Pending(10, "paced", 100)]
    queues = {TrafficClass.DATA: ClassQueue(backlog, live)}
    trimmed, held = trim_backlog(queues, {"paced": 1})
    assert [p.id for p in trimmed[TrafficClass.DATA].backlog] == [1, 2, 4, 6]
    assert list(trimmed[TrafficClass.DATA].live) == live
    assert held
    trimmed, held = trim_backlog(queues, {"paced": 5})
    assert [p.id for p in trimmed[TrafficClass.DATA].backlog] == [1, 2, 3, 4, 5, 6]
    assert not held
    only_paced = {TrafficClass.DATA: ClassQueue([Pending(1, "paced", 1)], [])}
    assert trim_backlog(only_paced, {"paced": 0}) == ({}, True)
