"""Pipelines talking along ION edges through their agents' local sockets (real everything).

A producer pipeline on node A emits through the SDK; agent A stores it in its outbox and sends
it; agent B keeps it in the consumer's pending inbox until the consumer pipeline (a child
process on B, connected to B's socket with its job token) has handled it.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from agent_support import apply, node_config
from support import async_wait_until

from ion.errors import RefusedError
from ion.model.definition import (
    Component,
    Edge,
    EdgeKind,
    Endpoint,
    IonDefinition,
    Pipeline,
    PipelineMode,
    PipelineRole,
    Placement,
)
from ion.model.local import Hello
from node.agent.service import Agent
from node.pipelines.lifecycle import State

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


def wired_ion(count: int, rate: float) -> IonDefinition:
    producer = Pipeline(
        name="producer",
        engine="python",
        role=PipelineRole.OTHER,
        mode=PipelineMode.STREAMING,
        placement=Placement(nodes=("node-a",)),
        components=(Component("src", "counter_source", {"count": count, "rate": rate}),),
    )
    consumer = Pipeline(
        name="consumer",
        engine="python",
        role=PipelineRole.OTHER,
        mode=PipelineMode.STREAMING,
        placement=Placement(nodes=("node-b",)),
        components=(Component("sink", "jsonl_sink", {"path": "got.jsonl"}),),
    )
    return IonDefinition(
        name="wired",
        pipelines=(producer, consumer),
        edges=(
            Edge(
                "numbers",
                EdgeKind.DATA,
                Endpoint("producer", "src", "out"),
                (Endpoint("consumer", "sink", "in"),),
            ),
        ),
    )


def lines(path: Path) -> list[Any]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def job_pid(agent: Agent, ion: str, pipeline: str) -> int | None:
    report = agent.pipelines().get((ion, pipeline))
    job = agent._pipelines.running_jobs().get((ion, pipeline))
    if report is None or report[1].state is not State.RUNNING or job is None:
        return None
    return job.pid


async def test_values_flow_from_a_pipeline_to_another_across_nodes(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    async with (
        Agent(node_config("node-a", url, tmp_path)) as a,
        Agent(node_config("node-b", url, tmp_path)) as b,
    ):
        await a.link.wait_connected()
        await b.link.wait_connected()
        await apply(url, wired_ion(300, 300.0))
        got = tmp_path / "node-b" / "work" / "wired" / "consumer" / "got.jsonl"
        await async_wait_until(lambda: len(lines(got)) >= 300, 60)
        assert lines(got) == list(range(300))
        # Everything handled was forgotten by B's pending inbox.
        await async_wait_until(lambda: b._pending.count("wired", "consumer") == 0, 10)


async def test_consumer_killed_mid_stream_gets_the_rest_after_its_restart(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    async with (
        Agent(node_config("node-a", url, tmp_path)) as a,
        Agent(node_config("node-b", url, tmp_path)) as b,
    ):
        await a.link.wait_connected()
        await b.link.wait_connected()
        await apply(url, wired_ion(1000, 100.0))
        got = tmp_path / "node-b" / "work" / "wired" / "consumer" / "got.jsonl"
        await async_wait_until(lambda: len(lines(got)) >= 100, 60)
        pid = job_pid(b, "wired", "consumer")
        assert pid is not None
        os.killpg(pid, signal.SIGKILL)
        await async_wait_until(lambda: len(set(lines(got))) >= 1000, 90)
        values = lines(got)
        assert sorted(set(values)) == list(range(1000))
        # At least once to the component: a value in flight when it died may come twice,
        # right after itself; never out of order.
        deduped = [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]
        assert deduped == list(range(1000))


async def test_a_wrong_job_token_is_refused(fresh_mosquitto: Any, tmp_path: Path) -> None:
    url = fresh_mosquitto.url
    async with Agent(node_config("node-b", url, tmp_path)) as b:
        await b.link.wait_connected()
        await apply(url, wired_ion(1, 1.0))
        await async_wait_until(lambda: job_pid(b, "wired", "consumer") is not None, 30)
        with pytest.raises(RefusedError):
            b._port.authorize(Hello("wired", "consumer", "sink", token="not-the-token"))
        with pytest.raises(RefusedError):
            b._port.authorize(Hello("wired", "nope", "sink", token="x"))
