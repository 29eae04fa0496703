"""The agent's model exchange: with a fake host (every step, injected clock), then two real
agents on a real Mosquitto (a ~5 MB model arrives, verified, stored and active; a node that
starts after the publish gets it from the retained manifest and a chunk request)."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from agent_support import apply, node_config
from support import async_wait_until
from support.pipelines import placeholder

from ion import topics
from ion.errors import InputError, UnavailableError
from ion.model.definition import (
    Edge,
    EdgeKind,
    Endpoint,
    IonDefinition,
    ModelPolicy,
    Pipeline,
    PipelineRole,
)
from ion.model.event import Event
from ion.model.manifest import ChunkRequest, ModelChunk, ModelManifest
from ion.model.messages import new_envelope
from node.agent.models import ModelExchange
from node.agent.receiver import Arrival
from node.agent.service import Agent
from node.models.artifact import ModelArtifact
from node.models.config import ModelConfig
from node.models.policy import Activation, activation, version_key

ION, EDGE = "plant", "model"


def pipeline(name: str, node: str, role: PipelineRole) -> Pipeline:
    return placeholder(name, node, role)


def model_ion(name: str, producer: str, consumer: str, keep: int = 3) -> IonDefinition:
    return IonDefinition(
        name=name,
        pipelines=(
            pipeline("training", producer, PipelineRole.TRAINING),
            pipeline("inference", consumer, PipelineRole.INFERENCE),
        ),
        edges=(
            Edge(
                EDGE,
                EdgeKind.MODEL,
                Endpoint("training"),
                (Endpoint("inference"),),
                policy=ModelPolicy(keep_versions=keep),
            ),
        ),
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


class FakeHost:
    """Records what is published; ``refuse`` makes the next publishes fail (outbox full)."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.sent: list[tuple[str, object]] = []
        self.refuse = 0

    async def publish(
        self,
        topic: str,
        body: object,
        *,
        ion: str = "",
        correlation_id: str = "",
        message_id: str | None = None,
    ) -> None:
        if self.refuse:
            self.refuse -= 1
            raise UnavailableError("outbox refused the message: full")
        self.sent.append((topic, body))

    def consume(self, match: Callable[[Arrival], bool]) -> AsyncIterator[Arrival]:
        raise NotImplementedError  # driven directly in these tests

    def take(self, kind: type | tuple[type, ...] = object) -> list[tuple[str, Any]]:
        out = [(t, b) for t, b in self.sent if isinstance(b, kind)]
        self.sent = [(t, b) for t, b in self.sent if not isinstance(b, kind)]
        return out

    def events(self) -> list[str]:
        return [b.type for _, b in self.take(Event)]


async def deliver(to: ModelExchange, items: list[tuple[str, Any]], source: str = "cloud-1") -> None:
    for topic, body in items:
        env = new_envelope(body, source_node=source, now_ms=0)
        await to.handle(Arrival(topics.parse(topic), env))


class Pair:
    """A producer (cloud-1) and a consumer (edge-1), each with its exchange."""

    def __init__(self, tmp_path: Path, *, keep: int = 3, config: ModelConfig | None = None):
        self.tmp = tmp_path
        self.clock = Clock()
        self.config = config or ModelConfig(chunk_size=64 * 1024)
        self.definitions = {ION: model_ion(ION, "cloud-1", "edge-1", keep)}
        self.a_host, self.b_host = FakeHost("cloud-1"), FakeHost("edge-1")
        self.a = self.exchange(self.a_host, "a", {(ION, "training")})
        self.b = self.exchange(self.b_host, "b", {(ION, "inference")})

    def exchange(self, host: FakeHost, name: str, local: set[tuple[str, str]]) -> ModelExchange:
        ex = ModelExchange(host, self.tmp / name, config=self.config, clock=self.clock)
        ex.plan(self.definitions, local)
        return ex

    def restart_b(self) -> None:
        self.b = self.exchange(self.b_host, "b", {(ION, "inference")})

    async def publish(self, n: int, size: int = 300_000) -> ModelManifest:
        path = self.tmp / f"model-{n}.bin"
        path.write_bytes(random.Random(n).randbytes(size))
        self.clock.now += 10
        return await self.a.publish(ION, EDGE, "training", ModelArtifact(path, "test/1"))


# -- with a fake host ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_published_model_arrives_verified_stored_and_active(tmp_path: Path) -> None:
    p = Pair(tmp_path)
    watch = p.b.watch(ION, EDGE)
    m = await p.publish(1)
    sent = p.a_host.take()
    assert [t for t, _ in sent[:1]] == [topics.model_manifest(ION, EDGE)]  # manifest first
    assert [b.index for _, b in sent[1:]] == list(range(m.chunk_count)) and m.chunk_count == 5
    assert m.version == str(p.clock.now) and m.producer_node == "cloud-1"
    await deliver(p.b, sent)
    art = p.b.active(ION, EDGE)
    assert art is not None and art.model_id == m.model_id and art.version == m.version
    assert art.path.read_bytes() == (tmp_path / "model-1.bin").read_bytes()
    assert watch.latest() == art and watch.generation == 1
    assert p.b_host.events() == ["model.activated"]
    assert p.b.counters["chunk.accepted"] == 5 and p.b.counters["requests"] == 0
    assert p.a.active(ION, EDGE) is None  # the producer stores, but consumes nothing
    assert [s.active_version for s in p.b.statuses()] == [m.version]


@pytest.mark.asyncio
async def test_publishing_the_same_bytes_again_publishes_nothing(tmp_path: Path) -> None:
    p = Pair(tmp_path)
    m = await p.publish(1)
    p.a_host.take()
    assert await p.publish(1) == m
    assert p.a_host.sent == []


@pytest.mark.asyncio
async def test_publish_checks_the_edge_and_waits_for_room_in_the_outbox(tmp_path: Path) -> None:
    p = Pair(tmp_path)
    art = ModelArtifact(tmp_path, "x")
    with pytest.raises(InputError, match="no model edge"):
        await p.a.publish(ION, "other", "training", art)
    with pytest.raises(InputError, match="starts at 'training'"):
        await p.a.publish(ION, EDGE, "inference", art)
    with pytest.raises(InputError, match="no model edge"):
        await p.b.publish(ION, EDGE, "training", art)  # b consumes, does not produce
    p.a_host.refuse = 2
    m = await p.publish(2)
    assert len(p.a_host.sent) == 1 + m.chunk_count


@pytest.mark.asyncio
async def test_a_directory_model_is_unpacked_at_the_consumer(tmp_path: Path) -> None:
    p = Pair(tmp_path)
    src = tmp_path / "saved"
    (src / "variables").mkdir(parents=True)
    (src / "variables" / "v.bin").write_bytes(os.urandom(200_000))
    (src / "model.pb").write_bytes(b"graph")
    m = await p.a.publish(ION, EDGE, "training", ModelArtifact(src, "savedmodel/1"))
    assert not list((tmp_path / "a" / "outgoing").iterdir())  # the tar moved into the store
    await deliver(p.b, p.a_host.take())
    art = p.b.active(ION, EDGE)
    assert art is not None and art.model_id == m.model_id and art.path.name == "saved"
    assert (art.path / "variables" / "v.bin").read_bytes() == (
        src / "variables" / "v.bin"
    ).read_bytes()


@pytest.mark.asyncio
async def test_chunks_before_their_manifest_wait_in_staging(tmp_path: Path) -> None:
    p = Pair(tmp_path)
    await p.publish(1)
    sent = p.a_host.take()
    await deliver(p.b, sent[1:] + sent[:1])  # chunks first
    assert p.b.counters["chunk.staged"] == 5
    assert p.b.active(ION, EDGE) is not None


@pytest.mark.asyncio
async def test_missing_chunks_are_requested_and_served_once(tmp_path: Path) -> None:
    p = Pair(tmp_path)
    m = await p.publish(1)
    sent = p.a_host.take()
    await deliver(p.b, [sent[0], sent[1], sent[3]])  # manifest, chunks 0 and 2
    await p.b.tick(p.clock.now + 1_000)
    assert p.b_host.sent == []  # not yet: chunks may still be on their way
    await p.b.tick(p.clock.now + 2_000)
    [(topic, req)] = p.b_host.take()
    assert topic == topics.model_requests(ION, EDGE)
    assert req == ChunkRequest(m.model_id, (1, 3, 4), requester="edge-1")
    p.clock.now += 2_000
    await deliver(p.a, [(topic, req)], source="edge-1")
    await deliver(p.a, [(topic, req)], source="edge-2")  # another consumer, same moment
    answer = p.a_host.take()
    assert [c.index for _, c in answer] == [1, 3, 4]  # sent once for both
    await deliver(p.b, answer)
    assert p.b.active(ION, EDGE) is not None
    await p.b.tick(p.clock.now + 60_000)
    assert p.b_host.take(ChunkRequest) == []


@pytest.mark.asyncio
async def test_a_late_joiner_asks_for_everything_at_once(tmp_path: Path) -> None:
    p = Pair(tmp_path)
    m = await p.publish(1)
    manifest = p.a_host.take()[:1]
    p.clock.now += 60_000  # the retained manifest is a minute old
    await deliver(p.b, manifest)
    await p.b.tick(p.clock.now)
    [(_, req)] = p.b_host.take()
    assert req.indexes == ()  # all
    await deliver(p.a, [(topics.model_requests(ION, EDGE), req)], source="edge-1")
    await deliver(p.b, p.a_host.take())
    art = p.b.active(ION, EDGE)
    assert art is not None and art.model_id == m.model_id


@pytest.mark.asyncio
async def test_requests_back_off_while_nothing_comes(tmp_path: Path) -> None:
    p = Pair(tmp_path)
    await p.publish(1)
    await deliver(p.b, p.a_host.take()[:1])
    asked = []
    for step in range(0, 40_000, 500):
        await p.b.tick(p.clock.now + step)
        if p.b_host.take():
            asked.append(step)
    assert asked == [2_000, 6_000, 14_000, 30_000]  # 2 s, then doubling


@pytest.mark.asyncio
async def test_a_tampered_chunk_is_refused_and_the_good_one_accepted(tmp_path: Path) -> None:
    p = Pair(tmp_path)
    sent_manifest = await p.publish(1)
    sent = p.a_host.take()
    topic, chunk = sent[2]
    evil = ModelChunk(chunk.model_id, chunk.index, b"\x00" + chunk.data[1:])
    await deliver(p.b, [*sent[:2], (topic, evil), *sent[3:]])
    assert p.b.counters["chunk.bad_hash"] == 1
    assert p.b.active(ION, EDGE) is None
    await deliver(p.b, [(topic, chunk)])
    art = p.b.active(ION, EDGE)
    assert art is not None and art.model_id == sent_manifest.model_id


@pytest.mark.asyncio
async def test_a_restarted_consumer_resumes_where_it_was(tmp_path: Path) -> None:
    p = Pair(tmp_path)
    m = await p.publish(1)
    sent = p.a_host.take()
    await deliver(p.b, sent[:3])  # manifest and two chunks, then the process dies
    p.restart_b()
    await p.b.tick(p.clock.now)  # a resumed transfer asks at once
    [(topic, req)] = p.b_host.take()
    assert req.indexes == (2, 3, 4)
    p.clock.now += 2_000
    await deliver(p.a, [(topic, req)], source="edge-1")
    await deliver(p.b, p.a_host.take())
    art = p.b.active(ION, EDGE)
    assert art is not None and art.model_id == m.model_id


@pytest.mark.asyncio
async def test_a_failed_write_back_starts_the_transfer_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A disk that fails under the transfer (EIO, or a full disk when the data is written
    # back): an fdatasync reports that error once, so the fsync when storing would not see
    # it.  The model must not be stored from those bytes; the transfer starts over and asks
    # again after the longest wait.
    from node.models import transfer

    p = Pair(tmp_path)
    m = await p.publish(1)
    sent = p.a_host.take()
    fail = [1]

    def fdatasync(fd: int) -> None:
        if fail[0]:
            fail[0] -= 1
            raise OSError(5, "Input/output error")
        os.fsync(fd)

    monkeypatch.setattr(transfer, "WRITEBACK_BYTES", 64 * 1024)  # after every chunk
    monkeypatch.setattr(transfer.os, "fdatasync", fdatasync)
    await deliver(p.b, sent)
    assert p.b.active(ION, EDGE) is None
    assert p.b_host.events() == ["model.storage"]
    assert p.b.store.get(ION, EDGE, m.model_id) is None
    inc = p.b.transfers.get(m.model_id)
    assert inc is not None and inc.assembler.received_count == 0  # started over
    await p.b.tick(p.clock.now + 29_000)
    assert p.b_host.take() == []  # not at once: the disk may need time
    p.clock.now += 30_000
    await p.b.tick(p.clock.now)
    [(topic, req)] = p.b_host.take()
    assert req.indexes == ()  # all of it
    await deliver(p.a, [(topic, req)], source="edge-1")
    await deliver(p.b, p.a_host.take())
    art = p.b.active(ION, EDGE)
    assert art is not None and art.path.read_bytes() == (tmp_path / "model-1.bin").read_bytes()


@pytest.mark.asyncio
async def test_a_transfer_for_an_edge_no_longer_consumed_is_dropped(tmp_path: Path) -> None:
    p = Pair(tmp_path)
    m = await p.publish(1)
    await deliver(p.b, p.a_host.take()[:2])
    assert p.b.transfers.get(m.model_id) is not None
    p.b.plan({}, set())  # the ION was deleted
    assert p.b.transfers.get(m.model_id) is None
    assert not (tmp_path / "b" / "incoming" / m.model_id).exists()
    assert p.b.subscriptions() == frozenset()


@pytest.mark.asyncio
async def test_a_rejected_version_is_rolled_back_and_not_taken_again(tmp_path: Path) -> None:
    p = Pair(tmp_path)
    watch = p.b.watch(ION, EDGE)
    seen: list[str | None] = []
    watch.add_listener(lambda art: seen.append(art.version if art else None))
    m1 = await p.publish(1)
    await deliver(p.b, p.a_host.take())
    m2 = await p.publish(2)
    sent2 = p.a_host.take()
    await deliver(p.b, sent2)
    p.b_host.take()
    await p.b.report(
        ION, EDGE, m2.model_id, ok=False, detail="unknown format", pipeline="inference"
    )
    art = p.b.active(ION, EDGE)
    assert art is not None and art.model_id == m1.model_id
    assert seen == [m1.version, m2.version, m1.version]
    events = p.b_host.take(Event)
    assert [e.type for _, e in events] == ["model.rejected", "model.rolled_back"]
    assert events[0][1].attributes["model_id"] == m2.model_id
    assert events[0][1].pipeline == "inference"
    await deliver(p.b, sent2[:1])  # the retained manifest again: not fetched, not activated
    assert p.b.active(ION, EDGE) == art
    await p.b.report(ION, EDGE, m1.model_id, ok=True)
    assert p.b_host.events() == ["model.accepted"]
    with pytest.raises(InputError, match="not held"):
        await p.b.report(ION, EDGE, "0" * 64, ok=True)


@pytest.mark.asyncio
async def test_older_versions_are_not_fetched_and_keep_versions_applies(tmp_path: Path) -> None:
    p = Pair(tmp_path, keep=2)
    published: list[tuple[ModelManifest, list[tuple[str, Any]]]] = []
    for n in range(1, 5):
        m = await p.publish(n)
        published.append((m, p.a_host.take()))
    for _, sent in published[1:]:
        await deliver(p.b, sent)
    held = [v.manifest.version for v in p.b.store.versions(ION, EDGE)]
    assert len(held) == 3  # old versions go prune_after_ms after the activation, not at once
    await p.b.tick(p.clock.now + p.config.prune_after_ms - 1)
    assert len(p.b.store.versions(ION, EDGE)) == 3
    await p.b.tick(p.clock.now + p.config.prune_after_ms)
    held = [v.manifest.version for v in p.b.store.versions(ION, EDGE)]
    assert held == [m.version for m, _ in published[2:]]  # keep_versions: 2
    assert len(p.a.store.versions(ION, EDGE)) == 2  # the producer too
    art = p.b.active(ION, EDGE)
    assert art is not None and art.version == published[3][0].version
    await deliver(p.b, published[0][1])  # an older version, late: neither fetched nor staged
    assert p.b.counters["manifest.skipped"] == 1
    assert p.b.counters["chunk.unwanted"] == 5 and p.b.counters["chunk.staged"] == 0
    assert p.b.active(ION, EDGE) == art


@pytest.mark.asyncio
async def test_a_manifest_over_the_limits_is_an_event_not_a_transfer(tmp_path: Path) -> None:
    small = ModelConfig(chunk_size=64 * 1024, max_model_bytes=100_000)
    p = Pair(tmp_path / "small", config=small)
    big = Pair(tmp_path / "big")
    m = await big.publish(1)
    await deliver(p.b, big.a_host.take()[:1])
    assert p.b_host.events() == ["model.invalid"]
    assert p.b.transfers.get(m.model_id) is None
    with pytest.raises(InputError, match="over this node's limit"):
        await p.publish(1)  # the producer refuses what its peers would


@pytest.mark.asyncio
async def test_a_node_that_produces_and_consumes_activates_its_own_model(tmp_path: Path) -> None:
    p = Pair(tmp_path)
    ex = p.exchange(p.a_host, "self", {(ION, "training"), (ION, "inference")})
    path = tmp_path / "m.bin"
    path.write_bytes(b"weights")
    m = await ex.publish(ION, EDGE, "training", ModelArtifact(path, "test/1"))
    art = ex.active(ION, EDGE)
    assert art is not None and art.model_id == m.model_id


@pytest.mark.asyncio
async def test_watch_waits_for_a_change(tmp_path: Path) -> None:
    p = Pair(tmp_path)
    watch = p.b.watch(ION, EDGE)
    waiter = asyncio.create_task(watch.wait_changed(0), name="waiter")
    await asyncio.sleep(0)
    assert not waiter.done()
    await p.publish(1)
    await deliver(p.b, p.a_host.take())
    assert await asyncio.wait_for(waiter, 5) == 1


@pytest.mark.asyncio
async def test_a_version_older_than_one_on_its_way_is_not_fetched(tmp_path: Path) -> None:
    p = Pair(tmp_path)
    m1 = await p.publish(1)
    sent1 = p.a_host.take()
    await p.publish(2)
    sent2 = p.a_host.take()
    await deliver(p.b, sent2[:2])  # v2 on its way
    await deliver(p.b, sent1[:1])
    assert p.b.counters["manifest.skipped"] == 1
    assert p.b.transfers.get(m1.model_id) is None


def manifest(version: str, created_ms: int = 0) -> ModelManifest:
    return ModelManifest("0" * 64, version, ion=ION, edge=EDGE, created_ms=created_ms)


def test_version_labels_order_by_number_then_creation_time() -> None:
    labels = [manifest("abc", 5), manifest("9", 1), manifest("10", 0), manifest("10", 3)]
    assert sorted(labels, key=version_key) == labels
    assert version_key(manifest("007")) == (7, 0)


def test_auto_activates_newer_versions_it_did_not_refuse() -> None:
    # The other policies: tests/test_model_policies.py.
    m2, m1 = manifest("2"), manifest("1")
    assert activation(None, m2, m1, rejected=False).action is Activation.ACTIVATE
    assert activation(None, m2, None, rejected=False).action is Activation.ACTIVATE
    assert activation(None, m1, m2, rejected=False).action is Activation.KEEP
    assert activation(None, m2, m1, rejected=True).action is Activation.KEEP


# -- two real agents on a real Mosquitto ------------------------------------------------------


def five_mb_directory(root: Path) -> Path:
    (root / "weights").mkdir(parents=True)
    (root / "weights" / "dense.bin").write_bytes(os.urandom(5 * 1024 * 1024))
    (root / "config.json").write_text('{"layers": 3}')
    return root


def knows(agent: Agent, ion: str) -> bool:
    return any(v.name == ion for v in agent.status().ions)


def holds(agent: Agent, ion: str, model_id: str) -> bool:
    art = agent.models.active(ion, EDGE)
    return art is not None and art.model_id == model_id


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_5mb_model_goes_from_one_agent_to_another(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    src = five_mb_directory(tmp_path / "model")
    async with (
        Agent(node_config("mx-a", url, tmp_path)) as a,
        Agent(node_config("mx-b", url, tmp_path)) as b,
    ):
        await a.link.wait_connected()
        await b.link.wait_connected()
        await apply(url, model_ion("mx1", "mx-a", "mx-b"))
        await async_wait_until(lambda: knows(a, "mx1") and knows(b, "mx1"), 20)
        # Subscribing again returns once the broker confirmed it: b is listening now.
        await b.link.subscribe(topics.model_filter("mx1", EDGE), 1)
        watch = b.models.watch("mx1", EDGE)
        m = await a.models.publish("mx1", EDGE, "training", ModelArtifact(src, "test-dir/1"))
        assert m.size_bytes > 5 * 1024 * 1024 and m.chunk_count == 21
        await async_wait_until(lambda: holds(b, "mx1", m.model_id), 30)
        # Watchers hear of it once the activation is carried out (it runs in a worker thread).
        await async_wait_until(lambda: watch.generation == 1, 5)
        art = watch.latest()
        assert art is not None and art.model_id == m.model_id
        assert (art.path / "weights" / "dense.bin").read_bytes() == (
            src / "weights" / "dense.bin"
        ).read_bytes()
        assert b.models.counters["chunk.bad_hash"] == 0
        assert b.models.counters["chunk.accepted"] == m.chunk_count


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_node_that_starts_after_the_publish_still_gets_the_model(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    model = tmp_path / "model.bin"
    model.write_bytes(os.urandom(5 * 1024 * 1024))
    async with Agent(node_config("mx-a", url, tmp_path)) as a:
        await a.link.wait_connected()
        await apply(url, model_ion("mx2", "mx-a", "mx-b"))
        await async_wait_until(lambda: knows(a, "mx2"), 20)
        await a.link.subscribe(topics.model_requests("mx2", EDGE), 1)
        m = await a.models.publish("mx2", EDGE, "training", ModelArtifact(model, "test/1"))
        await async_wait_until(lambda: a.queued() == 0, 20)  # all sent, nobody listening
        async with Agent(node_config("mx-b", url, tmp_path)) as b:
            await async_wait_until(lambda: holds(b, "mx2", m.model_id), 30)
            art = b.models.active("mx2", EDGE)
            assert art is not None and art.path.read_bytes() == model.read_bytes()
            assert b.models.counters["requests"] >= 1
        assert a.models.counters["chunks.served"] >= m.chunk_count
