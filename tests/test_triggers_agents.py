"""Trigger edges with real agents, real Mosquitto and plain python pipelines (no Spark).

Two edge nodes run a ``probe`` pipeline that reports an ``error_rate`` stat read from a file
in its work dir (the test sets it); the cloud node hosts the batch pipeline ``train`` (which
notes each run in a file) and evaluates the trigger edge ``retrain`` (error_rate above 0.5
on 2 nodes).  Checked: one node over is not enough; two fire once (a run, a ``Trigger`` on the
edge, a ``trigger.fired`` event); the cooldown holds while the condition still holds, also
across a restart of the cloud agent.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_support import apply, node_config
from kmeans_support import Watcher
from support import async_wait_until
from support.brokers import mqtt_client
from support.pipelines import install_plugin

from ion.authoring import parse_ion
from ion.model.definition import (
    Component,
    Edge,
    EdgeKind,
    Endpoint,
    IonDefinition,
    Pipeline,
    PipelineMode,
    PipelineRole,
    Placement,
    TriggerCondition,
)
from ion.model.event import Event
from ion.model.status import PipelineState
from node.agent.service import Agent, wall_ms
from node.components.csv_source import read_csv

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

ION = "trig"

PLUGIN = '''
import time
from ion.model.health import Metric, StatsReport
from node.runner.component import Component


class StatProbe(Component):
    """Streaming: reports error_rate = the number in <work_dir>/level (0 when absent)."""
    output_ports = ("stats",)

    def stream(self, inputs):
        level = self.ctx.work_dir / "level"
        while self.ctx.sleep(0.1):
            try:
                value = float(level.read_text())
            except (OSError, ValueError):
                value = 0.0
            yield StatsReport(pipeline="", scalars=(Metric("error_rate", value),))


class RunMarker(Component):
    """Batch: notes that it ran."""
    output_ports = ()

    def run(self, inputs):
        with open(self.ctx.work_dir / "runs.txt", "a") as f:
            f.write(f"{time.time()}\\n")
'''

ENTRY_POINTS = {"stat_probe": "ion_trigplug:StatProbe", "run_marker": "ion_trigplug:RunMarker"}


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = install_plugin(
        tmp_path / "plugins", "ion-trigplug", ENTRY_POINTS, module="ion_trigplug", source=PLUGIN
    )
    monkeypatch.setenv("PYTHONPATH", str(root))


def trigger_ion(cooldown_ms: int) -> IonDefinition:
    train = Pipeline(
        name="train",
        engine="python",
        role=PipelineRole.TRAINING,
        mode=PipelineMode.BATCH,
        placement=Placement(nodes=("cloud-1",)),
        components=(Component("mark", "run_marker"),),
    )
    probe = Pipeline(
        name="probe",
        engine="python",
        role=PipelineRole.INFERENCE,
        mode=PipelineMode.STREAMING,
        placement=Placement(labels={"tier": "edge"}),
        components=(Component("probe", "stat_probe"),),
    )
    return IonDefinition(
        name=ION,
        pipelines=(train, probe),
        edges=(
            Edge(
                "retrain",
                EdgeKind.TRIGGER,
                Endpoint("probe"),
                (Endpoint("train"),),
                trigger=TriggerCondition(
                    "error_rate", 0.5, min_nodes=2, window_ms=5_000, cooldown_ms=cooldown_ms
                ),
            ),
        ),
    )


class Bus(Watcher):
    """Trigger messages, node events and probe stats seen on the broker."""

    def fired(self) -> list[Event]:
        return self.of_type("trigger.fired")

    def high_reports_since(self, node: str, since_ms: int) -> int:
        self.poll()
        readings = self.metric_values(node, "error_rate")
        return sum(1 for at, v in readings if at > since_ms and v > 0.5)

    def both_high_since(self, since_ms: int, count: int) -> bool:
        return all(self.high_reports_since(n, since_ms) >= count for n in ("edge-1", "edge-2"))


def runs(tmp_path: Path) -> int:
    path = tmp_path / "cloud-1" / "work" / ION / "train" / "runs.txt"
    return len(path.read_text().splitlines()) if path.exists() else 0


def set_level(tmp_path: Path, node: str, value: float) -> None:
    work = tmp_path / node / "work" / ION / "probe"
    work.mkdir(parents=True, exist_ok=True)
    (work / "level").write_text(str(value))


@contextlib.contextmanager
def watching(broker: Any) -> Iterator[Bus]:
    with mqtt_client(broker.host, broker.port) as client:
        client.subscribe(f"ion/v1/ions/{ION}/edges/retrain/trigger/+")
        client.subscribe(f"ion/v1/ions/{ION}/pipelines/probe/stats/+")
        client.subscribe("ion/v1/nodes/+/events")
        yield Bus(client)


async def test_min_nodes_cooldown_and_restart(
    plugin: None, fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    cloud_cfg = node_config("cloud-1", url, tmp_path, {"tier": "cloud"})
    with watching(fresh_mosquitto) as bus:
        async with (
            Agent(node_config("edge-1", url, tmp_path, {"tier": "edge"})) as edge1,
            Agent(node_config("edge-2", url, tmp_path, {"tier": "edge"})) as edge2,
        ):
            async with Agent(cloud_cfg) as cloud:
                for a in (cloud, edge1, edge2):
                    await a.link.wait_connected()
                await apply(url, trigger_ion(cooldown_ms=600_000))
                await async_wait_until(lambda: runs(tmp_path) == 1, 30)  # the run on apply
                book = cloud.triggers.book
                # One node over the threshold is not enough.
                set_level(tmp_path, "edge-1", 0.9)
                await async_wait_until(
                    lambda: "edge-1" in book.nodes_over(ION, "retrain", wall_ms()), 30
                )
                # ... also not after the cloud heard it many times.
                t0 = max((at for at, _ in bus.metric_values("edge-1", "error_rate")), default=0)
                await async_wait_until(lambda: bus.high_reports_since("edge-1", t0) >= 5, 30)
                assert bus.fired() == []
                # Two nodes: it fires once.
                set_level(tmp_path, "edge-2", 0.8)
                await async_wait_until(lambda: len(bus.fired()) == 1, 30)
                await async_wait_until(lambda: runs(tmp_path) == 2, 30)
                event = bus.fired()[0]
                assert event.attributes["nodes"] == "edge-1,edge-2"
                assert event.attributes["value.edge-1"] == "0.9"
                assert event.attributes["value.edge-2"] == "0.8"
                assert event.attributes["started"] == "train"
                assert event.attributes["metric"] == "error_rate"
                await async_wait_until(lambda: len(bus.triggers) == 1, 10)
                assert bus.triggers[0][0] == "cloud-1"
                assert bus.triggers[0][1].target_pipeline == "train"
                # The condition still holds: nothing more inside the cooldown, and the cloud's
                # own trigger message (which it also receives) did not start another run.
                fired_at = book.last_fired[(ION, "retrain")]
                await async_wait_until(lambda: bus.both_high_since(fired_at + 1000, 5), 30)
                assert len(bus.fired()) == 1
                assert runs(tmp_path) == 2
            # The cloud agent restarts: its batch pipeline runs once (a new start), but the
            # trigger stays cooling down although both nodes are still over.
            async with Agent(cloud_cfg) as cloud:
                await cloud.link.wait_connected()
                assert cloud.triggers.book.last_fired == {(ION, "retrain"): fired_at}
                await async_wait_until(lambda: runs(tmp_path) == 3, 30)
                book = cloud.triggers.book
                await async_wait_until(
                    lambda: len(book.nodes_over(ION, "retrain", wall_ms())) == 2,
                    30,
                )
                restarted = cloud.started_ms
                await async_wait_until(lambda: bus.both_high_since(restarted + 1000, 5), 30)
                assert len(bus.fired()) == 1
                assert runs(tmp_path) == 3


FRESH_YAML = """
apiVersion: ion/v1
kind: ION
metadata: {name: fresh}
pipelines:
  - name: recorder
    engine: python
    mode: streaming
    placement: {nodes: [cloud-1]}
    components:
      - {name: record, type: window_recorder, args: {rows: 500, interval: 200ms}}
  - name: inference
    engine: python
    mode: streaming
    placement: {labels: {tier: edge}}
    components:
      - {name: sensors, type: mqtt_source, args: {topic: fresh/+/readings, max_wait: 100ms}}
      - {name: sample, type: data_sampler, inputs: {data: sensors.data}, args: {share: 1.0}}
      - {name: sink, type: log_sink, inputs: {in: sample.data}, args: {every: 1000}}
edges:
  - {name: fresh, kind: data, from: inference.sample.sample, to: recorder}
"""


async def test_edge_samples_reach_the_recorders_window(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    """The data path of a self-retraining example: readings at the edge, a sample along a
    data edge, the recorder's window file in the cloud (seeded, then pushed out)."""
    url = fresh_mosquitto.url
    parsed = parse_ion(FRESH_YAML, "fresh.yaml")
    assert parsed.definition is not None, parsed.problems
    window = tmp_path / "cloud-1" / "work" / "fresh" / "recorder" / "window.csv"
    window.parent.mkdir(parents=True)
    window.write_text("a,b\n" + "".join(f"{-i},{-i}\n" for i in range(500)))
    async with (
        Agent(node_config("cloud-1", url, tmp_path, {"tier": "cloud"})) as cloud,
        Agent(node_config("edge-1", url, tmp_path, {"tier": "edge"})) as edge,
    ):
        await cloud.link.wait_connected()
        await edge.link.wait_connected()
        await apply(url, parsed.definition)
        running = PipelineState.RUNNING.value
        await async_wait_until(
            lambda: edge.pipelines()[("fresh", "inference")][1].state.value == running, 30
        )

        def live_rows() -> int:
            with mqtt_client(fresh_mosquitto.host, fresh_mosquitto.port) as client:
                for i in range(50):
                    client.publish(
                        "fresh/dev-1/readings", json.dumps({"a": i, "b": 2 * i}).encode(), qos=1
                    )
            text = window.read_text() if window.exists() else ""
            return sum(1 for line in text.splitlines()[1:] if not line.startswith("-"))

        await async_wait_until(lambda: live_rows() >= 100, 30)
        data = read_csv(window)
        assert data.features == ("a", "b")
        assert data.rows == 500  # the seed's oldest rows made room
        live = data.values[data.values[:, 0] >= 0]
        assert (live[:, 1] == 2 * live[:, 0]).all()
