"""The seed's example, end to end, with real parts: Mosquitto, two agents, Spark in local mode,
a python inference pipeline fed by simulated devices over MQTT.

Training runs on Spark on the cloud node and publishes a KMeans model with its baseline
histograms; the model reaches the edge node over MQTT and is hot-swapped into the running
inference pipeline, which acknowledges it; anomaly statistics and health flow back; drift
injected into the devices' readings makes the edge node raise a ``health.drift`` event.
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
from ion.model.event import Event
from ion.model.health import HealthReport, StatsReport
from ion.model.messages import EnvelopeBatch
from ion.wire.codec import decode
from node.agent.service import Agent

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.asyncio]

ROOT = Path(__file__).resolve().parents[1]
ION = "kmeans-e2e"

ION_YAML = f"""
apiVersion: ion/v1
kind: ION
metadata: {{name: {ION}}}
pipelines:
  - name: training
    engine: spark
    role: training
    mode: batch
    placement: {{labels: {{tier: cloud}}}}
    engine_config: {{master: "local[1]", spark.driver.memory: 1g}}
    components:
      - {{name: read, type: csv_source, args: {{path: data/train.csv}}}}
      - {{name: baseline, type: feature_histograms, inputs: {{data: read.data}},
          args: {{bins: 10}}}}
      - {{name: fit, type: kmeans_train, inputs: {{data: read.data}}, args: {{k: 4, seed: 7}}}}
      - {{name: publish, type: model_publisher,
          inputs: {{model: fit.model, health: baseline.health}}}}
  - name: inference
    engine: python
    role: inference
    mode: streaming
    placement: {{labels: {{tier: edge}}}}
    components:
      - {{name: sensors, type: mqtt_source,
          args: {{topic: sensors/+/readings, batch: 50, max_wait: 200ms}}}}
      - {{name: model, type: model_subscriber}}
      - {{name: score, type: kmeans_score, inputs: {{data: sensors.data, model: model.model}},
          args: {{window: 2s}}}}
      - {{name: health, type: health_reporter, inputs: {{health: score.health}},
          args: {{interval: 2s}}}}
  - name: alerts
    engine: python
    mode: streaming
    placement: {{labels: {{tier: cloud}}}}
    components:
      - {{name: sink, type: event_sink, args: {{path: anomalies.jsonl}}}}
edges:
  - name: model
    kind: model
    from: training
    to: [inference]
    policy: {{type: auto}}
    drift: {{metric: psi, threshold: 0.2, window: 20s, min_samples: 2000}}
  - name: anomalies
    kind: events
    from: inference
    to: alerts
"""

TF_YAML = ION_YAML.replace(
    """    engine: spark
    role: training
    mode: batch
    placement: {labels: {tier: cloud}}
    engine_config: {master: "local[1]", spark.driver.memory: 1g}
    components:
      - {name: read, type: csv_source, args: {path: data/train.csv}}
      - {name: baseline, type: feature_histograms, inputs: {data: read.data},
          args: {bins: 10}}
      - {name: fit, type: kmeans_train, inputs: {data: read.data}, args: {k: 4, seed: 7}}
      - {name: publish, type: model_publisher,
          inputs: {model: fit.model, health: baseline.health}}""",
    """    engine: tensorflow
    role: training
    mode: batch
    placement: {labels: {tier: cloud}}
    engine_config: {intra_op_threads: "1", inter_op_threads: "1"}
    components:
      - {name: read, type: csv_source, args: {path: data/train.csv}}
      - {name: fit, type: keras_autoencoder_train, inputs: {data: read.data},
          args: {hidden: [16], latent_dim: 3, epochs: 8, batch_size: 64, seed: 7}}
      - {name: export, type: tflite_export, inputs: {model: fit.model}}
      - {name: publish, type: model_publisher, inputs: {model: export.model}}""",
).replace("type: kmeans_score", "type: tflite_score")


class Watcher:
    """Everything published under the ION's namespace, decoded (batches unpacked)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.stats: list[StatsReport] = []
        self.health: list[HealthReport] = []
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
            bodies = (
                [e.body for e in env.body.envelopes]
                if isinstance(env.body, EnvelopeBatch)
                else [env.body]
            )
            for body in bodies:
                if isinstance(body, StatsReport):
                    self.stats.append(body)
                elif isinstance(body, HealthReport):
                    self.health.append(body)
                elif isinstance(body, Event):
                    self.events.append(body)

    def drift_reports(self) -> list[HealthReport]:
        self.poll()
        return [h for h in self.health if h.drift]

    def event_types(self) -> set[str]:
        self.poll()
        return {e.type for e in self.events}

    def scored(self) -> float:
        self.poll()
        return sum(m.value for s in self.stats for m in s.scalars if m.name == "scored")


@contextlib.contextmanager
def devices(url: str, drift_file: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "examples" / "kmeans" / "devices.py"),
            "--broker",
            url,
            "--devices",
            "6",
            "--rate",
            "40",
            "--drift-file",
            str(drift_file),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def alerts(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line for line in path.read_text().splitlines() if "anomaly" in line]


async def run_example(
    broker: Any, tmp_path: Path, ion_yaml: str, model_format: str, metric: tuple[str, float]
) -> None:
    url = broker.url
    parsed = parse_ion(ion_yaml, "test.yaml")
    assert parsed.definition is not None, parsed.problems
    train_dir = tmp_path / "cloud-1" / "work" / ION / "training" / "data"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "kmeans" / "generate.py"),
            "--out",
            str(train_dir),
            "--rows",
            "6000",
        ],
        check=True,
        capture_output=True,
    )
    drift_file = tmp_path / "drift"
    with mqtt_client(broker.host, broker.port) as client:
        client.subscribe(f"ion/v1/ions/{ION}/#")
        client.subscribe("ion/v1/nodes/+/events")  # model decisions are the node's events
        watch = Watcher(client)
        async with (
            Agent(node_config("cloud-1", url, tmp_path, {"tier": "cloud"})) as cloud,
            Agent(node_config("edge-1", url, tmp_path, {"tier": "edge"})) as edge,
        ):
            await cloud.link.wait_connected()
            await edge.link.wait_connected()
            await apply(url, parsed.definition)
            # Training (engine start included) publishes a model; the edge activates it.
            await async_wait_until(lambda: edge.models.active(ION, "model") is not None, 240)
            model = edge.models.active(ION, "model")
            assert model is not None
            assert model.format == model_format
            assert model.baseline
            name, low = metric
            assert model.metrics.get(name, -1.0) > low, model.metrics
            # The agent published the training job's engine statistics while it ran (Spark's
            # jobs and stages, TensorFlow's steps, and every engine's CPU time).
            watch.poll()
            engine = [s for s in watch.stats if s.component == "engine"]
            assert engine, "no engine statistics from the training job"
            assert any(m.name == "process.cpu_seconds" for s in engine for m in s.scalars)
            if model_format.startswith("kmeans"):
                done = [s.progress for s in engine if s.progress and s.progress.stages_done]
                assert done, [s.progress for s in engine]
            with devices(url, drift_file):
                # The running pipeline loads it (hot swap) and says so.
                await async_wait_until(lambda: "model.accepted" in watch.event_types(), 60)
                # Readings are scored and counted; health comes back with drift scores.
                await async_wait_until(lambda: watch.scored() >= 500, 60)
                await async_wait_until(lambda: len(watch.drift_reports()) >= 3, 60)
                assert "health.drift" not in watch.event_types()
                calm = watch.drift_reports()
                assert all(d.score < 0.2 for h in calm for d in h.drift if not d.feature)
                anomaly_rate = [
                    m.value for s in watch.stats for m in s.scalars if m.name == "anomaly_rate"
                ]
                assert anomaly_rate
                assert sum(anomaly_rate) / len(anomaly_rate) < 0.2
                # Anomaly events travel along the events edge to the cloud's alerts pipeline.
                sink = tmp_path / "cloud-1" / "work" / ION / "alerts" / "anomalies.jsonl"
                await async_wait_until(lambda: len(alerts(sink)) > 0, 60)
                # Wear sets in: the edge node notices on its own.
                drift_file.write_text("1")
                await async_wait_until(lambda: "health.drift" in watch.event_types(), 90)
                drift_event = next(e for e in watch.events if e.type == "health.drift")
                assert float(drift_event.attributes["score"]) > 0.2
                assert drift_event.attributes["model_id"] == model.model_id


async def test_kmeans_ion_trains_on_spark_hot_swaps_at_the_edge_and_detects_drift(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    await run_example(fresh_mosquitto, tmp_path, ION_YAML, "kmeans-json/1", ("silhouette", 0.2))


async def test_autoencoder_ion_trains_on_tensorflow_and_scores_with_tflite_at_the_edge(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    await run_example(
        fresh_mosquitto, tmp_path, TF_YAML, "tflite-autoencoder/1", ("threshold", 0.0)
    )
