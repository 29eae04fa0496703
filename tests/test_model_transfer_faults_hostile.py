"""Hostile model traffic against real agents on a real Mosquitto: a forged chunk is refused and
fetched again, a manifest over the node's size limit is refused with an event, archives that
try to write outside their directory (``..``, an absolute path, a symlink) are refused at
unpacking with an event and nothing is written outside; and nothing from the network is ever
unpickled (no code that could, and a tripwire while the hostile bytes are handled)."""

from __future__ import annotations

import ast
import io
import os
import pickle
import tarfile
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from agent_support import apply, node_config
from support import async_wait_until
from support.brokers import MqttTestClient, mqtt_client
from support.pipelines import placeholder

from ion import topics
from ion.model.definition import (
    Edge,
    EdgeKind,
    Endpoint,
    IonDefinition,
    Pipeline,
    PipelineRole,
)
from ion.model.event import Event
from ion.model.manifest import ArtifactLayout, ModelChunk, ModelManifest
from ion.model.messages import new_envelope
from ion.topics import TopicKind
from ion.wire.codec import decode_all, encode
from node.agent.service import Agent
from node.models.artifact import ModelArtifact
from node.models.pack import Packed
from node.models.transfer import build_manifest, digest_file, read_chunks

ROOT = Path(__file__).resolve().parents[1]
ION, EDGE = "plant", "model"
FAST = {"request_after_ms": 500, "request_max_interval_ms": 1000}


def pipeline(name: str, node: str, role: PipelineRole) -> Pipeline:
    return placeholder(name, node, role)


def model_ion() -> IonDefinition:
    return IonDefinition(
        name=ION,
        pipelines=(
            pipeline("training", "cloud-1", PipelineRole.TRAINING),
            pipeline("inference", "edge-1", PipelineRole.INFERENCE),
        ),
        edges=(Edge(EDGE, EdgeKind.MODEL, Endpoint("training"), (Endpoint("inference"),)),),
    )


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A tripwire: any unpickling while the test runs is recorded (and fails)."""
    tripped: list[str] = []

    def trip(*args: Any, **kwargs: Any) -> Any:
        tripped.append("unpickled")
        raise AssertionError("something was unpickled")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, trip)
    yield tripped
    assert tripped == []


class Events:
    """The events a node publishes, as a raw subscriber of its events topic sees them."""

    def __init__(self, client: MqttTestClient, node: str) -> None:
        self.client = client
        self.seen: list[Event] = []
        client.subscribe(topics.node_topic(node, TopicKind.NODE_EVENTS))

    def of(self, kind: str) -> list[Event]:
        while not self.client.messages.empty():
            inner = decode_all(self.client.messages.get().payload)
            self.seen.extend(e.body for e in inner if isinstance(e.body, Event))
        return [e for e in self.seen if e.type == kind]


class Forger:
    """Publishes model traffic as someone else would, with raw paho."""

    def __init__(self, client: MqttTestClient) -> None:
        self.client = client

    def send(self, topic: str, body: ModelManifest | ModelChunk, *, retain: bool = False) -> None:
        env = new_envelope(body, source_node="mallory", now_ms=int(time.time() * 1000), ion=ION)
        self.client.publish(topic, encode(env), retain=retain)

    def model(self, path: Path, version: int, layout: ArtifactLayout) -> ModelManifest:
        m = build_manifest(
            Packed(path, layout, "model", temporary=False),
            digest_file(path, 64 * 1024),
            version=str(version),
            ion=ION,
            edge=EDGE,
            producer_pipeline="training",
            producer_node="mallory",
            format="test/1",
            created_ms=int(time.time() * 1000),
        )
        self.send(topics.model_manifest(ION, EDGE), m, retain=True)
        for chunk in read_chunks(path, m):
            self.send(topics.model_chunks(ION, EDGE, m.model_id), chunk)
        return m


async def consumer_ready(agent: Agent) -> None:
    await async_wait_until(lambda: any(v.name == ION for v in agent.status().ions), 30)
    await agent.link.subscribe(topics.model_filter(ION, EDGE), 1)


# -- a forged chunk ------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_forged_chunk_is_refused_and_fetched_again(
    fresh_mosquitto: Any, tmp_path: Path, no_unpickling: list[str]
) -> None:
    url = fresh_mosquitto.url
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(2 * 1024 * 1024))
    producer_cfg = node_config("cloud-1", url, tmp_path)
    async with Agent(producer_cfg) as producer:
        await producer.link.wait_connected()
        await apply(url, model_ion())
        await async_wait_until(lambda: any(v.name == ION for v in producer.status().ions), 30)
        m = await producer.models.publish(ION, EDGE, "training", ModelArtifact(src, "test/1"))
    # The producer is gone: edge-1 finds the retained manifest and asks, and nobody answers.
    with mqtt_client(fresh_mosquitto.connect_host, fresh_mosquitto.port) as raw:
        async with AsyncExitStack() as stack:
            edge = await stack.enter_async_context(
                Agent(node_config("edge-1", url, tmp_path, models=FAST))
            )
            await async_wait_until(lambda: edge.models.counters["requests"] >= 1, 30)
            # Someone else answers first, with the wrong bytes for chunk 3.
            good = next(read_chunks(src, m, [3]))
            Forger(raw).send(
                topics.model_chunks(ION, EDGE, m.model_id),
                ModelChunk(m.model_id, 3, bytes(b ^ 0xFF for b in good.data)),
            )
            await async_wait_until(lambda: edge.models.counters["chunk.bad_hash"] == 1, 30)
            inc = edge.models.transfers.get(m.model_id)
            assert inc is not None and 3 in inc.assembler.missing()
            # The producer is back: the next request fetches chunk 3 again, the real one.
            await stack.enter_async_context(Agent(producer_cfg))
            await async_wait_until(lambda: edge.models.active(ION, EDGE) is not None, 30)
            art = edge.models.active(ION, EDGE)
            assert art is not None and art.path.read_bytes() == src.read_bytes()
            assert edge.models.counters["chunk.bad_hash"] == 1


# -- a manifest over the node's limit ---------------------------------------------------------


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_manifest_over_the_size_limit_is_refused_with_an_event(
    fresh_mosquitto: Any, tmp_path: Path, no_unpickling: list[str]
) -> None:
    url = fresh_mosquitto.url
    host, port = fresh_mosquitto.connect_host, fresh_mosquitto.port
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(2 * 1024 * 1024))
    cfg = node_config("edge-1", url, tmp_path, models={"max_model_bytes": 1024 * 1024})
    with mqtt_client(host, port) as raw, mqtt_client(host, port) as watcher:
        events = Events(watcher, "edge-1")
        async with Agent(cfg) as edge:
            await edge.link.wait_connected()
            await apply(url, model_ion())
            await consumer_ready(edge)
            m = Forger(raw).model(big, 1, ArtifactLayout.FILE)
            await async_wait_until(lambda: bool(events.of("model.invalid")), 30)
            assert "over this node's limit" in events.of("model.invalid")[0].message
            assert edge.models.transfers.get(m.model_id) is None
            assert not (tmp_path / "edge-1" / "models" / "incoming" / m.model_id).exists()
            assert edge.models.counters["chunk.accepted"] == 0


# -- archives that try to write outside ---------------------------------------------------------


def tar_of(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def entry(name: str, data: bytes = b"evil") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def symlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, None


@pytest.mark.integration
@pytest.mark.asyncio
async def test_archives_that_escape_their_directory_are_refused_at_unpacking(
    fresh_mosquitto: Any, tmp_path: Path, no_unpickling: list[str]
) -> None:
    url = fresh_mosquitto.url
    host, port = fresh_mosquitto.connect_host, fresh_mosquitto.port
    outside = tmp_path / "outside"
    outside.mkdir()
    archives = [
        tar_of(tmp_path / "dotdot.tar",
               [entry("ok.txt", b"fine"), entry("../../../../outside/evil-1.txt")]),
        tar_of(tmp_path / "absolute.tar", [entry(str(outside / "evil-2.txt"))]),
        tar_of(tmp_path / "symlink.tar",
               [symlink("escape", str(outside)), entry("escape/evil-3.txt")]),
    ]  # fmt: skip
    with mqtt_client(host, port) as raw, mqtt_client(host, port) as watcher:
        events = Events(watcher, "edge-1")
        async with Agent(node_config("edge-1", url, tmp_path)) as edge:
            await edge.link.wait_connected()
            await apply(url, model_ion())
            await consumer_ready(edge)
            for version, archive in enumerate(archives, start=1):
                m = Forger(raw).model(archive, version, ArtifactLayout.DIRECTORY)
                count = version  # each refusal is one model.invalid event

                def refused(n: int = count) -> bool:
                    return len(events.of("model.invalid")) >= n

                await async_wait_until(refused, 30)
                # Every chunk was good (the whole file checked): the archive is what is refused.
                assert edge.models.counters["chunk.accepted"] >= m.chunk_count
                assert edge.models.transfers.get(m.model_id) is None
            reasons = [e.message for e in events.of("model.invalid")]
            assert len(reasons) == 3, reasons
            assert "'..'" in reasons[0] and "absolute" in reasons[1] and "link" in reasons[2]
            assert edge.models.store.versions(ION, EDGE) == []
            assert edge.models.active(ION, EDGE) is None
    assert list(outside.iterdir()) == []
    assert not any(p.name.startswith("evil") for p in tmp_path.rglob("*"))
    store = tmp_path / "edge-1" / "models" / "store"
    assert not any(p.name.startswith(".tmp") for p in store.rglob("*"))


# -- nothing from the network is unpickled -------------------------------------------------------

_UNPICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}


def test_no_runtime_code_can_unpickle() -> None:
    """No module of ion, node or broker imports a pickle-like loader or lets numpy unpickle."""
    found = []
    for package in ("ion", "node", "broker"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name.split(".")[0] for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module.split(".")[0]]
                elif (
                    isinstance(node, ast.keyword)
                    and node.arg == "allow_pickle"
                    and not (isinstance(node.value, ast.Constant) and node.value.value is False)
                ):
                    found.append(f"{path.relative_to(ROOT)}:{node.value.lineno} allow_pickle")
                found.extend(
                    f"{path.relative_to(ROOT)} imports {n}" for n in names if n in _UNPICKLERS
                )
    assert found == []
