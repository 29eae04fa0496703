"""Attack and abuse tests: real Mosquitto brokers and real agents; each attack is refused
with a clear reason and changes nothing.  docs/security.md lists what was tried, what held
and which test proves it.

Covered elsewhere and only referenced there: a path-traversal model archive
(tests/test_model_transfer_faults_hostile.py), each signature refusal one by one
(tests/test_signatures_agent.py), replays one by one (tests/test_replay.py), refused
broker logins and certificates at the link level (tests/test_agent.py,
tests/test_link_aiomqtt.py).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from agent_support import apply, node_config, ticker
from security_support import (
    OPERATOR,
    PRODUCER,
    STRANGER,
    TRUSTED,
    Events,
    command,
    command_envelope,
    is_running,
    issue,
    make_ca,
    now_ms,
    publish_as_is,
    publish_raw,
    result_of,
    run_count,
    secure_config,
)
from support import async_wait_until
from support.brokers import mqtt_client

from ion import topics
from ion.client.session import connect
from ion.config.broker import BrokerConfig, TlsSettings
from ion.errors import RefusedError, UnavailableError
from ion.model.command import ModelRef, Ping, PipelineRef, RejectModel, RestartPipeline
from ion.model.definition import (
    Component,
    Edge,
    EdgeKind,
    Endpoint,
    IonDefinition,
    ModelPolicy,
    Pipeline,
    PipelineMode,
    PipelineRole,
    Placement,
)
from ion.model.event import Event, Severity
from ion.model.messages import CommandResult, NodeState, NodeStatus, new_envelope
from ion.security import sign
from ion.topics import Channel, TopicKind
from ion.wire.codec import encode
from node.agent.service import Agent
from node.models.artifact import ModelArtifact

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

ION = "plant"


def plant(producer: str, consumer: str, rate: float = 1.0) -> IonDefinition:
    """Training on ``producer`` feeds a model to inference on ``consumer``, which also runs a
    real streaming job (so a restart or a new definition would show)."""

    def placed(name: str, node: str, role: PipelineRole) -> Pipeline:
        # An engine no node has: placement counts, nothing is started.
        only = Placement(nodes=(node,))
        return Pipeline(name, "none", role, PipelineMode.BATCH, only, (Component("c", "noop"),))

    return IonDefinition(
        name=ION,
        pipelines=(
            placed("training", producer, PipelineRole.TRAINING),
            placed("inference", consumer, PipelineRole.INFERENCE),
            ticker("job", (consumer,), rate=rate),
        ),
        edges=(
            Edge("model", EdgeKind.MODEL, Endpoint("training"), (Endpoint("inference"),),
                 policy=ModelPolicy(keep_versions=3)),
            Edge("feed", EdgeKind.DATA, Endpoint("training", "api", "out"),
                 (Endpoint("job", "api", "in"),)),
        ),
    )  # fmt: skip


def active_model(agent: Agent) -> str:
    art = agent.models.active(ION, "model")
    return art.model_id if art is not None else ""


def snapshot(agent: Agent) -> tuple[object, ...]:
    """What an attack must not change on the consumer."""
    return (
        agent.status().ions,
        run_count(agent, ION, "job"),
        active_model(agent),
        agent.pipelines()[(ION, "job")][0],
    )


async def running_plant(url: str, tmp_path: Path, producer: Agent, consumer: Agent) -> Any:
    """Apply the ION (versions 1 and 2, signed) and deliver one signed model; returns
    (version 1, version 2, the model's manifest)."""
    await producer.link.wait_connected()
    await consumer.link.wait_connected()
    v1 = await apply(url, plant(producer.node_id, consumer.node_id), key=OPERATOR)
    v2 = await apply(url, plant(producer.node_id, consumer.node_id, rate=2.0), key=OPERATOR)
    await async_wait_until(lambda: is_running(consumer, ION, "job"), 30)
    await consumer.link.subscribe(topics.model_filter(ION, "model"), 1)
    model = tmp_path / "model.bin"
    model.write_bytes(os.urandom(200 * 1024))
    m = await producer.models.publish(ION, "model", "training", ModelArtifact(model, "t/1"))
    await async_wait_until(lambda: active_model(consumer) == m.model_id, 30)
    return v1, v2, m


async def test_forged_untrusted_and_replayed_messages_change_nothing_on_a_running_node(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    """A running ION with an active model; then every payload attack an outsider, a
    compromised producer node or a recorder of old traffic can mount."""
    url = fresh_mosquitto.url
    producer_key = tmp_path / "producer.key"
    producer_key.write_bytes(PRODUCER.to_pem())
    producer_key.chmod(0o600)
    p_cfg = secure_config("at-p", url, tmp_path, signing_key=str(producer_key))
    c_cfg = secure_config("at-c", url, tmp_path)
    with mqtt_client(fresh_mosquitto.host, fresh_mosquitto.port) as client:
        events = Events(client, "at-c")
        async with Agent(p_cfg) as p, Agent(c_cfg) as c:
            v1, v2, m = await running_plant(url, tmp_path, p, c)
            await async_wait_until(lambda: is_running(c, ION, "job"), 30)
            before = snapshot(c)
            def_topic = topics.definition(ION)
            manifest_topic = topics.model_manifest(ION, "model")
            faster = ticker("job", ("at-c",), rate=50.0)
            v3 = replace(v2, version=3, pipelines=(*v2.pipelines[:2], faster))
            attacks: list[tuple[str, str]] = []  # (event kind, text it must name)

            publish_as_is(url, replace(sign(v3, OPERATOR, now_ms=now_ms()), content_sha256=""),
                          def_topic)  # fmt: skip
            attacks.append(("ion.refused", "bad signature"))
            publish_as_is(url, sign(v3, STRANGER, now_ms=now_ms()), def_topic)
            attacks.append(("ion.refused", "untrusted key"))
            publish_as_is(url, sign(v3, PRODUCER, now_ms=now_ms()), def_topic)  # a stolen
            attacks.append(("ion.refused", "not trusted as operator"))  # producer key
            publish_as_is(url, v1, def_topic)  # recorded genuine traffic, replayed
            attacks.append(("ion.refused", "stale: version 1 < held 2"))

            newer = replace(m, version=str(int(m.version) + 1), model_id="ee" * 32)
            publish_as_is(url, newer, manifest_topic)  # tampered: signature of another
            attacks.append(("model.rejected", "bad signature"))
            publish_as_is(url, replace(newer, signature=None), manifest_topic)
            attacks.append(("model.rejected", "unsigned"))
            publish_as_is(url, sign(newer, OPERATOR, now_ms=now_ms()), manifest_topic)
            attacks.append(("model.rejected", "not trusted as producer"))

            reject = command(RejectModel(ModelRef(ION, "model", m.version)), STRANGER)
            publish_raw(url, topics.model_decision(ION, "model", m.version),
                        command_envelope(reject), retain=True)  # fmt: skip
            attacks.append(("model.decision_refused", "untrusted key"))

            restart = RestartPipeline(PipelineRef(ION, "job"))
            for key, text in ((PRODUCER, "not trusted as operator"), (None, "unsigned")):
                result = await result_of(url, command(restart, key), "at-c")
                assert not result.ok and text in result.message
                attacks.append(("command.refused", text))
            ping = command(Ping())
            assert (await result_of(url, ping, "at-c")).ok  # genuine, harmless
            replayed = await result_of(url, ping, "at-c")
            assert not replayed.ok and "replay" in replayed.message
            attacks.append(("command.refused", "replay"))
            old = await result_of(url, command(restart, issued_ms=now_ms() - 3_600_000), "at-c")
            assert not old.ok and "stale" in old.message
            attacks.append(("command.refused", "stale"))

            def all_refused() -> bool:
                seen = events.drain()
                return all(any(e.type == k and t in e.message for e in seen) for k, t in attacks)

            await async_wait_until(all_refused, 20, message=lambda: str(
                [(e.type, e.message) for e in events.seen]))  # fmt: skip
            assert snapshot(c) == before
            assert is_running(c, ION, "job")
            assert c.models.counters["manifest.refused"] == 3
            refusals = [e for e in events.seen if e.type.endswith(("refused", "rejected"))]
            assert len(refusals) == len(attacks) == 12


# -- the broker generated by ion deploy (TLS client certificates, ACLs from the ION) ---------


def one_broker_inventory(port: int) -> str:
    return (
        f"brokers: [{{id: cloud, host: 127.0.0.1, port: {port}}}]\n"
        "nodes: [{id: cloud-1, layer: cloud}, {id: cloud-2, layer: cloud}]\n"
        "operators: [{id: alice}]\n"
        "monitors: [{id: mon-1}]\n"
    )


def operator_broker(out: Path) -> BrokerConfig:
    """What ``operators/alice/config.yaml`` of the bundle says."""
    from ion.config.broker import broker_from_mapping

    config = yaml.safe_load((out / "operators" / "alice" / "config.yaml").read_text())
    return broker_from_mapping(config["broker"], where="alice")


def apply_with(broker: BrokerConfig, definition: IonDefinition) -> IonDefinition:
    from ion.client import definitions

    with connect(broker) as session:
        plan = definitions.plan_apply(definition, definitions.fetch(session, definition.name),
                                      now_ms=now_ms(), operator="alice")  # fmt: skip
        assert plan.definition is not None
        published = definitions.publish(session, plan.definition, now_ms=now_ms(), key=OPERATOR)
        assert isinstance(published, IonDefinition)
        return published


def ping_with(broker: BrokerConfig, node: str) -> bool:
    from ion.client import commands

    with connect(broker) as session:
        return commands.send(session, command(Ping()), nodes=[node], wait_s=15).ok


async def test_a_node_cannot_write_another_nodes_topics_or_definitions(tmp_path: Path) -> None:
    """Brokers, agents and operator exactly as ``ion deploy`` generates them (certificates,
    the ACL from the ION); node cloud-2 turns hostile against cloud-1."""
    from test_deploy_support import Client, brokers, deploy_local, free_ports

    from ion.validate.inventory import load_inventory
    from node.config import load_config

    (port,) = free_ports(1)
    inv = load_inventory(one_broker_inventory(port))
    definition = IonDefinition(
        name="acl", pipelines=(ticker("job", ("cloud-1",)), ticker("other", ("cloud-2",)))
    )
    out = tmp_path / "out"
    deploy_local(out, [definition], inv, trust_keys=(TRUSTED[0],))
    operator = operator_broker(out)
    with brokers(out, inv):
        observer = Client(out, "monitors/mon-1", port, client_id="mon-1")  # reads everything
        attacker = Client(out, "nodes/cloud-2", port, client_id="cloud-2")
        try:
            observer.subscribe(topics.EVERYTHING)
            async with Agent(load_config(out / "nodes" / "cloud-1" / "node.yaml")) as agent:
                await agent.link.wait_connected()
                await asyncio.to_thread(apply_with, operator, definition)
                await async_wait_until(lambda: is_running(agent, "acl", "job"), 30)
                before = snapshot_of(agent)
                received = agent.receiver.counters["received"]
                forged_status = NodeStatus("cloud-1", NodeState.OFFLINE, error="forged")
                signed_def = sign(replace(definition, version=9), OPERATOR, now_ms=now_ms())
                writes: dict[str, Any] = {
                    topics.node_status("cloud-1"): forged_status,
                    topics.node_topic("cloud-1", TopicKind.NODE_EVENTS): forged_status,
                    topics.node_topic("cloud-1", TopicKind.NODE_RESULTS): forged_status,
                    topics.node_command("cloud-1"): command(Ping()),  # even genuinely signed
                    topics.ion_command("acl"): command(Ping()),
                    topics.definition("acl"): signed_def,  # a captured operator definition
                    topics.pipeline("acl", "job", Channel.STATS, "cloud-1"): forged_status,
                }
                sent = set()
                for topic, body in writes.items():
                    payload = encode(new_envelope(body, source_node="cloud-2", now_ms=now_ms()))
                    attacker.publish(topic, payload)  # Mosquitto acknowledges, then drops
                    sent.add(payload)
                # Control, published after the forged ones by the same client (in order):
                # once it has arrived, anything forwarded before it would have too.
                own = topics.node_status("cloud-2")
                attacker.publish(own, b"marker")
                await async_wait_until(lambda: own in observer.topics(), 10)
                assert not sent & {bytes(m.payload) for m in observer.messages}
                assert agent.receiver.counters["received"] == received
                assert snapshot_of(agent) == before
                # Nor may it read another node's commands.
                attacker.subscribe(topics.node_command("cloud-1"))
                assert await asyncio.to_thread(ping_with, operator, "cloud-1")
                assert topics.node_command("cloud-1") not in attacker.topics()
        finally:
            attacker.close()
            observer.close()


def snapshot_of(agent: Agent) -> tuple[object, ...]:
    return (agent.status().ions, {k: r[1].run for k, r in agent.pipelines().items()})


# -- TLS ------------------------------------------------------------------------------------


def publish_with(broker: BrokerConfig, topic: str, payload: bytes) -> None:
    with connect(broker) as session:
        session.publish(topic, payload)


async def test_clients_without_tls_or_with_a_foreign_certificate_are_refused(
    broker_factory: Any, tmp_path: Path
) -> None:
    from broker.settings import BrokerSettings
    from broker.settings import TlsSettings as BrokerTls

    ca = make_ca(tmp_path, "fleet-ca")
    stranger_ca = make_ca(tmp_path, "stranger-ca")
    server = issue(tmp_path, "broker", ca, server=True)
    good = issue(tmp_path, "edge-1", ca)
    foreign = issue(tmp_path, "edge-9", stranger_ca)
    tls = BrokerTls(certfile=server[0], keyfile=server[1], cafile=ca[0], require_certificate=True)
    broker = broker_factory(settings=BrokerSettings(tls=tls))
    port = broker.tls_port
    assert port is not None

    def cfg(client: tuple[Path, Path] | None, *, secure: bool = True) -> BrokerConfig:
        t = TlsSettings(ca_file=ca[0], cert_file=client[0], key_file=client[1]) if client else \
            TlsSettings(ca_file=ca[0])  # fmt: skip
        return BrokerConfig(port=port, tls=t if secure else None, connect_timeout_s=5)

    with mqtt_client(broker.host, broker.port) as observer:  # the loopback admin listener
        observer.subscribe("ion/v1/#")
        refused: dict[str, str] = {}
        for name, broker_cfg in (
            ("plain MQTT on the TLS port", cfg(None, secure=False)),
            ("TLS without a client certificate", cfg(None)),
            ("a certificate from another CA", cfg(foreign)),
        ):
            with pytest.raises((RefusedError, UnavailableError)) as info:
                publish_with(broker_cfg, topics.definition("tls"), b"attack")
            refused[name] = str(info.value)
        assert len(refused) == 3
        # An agent with the foreign certificate fails at once, says so, and never retries.
        agent_cfg = node_config(
            "edge-9", f"mqtts://127.0.0.1:{port}", tmp_path,
            broker={"url": f"mqtts://127.0.0.1:{port}", "ca_file": str(ca[0]),
                    "cert_file": str(foreign[0]), "key_file": str(foreign[1])},
        )  # fmt: skip
        async with Agent(agent_cfg) as agent:
            await asyncio.wait_for(agent.failed.wait(), 20)
            assert agent.status().state is NodeState.FAILED
        # Control: the fleet's own certificate gets through.
        with connect(cfg(good)) as session:
            session.publish(topics.node_topic("edge-1", TopicKind.NODE_EVENTS), b"hello")
        msg = observer.expect(timeout=10)
        assert msg.payload == b"hello", "an attacker's message reached the broker"


# -- oversized and random messages ---------------------------------------------------------


async def test_oversized_messages_are_dropped_by_the_broker_and_the_agent_lives(
    broker_factory: Any, tmp_path: Path
) -> None:
    from broker.settings import BrokerSettings

    limit = 64 * 1024
    broker = broker_factory(settings=BrokerSettings(message_size_limit=limit))
    url = broker.url
    async with Agent(secure_config("big-1", url, tmp_path)) as agent:
        await agent.link.wait_connected()
        await apply(url, IonDefinition(name="big", pipelines=(ticker("job", ("big-1",)),)),
                    key=OPERATOR)  # fmt: skip
        await async_wait_until(lambda: is_running(agent, "big", "job"), 30)
        received = agent.receiver.counters["received"]
        targets = (topics.node_command("big-1"), topics.definition("big"),
                   topics.ion_command("big"))  # fmt: skip
        huge = command_envelope(command(Ping())) + os.urandom(4 * 1024 * 1024)
        dropped = 0
        for topic in targets:
            with mqtt_client(broker.host, broker.port) as attacker:
                info = attacker.paho.publish(topic, huge, qos=1)
                attacker.wait_disconnected()  # max_packet_size: the sender is cut off
                assert not info.is_published()
                dropped += 1
        assert (await result_of(url, command(Ping()), "big-1")).ok  # alive and obeying
        assert agent.receiver.counters["received"] == received + 1  # only the ping arrived
        assert agent.status().state is NodeState.ONLINE and dropped == 3


ROUNDS = 150  # x 12 topics


def topics_a_consumer_reads(model_id: str) -> list[str]:
    return [
        topics.definition(ION),
        topics.definition("other"),
        topics.node_command("at-c"),
        topics.ion_command(ION),
        topics.node_topic("at-c", TopicKind.NODE_RETRANSMIT),
        topics.node_topic("at-c", TopicKind.NODE_ACKS),
        topics.edge(ION, "feed", Channel.DATA, "at-p"),
        topics.model_manifest(ION, "model"),
        topics.model_chunks(ION, "model", model_id),
        topics.model_requests(ION, "model"),
        topics.model_decision(ION, "model", "1"),
        topics.model_canary(ION, "model", "at-p"),
    ]


async def test_random_bytes_on_every_topic_a_secure_node_reads(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    """For a few seconds: random bytes, truncated and bit-flipped real messages, and valid
    envelopes with random bodies on every topic the consumer reads, retained ones included."""
    url = fresh_mosquitto.url
    producer_key = tmp_path / "producer.key"
    producer_key.write_bytes(PRODUCER.to_pem())
    producer_key.chmod(0o600)
    p_cfg = secure_config("at-p", url, tmp_path, signing_key=str(producer_key))
    async with Agent(p_cfg) as p, Agent(secure_config("at-c", url, tmp_path)) as c:
        _, v2, m = await running_plant(url, tmp_path, p, c)
        v_unsigned = replace(v2, signature=None)
        before = snapshot(c)
        rng = random.Random(11)
        manifest = encode(new_envelope(m, source_node="at-p", now_ms=now_ms()))
        real = [command_envelope(command(Ping())), manifest]
        # Well-formed envelopes with the wrong body for every topic they are sent to.
        junk_envelopes = [
            encode(new_envelope(body, source_node="at-x", now_ms=now_ms()))
            for body in (
                NodeStatus("at-c", NodeState.OFFLINE, error="forged"),
                Event("ion.refused", Severity.WARNING, subject="at-c", message="forged"),
                CommandResult("x", "at-c", ok=True),
                replace(v_unsigned, version=99),
            )
        ]
        targets = topics_a_consumer_reads(m.model_id)
        sent = 0
        started = time.monotonic()
        with mqtt_client(fresh_mosquitto.host, fresh_mosquitto.port) as attacker:
            for _ in range(ROUNDS):
                for t in targets:
                    kind = rng.randrange(4)
                    if kind == 0:
                        payload = rng.randbytes(rng.randrange(1, 2000))
                    elif kind == 1:
                        r = rng.choice(real)
                        payload = r[: rng.randrange(1, len(r))]
                    elif kind == 2:
                        b = bytearray(rng.choice(real))
                        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
                        payload = bytes(b)
                    else:
                        payload = rng.choice(junk_envelopes)
                    attacker.paho.publish(t, payload, qos=1, retain=rng.random() < 0.05)
                    sent += 1
                await asyncio.sleep(0)
            # In order after everything above: acknowledged means all were taken.
            attacker.publish(topics.node_topic("nobody", TopicKind.NODE_EVENTS), b"end",
                             timeout=60)  # fmt: skip
        counters = c.receiver.counters
        await async_wait_until(lambda: counters["malformed.payload"] > sent // 4, 30,
                               message=lambda: f"{sent} sent: {dict(counters)}")  # fmt: skip
        # Alive, obeying, and nothing changed.
        assert (await result_of(url, command(Ping()), "at-c")).ok
        assert snapshot(c) == before and c.status().state is NodeState.ONLINE
        took = time.monotonic() - started
        print(f"{sent} hostile messages in {took:.1f}s; receiver: {dict(counters)}")
