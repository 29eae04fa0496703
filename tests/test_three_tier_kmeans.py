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
from pathlib import Path
from typing import Any

import pytest
from kmeans_support import Watcher, devices, kmeans_ion_yaml, seed_data
from support import async_wait_until
from test_deploy_support import Client, brokers, deploy_local, free_ports, refused_publishes
from test_deploy_support import three_tier_yaml as base_inventory
from test_three_tier import agent_config, apply_as

from ion import topics
from ion.authoring import parse_ion
from ion.security.keys import SigningKey
from ion.topics import Channel
from ion.validate.inventory import Inventory, load_inventory
from node.agent.service import Agent

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.asyncio]

ION = "kmeans-3t"
THRESHOLD = 0.2
EDGES = ("edge-a1", "edge-b1")
# Three devices behind each gateway: fewer make an edge's live histograms noisy enough to look
# drifted when nothing changed (each device stays in one operating mode for a while).
DEVICES = {f"dev-{gw}{i}": f"gw-{gw}" for gw in "ab" for i in (1, 2, 3)}

# The self-retraining loop (as in test_kmeans_retrain); the canary holds for seconds only.
ION_YAML = kmeans_ion_yaml(
    ION,
    policy="{type: canary, canary: {nodes: [edge-a1], hold: 3s, max_drift: 0.5}}",
    threshold=THRESHOLD,
)


def three_tier_with_devices(ports: list[int]) -> Inventory:
    rows = [f"  - {{id: {d}, broker: {gw}}}" for d, gw in DEVICES.items()]
    return load_inventory(base_inventory(ports) + "devices:\n" + "\n".join(rows) + "\n")


class Feed:
    """A monitor's view of the cloud broker, shaped for kmeans_support's ``Watcher``."""

    def __init__(self, out: Path, port: int) -> None:
        self.messages: queue.Queue[Any] = queue.Queue()
        self.seen: set[str] = set()
        self.client = Client(out, "monitors/mon-1", port, client_id="mon-1-watch")
        self.client.client.on_message = lambda _c, _u, msg: self._got(msg)
        self.client.subscribe(topics.EVERYTHING)

    def _got(self, msg: Any) -> None:
        self.seen.add(msg.topic)
        self.messages.put(msg)


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
    seed_data(out / "nodes" / "cloud-1" / "data" / "work" / ION / "recorder", 1500, "window")
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
                stack.enter_context(
                    devices(
                        f"mqtts://127.0.0.1:{port_of[gw]}",
                        drift_file,
                        batch=4,
                        name=name,
                        seed=seed,
                        tls_dir=out / "devices" / name,
                        must_live=True,
                    )
                )

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
            # Risen clearly (a low PSI from few samples is noisy: 0.2 then 0.38 happens).
            assert all(after[e] > max(0.25, before[e] + 0.1) for e in EDGES), (before, after)
            print(f"drift before {before}, after {after}")
    # Nothing any part of the system tried was refused: the ACLs are complete for this ION.
    for b in inv.brokers:
        assert refused_publishes(out / "brokers" / b.id) == [], b.id
