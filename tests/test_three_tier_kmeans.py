"""The KMeans example across the three tiers with TLS and ACLs on, from `ion deploy` output:
three Mosquittos (cloud, gw-a, gw-b) with client certificates and the generated ACLs, the
agents of cloud-1, both gateways (relaying) and an edge node behind each, simulated devices
behind each gateway publishing with their own certificates.  Spark trains on cloud-1; the
model goes down through both gateways, edge-a1 tries it first (canary) and its verdict
reaches edge-b1 behind the other gateway; both score their devices' readings, send samples up
along `fresh` to the recorder, and detect drift injected at the devices, which fires the
retrain trigger on cloud-1.  Nothing any part tried was refused by an ACL.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import async_wait_until
from test_deploy_support import Client, brokers, deploy_local, free_ports, refused_publishes
from test_deploy_support import three_tier_yaml as base_inventory
from test_kmeans_retrain import Watcher
from test_three_tier import agent_config, apply_as

from ion import topics
from ion.authoring import parse_ion
from ion.security.keys import SigningKey
from ion.topics import Channel
from ion.validate.inventory import Inventory, load_inventory
from node.agent.service import Agent

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.asyncio]

ROOT = Path(__file__).resolve().parents[1]
ION = "kmeans-3t"
THRESHOLD = 0.2
EDGES = ("edge-a1", "edge-b1")
# Three devices behind each gateway: fewer make an edge's live histograms noisy enough to look
# drifted when nothing changed (each device stays in one operating mode for a while).
DEVICES = {f"dev-{gw}{i}": f"gw-{gw}" for gw in "ab" for i in (1, 2, 3)}

# examples/kmeans/ion.yaml made small and quick (as in test_kmeans_retrain): Spark on one
# core, windows of seconds, every reading sampled; the canary holds for seconds only.
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
    policy:
      type: canary
      canary: {{nodes: [edge-a1], hold: 3s, max_drift: 0.5}}
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


def three_tier_with_devices(ports: list[int]) -> Inventory:
    devices = [f"  - {{id: {d}, broker: {gw}}}" for d, gw in DEVICES.items()]
    return load_inventory(base_inventory(ports) + "devices:\n" + "\n".join(devices) + "\n")


class Feed:
    """A monitor's view of the cloud broker, shaped for test_kmeans_retrain's ``Watcher``."""

    def __init__(self, out: Path, port: int) -> None:
        self.messages: queue.Queue[Any] = queue.Queue()
        self.seen: set[str] = set()
        self.client = Client(out, "monitors/mon-1", port, client_id="mon-1-watch")
        self.client.client.on_message = lambda _c, _u, msg: self._got(msg)
        self.client.subscribe(topics.EVERYTHING)

    def _got(self, msg: Any) -> None:
        self.seen.add(msg.topic)
        self.messages.put(msg)


@contextlib.contextmanager
def device(out: Path, name: str, port: int, drift_file: Path, seed: int) -> Iterator[None]:
    where = out / "devices" / name
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "examples" / "kmeans" / "devices.py"),
            *("--broker", f"mqtts://127.0.0.1:{port}", "--name", name, "--seed", str(seed)),
            *("--rate", "40", "--batch", "4", "--drift-file", str(drift_file)),
            *("--ca-file", str(where / "ca.crt"), "--cert-file", str(where / "client.crt")),
            *("--key-file", str(where / "client.key")),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


async def test_kmeans_runs_across_three_tiers_with_tls_and_acls(tmp_path: Path) -> None:
    ports = free_ports(3)
    inv = three_tier_with_devices(ports)
    parsed = parse_ion(ION_YAML, "test.yaml")
    assert parsed.definition is not None, parsed.problems
    out = tmp_path / "out"
    key = SigningKey.generate()
    line = f"{key.public.text()} operator,producer test"
    plan = deploy_local(out, [parsed.definition], inv, trust_keys=(line,))
    # What the relays carry beyond their defaults: each edge's sample up to the recorder; the
    # canary's verdict up from gw-a and down to gw-b.
    fresh = {e: topics.edge(ION, "fresh", Channel.DATA, e) for e in EDGES}
    verdict = topics.model_canary(ION, "model", "edge-a1")
    assert plan.relays["gw-a"].extra_up == (fresh["edge-a1"], verdict)
    assert plan.relays["gw-b"].extra_up == (fresh["edge-b1"],)
    assert plan.relays["gw-b"].extra_down == (verdict,)
    for conf in (out / "brokers").glob("*/mosquitto.conf"):  # log every publish, to check
        conf.write_text(conf.read_text().replace("log_type error", "log_type all"))
    recorder = out / "nodes" / "cloud-1" / "data" / "work" / ION / "recorder"
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
    port_of = {b.id: b.port for b in inv.brokers}
    with brokers(out, inv), contextlib.ExitStack() as stack:
        feed = Feed(out, port_of["cloud"])
        stack.callback(feed.client.close)
        watch = Watcher(feed)
        async with contextlib.AsyncExitStack() as agents:
            start = agents.enter_async_context
            cloud = await start(Agent(agent_config(out, "cloud-1", key)))
            for gw in ("gw-a", "gw-b"):
                await start(Agent(agent_config(out, gw)))
            edges = [await start(Agent(agent_config(out, e))) for e in EDGES]
            await cloud.link.wait_connected()
            await asyncio.to_thread(
                apply_as, out / "operators" / "alice" / "config.yaml", parsed.definition, key
            )
            for seed, (name, gw) in enumerate(DEVICES.items(), start=11):
                stack.enter_context(device(out, name, port_of[gw], drift_file, seed))

            def version_on_edges() -> str:
                active = [a.models.active(ION, "model") for a in edges]
                versions = {m.version for m in active if m is not None}
                return versions.pop() if len(versions) == 1 and None not in active else ""

            # Trained on cloud-1, tried on edge-a1 (behind gw-a) first; its verdict crosses
            # both gateways and edge-b1 (behind gw-b) activates the model too.
            version: str = await async_wait_until(version_on_edges, 240)
            # Both edges score their own devices' readings against it, with low drift, and
            # their samples reach the recorder on the cloud.
            await async_wait_until(
                lambda: all(len(watch.scores(e, version)) >= 2 for e in EDGES), 90
            )
            assert set(fresh.values()) <= feed.seen
            assert verdict in feed.seen
            before = {e: watch.scores(e, version)[-1] for e in EDGES}
            assert all(s < 0.25 for s in before.values()), before
            assert not watch.of_type("trigger.fired")

            # Wear sets in at every device: both edges see drift; the retrain trigger, fed by
            # their health reports through the gateways, fires on cloud-1.
            drift_file.write_text("1")
            [fired] = await async_wait_until(lambda: watch.of_type("trigger.fired"), 120)
            assert fired.attributes["nodes"] == "edge-a1,edge-b1"
            after = {e: max(watch.scores(e, version)) for e in EDGES}
            assert all(after[e] > 0.25 and after[e] > 2 * before[e] for e in EDGES), after
            print(f"drift before {before}, after {after}")
    # Nothing any part of the system tried was refused: the ACLs are complete for this ION.
    for b in inv.brokers:
        assert refused_publishes(out / "brokers" / b.id) == [], b.id
