"""Update policies with real agents on a real Mosquitto, decisions made with the real CLI.

A producer agent (``cloud``) publishes model versions along a model edge; consumer agents
(``edge-N``) decide by the edge's policy.  The pipelines name an engine no node has, so
nothing runs: placement alone makes a node a consumer (the exchange, not a component, is
under test; tests/test_model_edges.py covers the hot swap into a running pipeline).  A tap
on the nodes' events topics checks the audit trail.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from agent_support import apply, node_config
from click.testing import CliRunner, Result
from paho.mqtt.enums import CallbackAPIVersion
from support import async_wait_until
from support.pipelines import placeholder

from ion import topics
from ion.cli.main import cli
from ion.client.session import connect
from ion.config.broker import parse_broker_url
from ion.model.command import Command, ModelRef, RollbackModel
from ion.model.definition import (
    CanaryPolicy,
    Edge,
    EdgeKind,
    Endpoint,
    IonDefinition,
    MetricGate,
    ModelPolicy,
    Pipeline,
    PipelineMode,
    PipelineRole,
    PolicyKind,
)
from ion.model.event import Event
from ion.model.health import DriftScore, HealthReport
from ion.model.manifest import ModelManifest
from ion.model.messages import new_envelope
from ion.topics import Channel
from ion.wire.codec import decode_all, encode
from node.agent.service import Agent
from node.models.artifact import ModelArtifact

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

ION, EDGE = "rollouts", "weights"


def pipeline(name: str, nodes: tuple[str, ...], role: PipelineRole) -> Pipeline:
    return placeholder(name, nodes, role, PipelineMode.STREAMING)


def policy_ion(policy: ModelPolicy, consumers: tuple[str, ...]) -> IonDefinition:
    return IonDefinition(
        name=ION,
        pipelines=(
            pipeline("training", ("cloud",), PipelineRole.TRAINING),
            pipeline("inference", consumers, PipelineRole.INFERENCE),
        ),
        edges=(
            Edge(EDGE, EdgeKind.MODEL, Endpoint("training"), (Endpoint("inference"),),
                 policy=policy),
        ),
    )  # fmt: skip


class EventTap:
    """Every event the nodes publish on their events topics, as (node, type, version)."""

    def __init__(self, url: str) -> None:
        broker = parse_broker_url(url)
        self.seen: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        ready = threading.Event()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, f"tap-{secrets.token_hex(4)}")
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_: ready.set()
        self._client.on_connect = lambda c, *_: c.subscribe("ion/v1/nodes/+/events", qos=1)
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        assert ready.wait(10), "the event tap could not subscribe"

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        items = decode_all(bytes(msg.payload))
        node = topics.parse(msg.topic).node
        with self._lock:
            for e in items:
                if isinstance(e.body, Event):
                    self.seen.append((node, e.body.type, e.body.attributes.get("version", "")))

    def kinds(self, node: str, version: str | None = None) -> list[str]:
        with self._lock:
            return [k for n, k, v in self.seen if n == node and version in (None, v)]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@contextmanager
def event_tap(url: str) -> Iterator[EventTap]:
    tap = EventTap(url)
    try:
        yield tap
    finally:
        tap.close()


async def ion_cli(url: str, *args: str) -> Result:
    """The operator's `ion ...`, in-process (the real click command and paho session)."""
    argv = [*args, "--broker", url, "--operator", "tester"]
    return await asyncio.to_thread(CliRunner().invoke, cli, argv, catch_exceptions=False)


class Fleet:
    def __init__(self, url: str, tmp_path: Path) -> None:
        self.url, self.tmp = url, tmp_path
        self.agents: dict[str, Agent] = {}
        self._n = 0

    async def start(self, *nodes: str) -> None:
        for node in nodes:
            agent = Agent(node_config(node, self.url, self.tmp))
            await agent.__aenter__()
            self.agents[node] = agent
            await agent.link.wait_connected()

    async def stop(self, node: str) -> None:
        """Shut the agent down (a node going offline); its data stays."""
        await self.agents.pop(node).__aexit__(None, None, None)

    async def ready(self, *nodes: str) -> None:
        """Wait until ``nodes`` hold the ION and are subscribed to the model edge."""
        for node in nodes:
            agent = self.agents[node]
            await async_wait_until(lambda: knows(agent), 20)  # noqa: B023 - awaited here
            sub = topics.model_requests if node == "cloud" else topics.model_filter
            await agent.link.subscribe(sub(ION, EDGE), 1)  # returns once the broker confirms

    async def publish(self, quality: float = 0.5) -> ModelManifest:
        self._n += 1
        path = self.tmp / f"model-{self._n}.bin"
        path.write_bytes(secrets.token_bytes(100_000))
        art = ModelArtifact(path, "test/1", metrics={"quality": quality})
        return await self.agents["cloud"].models.publish(ION, EDGE, "training", art)

    def active(self, node: str) -> str | None:
        art = self.agents[node].models.active(ION, EDGE)
        return art.version if art else None

    def pending(self, node: str) -> tuple[str, ...]:
        [status] = [s for s in self.agents[node].models.statuses() if s.edge == EDGE]
        return status.pending

    async def all_active(self, version: str, *nodes: str) -> None:
        await async_wait_until(
            lambda: all(self.active(n) == version for n in nodes),
            30,
            message=lambda: f"want {version}: { ({n: self.active(n) for n in nodes}) }",
        )

    async def health(self, node: str, m: ModelManifest, drift: float) -> None:
        """A health report of the node's inference pipeline, as its component would send it
        through the local socket (scored drift included)."""
        report = HealthReport(
            pipeline="inference",
            model_id=m.model_id,
            model_version=m.version,
            sample_count=500,
            drift=(DriftScore("", "psi", drift),),
        )
        topic = topics.pipeline(ION, "inference", Channel.HEALTH, node)
        await self.agents[node]._publish_from_pipeline(topic, report, ion=ION)


def knows(agent: Agent) -> bool:
    return any(v.name == ION for v in agent.status().ions)


@asynccontextmanager
async def fleet(url: str, tmp_path: Path) -> AsyncIterator[Fleet]:
    f = Fleet(url, tmp_path)
    try:
        yield f
    finally:
        for node in reversed(list(f.agents)):
            await f.stop(node)


async def test_manual_holds_until_approved_and_reject_drops(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    with event_tap(url) as tap:
        async with fleet(url, tmp_path) as f:
            await f.start("cloud", "edge-1", "edge-2")
            await apply(url, policy_ion(ModelPolicy(kind=PolicyKind.MANUAL), ("edge-1", "edge-2")))
            await f.ready("cloud", "edge-1", "edge-2")
            m1 = await f.publish()
            await async_wait_until(
                lambda: f.pending("edge-1") == f.pending("edge-2") == (m1.version,), 30
            )
            assert f.active("edge-1") is None and f.active("edge-2") is None
            await async_wait_until(
                lambda: (
                    [n["pending"] for n in _nodes(url) if n["node_id"] != "cloud"]
                    == [[m1.version]] * 2
                ),
                20,
            )

            r = await ion_cli(url, "approve", ION, EDGE, m1.version, "--reason", "looks fine")
            assert r.exit_code == 0, r.output
            assert "approve published" in r.output
            await f.all_active(m1.version, "edge-1", "edge-2")

            m2 = await f.publish()
            await async_wait_until(lambda: f.pending("edge-1") == (m2.version,), 30)
            r = await ion_cli(url, "reject", ION, EDGE, m2.version)
            assert r.exit_code == 0, r.output
            await async_wait_until(lambda: f.pending("edge-1") == f.pending("edge-2") == (), 20)
            assert f.active("edge-1") == f.active("edge-2") == m1.version
            await async_wait_until(lambda: "model.rejected" in tap.kinds("edge-2", m2.version), 10)
        assert tap.kinds("edge-1", m1.version)[:3] == ["model.pending", "model.approved",
                                                        "model.activated"]  # fmt: skip
        assert "model.activated" not in tap.kinds("edge-1", m2.version)


def _nodes(url: str) -> list[dict[str, Any]]:
    """What `ion models ION --json` says about each node (from their retained statuses)."""
    r = CliRunner().invoke(cli, ["models", ION, "--json", "--broker", url])
    assert r.exit_code == 0, r.output
    [view] = json.loads(r.stdout)
    nodes: list[dict[str, Any]] = view["nodes"]
    return nodes


def _held(url: str) -> list[list[str]]:
    return [n["held"] for n in _nodes(url)] or [[]]


async def test_gated_refuses_a_worse_model_and_takes_a_better_one(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    gated = ModelPolicy(
        kind=PolicyKind.GATED, gates=(MetricGate("quality", min=0.5, margin_over_active=0.05),)
    )
    with event_tap(url) as tap:
        async with fleet(url, tmp_path) as f:
            await f.start("cloud", "edge-1")
            await apply(url, policy_ion(gated, ("edge-1",)))
            await f.ready("cloud", "edge-1")
            m1 = await f.publish(quality=0.6)
            await f.all_active(m1.version, "edge-1")
            worse = await f.publish(quality=0.62)  # not better by the margin
            await async_wait_until(
                lambda: "model.refused_by_gate" in tap.kinds("edge-1", worse.version), 30
            )
            assert f.active("edge-1") == m1.version
            better = await f.publish(quality=0.7)
            await f.all_active(better.version, "edge-1")


async def test_canary_goes_first_promotes_on_good_health_and_rolls_back_on_drift(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    canary = ModelPolicy(
        kind=PolicyKind.CANARY,
        canary=CanaryPolicy(nodes=("edge-1",), hold_ms=2_000, max_drift=0.3),
    )
    edges = ("edge-1", "edge-2", "edge-3")
    with event_tap(url) as tap:
        async with fleet(url, tmp_path) as f:
            await f.start("cloud", *edges)
            await apply(url, policy_ion(canary, edges))
            await f.ready("cloud", *edges)

            m1 = await f.publish()
            await f.all_active(m1.version, "edge-1")  # the canary goes first
            await async_wait_until(
                lambda: f.pending("edge-2") == f.pending("edge-3") == (m1.version,), 30
            )
            assert f.active("edge-2") is None and f.active("edge-3") is None
            await f.health("edge-1", m1, drift=0.05)
            await f.all_active(m1.version, *edges)  # promoted after the hold
            assert tap.kinds("edge-1", m1.version)[:2] == [
                "model.activated",
                "model.canary_started",
            ]

            m2 = await f.publish()
            await f.all_active(m2.version, "edge-1")
            await async_wait_until(lambda: f.pending("edge-2") == (m2.version,), 30)
            await f.health("edge-1", m2, drift=0.9)  # injected drift on the canary
            await f.all_active(m1.version, "edge-1")  # rolled back at once
            await async_wait_until(lambda: f.pending("edge-2") == f.pending("edge-3") == (), 20)
            await asyncio.sleep(2.5)  # longer than the hold: still nobody takes m2
            assert [f.active(n) for n in edges] == [m1.version] * 3
            r = await ion_cli(url, "models", ION, "--json")
            assert r.exit_code == 0 and '"passed": false' in r.output

        for node in ("edge-2", "edge-3"):
            assert tap.kinds(node, m1.version)[-2:] == ["model.promoted", "model.activated"]
            assert "model.activated" not in tap.kinds(node, m2.version)
            assert "model.rejected" in tap.kinds(node, m2.version)
        assert "model.canary_passed" in tap.kinds("edge-1", m1.version)
        assert {"model.canary_failed", "model.canary_started"} <= set(
            tap.kinds("edge-1", m2.version)
        )
        assert "model.rolled_back" in tap.kinds("edge-1", m1.version)


async def test_ion_rollback_with_and_without_a_version(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    async with fleet(url, tmp_path) as f:
        await f.start("cloud", "edge-1", "edge-2")
        await apply(url, policy_ion(ModelPolicy(), ("edge-1", "edge-2")))
        await f.ready("cloud", "edge-1", "edge-2")
        m1 = await f.publish()
        await f.all_active(m1.version, "edge-1", "edge-2")
        m2 = await f.publish()
        await f.all_active(m2.version, "edge-1", "edge-2")
        r = await ion_cli(url, "rollback", ION, EDGE)
        assert r.exit_code == 0, r.output
        assert f"version {m2.version}: reject published" in r.output
        await f.all_active(m1.version, "edge-1", "edge-2")

        m3 = await f.publish()  # made after the rollback: taken as usual
        await f.all_active(m3.version, "edge-1", "edge-2")
        # The CLI knows held versions from the nodes' statuses (sent every heartbeat).
        await async_wait_until(lambda: all(m1.version in held for held in _held(url)), 20)
        r = await ion_cli(url, "rollback", ION, EDGE, m1.version, "--json")
        assert r.exit_code == 0, r.output
        assert '"action": "rollback-to"' in r.output
        await f.all_active(m1.version, "edge-1", "edge-2")


async def test_a_node_offline_during_a_manual_rollout_catches_up(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    async with fleet(url, tmp_path) as f:
        await f.start("cloud", "edge-1", "edge-2")
        await apply(url, policy_ion(ModelPolicy(kind=PolicyKind.MANUAL), ("edge-1", "edge-2")))
        await f.ready("cloud", "edge-1", "edge-2")
        await f.stop("edge-2")
        m1 = await f.publish()
        await async_wait_until(lambda: f.pending("edge-1") == (m1.version,), 30)
        r = await ion_cli(url, "approve", ION, EDGE, m1.version)
        assert r.exit_code == 0, r.output
        await f.all_active(m1.version, "edge-1")
        await f.start("edge-2")  # back: the manifest and the approval are waiting for it
        await f.all_active(m1.version, "edge-2")


async def test_a_node_offline_during_a_canary_rollout_catches_up(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    canary = ModelPolicy(
        kind=PolicyKind.CANARY, canary=CanaryPolicy(nodes=("edge-1",), hold_ms=1_000)
    )
    async with fleet(url, tmp_path) as f:
        await f.start("cloud", "edge-1", "edge-2")
        await apply(url, policy_ion(canary, ("edge-1", "edge-2")))
        await f.ready("cloud", "edge-1", "edge-2")
        await f.stop("edge-2")
        m1 = await f.publish()
        await f.all_active(m1.version, "edge-1")
        await async_wait_until(lambda: f.agents["edge-1"].models.statuses()[0].canary_state
                               == f"passed {m1.version}", 20)  # fmt: skip
        await f.start("edge-2")  # back: finds the manifest and the canary's retained verdict
        await f.all_active(m1.version, "edge-2")


async def test_model_commands_on_the_ion_command_topic(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    """Not retained: they act on the nodes that receive them (a rollback naming no version
    rolls each node back from the version it runs)."""
    url = fresh_mosquitto.url
    with event_tap(url) as tap:
        async with fleet(url, tmp_path) as f:
            await f.start("cloud", "edge-1", "edge-2")
            await apply(url, policy_ion(ModelPolicy(), ("edge-1", "edge-2")))
            await f.ready("cloud", "edge-1", "edge-2")
            m1 = await f.publish()
            await f.all_active(m1.version, "edge-1", "edge-2")
            m2 = await f.publish()
            await f.all_active(m2.version, "edge-1", "edge-2")
            cmd = Command("cmd-1", RollbackModel(ModelRef(ION, EDGE, "")), issued_by="tester",
                          reason="bad batch")  # fmt: skip
            with connect(parse_broker_url(url)) as session:
                env = new_envelope(cmd, source_node="ops", now_ms=1)
                session.publish(topics.ion_command(ION), encode(env))
            await f.all_active(m1.version, "edge-1", "edge-2")
            await async_wait_until(
                lambda: "model.rolled_back" in tap.kinds("edge-2", m1.version), 10
            )
