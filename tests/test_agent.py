"""The node agent against real Mosquitto: reconciliation, edge traffic, faults."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from agent_support import apply, delete_sync, node_config, ticker, two_node_ion
from support import async_wait_until
from support.brokers import mqtt_client

from ion import topics
from ion.model.definition import IonDefinition
from ion.model.messages import DataRecords, NodeState, NodeStatus, PipelineState
from ion.topics import Channel, TopicKind
from ion.wire.codec import decode
from node.agent.receiver import Arrival
from node.agent.service import Agent
from node.pipelines.lifecycle import State

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


def data(i: int) -> DataRecords:
    return DataRecords(columns=("i",), values=(float(i),))


class Collector:
    """What a consumer of one edge received, in order."""

    def __init__(self, agent: Agent, ion: str, edge: str) -> None:
        self.items: list[Arrival] = []
        self._iter = agent.consume(
            lambda a: a.topic.kind is TopicKind.EDGE and (a.topic.ion, a.topic.edge) == (ion, edge)
        )

    async def run(self) -> None:
        async for arrival in self._iter:
            self.items.append(arrival)

    def values(self) -> list[int]:
        out = []
        for a in self.items:
            assert isinstance(a.envelope.body, DataRecords)
            out.append(int(a.envelope.body.values[0]))
        return out


async def running(agent: Agent, ion: str, pipeline: str) -> bool:
    report = agent.pipelines().get((ion, pipeline))
    return report is not None and report[1].state is State.RUNNING


@pytest_asyncio.fixture
async def collector_task() -> AsyncIterator[Callable[[Collector], asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []

    def start(c: Collector) -> asyncio.Task[None]:
        t = asyncio.create_task(c.run(), name="collector")
        tasks.append(t)
        return t

    yield start
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_runs_what_is_placed_on_it_and_stops_it_on_delete(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    ion = IonDefinition(
        name="placed", pipelines=(ticker("mine", ("edge-1",)), ticker("theirs", ("edge-2",)))
    )
    async with Agent(node_config("edge-1", url, tmp_path)) as agent:
        await agent.link.wait_connected()
        await apply(url, ion)
        await async_wait_until(lambda: running(agent, "placed", "mine"), 20)
        assert ("placed", "theirs") not in agent.pipelines()
        status = agent.status()
        assert isinstance(status, NodeStatus)
        assert [(p.pipeline, p.state) for p in status.pipelines] == [
            ("mine", PipelineState.RUNNING)
        ]
        await asyncio.to_thread(delete_sync, url, "placed")
        await async_wait_until(lambda: agent.pipelines() == {}, 20)


async def test_edge_traffic_arrives_once_and_in_order(
    fresh_mosquitto: Any, tmp_path: Path, collector_task: Any
) -> None:
    url = fresh_mosquitto.url
    async with (
        Agent(node_config("src-1", url, tmp_path)) as a,
        Agent(node_config("dst-1", url, tmp_path)) as b,
    ):
        await a.link.wait_connected()
        await b.link.wait_connected()
        await apply(url, two_node_ion("flow", "src-1", "dst-1"))
        got = Collector(b, "flow", "feed")
        collector_task(got)
        await async_wait_until(
            lambda: "flow" in a.status().ions[0].name if a.status().ions else False
        )
        # The first message proves the consumer's subscription is in place.
        await async_wait_until(lambda: _probe(a, got), 20)
        base = len(got.items)
        n = 2000
        await asyncio.gather(*(a.emit("flow", "feed", data(i)) for i in range(n)))
        await async_wait_until(lambda: len(got.items) >= base + n, 30)
        values = got.values()[base:]
        assert values == list(range(n))
        seqs = [x.envelope.sequence for x in got.items]
        assert seqs == sorted(set(seqs))  # in order, no duplicate delivered
        assert a.sender.published < a.sender.items_acked  # small messages were batched


def knows(agent: Agent, ion: str) -> bool:
    return any(v.name == ion for v in agent.status().ions)


async def _probe(a: Agent, got: Collector) -> bool:
    if got.items:
        return True
    if not knows(a, "flow"):
        return False
    await a.emit("flow", "feed", data(-1))
    await asyncio.sleep(0.2)
    return bool(got.items)


async def test_link_cut_during_a_stream_of_10000_loses_nothing(
    fresh_mosquitto: Any, tmp_path: Path, proxy_factory: Any, collector_task: Any
) -> None:
    url = fresh_mosquitto.url
    proxy = proxy_factory(fresh_mosquitto.host, fresh_mosquitto.port)
    async with (
        Agent(node_config("src-1", proxy.url, tmp_path)) as a,
        Agent(node_config("dst-1", url, tmp_path)) as b,
    ):
        await a.link.wait_connected()
        await apply(url, two_node_ion("flow", "src-1", "dst-1"))
        got = Collector(b, "flow", "feed")
        collector_task(got)
        await async_wait_until(lambda: _probe(a, got), 20)
        base = len(got.items)
        n = 10_000

        async def produce() -> None:
            for i in range(n):
                await a.emit("flow", "feed", data(i))
                if i % 500 == 0:
                    await asyncio.sleep(0.01)

        producer = asyncio.create_task(produce(), name="producer")
        await async_wait_until(lambda: len(got.items) > base + 2000, 30)
        proxy.cut()
        await asyncio.sleep(1.0)
        assert len(got.items) < base + n  # the cut really interrupted the stream
        proxy.restore()
        await producer
        await async_wait_until(
            lambda: len(got.items) >= base + n, 60, message=lambda: f"{len(got.items) - base}/{n}"
        )
        await asyncio.sleep(0.5)  # nothing extra may follow
        assert got.values()[base:] == list(range(n))


async def test_random_bytes_on_every_subscribed_topic_leave_it_working(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    async with Agent(node_config("edge-1", url, tmp_path)) as agent:
        await agent.link.wait_connected()
        await apply(url, two_node_ion("noise", "other", "edge-1"))
        await async_wait_until(lambda: running(agent, "noise", "consumer"), 20)
        rng = random.Random(7)
        targets = [
            topics.definition("noise"),
            topics.node_command("edge-1"),
            topics.ion_command("noise"),
            topics.node_topic("edge-1", TopicKind.NODE_RETRANSMIT),
            topics.edge("noise", "feed", Channel.DATA, "other"),
            "ion/v1/ions/noise/edges/feed/data/BAD NODE",
        ]
        with mqtt_client(fresh_mosquitto.host, fresh_mosquitto.port) as client:
            for _ in range(50):
                for t in targets:
                    payload = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
                    client.publish(t, payload, qos=1, retain=False)
        await async_wait_until(lambda: agent.receiver.counters["malformed.payload"] >= 100, 20)
        # Still alive and still obeying: a new version of the ION is picked up.
        await apply(url, two_node_ion("noise", "edge-1", "other"))
        await async_wait_until(lambda: running(agent, "noise", "producer"), 20)
        assert agent.status().state is NodeState.ONLINE


async def test_refused_login_is_fatal_and_shown(broker_factory: Any, tmp_path: Path) -> None:
    from broker.settings import BrokerSettings

    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "u", "right"], check=True)
    broker = broker_factory(settings=BrokerSettings(allow_anonymous=False, password_file=pw))
    cfg = node_config("edge-1", f"mqtt://u:wrong@{broker.host}:{broker.port}", tmp_path)
    async with Agent(cfg) as agent:
        await asyncio.wait_for(agent.failed.wait(), 20)
        assert agent.status().state is NodeState.FAILED
        assert "not authorized" in agent.status().error.lower()
        attempts = agent.link.status.failed_attempts
        await asyncio.sleep(1.5)
        assert agent.link.status.failed_attempts == attempts  # no retry loop


def _status_of(host: str, port: int, node: str) -> NodeStatus:
    with mqtt_client(host, port) as client:
        client.subscribe(topics.node_status(node))
        msg = client.expect(timeout=10)
    env = decode(msg.payload)
    assert isinstance(env.body, NodeStatus)
    return env.body


@pytest.mark.slow
async def test_sigterm_drains_and_exits_0(fresh_mosquitto: Any, tmp_path: Path) -> None:
    cfg_file = tmp_path / "node.yaml"
    cfg_file.write_text(
        f"node: {{id: edge-9}}\nbroker: {{url: '{fresh_mosquitto.url}'}}\n"
        f"data_dir: {tmp_path / 'd'}\nheartbeat_interval: 1s\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "run", "-c", str(cfg_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        await async_wait_until(
            lambda: (
                _status_of(fresh_mosquitto.host, fresh_mosquitto.port, "edge-9").state
                is NodeState.ONLINE
            ),
            20,
        )
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.to_thread(proc.communicate, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "drained" in out
    status = _status_of(fresh_mosquitto.host, fresh_mosquitto.port, "edge-9")
    assert status.state is NodeState.OFFLINE


async def test_crash_loop_and_update_to_a_new_version(fresh_mosquitto: Any, tmp_path: Path) -> None:
    from dataclasses import replace

    from ion.model.definition import Component, RestartPolicy

    url = fresh_mosquitto.url
    failing = replace(
        ticker("job", ("edge-1",)),
        components=(Component("boom", "fail", {"message": "kaput"}),),
        restart=RestartPolicy(max_restarts=2, window_ms=60_000, backoff_initial_ms=100,
                              backoff_max_ms=200),
    )  # fmt: skip
    async with Agent(node_config("edge-1", url, tmp_path)) as agent:
        await agent.link.wait_connected()
        await apply(url, IonDefinition(name="loop", pipelines=(failing,)))

        def state() -> State | None:
            report = agent.pipelines().get(("loop", "job"))
            return report[1].state if report else None

        await async_wait_until(lambda: state() is State.CRASH_LOOP, 30)
        status = agent.status().pipelines[0]
        assert status.state is PipelineState.CRASH_LOOP
        assert "kaput" in status.message or status.exit_code != 0
        # A new version that fixes the pipeline gets it running again.
        await apply(url, IonDefinition(name="loop", pipelines=(ticker("job", ("edge-1",)),)))
        await async_wait_until(lambda: state() is State.RUNNING, 30)
        assert agent.pipelines()[("loop", "job")][1].version == 2


async def test_emit_refuses_unknown_and_model_edges_clearly(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    from ion.errors import InputError
    from ion.model.definition import Edge, EdgeKind, Endpoint

    url = fresh_mosquitto.url
    ion = two_node_ion("kinds", "src-1", "dst-1")
    model = Edge("model", EdgeKind.MODEL, Endpoint("producer"), (Endpoint("consumer"),))
    async with Agent(node_config("src-1", url, tmp_path)) as a:
        await a.link.wait_connected()
        await apply(url, IonDefinition(name="kinds", pipelines=ion.pipelines,
                                       edges=(*ion.edges, model)))  # fmt: skip
        await async_wait_until(lambda: knows(a, "kinds"), 20)
        await a.emit("kinds", "feed", data(1))  # a data edge works
        with pytest.raises(InputError, match="no edge 'nope'"):
            await a.emit("kinds", "nope", data(1))
        with pytest.raises(InputError, match="carries models"):
            await a.emit("kinds", "model", data(1))
