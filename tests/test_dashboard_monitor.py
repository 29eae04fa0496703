"""The dashboard over a store the real monitor writes: ``ion monitor`` subscribed to a real
Mosquitto folds an ION definition and a node's status, and the dashboard (same loop, same
file, read-only) shows them: the contract in ``broker/monitor/schema.py`` end to end."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from agent_support import apply_sync
from monitor_support import ION, status
from prometheus_client.parser import text_string_to_metric_families
from support import unique_name
from test_dashboard_support import EDGE, definition, retained_decision, seed, seed_broker

from broker.dashboard import DashboardSettings, serve_dashboard
from broker.monitor.service import Monitor, MonitorSettings
from ion import topics
from ion.client.session import connect
from ion.config.broker import parse_broker_url
from ion.model.command import ApproveModel, ModelRef
from ion.model.messages import new_envelope
from ion.wire.codec import encode

pytestmark = pytest.mark.integration


def publish_status(url: str, node: str) -> None:
    with connect(parse_broker_url(url)) as session:
        env = new_envelope(status(node), source_node=node, now_ms=time.time_ns() // 1_000_000)
        session.publish(topics.node_status(node), encode(env), retain=True)


async def until(monitor: Monitor, check: Callable[[], Any], limit_s: float = 15.0) -> None:
    """Wait for ``check()`` (awaitable) to hold, re-checking after each monitor commit."""

    async def loop() -> None:
        while not await check():
            async with monitor.committed_changed:
                # A commit may land between the check and the wait: re-check at least each second.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(monitor.committed_changed.wait(), 1.0)

    await asyncio.wait_for(loop(), limit_s)


@pytest.mark.asyncio
async def test_the_dashboard_shows_what_the_real_monitor_stored(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    db = tmp_path / "monitor.db"
    await asyncio.to_thread(apply_sync, url, definition(ION))
    await asyncio.to_thread(publish_status, url, "edge-7")
    settings = MonitorSettings(broker=parse_broker_url(url), db_path=db, flush_interval_s=0.05)
    async with Monitor(settings) as monitor, aiohttp.ClientSession() as http:
        await monitor.wait_connected(10)
        got: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            serve_dashboard(DashboardSettings(db_path=db, port=0), started=got.set_result),
            name="dashboard",
        )
        try:
            base = await asyncio.wait_for(got, 10)

            async def get(path: str) -> Any:
                async with http.get(base + path) as r:
                    return r.status, (
                        await r.json() if "json" in r.content_type else await r.text()
                    )

            async def node_seen() -> bool:
                code, body = await get("api/nodes")
                return code == 200 and any(n["node_id"] == "edge-7" for n in body)

            async def ion_seen() -> bool:
                code, body = await get("api/ions")
                return code == 200 and any(i["name"] == ION for i in body)

            await until(monitor, node_seen)
            await until(monitor, ion_seen)
            code, one = await get("api/nodes/edge-7")
            assert code == 200
            assert one["node"]["state"] == "online" and one["node"]["layer"] == "edge"
            assert [(p["pipeline"], p["state"]) for p in one["pipelines"]] == [("infer", "running")]
            assert [m["pending"] for m in one["models"]] == [["4"]]
            assert {q["traffic_class"] for q in one["queues"]} == {"stats", "events"}
            code, graph = await get(f"api/ions/{ION}/graph")
            assert code == 200
            assert {p["name"] for p in graph["pipelines"]} >= {"training", "inference"}
            assert [e["name"] for e in graph["edges"]] == [EDGE]
            code, page = await get("")
            assert code == 200 and 'data-row="edge-7"' in page
            code, page = await get(f"ions/{ION}")
            assert code == 200 and 'data-edge="weights"' in page
            code, page = await get("nodes/edge-7")
            assert code == 200 and "Approve 4" in page
            code, text = await get("metrics")
            fams = {f.name: f for f in text_string_to_metric_families(text)}
            up = {s.labels["node"]: s.value for s in fams["ion_node_up"].samples}
            assert up["edge-7"] == 1
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@pytest.mark.asyncio
async def test_api_actions_publish_what_the_cli_would(fresh_mosquitto: Any, tmp_path: Path) -> None:
    url = fresh_mosquitto.url
    ion = unique_name("api")
    await asyncio.to_thread(seed_broker, url, ion)
    db = tmp_path / "monitor.db"
    seed(db, time.time_ns() // 1_000_000, ion=ion).close()
    settings = DashboardSettings(db_path=db, port=0, token="tok", broker=parse_broker_url(url))
    got: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve_dashboard(settings, started=got.set_result), name="dash")
    bearer = {"Authorization": "Bearer tok"}
    try:
        base = await asyncio.wait_for(got, 10)
        async with aiohttp.ClientSession() as http:

            async def act(action: str, headers: dict[str, str], **body: str) -> tuple[int, Any]:
                async with http.post(f"{base}api/actions/{action}", json=body,
                                     headers=headers) as r:  # fmt: skip
                    return r.status, await r.json()

            code, out = await act("approve", bearer, ion=ion, edge=EDGE, version="9")
            assert code == 400 and "unknown version '9'" in out["error"]
            code, out = await act("approve", bearer, ion="nope", edge=EDGE, version="4")
            assert code == 400 and "unknown ION 'nope'" in out["error"]
            code, out = await act("approve", bearer, ion=ion, edge=EDGE, version="Bad One")
            assert code == 400
            code, out = await act("approve", {**bearer, "Origin": "http://evil.example"},
                                  ion=ion, edge=EDGE, version="4")  # fmt: skip
            assert code == 403
            assert await asyncio.to_thread(retained_decision, url, ion, "4") is None
            code, out = await act("approve", bearer, ion=ion, edge=EDGE, version="4", reason="ok")
            assert code == 200, out
            assert [d["action"] for d in out["decisions"]] == ["approve"]
            assert "unsigned" in out["message"]
            cmd = await asyncio.to_thread(retained_decision, url, ion, "4")
            assert cmd is not None and cmd.action == ApproveModel(ModelRef(ion, EDGE, "4"))
            assert cmd.reason == "ok" and cmd.signature is None
            code, out = await act("rollback", bearer, ion=ion, edge=EDGE)
            assert code == 200, out
            assert [(d["action"], d["version"]) for d in out["decisions"]] == [("reject", "3")]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
