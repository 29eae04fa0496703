"""Signatures end to end: real agents on a real Mosquitto act only on ION definitions,
tombstones and model manifests signed by a key they trust (development mode relaxes only
"unsigned"), and say why they refused anything else with an event."""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from agent_support import apply, node_config, ticker
from support import async_wait_until
from support.brokers import MqttTestClient, mqtt_client

from ion import topics
from ion.client.session import connect
from ion.config.broker import parse_broker_url
from ion.model.definition import (
    Component,
    Edge,
    EdgeKind,
    Endpoint,
    IonDefinition,
    IonDeleted,
    ModelPolicy,
    Pipeline,
    PipelineMode,
    PipelineRole,
    Placement,
)
from ion.model.event import Event
from ion.model.manifest import ModelManifest
from ion.model.messages import new_envelope
from ion.security import Role, SigningKey, TrustedKey, sign
from ion.topics import TopicKind
from ion.wire.codec import decode_all, encode
from node.agent.service import Agent
from node.models.artifact import ModelArtifact
from node.pipelines.lifecycle import State

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

OPERATOR = SigningKey.generate()
PRODUCER = SigningKey.generate()
STRANGER = SigningKey.generate()


def line(key: SigningKey, *roles: Role, name: str = "") -> str:
    return TrustedKey(key.public, frozenset(roles), name).line()


TRUSTED = [line(OPERATOR, Role.OPERATOR, name="alice"), line(PRODUCER, Role.PRODUCER)]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Events:
    """The events a node publishes, collected by a plain MQTT client."""

    def __init__(self, client: MqttTestClient, node: str) -> None:
        self._client = client
        client.subscribe(topics.node_topic(node, TopicKind.NODE_EVENTS))
        self.seen: list[Event] = []

    def drain(self) -> list[Event]:
        while True:
            try:
                msg = self._client.messages.get_nowait()
            except queue.Empty:
                return self.seen
            # Events stored in one commit travel as one batch (an outbox run).
            self.seen += [e.body for e in decode_all(msg.payload) if isinstance(e.body, Event)]

    def has(self, kind: str, text: str) -> bool:
        return any(e.type == kind and text in e.message for e in self.drain())


@pytest.fixture
def events_of(fresh_mosquitto: Any) -> Iterator[Any]:
    with mqtt_client(fresh_mosquitto.host, fresh_mosquitto.port) as client:
        yield lambda node: Events(client, node)


def publish_as_is(url: str, body: IonDefinition | IonDeleted | ModelManifest, topic: str) -> None:
    """Put ``body`` on ``topic`` exactly as given (an attacker's or a broken publisher's)."""
    with connect(parse_broker_url(url)) as session:
        env = new_envelope(body, source_node=session.client_id, now_ms=now_ms())
        session.publish(topic, encode(env), retain=True)


def job_ion(name: str, node: str, version: int) -> IonDefinition:
    """What ``ion apply`` would publish, stamped but not signed."""
    with_version = IonDefinition(name=name, pipelines=(ticker("job", (node,)),), version=version)
    return replace(with_version, applied_ms=now_ms(), applied_by="test")


def runs(agent: Agent, ion: str) -> bool:
    report = agent.pipelines().get((ion, "job"))
    return report is not None and report[1].state is State.RUNNING


def knows(agent: Agent, ion: str) -> bool:
    return any(v.name == ion for v in agent.status().ions)


async def test_a_node_acts_only_on_definitions_signed_by_a_trusted_operator(
    fresh_mosquitto: Any, tmp_path: Path, events_of: Any
) -> None:
    url = fresh_mosquitto.url
    events = events_of("edge-1")
    cfg = node_config("edge-1", url, tmp_path, trust={"keys": TRUSTED})
    assert not cfg.trust.development_mode
    async with Agent(cfg) as agent:
        await agent.link.wait_connected()
        def_topic = topics.definition("signed")

        # Unsigned, signed by a key it does not know, signed by a producer key, tampered
        # after signing: each refused with its reason, nothing known, nothing run.
        publish_as_is(url, job_ion("signed", "edge-1", 1), def_topic)
        await async_wait_until(lambda: events.has("ion.refused", "unsigned"), 20)
        publish_as_is(url, sign(job_ion("signed", "edge-1", 2), STRANGER, now_ms=1), def_topic)
        await async_wait_until(lambda: events.has("ion.refused", "untrusted key"), 20)
        publish_as_is(url, sign(job_ion("signed", "edge-1", 3), PRODUCER, now_ms=1), def_topic)
        await async_wait_until(lambda: events.has("ion.refused", "not trusted as operator"), 20)
        genuine = sign(job_ion("signed", "edge-1", 4), OPERATOR, now_ms=now_ms())
        tampered = replace(genuine, pipelines=(ticker("job", ("edge-1",), rate=50.0),))
        publish_as_is(url, tampered, def_topic)
        await async_wait_until(lambda: events.has("ion.refused", "bad signature"), 20)
        assert not knows(agent, "signed") and agent.pipelines() == {}

        # Signed by the operator: it runs.  A version forged above it changes nothing.
        await apply(url, job_ion("signed", "edge-1", 0), key=OPERATOR)
        await async_wait_until(lambda: runs(agent, "signed"), 30)
        held = agent.status().ions
        publish_as_is(url, replace(genuine, version=99), def_topic)
        await async_wait_until(lambda: events.has("ion.refused", "version 99"), 20)
        assert agent.status().ions == held and runs(agent, "signed")

        # Deleting needs a signed tombstone too.
        publish_as_is(url, IonDeleted(name="signed", version=50), def_topic)
        await async_wait_until(
            lambda: sum(e.type == "ion.refused" for e in events.drain()) >= 6, 20
        )
        assert runs(agent, "signed")
        tomb = sign(IonDeleted(name="signed", version=51, deleted_by="alice"), OPERATOR, now_ms=2)
        publish_as_is(url, tomb, def_topic)
        await async_wait_until(lambda: agent.pipelines() == {}, 30)


async def test_development_mode_runs_unsigned_definitions_but_refuses_bad_signatures(
    fresh_mosquitto: Any, tmp_path: Path, events_of: Any
) -> None:
    url = fresh_mosquitto.url
    events = events_of("dev-1")
    cfg = node_config("dev-1", url, tmp_path, trust={"keys": TRUSTED, "development_mode": True})
    async with Agent(cfg) as agent:
        await agent.link.wait_connected()
        await apply(url, job_ion("devmode", "dev-1", 0))  # unsigned
        await async_wait_until(lambda: runs(agent, "devmode"), 30)
        signed = sign(job_ion("devmode", "dev-1", 5), OPERATOR, now_ms=now_ms())
        forged = replace(signed, pipelines=(ticker("job", ("dev-1",), rate=9.0),))
        publish_as_is(url, forged, topics.definition("devmode"))
        await async_wait_until(lambda: events.has("ion.refused", "bad signature"), 20)
        publish_as_is(url, sign(signed, STRANGER, now_ms=1), topics.definition("devmode"))
        await async_wait_until(lambda: events.has("ion.refused", "untrusted key"), 20)
        versions = {v.name: v.version for v in agent.status().ions}
        assert versions["devmode"] == 1  # still the unsigned version it accepted


# -- model manifests ---------------------------------------------------------------------------


def model_ion(producer: str, consumer: str) -> IonDefinition:
    def placed(name: str, node: str, role: PipelineRole) -> Pipeline:
        # An engine no node has: placement counts, nothing is started.
        only = Placement(nodes=(node,))
        return Pipeline(name, "none", role, PipelineMode.BATCH, only, (Component("c", "noop"),))

    return IonDefinition(
        name="sigmodels",
        pipelines=(
            placed("training", producer, PipelineRole.TRAINING),
            placed("inference", consumer, PipelineRole.INFERENCE),
        ),
        edges=(
            Edge(
                "model",
                EdgeKind.MODEL,
                Endpoint("training"),
                (Endpoint("inference"),),
                policy=ModelPolicy(keep_versions=3),
            ),
        ),
    )


def holds(agent: Agent, model_id: str) -> bool:
    art = agent.models.active("sigmodels", "model")
    return art is not None and art.model_id == model_id


async def test_model_manifests_must_be_signed_by_a_trusted_producer(
    fresh_mosquitto: Any, tmp_path: Path, events_of: Any
) -> None:
    url = fresh_mosquitto.url
    events = events_of("mc-b")
    producer_key = tmp_path / "producer.key"
    producer_key.write_bytes(PRODUCER.to_pem())
    producer_key.chmod(0o600)
    model = tmp_path / "model.bin"
    model.write_bytes(os.urandom(600 * 1024))
    a_trust = {"keys": TRUSTED, "signing_key": str(producer_key)}
    a_cfg = node_config("mc-a", url, tmp_path, trust=a_trust)
    b_cfg = node_config("mc-b", url, tmp_path, trust={"keys": TRUSTED})
    async with Agent(a_cfg) as a, Agent(b_cfg) as b:
        await a.link.wait_connected()
        await b.link.wait_connected()
        await apply(url, model_ion("mc-a", "mc-b"), key=OPERATOR)
        await async_wait_until(lambda: knows(a, "sigmodels") and knows(b, "sigmodels"), 20)
        await b.link.subscribe(topics.model_filter("sigmodels", "model"), 1)
        m = await a.models.publish("sigmodels", "model", "training", ModelArtifact(model, "t/1"))
        assert m.signature is not None and m.signature.key_id == PRODUCER.key_id
        await async_wait_until(lambda: holds(b, m.model_id), 30)

        # Someone else's model: unsigned, with the real manifest's signature, or signed by
        # an operator key (trusted, but not for models).  None is fetched.
        other = replace(m, model_id="cd" * 32, version=str(int(m.version) + 1))
        manifest_topic = topics.model_manifest("sigmodels", "model")
        publish_as_is(url, replace(other, signature=None), manifest_topic)
        await async_wait_until(lambda: events.has("model.rejected", "unsigned"), 20)
        publish_as_is(url, other, manifest_topic)
        await async_wait_until(lambda: events.has("model.rejected", "bad signature"), 20)
        publish_as_is(url, sign(other, OPERATOR, now_ms=1), manifest_topic)
        await async_wait_until(lambda: events.has("model.rejected", "not trusted as producer"), 20)
        rejected = [e for e in events.drain() if e.type == "model.rejected"]
        assert {e.attributes["model_id"] for e in rejected} == {other.model_id}
        assert b.models.counters["manifest.refused"] == 3
        assert b.models.transfers.get(other.model_id) is None
        assert holds(b, m.model_id)
