"""Deploy inventories: brokers, operators and monitors, and a clear error for each bad one."""

from __future__ import annotations

from pathlib import Path

import pytest

from ion.validate.inventory import InvalidInventoryError, load_inventory, load_inventory_file

EXAMPLE = Path(__file__).parents[1] / "deploy" / "examples" / "three-tier" / "inventory.yaml"

BASE = """
brokers:
  - {id: cloud, host: mqtt.example.com}
  - {id: gw-1, host: gw-1.lan, port: 1884, addresses: [10.0.0.2], gateway: gw-1}
nodes:
  - {id: cloud-1, layer: cloud}
  - {id: gw-1, layer: gateway, parent: cloud-1}
  - {id: edge-1, layer: edge, parent: gw-1, host: 10.0.0.11}
  - {id: edge-2, layer: edge, parent: edge-1}
  - {id: edge-9, layer: edge}
operators: [{id: alice}]
monitors: [{id: mon-1, commands: [ion]}]
"""


def test_the_topology_of_a_deploy_inventory() -> None:
    inv = load_inventory(BASE)
    cloud, gw = inv.broker("cloud"), inv.broker("gw-1")
    assert cloud is not None and gw is not None
    assert cloud.port == 8883 and gw.port == 1884 and gw.names == ("gw-1.lan", "10.0.0.2")
    assert inv.root_broker() == cloud
    assert inv.broker_of("cloud-1") == cloud
    assert inv.broker_of("gw-1") == gw  # a gateway talks to its own local broker
    assert inv.upstream_of("gw-1") == cloud
    assert inv.broker_of("edge-1") == gw
    assert inv.broker_of("edge-2") == gw  # behind a non-gateway: its parent's broker
    assert inv.broker_of("edge-9") == cloud  # no parent: the root broker
    assert inv.subtree("gw-1") == {"gw-1", "edge-1", "edge-2"}
    assert inv.monitors[0].commands == ("ion",)
    assert inv.client("alice") is not None


def test_the_example_inventory_loads() -> None:
    inv = load_inventory_file(EXAMPLE)
    assert len(inv.brokers) == 3 and len(inv.nodes) == 7
    assert {n.id for n in inv.nodes if inv.broker_of(n.id) == inv.broker("gw-north")} == {
        "gw-north", "edge-1", "edge-2",
    }  # fmt: skip


def test_a_nodes_only_inventory_still_loads_as_before() -> None:
    inv = load_inventory("nodes:\n  - {id: a, layer: whatever}\n  - {id: b, parent: a}\n")
    assert inv.ids() == ("a", "b") and not inv.brokers


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        ("parent: gw-1, host", "parent: gw-9, host", "parent 'gw-9' is not a node"),
        (
            "{id: cloud-1, layer: cloud}",
            "{id: cloud-1, layer: cloud, parent: edge-2}",
            "parents form a loop",
        ),
        (
            "{id: edge-2, layer: edge, parent: edge-1}",
            "{id: edge-1, layer: edge}",
            "duplicate node id 'edge-1'",
        ),
        ("{id: gw-1, host: gw-1.lan", "{id: cloud, host: gw-1.lan", "duplicate broker id"),
        ("  - {id: cloud, host: mqtt.example.com}\n", "", "edge node 'edge-9' reaches no broker"),
        (", gateway: gw-1}", "}", "gateway 'gw-1' has no local broker"),
        (", gateway: gw-1}", ", gateway: edge-1}", "'edge-1' is not a gateway node"),
        (
            "{id: mon-1, commands: [ion]}",
            "{id: mon-1, commands: [delete]}",
            "unknown command kind 'delete'",
        ),
        ("[{id: alice}]", "[{id: edge-1}]", "'edge-1' is already used by nodes[edge-1]"),
        ("{id: cloud-1, layer: cloud}", "{id: cloud-1, layer: fog}", "layer must be one of"),
        ("{id: alice}", "{id: alice, broker: nowhere}", "broker 'nowhere' is not in brokers"),
        ("port: 1884", "port: 70000", "port must be between 1 and 65535"),
        ("{id: cloud, host: mqtt.example.com}", "{id: cloud}", "missing required key 'host'"),
    ],
)
def test_bad_inventories_are_refused_clearly(old: str, new: str, fragment: str) -> None:
    text = BASE.replace(old, new)
    assert text != BASE
    with pytest.raises(InvalidInventoryError) as err:
        load_inventory(text, "inv.yaml")
    assert any(fragment in p.message for p in err.value.problems), err.value
    assert "inv.yaml" in str(err.value)
