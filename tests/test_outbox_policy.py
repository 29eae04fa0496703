"""The outbox's pure core: class config, admission (on-full rules) and the send scheduler."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ion.errors import ConfigError, InputError
from node.outbox.classes import DEFAULT_CLASSES, ClassConfig, OutboxConfig, TrafficClass
from node.outbox.policy import (
    Admit,
    ClassQueue,
    ClassUsage,
    OutboundItem,
    Pending,
    Rejected,
    RejectReason,
    Resident,
    SendScheduler,
    eviction_need,
    plan_enqueue,
    topic_group,
)

C = TrafficClass
NOW = 1_000_000


def item(
    cls: TrafficClass = C.DATA,
    size: int = 10,
    *,
    topic: str = "t/a",
    key: str | None = None,
    created: int = NOW,
    expires: int | None = None,
) -> OutboundItem:
    payload = b"x" * (size - len(topic))
    return OutboundItem(topic, payload, cls, created, expires_ms=expires, compaction_key=key)


def config(**classes: ClassConfig) -> OutboxConfig:
    merged = dict(DEFAULT_CLASSES)
    merged.update({C(name): cfg for name, cfg in classes.items()})
    return OutboxConfig(classes=merged)


def small(
    on_full: str, max_items: int = 3, max_bytes: int = 1000, priority: int = 1
) -> ClassConfig:
    return ClassConfig(priority, 60_000, max_items, max_bytes, on_full)  # type: ignore[arg-type]


# -- config --------------------------------------------------------------------------------------


def test_defaults_are_ordered_by_importance() -> None:
    priorities = [OutboxConfig().of(c).priority for c in TrafficClass]
    assert priorities == sorted(priorities, reverse=True)
    assert OutboxConfig().of(C.CONTROL).on_full == "reject"
    assert OutboxConfig().of(C.DATA).on_full == "drop_oldest"
    assert OutboxConfig().of(C.STATS).on_full == "compact"


def test_from_mapping_overlays_defaults() -> None:
    cfg = OutboxConfig.from_mapping(
        {
            "live_share": 0.25,
            "synchronous": "full",
            "classes": {"data": {"max_items": 5, "ttl_ms": None}, "stats": {"on_full": "reject"}},
        }
    )
    assert cfg.live_share == 0.25
    assert cfg.synchronous == "FULL"
    assert cfg.of(C.DATA) == replace(DEFAULT_CLASSES[C.DATA], max_items=5, ttl_ms=None)
    assert cfg.of(C.STATS).on_full == "reject"
    assert cfg.of(C.CONTROL) == DEFAULT_CLASSES[C.CONTROL]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"nope": 1}, "unknown key"),
        ({"classes": {"video": {}}}, "unknown class"),
        ({"classes": {"data": {"max_item": 3}}}, "unknown key"),
        ({"classes": {"data": {"max_items": 0}}}, "positive"),
        ({"classes": {"data": {"max_items": True}}}, "integer"),
        ({"classes": {"data": {"max_bytes": 1.5}}}, "integer"),
        ({"classes": {"data": {"on_full": "explode"}}}, "on_full"),
        ({"live_share": 2}, "live_share"),
        ({"synchronous": "OFF"}, "synchronous"),
        ({"batch_max_items": -1}, "positive"),
        ({"classes": []}, "mapping"),
    ],
)
def test_from_mapping_rejects(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        OutboxConfig.from_mapping(data)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"topic": "a/+/b"},
        {"topic": "a/#"},
        {"topic": ""},
        {"sequence": 3},  # a sequence needs a stream
        {"sequence": -1, "stream": "s"},
        {"created_ms": -5},
    ],
)
def test_outbound_item_validates(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"topic": "t", "payload": b"", "traffic_class": C.DATA}
    base["created_ms"] = 0
    with pytest.raises(InputError):
        OutboundItem(**{**base, **kwargs})  # type: ignore[arg-type]


def test_item_size_counts_topic_and_payload() -> None:
    assert OutboundItem("ab/c", b"12345", C.DATA, 0).size == 9


# -- admission -----------------------------------------------------------------------------------


def test_accepts_while_there_is_room_and_sets_expiry_from_ttl() -> None:
    cfg = config(data=small("reject"))
    plan = plan_enqueue([item(), item()], {}, cfg, NOW)
    assert plan.outcomes == (Admit(NOW + 60_000), Admit(NOW + 60_000))
    assert plan.usage[C.DATA] == ClassUsage(2, 20)
    assert plan.counts == {(C.DATA, "enqueued"): 2}


def test_explicit_expiry_wins_and_past_expiry_is_refused() -> None:
    cfg = config(data=small("reject"))
    plan = plan_enqueue([item(expires=NOW + 5), item(expires=NOW)], {}, cfg, NOW)
    assert plan.outcomes[0] == Admit(NOW + 5)
    assert isinstance(plan.outcomes[1], Rejected)
    assert plan.outcomes[1].reason is RejectReason.EXPIRED
    ttl_passed = plan_enqueue([item(created=NOW - 60_000)], {}, cfg, NOW)
    assert ttl_passed.outcomes[0] == Rejected(RejectReason.EXPIRED, "expired before it was stored")


def test_too_large_is_refused_whatever_the_rule() -> None:
    for rule in ("reject", "drop_oldest", "compact"):
        plan = plan_enqueue([item(size=2000)], {}, config(data=small(rule)), NOW)
        assert isinstance(plan.outcomes[0], Rejected)
        assert plan.outcomes[0].reason is RejectReason.TOO_LARGE


def test_reject_rule_refuses_and_evicts_nothing() -> None:
    cfg = config(control=small("reject"))
    usage = {C.CONTROL: ClassUsage(3, 30)}
    oldest = {C.CONTROL: [Resident(1, 10)]}
    plan = plan_enqueue([item(C.CONTROL)], usage, cfg, NOW, oldest=oldest)
    assert plan.outcomes == (Rejected(RejectReason.FULL, "control is full"),)
    assert plan.evicted == ()
    assert plan.usage[C.CONTROL] == ClassUsage(3, 30)
    assert plan.counts == {(C.CONTROL, "rejected"): 1}


def test_drop_oldest_evicts_just_enough_stored_items() -> None:
    cfg = config(data=small("drop_oldest", max_items=10, max_bytes=100))
    usage = {C.DATA: ClassUsage(3, 90)}
    oldest = {C.DATA: [Resident(1, 30), Resident(2, 30), Resident(3, 30)]}
    plan = plan_enqueue([item(size=50)], usage, cfg, NOW, oldest=oldest)
    assert plan.outcomes == (Admit(NOW + 60_000, evicts=(1, 2)),)
    assert plan.evicted == (1, 2)
    assert plan.usage[C.DATA] == ClassUsage(2, 80)
    assert plan.counts == {(C.DATA, "enqueued"): 1, (C.DATA, "dropped"): 2}


def test_drop_oldest_with_only_in_flight_items_refuses() -> None:
    cfg = config(data=small("drop_oldest"))
    usage = {C.DATA: ClassUsage(3, 30)}  # all in flight: none offered as evictable
    plan = plan_enqueue([item()], usage, cfg, NOW, oldest={C.DATA: []})
    assert plan.outcomes == (Rejected(RejectReason.FULL, "data: nothing evictable"),)


def test_a_batch_larger_than_the_class_displaces_its_own_early_items() -> None:
    cfg = config(data=small("drop_oldest", max_items=2))
    usage = {C.DATA: ClassUsage(1, 10)}
    plan = plan_enqueue(
        [item(), item(), item()], usage, cfg, NOW, oldest={C.DATA: [Resident(7, 10)]}
    )
    reasons = [o.reason if isinstance(o, Rejected) else "ok" for o in plan.outcomes]
    assert reasons == [RejectReason.DISPLACED, "ok", "ok"]
    assert plan.evicted == (7,)  # kept although the item it made room for was displaced
    assert plan.usage[C.DATA] == ClassUsage(2, 20)
    assert plan.counts[C.DATA, "enqueued"] == 2
    assert plan.counts[C.DATA, "dropped"] == 2


def test_compact_replaces_the_oldest_with_the_same_key() -> None:
    cfg = config(stats=small("compact", max_items=3))
    usage = {C.STATS: ClassUsage(3, 30)}
    oldest = {C.STATS: [Resident(1, 10), Resident(2, 10), Resident(3, 10)]}
    by_key = {C.STATS: {"p1": [Resident(2, 10), Resident(3, 10)]}}
    plan = plan_enqueue([item(C.STATS, key="p1")], usage, cfg, NOW, oldest=oldest, by_key=by_key)
    assert plan.outcomes == (Admit(NOW + 60_000, evicts=(2,), replaces=2),)
    assert plan.counts[C.STATS, "compacted"] == 1


def test_compact_falls_back_to_the_oldest_when_the_key_is_new() -> None:
    cfg = config(stats=small("compact", max_items=3))
    usage = {C.STATS: ClassUsage(3, 30)}
    oldest = {C.STATS: [Resident(1, 10), Resident(2, 10), Resident(3, 10)]}
    plan = plan_enqueue(
        [item(C.STATS, key="new")], usage, cfg, NOW, oldest=oldest, by_key={C.STATS: {"new": []}}
    )
    assert plan.outcomes == (Admit(NOW + 60_000, evicts=(1,)),)
    assert plan.counts[C.STATS, "dropped"] == 1


def test_compact_inside_one_batch() -> None:
    cfg = config(stats=small("compact", max_items=2))
    batch = [item(C.STATS, key="a"), item(C.STATS, key="b"), item(C.STATS, key="a")]
    plan = plan_enqueue(batch, {}, cfg, NOW)
    assert isinstance(plan.outcomes[0], Rejected)
    assert plan.outcomes[0].reason is RejectReason.COMPACTED
    assert isinstance(plan.outcomes[1], Admit)
    assert isinstance(plan.outcomes[2], Admit)


def test_eviction_need_bounds_what_the_store_must_fetch() -> None:
    cfg = config(data=small("drop_oldest", max_items=5, max_bytes=100), control=small("reject"))
    usage = {C.DATA: ClassUsage(5, 80), C.CONTROL: ClassUsage(3, 30)}
    need = eviction_need(usage, [item(size=30), item(size=30), item(C.CONTROL)], cfg)
    assert set(need) == {C.DATA}
    assert (need[C.DATA].items, need[C.DATA].bytes) == (2, 40)
    assert eviction_need({}, [item()], cfg) == {}


Case = tuple[
    OutboxConfig, dict[TrafficClass, ClassUsage], list[Resident], dict[str, list[Resident]],
    list[OutboundItem],
]  # fmt: skip


@st.composite
def admission_cases(draw: st.DrawFn) -> Case:
    rule = draw(st.sampled_from(["reject", "drop_oldest", "compact"]))
    max_items = draw(st.integers(1, 6))
    max_bytes = draw(st.integers(20, 120))
    cfg = config(stats=small(rule, max_items, max_bytes))
    resident_sizes = draw(st.lists(st.integers(10, 30), max_size=max_items))
    while sum(resident_sizes) > max_bytes:
        resident_sizes.pop()
    in_flight = draw(st.integers(0, len(resident_sizes)))
    residents = [Resident(i + 1, s) for i, s in enumerate(resident_sizes)]
    keys = {r.id: draw(st.sampled_from(["a", "b", None])) for r in residents}
    evictable = residents[in_flight:]
    by_key: dict[str, list[Resident]] = {}
    for r in evictable:
        key = keys[r.id]
        if key is not None:
            by_key.setdefault(key, []).append(r)
    usage = {C.STATS: ClassUsage(len(residents), sum(resident_sizes))}
    batch = [
        item(C.STATS, size=draw(st.integers(10, 40)), key=draw(st.sampled_from(["a", "b", None])))
        for _ in range(draw(st.integers(1, 8)))
    ]
    return cfg, usage, evictable, by_key, batch


@settings(max_examples=300, deadline=None)
@given(admission_cases())
def test_admission_properties(case: Case) -> None:
    cfg, usage, evictable, by_key, batch = case
    plan = plan_enqueue(
        batch, usage, cfg, NOW, oldest={C.STATS: evictable}, by_key={C.STATS: by_key}
    )
    rule = cfg.of(C.STATS)
    sizes = {r.id: r.size for r in evictable}
    # Only offered (queued) items are evicted, each once; the reject rule never evicts.
    assert len(set(plan.evicted)) == len(plan.evicted)
    assert set(plan.evicted) <= set(sizes)
    if rule.on_full == "reject":
        assert plan.evicted == ()
    # Usage is exact and never passes the caps.
    admitted = [i for i, o in zip(batch, plan.outcomes, strict=True) if isinstance(o, Admit)]
    before = usage[C.STATS]
    expected = ClassUsage(
        before.items + len(admitted) - len(plan.evicted),
        before.bytes + sum(i.size for i in admitted) - sum(sizes[e] for e in plan.evicted),
    )
    assert plan.usage[C.STATS] == expected
    assert expected.items <= rule.max_items
    assert expected.bytes <= rule.max_bytes
    counts = Counter({k[1]: v for k, v in plan.counts.items()})
    assert counts["enqueued"] == len(admitted)
    refused = [o for o in plan.outcomes if isinstance(o, Rejected)]
    assert counts["rejected"] == sum(
        o.reason not in (RejectReason.DISPLACED, RejectReason.COMPACTED) for o in refused
    )


# -- scheduler ----------------------------------------------------------------------------------


def pend(ids: range | list[int], topic: str = "t/a", size: int = 10, **kw: int) -> list[Pending]:
    return [Pending(i, topic, size, **kw) for i in ids]


def test_idle_class_sends_one_at_a_time_in_order() -> None:
    sched = SendScheduler(OutboxConfig())
    plan = sched.next_sends({C.DATA: ClassQueue(pend(range(1, 4)))}, 10, NOW)
    assert [s.ids for s in plan.sends] == [(1,), (2,), (3,)]
    assert not any(s.batched for s in plan.sends)


def test_slots_are_shared_by_priority_weights_without_starvation() -> None:
    cfg = OutboxConfig()
    sched = SendScheduler(cfg)
    next_id = iter(range(1, 10**9))
    queues = {
        c: ClassQueue(pend([next(next_id) for _ in range(200)], f"t/{c.value}", 5000)) for c in C
    }
    got: Counter[TrafficClass] = Counter()
    total_weight = sum(cfg.of(c).priority for c in C)
    for _ in range(total_weight * 3):  # one slot per call: the deficit carries over
        plan = sched.next_sends(queues, 1, NOW)
        (send,) = plan.sends
        got[send.traffic_class] += 1
        queues[send.traffic_class] = ClassQueue(
            [p for p in queues[send.traffic_class].backlog if p.id not in send.ids]
        )
    assert got == {c: cfg.of(c).priority * 3 for c in C}


@settings(max_examples=100, deadline=None)
@given(
    present=st.sets(st.sampled_from(list(C)), min_size=1),
    window=st.integers(1, 40),
    warmup=st.integers(0, 70),
)
def test_every_waiting_class_is_served_within_one_round(
    present: set[TrafficClass], window: int, warmup: int
) -> None:
    cfg = OutboxConfig()
    sched = SendScheduler(cfg)
    queues = {
        c: ClassQueue(pend(range(c.code * 10**6, c.code * 10**6 + 100), size=5000)) for c in C
    }
    for _ in range(warmup):  # leave the round robin somewhere arbitrary
        sched.next_sends(queues, 1, NOW)
    round_len = sum(cfg.of(c).priority for c in present)
    served: set[TrafficClass] = set()
    slots = 0
    only = {c: queues[c] for c in present}
    while slots < round_len * 2:
        plan = sched.next_sends(only, window, NOW)
        assert len(plan.sends) == window
        served |= {s.traffic_class for s in plan.sends}
        slots += window
    assert served == present


def test_live_items_are_interleaved_with_the_backlog() -> None:
    sched = SendScheduler(OutboxConfig())
    sched.link_up(1000)
    queue = ClassQueue(pend(range(1, 1001), size=5000), pend(range(1001, 1011), size=5000))
    plan = sched.next_sends({C.EVENTS: queue}, 20, NOW)
    ids = [s.ids[0] for s in plan.sends]
    assert ids == [
        1,
        1001,
        2,
        1002,
        3,
        1003,
        4,
        1004,
        5,
        1005,
        6,
        1006,
        7,
        1007,
        8,
        1008,
        9,
        1009,
        10,
        1010,
    ]


def test_live_share_is_exact_across_one_slot_calls() -> None:
    cfg = replace(OutboxConfig(), live_share=0.25)
    sched = SendScheduler(cfg)
    sched.link_up(10_000)
    backlog, live = pend(range(1, 10_001), size=5000), pend(range(10_001, 10_101), size=5000)
    live_sent = 0
    for _ in range(100):
        (send,) = sched.next_sends({C.DATA: ClassQueue(backlog, live)}, 1, NOW).sends
        if send.ids[0] > 10_000:
            live_sent += 1
            live = [p for p in live if p.id != send.ids[0]]
        else:
            backlog = [p for p in backlog if p.id != send.ids[0]]
    assert live_sent == 25


def test_fifo_again_once_the_backlog_is_gone() -> None:
    sched = SendScheduler(OutboxConfig())
    sched.link_up(5)
    sched.next_sends({C.DATA: ClassQueue((), pend([6, 7]))}, 5, NOW)
    assert sched.live_after_id is None


def test_backlog_of_small_items_is_batched_by_topic() -> None:
    cfg = replace(OutboxConfig(), batch_max_items=4, batch_max_bytes=1000)
    sched = SendScheduler(cfg)
    items = [Pending(i, f"t/{'ab'[i % 2]}", 100) for i in range(1, 21)]
    items[4] = Pending(5, "t/b", 8000)  # too large to batch: goes alone, keeps its place
    plan = sched.next_sends({C.DATA: ClassQueue(items)}, 3, NOW)
    assert [(s.topic, s.ids) for s in plan.sends] == [
        ("t/b", (1, 3)),  # stops before 5 (big) to keep the group's order
        ("t/a", (2, 4, 6, 8)),
        ("t/b", (5,)),
    ]


def test_batch_byte_limit_and_topic_levels() -> None:
    cfg = replace(OutboxConfig(), batch_max_items=100, batch_max_bytes=250, batch_topic_levels=1)
    sched = SendScheduler(cfg)
    items = [Pending(i, f"t/{i}", 100) for i in range(1, 10)]
    plan = sched.next_sends({C.DATA: ClassQueue(items)}, 2, NOW)
    assert [(s.topic, s.ids) for s in plan.sends] == [("t", (1, 2)), ("t", (3, 4))]
    assert topic_group("a/b/c", 2) == "a/b"
    assert topic_group("a/b/c", 0) == "a/b/c"


def test_expired_candidates_are_reported_not_sent() -> None:
    sched = SendScheduler(OutboxConfig())
    queue = ClassQueue(
        [Pending(1, "t", 10, expires_ms=NOW), Pending(2, "t", 10, expires_ms=NOW + 1)]
    )
    plan = sched.next_sends({C.DATA: queue}, 5, NOW)
    assert plan.expired == (1,)
    assert [s.ids for s in plan.sends] == [(2,)]


def test_priority_within_class_is_the_candidates_order() -> None:
    # The store hands candidates in (priority desc, id) order; the scheduler keeps it.
    sched = SendScheduler(OutboxConfig())
    queue = ClassQueue([Pending(3, "t", 10, priority=5), Pending(1, "t", 10), Pending(2, "t", 10)])
    plan = sched.next_sends({C.EVENTS: queue}, 5, NOW)
    assert [s.ids for s in plan.sends] == [(3,), (1,), (2,)]


@settings(max_examples=100, deadline=None)
@given(
    data=st.data(),
    window=st.integers(1, 30),
    live_after=st.one_of(st.none(), st.integers(0, 60)),
)
def test_scheduler_hands_out_each_candidate_at_most_once(
    data: st.DataObject, window: int, live_after: int | None
) -> None:
    cfg = replace(OutboxConfig(), batch_max_items=5, batch_max_bytes=2000)
    sched = SendScheduler(cfg)
    if live_after is not None:
        sched.link_up(live_after)
    queues: dict[TrafficClass, ClassQueue] = {}
    topics = st.sampled_from(["a", "b", "c/d"])
    sizes = st.sampled_from([10, 500, 5000])
    for cls in data.draw(st.sets(st.sampled_from(list(C)))):
        ids = range(cls.code * 100, cls.code * 100 + data.draw(st.integers(0, 60)))
        cands = [Pending(i, data.draw(topics), data.draw(sizes)) for i in ids]
        split = live_after if live_after is not None else 10**9
        queues[cls] = ClassQueue(
            [p for p in cands if p.id % 100 <= split], [p for p in cands if p.id % 100 > split]
        )
    plan = sched.next_sends(queues, window, NOW)
    sent = [i for s in plan.sends for i in s.ids]
    assert len(sent) == len(set(sent))
    assert len(plan.sends) <= window
    everything = {p.id: p for q in queues.values() for p in (*q.backlog, *q.live)}
    assert set(sent) <= set(everything)
    if len(everything) <= window:
        assert len(sent) == len(everything)  # an idle link sends everything at once
    for s in plan.sends:
        assert len(s.ids) <= cfg.batch_max_items
        if s.batched:
            assert sum(everything[i].size for i in s.ids) <= cfg.batch_max_bytes
            assert all(everything[i].size < cfg.batch_item_max_bytes for i in s.ids)
            assert len({everything[i].topic for i in s.ids}) == 1
        # Inside one topic, a class's items go out in candidate order.
    per_topic: dict[tuple[TrafficClass, str], list[int]] = {}
    for s in plan.sends:
        for i in s.ids:
            per_topic.setdefault((s.traffic_class, everything[i].topic), []).append(i)
    for (cls, topic), ids_sent in per_topic.items():
        q = queues[cls]
        for segment in (q.backlog, q.live):
            order = [p.id for p in segment if p.topic == topic and p.id in ids_sent]
            assert order == [i for i in ids_sent if i in set(order)]
