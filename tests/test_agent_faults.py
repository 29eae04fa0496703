"""The agent under broker restarts and full outboxes, against real Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from agent_support import apply, node_config, two_node_ion
from support import async_wait_until
from test_agent import Collector, data, knows

from ion import topics
from ion.errors import UnavailableError
from ion.model.definition import Placement
from ion.model.health import Metric
from ion.model.messages import StatsReport
from ion.topics import Channel
from node.agent.service import Agent
from node.outbox.classes import TrafficClass

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


async def connected_pair(url: str, a: Agent, b: Agent) -> Collector:
    await a.link.wait_connected()
    await b.link.wait_connected()
    await apply(url, two_node_ion("flow", "src-1", "dst-1"))
    return Collector(b, "flow", "feed")


@contextlib.asynccontextmanager
async def flowing_pair(
    url: str, tmp_path: Path, *, a_config: Any = None
) -> AsyncIterator[tuple[Agent, Agent, Collector]]:
    """Agents ``src-1`` (``a_config``, by default a plain node on ``url``) and ``dst-1`` with
    ION ``flow`` from one to the other applied on ``url``; ``dst-1`` collects edge ``feed``
    while the block runs, and ``src-1`` is proven to reach it (a probe value -1 first)."""
    a_config = a_config or node_config("src-1", url, tmp_path)
    async with Agent(a_config) as a, Agent(node_config("dst-1", url, tmp_path)) as b:
        got = await connected_pair(url, a, b)
        task = asyncio.create_task(got.run(), name="collector")
        try:
            await prove_subscribed(a, got)
            yield a, b, got
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def prove_subscribed(a: Agent, got: Collector) -> None:
    async def probe() -> bool:
        if got.items:
            return True
        if knows(a, "flow"):
            await a.emit("flow", "feed", data(-1))
        await asyncio.sleep(0.3)
        return bool(got.items)

    await async_wait_until(probe, 30)


@pytest.mark.parametrize("crash", [False, True], ids=["graceful", "sigkill"])
async def test_broker_restart_mid_stream_loses_nothing(
    fresh_mosquitto: Any, tmp_path: Path, crash: bool
) -> None:
    """A SIGKILLed broker loses messages it had acknowledged; sequence gaps bring them back."""
    url = fresh_mosquitto.url
    async with flowing_pair(url, tmp_path) as (a, b, got):
        base, n = len(got.items), 4000

        async def produce() -> None:
            for i in range(n):
                while True:
                    try:
                        await a.emit("flow", "feed", data(i))
                        break
                    except UnavailableError:
                        await asyncio.sleep(0.1)
                if i % 100 == 0:
                    await asyncio.sleep(0.02)

        producer = asyncio.create_task(produce(), name="producer")
        await async_wait_until(lambda: len(got.items) > base + n // 4, 30)
        await asyncio.to_thread(fresh_mosquitto.restart, crash=crash)
        await producer
        await async_wait_until(
            lambda: len(got.items) >= base + n,
            90,
            message=lambda: f"{len(got.items) - base}/{n}; receiver {dict(b.receiver.counters)}",
        )
        await asyncio.sleep(0.5)
        assert got.values()[base:] == list(range(n))


async def test_full_data_class_drops_the_oldest(
    fresh_mosquitto: Any, tmp_path: Path, proxy_factory: Any
) -> None:
    url = fresh_mosquitto.url
    proxy = proxy_factory(fresh_mosquitto.host, fresh_mosquitto.port)
    small = {"classes": {"data": {"max_items": 100, "on_full": "drop_oldest"}}}
    a_config = node_config("src-1", proxy.url, tmp_path, outbox=small)
    async with flowing_pair(url, tmp_path, a_config=a_config) as (a, _, got):
        base = len(got.items)
        proxy.cut()
        await async_wait_until(lambda: not a.status().links[0].connected, 10)
        for i in range(300):
            await a.emit("flow", "feed", data(i))
        assert a.queued() == 100
        dropped = {q.traffic_class: q.dropped for q in a.status().queues}
        assert dropped["data"] == 200
        proxy.restore()
        await async_wait_until(lambda: len(got.items) >= base + 100, 30)
        await asyncio.sleep(0.5)
        assert got.values()[base:] == list(range(200, 300))  # the newest, in order


async def test_full_class_with_reject_refuses_the_caller(
    fresh_mosquitto: Any, tmp_path: Path, proxy_factory: Any
) -> None:
    proxy = proxy_factory(fresh_mosquitto.host, fresh_mosquitto.port)
    small = {"classes": {"data": {"max_items": 50, "on_full": "reject"}}}
    async with Agent(node_config("src-1", proxy.url, tmp_path, outbox=small)) as a:
        await a.link.wait_connected()
        await apply(fresh_mosquitto.url, two_node_ion("flow", "src-1", "dst-1"))
        await async_wait_until(lambda: knows(a, "flow"), 20)
        proxy.cut()
        await async_wait_until(lambda: not a.status().links[0].connected, 10)
        for i in range(50):
            await a.emit("flow", "feed", data(i))
        with pytest.raises(UnavailableError, match="full"):
            await a.emit("flow", "feed", data(50))
        assert a.queued() == 50  # nothing already stored was lost
        rejected = {q.traffic_class: q.rejected for q in a.status().queues}
        assert rejected["data"] == 1
        proxy.restore()
        await async_wait_until(lambda: a.queued() == 0, 30)
        await a.emit("flow", "feed", data(51))  # room again


async def test_full_stats_class_keeps_the_latest_per_topic(
    fresh_mosquitto: Any, tmp_path: Path, proxy_factory: Any
) -> None:
    proxy = proxy_factory(fresh_mosquitto.host, fresh_mosquitto.port)
    small = {"classes": {"stats": {"max_items": 3, "on_full": "compact"}}}
    async with Agent(node_config("src-1", proxy.url, tmp_path, outbox=small)) as a:
        await a.link.wait_connected()
        proxy.cut()
        await async_wait_until(lambda: not a.status().links[0].connected, 10)
        pipes = ["p1", "p2", "p3"]
        for round_ in range(5):
            for p in pipes:
                topic = topics.pipeline("k", p, Channel.STATS, "src-1")
                body = StatsReport(pipeline=p, scalars=(Metric("round", float(round_)),))
                await a.publish(topic, body, ion="k")
        kept = a._store.items(TrafficClass.STATS)
        assert len(kept) == 3
        assert sorted(i.topic.split("/")[5] for i in kept) == pipes  # one per pipeline


async def test_a_gap_is_requested_from_the_source_and_filled_in_order(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    """A scripted source skips 4 and 5; the agent asks for exactly them and delivers 1..7."""
    from support.brokers import mqtt_client

    from ion.model.messages import RetransmitRequest, new_envelope
    from ion.topics import TopicKind
    from ion.wire.codec import decode, encode

    url = fresh_mosquitto.url
    async with Agent(node_config("dst-1", url, tmp_path)) as b:
        await b.link.wait_connected()
        await apply(url, two_node_ion("flow", "ghost", "dst-1"))
        got = Collector(b, "flow", "feed")
        task = asyncio.create_task(got.run(), name="collector")
        topic = topics.edge("flow", "feed", Channel.DATA, "ghost")
        envs = {
            i: new_envelope(data(i), source_node="ghost", ion="flow", sequence=i, stream=topic,
                            now_ms=1)
            for i in range(1, 8)
        }  # fmt: skip
        try:
            with mqtt_client(fresh_mosquitto.host, fresh_mosquitto.port) as ghost:
                ghost.subscribe(topics.node_topic("ghost", TopicKind.NODE_RETRANSMIT))

                async def subscribed() -> bool:
                    ghost.publish(topic, encode(envs[1]))
                    await asyncio.sleep(0.3)
                    return bool(got.items)

                await async_wait_until(subscribed, 30)
                for i in (2, 3, 6, 7):
                    ghost.publish(topic, encode(envs[i]))
                request = decode((await asyncio.to_thread(ghost.expect, 10)).payload).body
                assert isinstance(request, RetransmitRequest)
                assert (request.stream, request.from_sequence, request.to_sequence) == (topic, 4, 5)
                assert request.requester == "dst-1"
                assert got.values() == [1, 2, 3]  # 6 and 7 are held back behind the gap
                for i in (4, 5):
                    ghost.publish(topic, encode(envs[i]))
                await async_wait_until(lambda: len(got.items) == 7, 10)
            assert got.values() == [1, 2, 3, 4, 5, 6, 7]
            assert b.receiver.counters["gap_filled"] == 1
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_kill_9_of_the_sending_agent_mid_stream_loses_nothing(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    """The sender (an application embedding the agent) is SIGKILLed at random moments and
    restarted; the receiver gets every value once, in order."""
    await kill9_campaign(fresh_mosquitto.url, tmp_path, "kill9_sender.py", 6000, seed=9)


def sent_so_far(sender_dir: Path) -> int:
    """A kill -9 sender's progress file: values stored durably so far."""
    try:
        return int((sender_dir / "next").read_text())
    except (FileNotFoundError, ValueError):
        return 0


async def kill9_campaign(
    url: str, tmp_path: Path, script: str, n: int, *extra: str, seed: int, step: int = 300
) -> None:
    """Run the sender ``script`` (an application embedding the agent: ``tests/kill9_*.py``,
    emitting values 0..n-1 along ``flow/feed`` and recording its progress) and SIGKILL it four
    times mid-stream, each once it has stored between ``step`` and ``3 * step`` more values,
    restarting it each time; the receiver must get every value once, in order."""
    import os
    import random
    import subprocess
    import sys

    path = Path(__file__).with_name(script)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path.parent), *sys.path])}
    sender_dir = tmp_path / "sender"
    sender_dir.mkdir()
    # The sender runs no pipeline itself (a SIGKILLed agent's children would be orphans of
    # this test); it emits along the edge through the agent's API, as an embedding app does.
    ion = two_node_ion("flow", "src-1", "dst-1")
    producer = replace(ion.pipelines[0], placement=Placement(nodes=("elsewhere",)))
    ion = replace(ion, pipelines=(producer, ion.pipelines[1]))
    async with Agent(node_config("dst-1", url, tmp_path)) as b:
        await b.link.wait_connected()
        await apply(url, ion)
        got = Collector(b, "flow", "feed")
        task = asyncio.create_task(got.run(), name="collector")
        await async_wait_until(lambda: knows(b, "flow"), 20)
        await asyncio.sleep(1.0)  # the receiver's edge subscription is in place
        rng = random.Random(seed)
        kills = 0
        try:
            while True:
                log = tmp_path / f"sender-{kills}.log"
                with log.open("w") as out:
                    proc = subprocess.Popen(
                        [sys.executable, str(path), url, str(sender_dir), str(n), *extra],
                        env=env, stdout=out, stderr=subprocess.STDOUT,
                    )  # fmt: skip
                if kills < 4:
                    # Mid-stream whatever the speed: once this run stored a few more values
                    # (it resumes from its progress file), with plenty left.
                    target = sent_so_far(sender_dir) + rng.randrange(step, 3 * step)

                    def killable(p: subprocess.Popen[bytes] = proc, t: int = target) -> bool:
                        return p.poll() is not None or sent_so_far(sender_dir) >= t

                    await async_wait_until(killable, 60)
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
                        kills += 1
                        continue
                await asyncio.to_thread(proc.wait, 120)
                assert proc.returncode == 0, log.read_text()
                assert "drained" in log.read_text()
                break
            await async_wait_until(
                lambda: len(got.items) >= n, 60, message=lambda: f"{len(got.items)}/{n}"
            )
            await asyncio.sleep(0.5)
            values = got.values()
            missing = sorted(set(range(n)) - set(values))
            repeated = len(values) - len(set(values))
            assert (missing[:10], repeated) == ([], 0), dict(b.receiver.counters)
            assert values == list(range(n))
            assert kills == 4
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
