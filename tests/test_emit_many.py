"""``Agent.emit_many`` / ``publish_many`` between real agents on a real Mosquitto: every message
once and in order, mixed with ``emit``; idempotent retries; a run answered from retention;
refusals; and kill -9 of the sending application mid-stream."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from agent_support import apply, node_config, two_node_ion
from support import async_wait_until
from test_agent import data, knows
from test_agent_faults import connected_pair, flowing_pair, kill9_campaign, prove_subscribed

from ion import topics
from ion.errors import InputError, UnavailableError
from ion.model.messages import EnvelopeBatch, Event, RetransmitRequest, Severity, new_envelope
from ion.topics import Channel, TopicKind
from ion.wire.batch import batch_around
from ion.wire.codec import decode, encode
from node.agent.service import Agent

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


async def test_every_message_arrives_once_and_in_order_mixed_with_emit(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    async with flowing_pair(url, tmp_path) as (a, _b, got):
        base = len(got.items)
        published = a.sender.published
        await a.emit("flow", "feed", data(0))
        await asyncio.gather(
            a.emit_many("flow", "feed", [data(i) for i in range(1, 301)]),
            a.emit("flow", "feed", data(301)),  # queued after the batch: numbered after it
        )
        await a.emit_many("flow", "feed", [data(302)])
        await a.emit_many("flow", "feed", [])
        await async_wait_until(lambda: len(got.items) - base >= 303, 20)
        await asyncio.sleep(0.3)
        assert got.values()[base:] == list(range(303))
        seqs = [x.envelope.sequence for x in got.items[base:]]
        assert seqs == list(range(seqs[0], seqs[0] + 303))
        assert a.sender.published - published < 20  # runs of up to 64 per MQTT message


async def test_the_same_batch_again_with_its_ids_is_not_delivered_twice(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    async with flowing_pair(url, tmp_path) as (a, b, got):
        base = len(got.items)
        ids = [f"{i:032x}" for i in range(1, 101)]
        bodies = [data(i) for i in range(100)]
        await a.emit_many("flow", "feed", bodies, message_ids=ids)
        await a.emit_many("flow", "feed", bodies[40:], message_ids=ids[40:])  # a retry
        await a.emit_many("flow", "feed", [data(100)])
        await async_wait_until(lambda: got.values()[-1:] == [100], 20)
        await asyncio.sleep(0.3)
        assert got.values()[base:] == list(range(101))
        assert b.receiver.counters["duplicate"] == 60


def unreachable_config(tmp_path: Path, **extra: Any) -> Any:
    """A node whose broker never answers: what it stores stays queued."""
    return node_config("src-1", "mqtt://127.0.0.1:1", tmp_path, **extra)


async def test_refusals_are_clear(fresh_mosquitto: Any, tmp_path: Path) -> None:
    config = unreachable_config(
        tmp_path,
        outbox={"classes": {"data": {"max_items": 3, "on_full": "reject"}},
                "batch_max_items": 2},
    )  # fmt: skip
    topic = topics.edge("flow", "feed", Channel.DATA, "src-1")
    async with Agent(config) as a:
        with pytest.raises(InputError, match="no edge"):
            await a.emit_many("flow", "feed", [data(1)])
        with pytest.raises(InputError, match="message_ids"):
            await a.publish_many(topic, [data(1)], message_ids=["x"])
        with pytest.raises(TypeError):
            await a.publish_many(topic, [object()])
        # 7 messages make runs of 2, 2, 2 and 1; the class holds 3 messages: a run is
        # refused whole, the last one still fits.
        with pytest.raises(UnavailableError, match="refused 4 of 7 message"):
            await a.publish_many(topic, [data(i) for i in range(7)])
        assert a.queued() == 3
        await a.drain(0.1)
        with pytest.raises(UnavailableError, match="draining"):
            await a.publish_many(topic, [data(1)])


async def test_publish_many_of_other_bodies_stores_runs(tmp_path: Path) -> None:
    topic = topics.node_topic("src-1", TopicKind.NODE_EVENTS)
    events = [Event(type=f"t{i}", severity=Severity.INFO, subject="s") for i in range(5)]
    async with Agent(unreachable_config(tmp_path)) as a:
        await a.publish_many(topic, events)
        [stored] = [i for i in a._store.items() if i.topic == topic]
    batch = decode(batch_around(stored.payload, message_id="c" * 32, source_node="src-1",
                                now_ms=1)).body  # fmt: skip
    assert isinstance(batch, EnvelopeBatch)
    assert [e.body for e in batch.envelopes] == events
    assert [e.sequence for e in batch.envelopes] == [1, 2, 3, 4, 5]
    assert stored.sequence == 5


async def test_a_retransmit_request_is_answered_with_the_whole_run(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    """The source keeps a run as it sent it: a request for one of its messages gets the run
    (the receiver drops what it has)."""
    from support.brokers import mqtt_client

    url = fresh_mosquitto.url
    edge = topics.edge("flow", "feed", Channel.DATA, "src-1")
    async with Agent(node_config("src-1", url, tmp_path)) as a:
        await a.link.wait_connected()
        await apply(url, two_node_ion("flow", "src-1", "dst-1"))
        await async_wait_until(lambda: knows(a, "flow"), 20)
        await a.emit_many("flow", "feed", [data(i) for i in range(10)])
        await async_wait_until(lambda: a.queued() == 0, 20)
        with mqtt_client(fresh_mosquitto.host, fresh_mosquitto.port) as watcher:
            watcher.subscribe(edge)
            await asyncio.sleep(0.3)
            request = RetransmitRequest(stream=edge, from_sequence=4, to_sequence=5,
                                        requester="dst-1")  # fmt: skip
            env = new_envelope(request, source_node="dst-1", now_ms=1)
            watcher.publish(topics.node_topic("src-1", TopicKind.NODE_RETRANSMIT), encode(env))
            again = decode((await asyncio.to_thread(watcher.expect, 10)).payload)
        assert isinstance(again.body, EnvelopeBatch)
        assert [e.sequence for e in again.body.envelopes] == list(range(1, 11))
        assert [e.body for e in again.body.envelopes] == [data(i) for i in range(10)]


async def test_kill_9_of_a_batching_sender_mid_stream_loses_nothing(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    """As ``test_kill_9_of_the_sending_agent_mid_stream_loses_nothing``, with ``emit_many``
    of 50 at a time: every value once, in order."""
    await kill9_campaign(fresh_mosquitto.url, tmp_path, "kill9_many_sender.py", 100_000, "50",
                         seed=11, step=2_000)  # fmt: skip


async def test_consume_batches_hands_on_lists_in_order(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    async with (
        Agent(node_config("src-1", url, tmp_path)) as a,
        Agent(node_config("dst-1", url, tmp_path)) as b,
    ):
        got = await connected_pair(url, a, b)
        lists: list[list[int]] = []

        async def take() -> None:
            feed = b.consume_batches(lambda x: x.topic.kind is TopicKind.EDGE, max_items=100)
            async for arrivals in feed:
                assert 1 <= len(arrivals) <= 100
                lists.append([int(x.envelope.body.values[0]) for x in arrivals])  # type: ignore[union-attr]

        task = asyncio.create_task(got.run(), name="collector")
        batches = asyncio.create_task(take(), name="batches")
        try:
            await prove_subscribed(a, got)
            await async_wait_until(lambda: bool(lists), 10)
            lists.clear()
            await a.emit_many("flow", "feed", [data(i) for i in range(1000)])
            await async_wait_until(lambda: sum(map(len, lists)) >= 1000, 20)
            assert [v for chunk in lists for v in chunk] == list(range(1000))
            assert len(lists) < 1000  # handed on in lists, not one by one
            with pytest.raises(InputError):
                b.consume_batches(lambda _: True, max_items=0)
        finally:
            for t in (task, batches):
                t.cancel()
            await asyncio.gather(task, batches, return_exceptions=True)
