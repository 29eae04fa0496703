"""The three-tier topology brought up from `ion deploy` output on loopback: three Mosquittos
with TLS, client certificates and the generated ACLs, a cloud node, two gateways, an edge node
behind each; definitions and a model flow down, data flows up.  Both variants: the gateway
relay and Mosquitto bridges."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from support import async_wait_until
from test_agent import Collector, data, knows
from test_deploy_support import (
    Client,
    brokers,
    deploy_local,
    flow_ion,
    free_ports,
    inventory,
    refused_publishes,
)  # fmt: skip

from ion import topics
from ion.client import definitions
from ion.client.session import connect
from ion.config.broker import broker_from_mapping
from ion.model.definition import IonDefinition
from ion.security.keys import SigningKey
from node.agent.service import Agent
from node.config import load_config
from node.models.artifact import ModelArtifact

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

EDGES = ("edge-a1", "edge-b1")


def apply_as(config: Path, definition: IonDefinition, key: SigningKey) -> None:
    """``ion apply`` as the identity whose CLI config is ``config``."""
    data = yaml.safe_load(config.read_text())
    broker = broker_from_mapping(data["broker"])
    now = time.time_ns() // 1_000_000
    with connect(broker) as session:
        plan = definitions.plan_apply(
            definition, definitions.fetch(session, definition.name), now_ms=now,
            operator=data["operator"],
        )  # fmt: skip
        assert plan.definition is not None
        definitions.publish(session, plan.definition, now_ms=now, key=key)


def agent_config(out: Path, node: str, key: SigningKey | None = None) -> Any:
    config = load_config(out / "nodes" / node / "node.yaml")
    config = replace(
        config,
        heartbeat_interval_ms=1000,
        models=replace(config.models, request_after_ms=500, request_max_interval_ms=2000),
    )
    if key is not None:  # the producer signs its manifests
        config = replace(config, trust=replace(config.trust, signing_key=key))
    return config


def holds(agent: Agent, model_id: str) -> bool:
    art = agent.models.active("flow", "model")
    return art is not None and art.model_id == model_id


async def bring_up(tmp_path: Path, *, bridges: bool) -> None:
    ports = free_ports(3)
    inv = inventory(ports)
    out = tmp_path / "out"
    key = SigningKey.generate()
    line = f"{key.public.text()} operator,producer test"
    plan = deploy_local(out, [flow_ion()], inv, trust_keys=(line,), bridges=bridges)
    # The generated relay lists carry the data edge up, one filter per edge node.
    if not bridges:
        assert plan.relays["gw-a"].extra_up == ("ion/v1/ions/flow/edges/readings/data/edge-a1",)
    for conf in (out / "brokers").glob("*/mosquitto.conf"):  # log every publish, to check
        conf.write_text(conf.read_text().replace("log_type error", "log_type all"))
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(300_000))
    with brokers(out, inv):
        async with AsyncExitStack() as stack:
            start = stack.enter_async_context
            cloud = await start(Agent(agent_config(out, "cloud-1", key)))
            for gw in ("gw-a", "gw-b"):
                await start(Agent(agent_config(out, gw)))
            edges = [await start(Agent(agent_config(out, e))) for e in EDGES]
            await cloud.link.wait_connected()
            # The operator's identity applies the signed ION on the cloud broker; it travels
            # down through each gateway to the edge nodes.
            await asyncio.to_thread(
                apply_as, out / "operators" / "alice" / "config.yaml", flow_ion(), key
            )
            await async_wait_until(lambda: all(knows(a, "flow") for a in (cloud, *edges)), 30)
            # Data up: each edge node sends along `readings` to `central` on the cloud.
            got = Collector(cloud, "flow", "readings")
            task = asyncio.create_task(got.run(), name="collect")
            try:

                async def arrived() -> bool:
                    sources = {a.envelope.source_node for a in got.items}
                    for e in edges:
                        if e.node_id not in sources:
                            await e.emit("flow", "readings", data(1))
                    await asyncio.sleep(0.2)
                    return sources >= set(EDGES)

                # mypy cannot solve T in ``T | Awaitable[T]`` for a coroutine function.
                await async_wait_until(cast(Any, arrived), 30)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            # A model down: signed by the cloud node, verified and activated on every edge.
            m = await cloud.models.publish("flow", "model", "training", ModelArtifact(src, "t/1"))
            assert m.model_id == hashlib.sha256(src.read_bytes()).hexdigest()
            await async_wait_until(lambda: all(holds(e, m.model_id) for e in edges), 30)
        # The definition is retained below each gateway too: a node that connects later
        # (here edge-a1's identity, a fresh session) finds it there.
        gw_a = inv.broker("gw-a")
        assert gw_a is not None
        late = Client(out, "nodes/edge-a1", gw_a.port, client_id="edge-a1-late")
        try:
            late.subscribe(topics.ALL_DEFINITIONS)
            await async_wait_until(lambda: topics.definition("flow") in late.topics(), 10)
            assert late.messages[0].retain
        finally:
            late.close()
    # Nothing any part of the system tried was refused: the ACLs are complete for this ION.
    for b in inv.brokers:
        assert refused_publishes(out / "brokers" / b.id) == [], b.id


async def test_three_tiers_through_the_gateway_relay(tmp_path: Path) -> None:
    await bring_up(tmp_path, bridges=False)


async def test_three_tiers_through_mosquitto_bridges(tmp_path: Path) -> None:
    await bring_up(tmp_path, bridges=True)
