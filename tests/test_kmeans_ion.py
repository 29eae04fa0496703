"""The seed's example, end to end, with real parts: Mosquitto, two agents, Spark in local mode,
a python inference pipeline fed by simulated devices over MQTT.

Training runs on Spark on the cloud node and publishes a KMeans model with its baseline
histograms; the model reaches the edge node over MQTT and is hot-swapped into the running
inference pipeline, which acknowledges it; anomaly statistics and health flow back; drift
injected into the devices' readings makes the edge node raise a ``health.drift`` event.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from agent_support import apply, node_config
from kmeans_support import Watcher, devices, kmeans_ion_yaml, seed_data
from support import async_wait_until
from support.brokers import mqtt_client

from ion.authoring import parse_ion
from node.agent.service import Agent

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.asyncio]

ION = "kmeans-e2e"

# A fixed training set (data/train.csv) and an alerts pipeline rather than the retrain loop.
ION_YAML = kmeans_ion_yaml(ION, loop=False, drift_window="20s", min_samples=2000)

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
    seed_data(tmp_path / "cloud-1" / "work" / ION / "training" / "data", 6000)
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
            engine = [s for _, _, s in watch.stats if s.component == "engine"]
            assert engine, "no engine statistics from the training job"
            assert any(m.name == "process.cpu_seconds" for s in engine for m in s.scalars)
            if model_format.startswith("kmeans"):
                done = [s.progress for s in engine if s.progress and s.progress.stages_done]
                assert done, [s.progress for s in engine]
            with devices(url, drift_file, count=6):
                # The running pipeline loads it (hot swap) and says so.
                await async_wait_until(lambda: "model.accepted" in watch.event_types(), 60)
                # Readings are scored and counted; health comes back with drift scores.
                await async_wait_until(lambda: watch.scored() >= 500, 60)
                await async_wait_until(lambda: len(watch.drift_reports()) >= 3, 60)
                assert "health.drift" not in watch.event_types()
                calm = watch.drift_reports()
                assert all(d.score < 0.2 for h in calm for d in h.drift if not d.feature)
                anomaly_rate = [
                    m.value
                    for _, _, s in watch.stats
                    for m in s.scalars
                    if m.name == "anomaly_rate"
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
