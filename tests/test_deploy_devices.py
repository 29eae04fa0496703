"""Devices in the inventory (identities, ACLs, bundles), canary verdicts across gateways and
the rights a trigger's target needs: the deploy plan without a network."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_deploy_plan import can
from test_deploy_support import three_tier_yaml

from broker.deploy.plan import DeployError, DeployOptions, make_plan
from broker.deploy.relayplan import bridge_topics
from ion import topics
from ion.authoring import parse_ion
from ion.model.definition import IonDefinition
from ion.topics import Channel, filters_overlap
from ion.validate.inventory import InvalidInventoryError, load_inventory


def kmeans_like(
    source: str = "sensors/+/readings", canary_nodes: tuple[str, ...] = ("edge-a1",)
) -> IonDefinition:
    """The KMeans example's shape: training on cloud-1, inference (reading devices) on every
    edge node, a canary model edge, a drift trigger back to training."""
    canary = f"nodes: [{', '.join(canary_nodes)}]" if canary_nodes else "share: 0.5"
    text = f"""
apiVersion: ion/v1
kind: ION
metadata: {{name: km}}
pipelines:
  - {{name: training, engine: spark, role: training, mode: batch, placement: {{nodes: [cloud-1]}},
     components: [{{name: publish, type: model_publisher}}]}}
  - name: inference
    engine: python
    role: inference
    mode: streaming
    placement: {{labels: {{tier: edge}}}}
    components:
      - {{name: sensors, type: mqtt_source, args: {{topic: "{source}"}}}}
      - {{name: model, type: model_subscriber}}
      - {{name: score, type: kmeans_score, inputs: {{data: sensors.data, model: model.model}}}}
edges:
  - {{name: model, kind: model, from: training, to: [inference],
     policy: {{type: canary, canary: {{{canary}, hold: 1m}}}}}}
  - {{name: retrain, kind: trigger, from: inference, to: [training],
     trigger: {{metric: drift, above: 0.25}}}}
"""
    parsed = parse_ion(text, "km.yaml")
    assert parsed.definition is not None, parsed.problems
    return parsed.definition


BASE = three_tier_yaml([8883, 8884, 8885])
DEVICES = "devices:\n  - {id: dev-a1, broker: gw-a}\n  - {id: dev-b1, broker: gw-b}\n"
INV = load_inventory(BASE + DEVICES)


def test_devices_load_with_their_topic_and_broker() -> None:
    [a, _] = INV.devices
    assert (a.id, a.broker, a.topic) == ("dev-a1", "gw-a", "sensors/dev-a1/readings")
    other = load_inventory(BASE + "devices: [{id: d1, topic: 'ion/v1/devices/{id}/data/t'}]")
    assert other.devices[0].topic == "ion/v1/devices/d1/data/t"
    assert other.broker_of_device(other.devices[0]) == other.root_broker()


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("{id: edge-a1}", "already used"),
        ("{id: alice}", "already used"),
        ("{id: d1, broker: nowhere}", "is not in brokers"),
        ("{id: d1, topic: 'sensors/+/readings'}", "one concrete topic"),
        ("{id: d1, topic: '$SYS/x'}", "one concrete topic"),
        ("{id: d1, topic: 'ion/v1/nodes/{id}/status'}", "not under ion/v1/devices/d1/"),
        ("{id: d1, colour: red}", "colour"),
        ("{id: BAD}", "does not match"),
    ],
)
def test_bad_devices_are_refused_with_their_place(entry: str, expected: str) -> None:
    with pytest.raises(InvalidInventoryError, match=expected) as info:
        load_inventory(BASE + f"devices: [{entry}]\n")
    assert all(p.location.startswith("devices") for p in info.value.problems)


def test_two_devices_cannot_share_a_topic_and_devices_need_brokers() -> None:
    shared = "devices: [{id: d1, topic: t/x}, {id: d2, topic: t/x}]\n"
    with pytest.raises(InvalidInventoryError, match="already used by devices"):
        load_inventory(BASE + shared)
    with pytest.raises(InvalidInventoryError, match="devices need brokers"):
        load_inventory("nodes: [{id: n1}]\ndevices: [{id: d1}]\n")


def test_a_device_writes_its_topic_only_and_the_nodes_of_its_site_read_it() -> None:
    plan = make_plan([kmeans_like()], INV, DeployOptions())
    dev = plan.acls["gw-a"].rules_of("dev-a1")
    assert can(dev, "write", "sensors/dev-a1/readings")
    assert not can(dev, "write", "sensors/dev-b1/readings")
    assert not can(dev, "read", "sensors/dev-a1/readings")
    # No node's rights by its name: a device cannot pass itself off as a node "dev-a1".
    assert not can(dev, "write", topics.node_status("dev-a1"))
    assert not can(dev, "read", topics.node_command("dev-a1"))
    assert can(plan.acls["gw-a"].rules_of("edge-a1"), "write", topics.node_status("edge-a1"))
    assert not any(u.identity == "dev-a1" for u in plan.acls["gw-b"].users)
    assert not any(u.identity == "dev-a1" for u in plan.acls["cloud"].users)
    # The inference pipeline's device source: its nodes read it on their own broker only,
    # and the gateway gets no right on it (devices are not relayed).
    assert can(plan.acls["gw-a"].rules_of("edge-a1"), "read", "sensors/dev-a1/readings")
    assert not can(plan.acls["gw-a"].rules_of("gw-a"), "write", "sensors/dev-a1/readings")
    assert not can(plan.acls["cloud"].rules_of("gw-a"), "read", "sensors/dev-a1/readings")
    assert not can(plan.acls["cloud"].rules_of("cloud-1"), "read", "sensors/dev-a1/readings")


def test_device_bundles_carry_a_certificate_or_a_password(tmp_path: Path) -> None:
    plan = make_plan([kmeans_like()], INV, DeployOptions())
    assert any(c.bundle == "devices/dev-a1" and c.common_name == "dev-a1" for c in plan.certs)
    assert "devices/dev-a1" in plan.ca_copies
    assert "sensors/dev-a1/readings" in plan.files["devices/dev-a1/README.md"]
    assert "dev-a1 (device)" in plan.files["README.md"]
    pw = make_plan([kmeans_like()], INV, DeployOptions(auth="password"))
    assert "devices/dev-a1/password" in pw.secrets
    assert "dev-a1" in pw.passwords["brokers/gw-a"]


def test_a_device_source_may_not_read_the_systems_own_topics() -> None:
    for bad in ("#", "ion/v1/#", "+/v1/nodes/+/cmd"):
        with pytest.raises(DeployError, match="a device source may not read"):
            make_plan([kmeans_like(source=bad)], INV, DeployOptions())
    make_plan([kmeans_like(source="ion/v1/devices/+/data/t")], INV, DeployOptions())


def test_canary_verdicts_cross_the_gateways_one_way_each() -> None:
    plan = make_plan([kmeans_like()], INV, DeployOptions())
    verdict = topics.model_canary("km", "model", "edge-a1")
    assert verdict in plan.relays["gw-a"].extra_up
    assert verdict in plan.relays["gw-b"].extra_down
    for relay in plan.relays.values():
        assert not any(filters_overlap(u, d) for u in relay.up for d in relay.down)
    bridged = make_plan([kmeans_like()], INV, DeployOptions(bridges=True))
    directions = {
        t.direction for t in bridge_topics(bridged.relays["gw-b"], INV) if t.pattern == verdict
    }
    assert directions == {"in"}
    # With a share, any consumer may be a canary: each verdict goes its own way.
    shared = make_plan([kmeans_like(canary_nodes=())], INV, DeployOptions())
    assert topics.model_canary("km", "model", "edge-b1") in shared.relays["gw-b"].extra_up
    assert topics.model_canary("km", "model", "edge-b1") in shared.relays["gw-a"].extra_down


def test_a_trigger_target_reads_the_source_pipelines_health_and_node_status() -> None:
    plan = make_plan([kmeans_like()], INV, DeployOptions())
    cloud = plan.acls["cloud"].rules_of("cloud-1")
    health = topics.pipeline("km", "inference", Channel.HEALTH, "edge-a1")
    assert can(cloud, "read", health)
    assert can(cloud, "read", topics.node_status("edge-b1"))
    assert not can(cloud, "read", topics.pipeline("km", "inference", Channel.STATS, "edge-a1"))
    # The edge nodes only write that telemetry.
    assert not can(plan.acls["gw-a"].rules_of("edge-a1"), "read", health)
