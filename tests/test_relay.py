"""Gateways relaying between brokers: custody per hop, traffic both ways, outages."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from agent_support import apply, node_config, ticker
from support import async_wait_until
from test_agent import Collector, data, knows

from ion.model.definition import Edge, EdgeKind, Endpoint, IonDefinition
from node.agent.service import Agent

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

UP = "ion/v1/ions/flow/edges/up/data/+"
DOWN = "ion/v1/ions/flow/edges/down/data/+"


def flow_ion() -> IonDefinition:
    """``edge-1`` sends along ``up`` to ``cloud-1``, which sends along ``down`` back."""
    return IonDefinition(
        name="flow",
        pipelines=(ticker("sensor", ("edge-1",)), ticker("central", ("cloud-1",))),
        edges=(
            Edge("up", EdgeKind.DATA, Endpoint("sensor", "src", "out"),
                 (Endpoint("central", "sink", "in"),)),
            Edge("down", EdgeKind.DATA, Endpoint("central", "src", "out"),
                 (Endpoint("sensor", "sink", "in"),)),
        ),
    )  # fmt: skip


def gateway(node_id: str, local: str, upstream: str, tmp: Path) -> Any:
    from node.config import DEFAULT_RELAY_DOWN, DEFAULT_RELAY_UP

    return node_config(
        node_id,
        local,
        tmp,
        {"tier": "gateway"},
        upstream={"url": upstream},
        relay={"up": [*DEFAULT_RELAY_UP, UP], "down": [*DEFAULT_RELAY_DOWN, DOWN]},
    )


async def stream(agent: Agent, edge: str, n: int) -> None:
    for i in range(n):
        await agent.emit("flow", edge, data(i))
        if i % 200 == 0:
            await asyncio.sleep(0.02)


async def probe(agent: Agent, edge: str, got: Collector) -> bool:
    if got.items:
        return True
    if knows(agent, "flow"):
        await agent.emit("flow", edge, data(-1))
    await asyncio.sleep(0.3)
    return bool(got.items)


async def run_chain(
    broker_factory: Any, proxy_factory: Any, tmp_path: Path, *, n: int, outage_s: float
) -> None:
    edge_b, mid_b, cloud_b = broker_factory(), broker_factory(), broker_factory()
    middle = proxy_factory(cloud_b.host, cloud_b.port)  # gw-2's link to the cloud
    async with AsyncExitStack() as stack:
        e = await stack.enter_async_context(Agent(node_config("edge-1", edge_b.url, tmp_path)))
        await stack.enter_async_context(Agent(gateway("gw-1", edge_b.url, mid_b.url, tmp_path)))
        await stack.enter_async_context(Agent(gateway("gw-2", mid_b.url, middle.url, tmp_path)))
        c = await stack.enter_async_context(Agent(node_config("cloud-1", cloud_b.url, tmp_path)))
        await c.link.wait_connected()
        await apply(cloud_b.url, flow_ion())
        # The definition travels down two hops; then each side proves its subscription.
        await async_wait_until(lambda: knows(e, "flow"), 30)
        at_cloud, at_edge = Collector(c, "flow", "up"), Collector(e, "flow", "down")
        tasks = [asyncio.create_task(x.run(), name="collect") for x in (at_cloud, at_edge)]
        try:
            await async_wait_until(lambda: probe(e, "up", at_cloud), 30)
            await async_wait_until(lambda: probe(c, "down", at_edge), 30)
            base_c, base_e = len(at_cloud.items), len(at_edge.items)
            senders = [
                asyncio.create_task(stream(e, "up", n), name="edge stream"),
                asyncio.create_task(stream(c, "down", n), name="cloud stream"),
            ]
            await async_wait_until(lambda: len(at_cloud.items) > base_c + n // 10, 30)
            middle.cut()
            await asyncio.sleep(outage_s)
            assert len(at_cloud.items) < base_c + n  # the outage really held traffic back
            middle.restore()
            await asyncio.gather(*senders)
            await async_wait_until(
                lambda: len(at_cloud.items) >= base_c + n and len(at_edge.items) >= base_e + n,
                90,
                message=lambda: (
                    f"up {len(at_cloud.items) - base_c}/{n}, down {len(at_edge.items) - base_e}/{n}"
                ),
            )
            await asyncio.sleep(1.0)  # nothing extra may follow
            assert at_cloud.values()[base_c:] == list(range(n))
            assert at_edge.values()[base_e:] == list(range(n))
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def test_three_hops_both_ways_through_a_short_outage(
    broker_factory: Any, proxy_factory: Any, tmp_path: Path
) -> None:
    await run_chain(broker_factory, proxy_factory, tmp_path, n=2000, outage_s=2)


@pytest.mark.slow
async def test_three_hops_both_ways_with_the_middle_link_down_for_30s(
    broker_factory: Any, proxy_factory: Any, tmp_path: Path
) -> None:
    await run_chain(broker_factory, proxy_factory, tmp_path, n=5000, outage_s=30)
