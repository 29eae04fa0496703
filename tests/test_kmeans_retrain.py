"""The KMeans example's loop, end to end: drift at the devices -> drift on the edge nodes ->
the retrain trigger fires on the cloud node -> Spark trains again on the recorder's window of
recent readings -> a new model version is published and activated on the edges (auto policy)
-> drift scores against the new model's baseline fall back under the threshold.

Real parts: Mosquitto, three agents (cloud-1, edge-1, edge-2), Spark in local mode, python
inference fed by simulated devices over MQTT, the recorder fed by the edges' samples.
"""

from __future__ import annotations

import contextlib
import queue
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_support import apply, node_config
from support import async_wait_until
from support.brokers import mqtt_client

from ion.authoring import parse_ion
from ion.errors import DecodeError
from ion.model.event import Event, Trigger
from ion.model.health import HealthReport
from ion.model.messages import EnvelopeBatch
from ion.wire.codec import decode
from node.agent.service import Agent

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.asyncio]

ROOT = Path(__file__).resolve().parents[1]
ION = "kmeans-loop"
THRESHOLD = 0.2

# examples/kmeans/ion.yaml made small and quick: Spark on one core, windows of seconds, every
# reading sampled, a window of the last 15 s of readings (by their own time: on this shared
# machine the edges fall behind their sensors, so arrival time would mislead), auto policy.
ION_YAML = f"""
apiVersion: ion/v1
kind: ION
metadata: {{name: {ION}}}
pipelines:
  - name: training
    engine: spark
    role: training
    mode: batch
    placement: {{nodes: [cloud-1]}}
    engine_config: {{master: "local[1]", spark.driver.memory: 1g}}
    components:
      - {{name: read, type: csv_source, args: {{path: ../recorder/window.csv}}}}
      - {{name: baseline, type: feature_histograms, inputs: {{data: read.data}},
          args: {{bins: 10}}}}
      - {{name: fit, type: kmeans_train, inputs: {{data: read.data}}, args: {{k: 4, seed: 7}}}}
      - {{name: publish, type: model_publisher,
          inputs: {{model: fit.model, health: baseline.health}}}}
  - name: recorder
    engine: python
    mode: streaming
    placement: {{nodes: [cloud-1]}}
    components:
      - {{name: record, type: window_recorder,
          args: {{path: window.csv, rows: 3000, max_age: 15s, min_rows: 500, interval: 1s}}}}
  - name: inference
    engine: python
    role: inference
    mode: streaming
    placement: {{labels: {{tier: edge}}}}
    components:
      - {{name: sensors, type: mqtt_source,
          args: {{topic: sensors/+/readings, batch: 50, max_wait: 200ms}}}}
      - {{name: model, type: model_subscriber}}
      - {{name: sample, type: data_sampler, inputs: {{data: sensors.data}},
          args: {{share: 1.0}}}}
      - {{name: score, type: kmeans_score, inputs: {{data: sample.data, model: model.model}},
          args: {{window: 2s}}}}
      - {{name: health, type: health_reporter, inputs: {{health: score.health}},
          args: {{interval: 2s}}}}
edges:
  - name: model
    kind: model
    from: training
    to: [inference]
    policy: {{type: auto}}
    drift: {{metric: psi, threshold: {THRESHOLD}, window: 10s, min_samples: 1000}}
  - name: fresh
    kind: data
    from: inference.sample.sample
    to: recorder
  - name: retrain
    kind: trigger
    from: inference
    to: [training]
    trigger: {{metric: drift, above: 0.25, min_nodes: 2, window: 30s, cooldown: 30m}}
"""


class Watcher:
    """Health reports (per source node), trigger messages and events seen on the bus."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.health: list[tuple[str, HealthReport]] = []
        self.triggers: list[tuple[str, Trigger]] = []
        self.events: list[Event] = []

    def poll(self) -> None:
        while True:
            try:
                msg = self.client.messages.get_nowait()
            except queue.Empty:
                return
            try:
                env = decode(msg.payload)
            except DecodeError:
                continue
            envs = env.body.envelopes if isinstance(env.body, EnvelopeBatch) else (env,)
            for e in envs:
                if isinstance(e.body, HealthReport) and e.body.drift:
                    self.health.append((e.source_node, e.body))
                elif isinstance(e.body, Trigger):
                    self.triggers.append((e.source_node, e.body))
                elif isinstance(e.body, Event):
                    self.events.append(e.body)

    def of_type(self, kind: str) -> list[Event]:
        self.poll()
        return [e for e in self.events if e.type == kind]

    def scores(self, node: str, version: str) -> list[float]:
        """Overall drift scores node reported against model ``version``, oldest first."""
        self.poll()
        return [
            d.score
            for n, h in self.health
            if n == node and h.model_version == version
            for d in h.drift
            if not d.feature
        ]


@contextlib.contextmanager
def devices(url: str, drift_file: Path) -> Iterator[None]:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "examples" / "kmeans" / "devices.py"),
            *("--broker", url, "--devices", "6", "--rate", "40", "--batch", "4"),
            *("--drift-file", str(drift_file)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def settled(w: Watcher, version: str, count: int) -> bool:
    """Both edges reported ``count`` drift scores against ``version``, the last under the
    threshold."""
    return all(
        len(s := w.scores(node, version)) >= count and s[-1] < THRESHOLD
        for node in ("edge-1", "edge-2")
    )


async def test_drift_retrains_the_kmeans_model_and_the_new_model_clears_the_drift(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    parsed = parse_ion(ION_YAML, "test.yaml")
    assert parsed.definition is not None, parsed.problems
    # The seed training set is the recorder's window; live rows push it out.
    recorder = tmp_path / "cloud-1" / "work" / ION / "recorder"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "kmeans" / "generate.py"),
            *("--out", str(recorder), "--name", "window", "--rows", "1500"),
        ],
        check=True,
        capture_output=True,
    )
    drift_file = tmp_path / "drift"
    with (
        mqtt_client(fresh_mosquitto.host, fresh_mosquitto.port) as client,
        contextlib.ExitStack() as stack,  # the devices stop before the agents
    ):
        client.subscribe(f"ion/v1/ions/{ION}/pipelines/inference/health/+")
        client.subscribe(f"ion/v1/ions/{ION}/pipelines/inference/events/+")  # health.drift
        client.subscribe(f"ion/v1/ions/{ION}/edges/retrain/trigger/+")
        client.subscribe("ion/v1/nodes/+/events")
        watch = Watcher(client)
        async with (
            Agent(node_config("cloud-1", url, tmp_path, {"tier": "cloud"})) as cloud,
            Agent(node_config("edge-1", url, tmp_path, {"tier": "edge"})) as edge1,
            Agent(node_config("edge-2", url, tmp_path, {"tier": "edge"})) as edge2,
        ):
            edges = (edge1, edge2)
            for agent in (cloud, *edges):
                await agent.link.wait_connected()
            await apply(url, parsed.definition)
            stack.enter_context(devices(url, drift_file))

            def version_on_edges() -> str:
                active = [a.models.active(ION, "model") for a in edges]
                versions = {m.version for m in active if m is not None}
                return versions.pop() if len(versions) == 1 and None not in active else ""

            # The first model (trained on the seed) reaches both edges; drift is low.
            first: str = await async_wait_until(version_on_edges, 240)
            await async_wait_until(lambda: settled(watch, first, 2), 90)
            assert not watch.of_type("trigger.fired")

            # Wear sets in at the devices.
            drift_file.write_text("1")
            await async_wait_until(lambda: len(watch.of_type("health.drift")) >= 2, 90)
            [fired] = await async_wait_until(lambda: watch.of_type("trigger.fired"), 60)
            assert fired.attributes["nodes"] == "edge-1,edge-2"
            assert fired.attributes["started"] == "training"
            assert all(float(fired.attributes[f"value.{n}"]) > 0.25 for n in ("edge-1", "edge-2"))
            assert [(n, t.target_pipeline) for n, t in watch.triggers] == [("cloud-1", "training")]

            # Training runs again on the recorder's window and the edges activate its model.
            def newer() -> str:
                v = version_on_edges()
                return v if v != first else ""

            second: str = await async_wait_until(newer, 240)
            model = edge1.models.active(ION, "model")
            assert model is not None
            assert model.baseline
            # Against the new model's baseline, the drifted readings are normal again.
            await async_wait_until(lambda: settled(watch, second, 3), 90)
            assert len(watch.of_type("trigger.fired")) == 1  # cooling down
            worst_before = max(watch.scores("edge-1", first))
            assert worst_before > 0.25
            assert max(watch.scores("edge-1", second)[-2:]) < THRESHOLD
