"""A gateway's model cache: the pure cache first (filling, answering, asking upstream once,
limits, restarts), then real agents behind two gateway relays on three Mosquittos: the
upstream links carry each chunk once while children that lost chunks are served by their
gateway, and a child that joins later is served with every upstream link cut."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from agent_support import apply, node_config
from support import async_wait_until
from support.pipelines import placeholder

from broker.settings import BrokerSettings
from ion import topics
from ion.model.definition import (
    Edge,
    EdgeKind,
    Endpoint,
    IonDefinition,
    ModelPolicy,
    Pipeline,
    PipelineRole,
)
from ion.model.manifest import ArtifactLayout, ChunkRequest, ModelChunk, ModelManifest
from node.agent.service import Agent
from node.config import DEFAULT_RELAY_DOWN, DEFAULT_RELAY_UP
from node.models.artifact import ModelArtifact
from node.models.config import ModelConfig
from node.models.errors import IntegrityError
from node.models.gateway import GatewayCache
from node.models.pack import Packed
from node.models.transfer import ChunkOutcome, build_manifest, digest_file, read_chunks

ION, EDGE = "fleet", "model"
CHUNK = 1000
CFG = ModelConfig(chunk_size=CHUNK, request_after_ms=2000, resend_guard_ms=1000)


def model(tmp_path: Path, seed: int, size: int = 10_500) -> Path:
    path = tmp_path / f"model-{seed}.bin"
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def manifest_of(path: Path, version: str = "1", edge: str = EDGE) -> ModelManifest:
    return build_manifest(
        Packed(path, ArtifactLayout.FILE, path.name, temporary=False),
        digest_file(path, CHUNK),
        version=version,
        ion=ION,
        edge=edge,
        producer_pipeline="training",
        producer_node="cloud-1",
        format="test/1",
        created_ms=int(version) if version.isdigit() else 0,
    )


def chunks(path: Path, m: ModelManifest) -> list[ModelChunk]:
    return list(read_chunks(path, m))


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[GatewayCache]:
    c = GatewayCache(tmp_path / "cache", CFG, node_id="gw-1")
    yield c
    c.close()


# -- the cache alone ------------------------------------------------------------------------


def test_a_held_model_is_served_to_children_and_nothing_goes_upstream(
    tmp_path: Path, cache: GatewayCache
) -> None:
    path = model(tmp_path, 1)
    m = manifest_of(path)
    assert cache.on_manifest(m, 0)
    for c in chunks(path, m):
        assert cache.on_chunk(c, 0) is ChunkOutcome.ACCEPTED
    plan = cache.on_request(ChunkRequest(m.model_id, (3, 4), "edge-1"), 10)
    assert plan.serve == (3, 4) and plan.ask is None and not plan.forward
    # A second child asking at once: every child reads the same topic, so nothing again ...
    assert cache.on_request(ChunkRequest(m.model_id, (3, 4), "edge-2"), 20).serve == ()
    # ... until the resend guard has passed.
    assert cache.on_request(ChunkRequest(m.model_id, (), "edge-2"), 1020).serve == tuple(
        range(m.chunk_count)
    )
    chunk = cache.read(m.model_id, 10)
    assert chunk is not None and chunk.data == path.read_bytes()[10_000:]


def test_what_the_cache_lacks_is_asked_upstream_once_for_all_children(
    tmp_path: Path, cache: GatewayCache
) -> None:
    path = model(tmp_path, 2)
    m = manifest_of(path)
    cache.on_manifest(m, 0)
    got = chunks(path, m)
    for c in got[:6]:
        cache.on_chunk(c, 0)
    plan = cache.on_request(ChunkRequest(m.model_id, (), "edge-1"), 100)
    assert plan.serve == (0, 1, 2, 3, 4, 5)
    assert plan.ask == ChunkRequest(m.model_id, (6, 7, 8, 9, 10), "gw-1")
    # Another child missing the same chunks: they are on their way, nobody asks again.
    plan = cache.on_request(ChunkRequest(m.model_id, (7, 8), "edge-2"), 500)
    assert plan.ask is None and plan.serve == ()
    cache.on_chunk(got[6], 1000)  # progress from upstream
    assert cache.on_request(ChunkRequest(m.model_id, (7,), "edge-3"), 2500).ask is None
    # Nothing more came for request_after_ms: ask again for what is still missing.
    plan = cache.on_request(ChunkRequest(m.model_id, (), "edge-3"), 3100)
    assert plan.ask == ChunkRequest(m.model_id, (7, 8, 9, 10), "gw-1")
    assert cache.counters["request.upstream"] == 2


def test_a_model_the_cache_does_not_know_is_forwarded(cache: GatewayCache) -> None:
    assert cache.on_request(ChunkRequest("a" * 64, (), "edge-1"), 0).forward
    assert cache.on_chunk(ModelChunk("a" * 64, 0, b"x"), 0) is None


def test_bad_chunks_and_refused_manifests_are_not_cached(tmp_path: Path) -> None:
    path = model(tmp_path, 3)
    m = manifest_of(path)
    small = GatewayCache(tmp_path / "small", replace(CFG, max_model_bytes=10_000), node_id="g")
    assert not small.on_manifest(m, 0)  # 10,500 bytes: over this node's limit
    assert small.counters["manifest.refused"] == 1
    picky = GatewayCache(tmp_path / "picky", CFG, node_id="g", accept=lambda m: "unsigned")
    assert not picky.on_manifest(m, 0)
    cache = GatewayCache(tmp_path / "c", CFG, node_id="g")
    cache.on_manifest(m, 0)
    good = chunks(path, m)[2]
    assert cache.on_chunk(replace(good, data=bytes(len(good.data))), 0) is ChunkOutcome.BAD_HASH
    assert not cache.holds(m.model_id, 2)
    assert cache.on_chunk(good, 0) is ChunkOutcome.ACCEPTED
    for c in (small, picky, cache):
        c.close()


def test_the_cache_survives_a_restart(tmp_path: Path) -> None:
    path = model(tmp_path, 4)
    m = manifest_of(path)
    first = GatewayCache(tmp_path / "cache", CFG, node_id="gw-1")
    first.on_manifest(m, 0)
    for c in chunks(path, m)[:4]:
        first.on_chunk(c, 0)
    first.close()
    again = GatewayCache(tmp_path / "cache", CFG, node_id="gw-1")
    assert [x.model_id for x in again] == [m.model_id]
    plan = again.on_request(ChunkRequest(m.model_id, (), "edge-1"), 0)
    assert plan.serve == (0, 1, 2, 3) and plan.ask is not None and len(plan.ask.indexes) == 7
    again.close()


def test_newest_versions_per_edge_and_a_byte_limit(tmp_path: Path) -> None:
    cfg = replace(CFG, gateway_cache_versions=2, gateway_cache_bytes=35_000)
    cache = GatewayCache(tmp_path / "cache", cfg, node_id="gw-1")
    ms = [manifest_of(model(tmp_path, 10 + v), str(v)) for v in (1, 2, 3)]
    for i, m in enumerate(ms):
        cache.on_manifest(m, i)
    assert {m.version for m in cache} == {"2", "3"}  # two per edge
    other = manifest_of(model(tmp_path, 20, size=20_000), "1", edge="other")
    cache.on_manifest(other, 10)  # 41,000 bytes in all: the least recently used goes
    assert {(m.edge, m.version) for m in cache} == {(EDGE, "3"), ("other", "1")}
    huge = manifest_of(model(tmp_path, 21, size=40_000), "2", edge="other")
    assert not cache.on_manifest(huge, 20)  # larger than the whole cache
    cache.close()


def test_a_complete_entry_is_checked_whole_once(tmp_path: Path, cache: GatewayCache) -> None:
    path = model(tmp_path, 5)
    m = manifest_of(path)
    bad = replace(manifest_of(model(tmp_path, 6)), model_id="b" * 64)  # chunks fine, whole not
    for x, p in ((m, path), (bad, tmp_path / "model-6.bin")):
        cache.on_manifest(x, 0)
        for c in chunks(p, x):
            cache.on_chunk(c, 0)
    checks = {a.manifest.model_id: a for a in cache.to_verify()}
    assert set(checks) == {m.model_id, bad.model_id} and cache.to_verify() == []
    checks[m.model_id].verify()
    cache.verified(m.model_id, None)
    with pytest.raises(IntegrityError) as info:
        checks[bad.model_id].verify()
    cache.verified(bad.model_id, info.value)
    assert [x.model_id for x in cache] == [m.model_id]
    assert cache.counters["model.verified"] == 1


# -- real agents behind two gateways ----------------------------------------------------------


def pipeline(name: str, nodes: tuple[str, ...], role: PipelineRole) -> Pipeline:
    return placeholder(name, nodes, role)


def fleet_ion(children: tuple[str, ...]) -> IonDefinition:
    return IonDefinition(
        name=ION,
        pipelines=(
            pipeline("training", ("cloud-1",), PipelineRole.TRAINING),
            pipeline("inference", children, PipelineRole.INFERENCE),
        ),
        edges=(
            Edge(EDGE, EdgeKind.MODEL, Endpoint("training"), (Endpoint("inference"),),
                 policy=ModelPolicy(keep_versions=1)),
        ),
    )  # fmt: skip


def gateway(node_id: str, local: str, upstream: str, tmp: Path) -> Any:
    return node_config(
        node_id, local, tmp, {"tier": "gateway"}, upstream={"url": upstream},
        relay={"up": list(DEFAULT_RELAY_UP), "down": list(DEFAULT_RELAY_DOWN)},
    )  # fmt: skip


def child(node_id: str, url: str, tmp: Path) -> Any:
    return node_config(node_id, url, tmp, models={"request_after_ms": 500,
                                                  "request_max_interval_ms": 2000})  # fmt: skip


def knows(agent: Agent) -> bool:
    return any(v.name == ION for v in agent.status().ions)


def holds(agent: Agent, model_id: str) -> bool:
    art = agent.models.active(ION, EDGE)
    return art is not None and art.model_id == model_id


def received(agent: Agent, model_id: str) -> int:
    inc = agent.models.transfers.get(model_id)
    return inc.assembler.received_count if inc is not None else 0


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_gateway_caches_a_model_once_for_all_its_children(
    broker_factory: Any, proxy_factory: Any, tmp_path: Path
) -> None:
    # The edge broker keeps little for an absent child (10 in flight, 1 MiB queued), so a
    # child whose link is cut really loses chunks and must ask for them.
    edge_b = broker_factory(
        settings=BrokerSettings(max_inflight_messages=10, max_queued_bytes=1024 * 1024)
    )
    mid_b, cloud_b = broker_factory(), broker_factory()
    up1 = proxy_factory(mid_b.host, mid_b.port)  # gw-1's upstream link
    up2 = proxy_factory(cloud_b.host, cloud_b.port)  # gw-2's upstream link, to the cloud
    flaky = proxy_factory(edge_b.host, edge_b.port)  # edge-1's link to its gateway
    size = 20 * 1024 * 1024
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(size))
    children = ("edge-1", "edge-2", "edge-3", "edge-4")
    async with AsyncExitStack() as stack:
        start = stack.enter_async_context
        cloud = await start(Agent(node_config("cloud-1", cloud_b.url, tmp_path)))
        gw2 = await start(Agent(gateway("gw-2", mid_b.url, up2.url, tmp_path)))
        gw1 = await start(Agent(gateway("gw-1", edge_b.url, up1.url, tmp_path)))
        e1 = await start(Agent(child("edge-1", flaky.url, tmp_path)))
        e2 = await start(Agent(child("edge-2", edge_b.url, tmp_path)))
        e3 = await start(Agent(child("edge-3", edge_b.url, tmp_path)))
        await cloud.link.wait_connected()
        await apply(cloud_b.url, fleet_ion(children))
        await async_wait_until(lambda: all(knows(a) for a in (cloud, e1, e2, e3)), 30)
        for a in (e1, e2, e3):  # subscribed for sure: the broker confirmed it again
            await a.link.subscribe(topics.model_filter(ION, EDGE), 1)
        await asyncio.sleep(0.5)  # the gateways' subscriptions were made at start

        publishing = asyncio.create_task(
            cloud.models.publish(ION, EDGE, "training", ModelArtifact(src, "test/1")),
            name="publish",
        )
        model_id = hashlib.sha256(src.read_bytes()).hexdigest()
        await async_wait_until(lambda: received(e1, model_id) >= 10, 30)
        flaky.cut()  # edge-1 loses its link mid-transfer ...
        m = await publishing
        await async_wait_until(lambda: holds(e2, m.model_id) and holds(e3, m.model_id), 60)
        lacking = m.chunk_count - received(e1, m.model_id)
        flaky.restore()  # ... and asks for what it misses when it is back
        await async_wait_until(lambda: holds(e1, m.model_id), 60)
        assert lacking > 0

        # The upstream links carried each chunk once: both gateways took every chunk once from
        # upstream, the producer sent each once and served no request.
        for gw in (gw1, gw2):
            cache = gw._relay.cache if gw._relay is not None else None
            assert cache is not None
            assert cache.counters.get("chunk.accepted") == m.chunk_count
            assert cache.counters.get("chunk.duplicate", 0) == 0
        assert cloud.models.sender.counters["chunks.sent"] == m.chunk_count
        assert cloud.models.counters["chunks.served"] == 0
        assert up2.bytes_down < size * 1.05
        gw1_cache = gw1._relay.cache if gw1._relay is not None else None
        assert gw1_cache is not None and gw1_cache.counters.get("chunk.served", 0) >= lacking
        assert gw1_cache.counters.get("request.forwarded", 0) == 0

        # A child that joins later is served by its gateway with every upstream link cut.
        up1.cut()
        up2.cut()
        e4 = await start(Agent(child("edge-4", edge_b.url, tmp_path)))
        await async_wait_until(lambda: holds(e4, m.model_id), 60)
        art = e4.models.active(ION, EDGE)
        assert art is not None and art.path.read_bytes() == src.read_bytes()
        assert cloud.models.counters["chunks.served"] == 0
