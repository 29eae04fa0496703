"""A node keeps the definitions it holds on disk: a restart neither goes back to an older
signed version (replayed as the retained one) nor forgets what to run while offline."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from agent_support import apply, ticker
from security_support import OPERATOR, STRANGER, Events, is_running, publish_as_is, secure_config
from spark_support import free_port
from support import async_wait_until
from support.brokers import mqtt_client

from ion import topics
from ion.config.broker import parse_broker_url
from ion.model.definition import IonDefinition, IonDeleted
from ion.security import sign
from node.agent.held import HeldDefinitions
from node.agent.service import Agent
from node.config import NodeConfig
from node.link.base import LinkState


def job(node: str, rate: float = 1.0) -> IonDefinition:
    return IonDefinition(name="kept", pipelines=(ticker("job", (node,), rate=rate),))


def test_saved_items_load_back_and_bad_files_are_skipped(tmp_path: Path) -> None:
    held = HeldDefinitions(tmp_path / "defs")
    assert held.load() == []
    d = sign(replace(job("n1"), version=3), OPERATOR, now_ms=1)
    gone = IonDeleted(name="old", version=4)
    held.save(d, node_id="n1", now_ms=5)
    held.save(gone, node_id="n1", now_ms=5)
    (tmp_path / "defs" / "junk.pb").write_bytes(b"\x00not protobuf")
    (tmp_path / "defs" / "renamed.pb").write_bytes((tmp_path / "defs" / "kept.pb").read_bytes())
    assert held.load() == [d, gone]  # sorted by file name; junk and the misnamed copy skipped
    held.save(replace(d, version=4), node_id="n1", now_ms=6)  # replaces, atomically
    assert [i.version for i in held.load()] == [4, 4]
    assert not list((tmp_path / "defs").glob("*.tmp"))


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_restarted_node_refuses_an_older_retained_version(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    cfg = secure_config("hd-1", url, tmp_path)
    async with Agent(cfg) as agent:
        await agent.link.wait_connected()
        v1 = await apply(url, job("hd-1"), key=OPERATOR)
        await apply(url, job("hd-1", rate=2.0), key=OPERATOR)
        await async_wait_until(lambda: any(v.version == 2 for v in agent.status().ions), 30)
    # While the node is down, the genuine signed version 1 is put back as the retained one.
    publish_as_is(url, v1, topics.definition("kept"))  # retained
    with mqtt_client(fresh_mosquitto.host, fresh_mosquitto.port) as client:
        events = Events(client, "hd-1")
        async with Agent(cfg) as agent:
            await agent.link.wait_connected()
            await async_wait_until(lambda: events.has("ion.refused", "stale: version 1 < held 2"),
                                   20)  # fmt: skip
            await async_wait_until(lambda: is_running(agent, "kept", "job"), 30)
            spec = agent.pipelines()[("kept", "job")][0]
            assert spec is not None and spec.components[0].args["rate"] == 2.0


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_node_restarted_without_its_broker_runs_what_it_held(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    cfg = secure_config("hd-2", url, tmp_path)
    async with Agent(cfg) as agent:
        await agent.link.wait_connected()
        await apply(url, job("hd-2"), key=OPERATOR)
        await async_wait_until(lambda: is_running(agent, "kept", "job"), 30)
    offline: NodeConfig = replace(cfg, broker=parse_broker_url(f"mqtt://127.0.0.1:{free_port()}"))
    async with Agent(offline) as agent:
        await async_wait_until(lambda: is_running(agent, "kept", "job"), 30)
        assert agent.link.state is not LinkState.CONNECTED


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_held_file_edited_on_disk_is_refused(fresh_mosquitto: Any, tmp_path: Path) -> None:
    cfg = secure_config("hd-3", fresh_mosquitto.url, tmp_path)
    forged = sign(job("hd-3"), STRANGER, now_ms=1)
    HeldDefinitions(cfg.data_dir / "definitions").save(forged, node_id="x", now_ms=1)
    with mqtt_client(fresh_mosquitto.host, fresh_mosquitto.port) as client:
        events = Events(client, "hd-3")
        async with Agent(cfg) as agent:
            await agent.link.wait_connected()
            await async_wait_until(lambda: events.has("ion.refused", "held ION"), 20)
            assert agent.pipelines() == {}
