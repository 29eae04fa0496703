"""The KMeans example's loop, end to end: drift at the devices -> drift on the edge nodes ->
the retrain trigger fires on the cloud node -> Spark trains again on the recorder's window of
recent readings -> a new model version is published and activated on the edges (auto policy)
-> drift scores against the new model's baseline fall back under the threshold.

Real parts: Mosquitto, three agents (cloud-1, edge-1, edge-2), Spark in local mode, python
inference fed by simulated devices over MQTT, the recorder fed by the edges' samples.
"""

from __future__ import annotations

import contextlib
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

ION = "kmeans-loop"
THRESHOLD = 0.2

# The loop with the auto policy: each new model goes straight to both edges.
ION_YAML = kmeans_ion_yaml(ION, threshold=THRESHOLD)


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
    seed_data(tmp_path / "cloud-1" / "work" / ION / "recorder", 1500, "window")
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
            stack.enter_context(devices(url, drift_file, count=6, batch=4))

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
