"""The monitor's model cache: when it answers chunk requests (pure), then real agents on a real
Mosquitto: a node that was offline during a rollout gets the model from the monitor after the
producer has gone, and while the producer is online the monitor leaves the answering to it."""

from __future__ import annotations

import hashlib
import os
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from agent_support import apply, node_config
from support import async_wait_until
from test_model_gateway import fleet_ion, holds

from broker.monitor.modelcache import ChunkAnswers, ModelCache, ModelCacheSettings
from ion.config.broker import parse_broker_url
from ion.model.manifest import ChunkRequest
from ion.model.status import NodeState
from ion.security import Keyring, Role, SigningKey, TrustedKey
from ion.security.trust import TrustConfig
from node.agent.service import Agent
from node.models.artifact import ModelArtifact

ION, EDGE = "fleet", "model"
MODEL = "a" * 64
PRODUCES = frozenset({Role.PRODUCER})


def answers(held: int = 10) -> ChunkAnswers:
    return ChunkAnswers(
        lambda model_id, i: model_id == MODEL and i < held,
        lambda model_id: 12 if model_id == MODEL else None,
        online_ms=5000,
        offline_ms=1000,
        guard_ms=1000,
    )


def test_a_request_for_a_gone_producer_is_answered_after_the_short_delay() -> None:
    a = answers()
    # All 12 asked for; the cache holds 10 of them.
    assert a.request(ChunkRequest(MODEL, (), "edge-1"), 0, producer_online=False) == 10
    assert a.take_due(999) == []
    a.seen(MODEL, 3, 500)  # someone else sent chunk 3 meanwhile
    assert a.take_due(2000) == [(MODEL, (0, 1, 2, 4, 5, 6, 7, 8, 9))]
    assert a.take_due(3000) == [] and a.pending == 0  # answered once


def test_an_online_producer_answers_first_and_pushes_the_rest_back() -> None:
    a = answers()
    assert a.request(ChunkRequest(MODEL, (0, 1, 2), "edge-1"), 0, producer_online=True) == 3
    assert a.take_due(4999) == []
    a.seen(MODEL, 0, 4000)  # the producer is answering: the rest waits another 5 s from here
    assert a.take_due(5000) == []
    a.seen(MODEL, 1, 6000)
    assert a.take_due(10_999) == []
    assert a.take_due(11_000) == [(MODEL, (2,))]  # it stopped short of chunk 2


def test_nothing_is_promised_for_unknown_models_unheld_or_just_sent_chunks() -> None:
    a = answers(held=5)
    assert a.request(ChunkRequest("b" * 64, (), "edge-1"), 0, producer_online=False) == 0
    a.seen(MODEL, 0, 100)
    # 0 was just sent (every consumer reads the same topic), 5+ not held, 99 out of range.
    assert a.request(ChunkRequest(MODEL, (0, 1, 6, 99), "edge-1"), 500, producer_online=False) == 1
    # A second consumer asking for the same chunk does not make it go twice.
    assert a.request(ChunkRequest(MODEL, (1,), "edge-2"), 600, producer_online=False) == 0
    assert a.take_due(1500) == [(MODEL, (1,))]
    a.forget(2000)
    assert a.request(ChunkRequest(MODEL, (0,), "edge-3"), 2000, producer_online=False) == 1


def test_settings_refuse_nonsense(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        ModelCacheSettings(root=tmp_path, max_bytes=0)
    with pytest.raises(ValueError, match="delays"):
        ModelCacheSettings(root=tmp_path, answer_offline_ms=-1)


# -- real agents --------------------------------------------------------------------------------


def consumer(node_id: str, url: str, tmp: Path, key: SigningKey) -> Any:
    return node_config(
        node_id, url, tmp, models={"request_after_ms": 500, "request_max_interval_ms": 2000},
        trust={"development_mode": True, "keys": [TrustedKey(key.public, PRODUCES).line()]},
    )  # fmt: skip


def trust_in(key: SigningKey) -> TrustConfig:
    trusted = TrustedKey(key.public, PRODUCES)
    return TrustConfig(keyring=Keyring({trusted.key_id: trusted}))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def start_cache(stack: AsyncExitStack, url: str, root: Path, key: SigningKey) -> ModelCache:
    """The monitor's model cache, trusting ``key`` as a producer, connected."""
    settings = ModelCacheSettings(root=root, trust=trust_in(key))
    cache = await stack.enter_async_context(
        ModelCache(settings, parse_broker_url(url), client_id="ion-monitor-m-models",
                   clock=now_ms)
    )  # fmt: skip
    await cache.link.wait_connected()
    return cache


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_node_offline_during_the_rollout_gets_the_model_from_the_monitor(
    broker_factory: Any, tmp_path: Path
) -> None:
    broker = broker_factory()
    producer_key = SigningKey.generate()
    key_file = tmp_path / "producer.key"
    key_file.write_bytes(producer_key.to_pem())
    key_file.chmod(0o600)
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 123))
    model_id = hashlib.sha256(src.read_bytes()).hexdigest()
    async with AsyncExitStack() as stack:
        start = stack.enter_async_context
        cache = await start_cache(stack, broker.url, tmp_path / "cache", producer_key)
        producing = AsyncExitStack()
        cloud_cfg = node_config(
            "cloud-1", broker.url, tmp_path, models={"chunk_size": 64 * 1024},
            trust={"development_mode": True, "signing_key": str(key_file)},
        )  # fmt: skip
        cloud = await producing.enter_async_context(Agent(cloud_cfg))
        e1 = await start(Agent(consumer("edge-1", broker.url, tmp_path, producer_key)))
        await apply(broker.url, fleet_ion(("edge-1", "edge-2", "edge-3")))
        await async_wait_until(lambda: any(v.name == ION for v in e1.status().ions), 30)
        m = await cloud.models.publish(ION, EDGE, "training", ModelArtifact(src, "test/1"))
        assert m.model_id == model_id and m.signature is not None and m.chunk_count == 49
        await async_wait_until(lambda: holds(e1, model_id), 60)
        # The monitor kept a copy, checked whole.
        await async_wait_until(lambda: cache.counters.get("model.verified") == 1, 30)
        assert cache.counters["chunk.accepted"] == m.chunk_count

        # A late joiner while the producer is online: the producer answers, the monitor not.
        e2 = await start(Agent(consumer("edge-2", broker.url, tmp_path, producer_key)))
        await async_wait_until(lambda: holds(e2, model_id), 60)
        assert cloud.models.counters["chunks.served"] >= m.chunk_count
        assert cache.counters.get("chunk.sent", 0) == 0

        # The producer goes away for good; a node that was offline all along comes back.
        await producing.aclose()
        await async_wait_until(lambda: cache._states.get("cloud-1") is NodeState.OFFLINE, 30)
        e3 = await start(Agent(consumer("edge-3", broker.url, tmp_path, producer_key)))
        await async_wait_until(lambda: holds(e3, model_id), 60)
        art = e3.models.active(ION, EDGE)
        assert art is not None and art.path.read_bytes() == src.read_bytes()
        assert cache.counters["chunk.sent"] >= m.chunk_count
        assert cache.counters["chunk.sent"] < 2 * m.chunk_count  # asked again at most once


@pytest.mark.integration
@pytest.mark.asyncio
async def test_the_monitor_keeps_no_manifest_its_keys_do_not_trust(
    broker_factory: Any, tmp_path: Path
) -> None:
    broker = broker_factory()
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(100_000))
    async with AsyncExitStack() as stack:
        start = stack.enter_async_context
        cache = await start_cache(stack, broker.url, tmp_path / "cache", SigningKey.generate())
        cloud = await start(Agent(node_config("cloud-1", broker.url, tmp_path)))  # unsigned
        await apply(broker.url, fleet_ion(("edge-1",)))
        await async_wait_until(lambda: any(v.name == ION for v in cloud.status().ions), 30)
        await cloud.models.publish(ION, EDGE, "training", ModelArtifact(src, "test/1"))
        await async_wait_until(lambda: cache.counters.get("manifest.refused") == 1, 30)
        assert list(cache.cache) == []
        assert not any((tmp_path / "cache").iterdir())
