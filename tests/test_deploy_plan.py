"""The deploy plan without a network: ACLs from the ION's placement, relay and bridge lists,
broker configs."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_deploy_support import flow_ion, inventory

from broker.deploy.acl import Rule
from broker.deploy.plan import DeployError, DeployOptions, make_plan
from broker.deploy.relayplan import bridge_topics
from ion import topics
from ion.model.definition import EdgeKind, Endpoint, Placement
from ion.topics import Channel, filters_overlap
from ion.validate.inventory import InventoryClient

INV = inventory([8883, 8884, 8885])
READINGS = "readings"


def rules(identity: str, broker: str, *, bridges: bool = False, ion=None) -> frozenset[Rule]:  # type: ignore[no-untyped-def]
    plan = make_plan([ion or flow_ion()], INV, DeployOptions(bridges=bridges))
    return plan.acls[broker].rules_of(identity)


def can(rs: frozenset[Rule], access: str, topic: str) -> bool:
    """Whether ``rs`` lets ``topic`` be read or written (wildcards matched as Mosquitto does)."""
    return any(
        r.access in (access, "readwrite") and filters_overlap(topic, r.topic) and (
            ("+" not in topic and "#" not in topic) or r.topic == topic
        )
        for r in rs
    )  # fmt: skip


def test_an_edge_node_writes_only_its_own_topics() -> None:
    rs = rules("edge-a1", "gw-a")
    assert can(rs, "write", topics.edge("flow", READINGS, Channel.DATA, "edge-a1"))
    assert can(rs, "write", topics.node_status("edge-a1"))
    assert can(rs, "write", topics.model_requests("flow", "model"))
    assert can(rs, "write", topics.model_canary("flow", "model", "edge-a1"))
    for t in (
        topics.edge("flow", READINGS, Channel.DATA, "edge-b1"),
        topics.node_status("edge-b1"),
        topics.definition("flow"),
        topics.ion_command("flow"),
        topics.node_command("edge-a1"),
        topics.model_manifest("flow", "model"),
        topics.model_canary("flow", "model", "edge-b1"),
        topics.model_decision("flow", "model", "v2"),
    ):
        assert not can(rs, "write", t), t


def test_an_edge_node_reads_definitions_its_commands_and_what_it_consumes() -> None:
    rs = rules("edge-a1", "gw-a")
    for t in (
        topics.definition("flow"),
        topics.definition("another"),
        topics.ion_command("flow"),
        topics.node_command("edge-a1"),
        topics.model_manifest("flow", "model"),
        topics.model_chunks("flow", "model", "a" * 64),
    ):
        assert can(rs, "read", t), t
    for t in (
        topics.node_command("edge-b1"),
        topics.ion_command("another"),
        topics.edge("flow", READINGS, Channel.DATA, "edge-b1"),  # it produces, not consumes
        topics.node_status("edge-b1"),
    ):
        assert not can(rs, "read", t), t


def test_the_cloud_node_consumes_readings_and_produces_the_model() -> None:
    rs = rules("cloud-1", "cloud")
    assert can(rs, "read", topics.edge("flow", READINGS, Channel.DATA, "edge-b1"))
    assert can(rs, "write", topics.model_manifest("flow", "model"))
    assert can(rs, "write", topics.model_chunks("flow", "model", "b" * 64))
    assert can(rs, "read", topics.model_requests("flow", "model"))
    assert not can(rs, "write", topics.definition("flow"))


def test_a_gateway_speaks_upstream_for_the_nodes_behind_it_only() -> None:
    up = rules("gw-a", "cloud")
    assert can(up, "write", topics.node_status("edge-a1"))
    assert can(up, "write", topics.edge("flow", READINGS, Channel.DATA, "edge-a1"))
    assert can(up, "read", topics.node_command("edge-a1"))
    assert not can(up, "write", topics.node_status("edge-b1"))
    assert not can(up, "write", topics.edge("flow", READINGS, Channel.DATA, "edge-b1"))
    assert not can(up, "read", topics.node_command("edge-b1"))
    assert not can(up, "write", topics.definition("flow"))
    local = rules("gw-a", "gw-a")  # the mirror image below it: what its relay forwards
    assert can(local, "write", topics.definition("flow"))
    assert can(local, "read", topics.edge("flow", READINGS, Channel.DATA, "edge-a1"))
    assert can(local, "write", topics.model_chunks("flow", "model", "c" * 64))
    # With bridges the gateway's agent is an ordinary node on its own broker.
    bridged = rules("gw-a", "gw-a", bridges=True)
    assert not can(bridged, "write", topics.definition("flow"))
    assert rules("gw-a", "cloud", bridges=True) == up


def test_operators_and_monitors() -> None:
    op = rules("alice", "cloud")
    for t in (
        topics.definition("anything"),
        topics.ion_command("flow"),
        topics.node_command("edge-b1"),
        topics.model_decision("flow", "model", "v3"),
    ):
        assert can(op, "write", t), t
    assert can(op, "read", topics.node_status("edge-b1"))
    assert not can(op, "write", topics.node_status("edge-b1"))
    mon = rules("mon-1", "cloud")
    assert can(mon, "read", topics.edge("flow", READINGS, Channel.DATA, "edge-b1"))
    assert can(mon, "write", topics.monitor_alerts("mon-1"))
    assert can(mon, "write", topics.node_command("edge-b1"))  # commands: [node]
    assert not can(mon, "write", topics.ion_command("flow"))
    assert not can(mon, "write", topics.definition("flow"))
    assert not can(mon, "write", topics.monitor_alerts("mon-2"))
    chunks = topics.model_chunks("flow", "model", "c" * 64)
    assert not can(mon, "write", chunks)  # no `models` in its commands
    serving = replace(INV, monitors=(InventoryClient("mon-2", "", ("models",)),))
    served = make_plan([flow_ion()], serving).acls["cloud"].rules_of("mon-2")
    assert can(served, "write", chunks)
    assert not can(served, "write", topics.model_manifest("flow", "model"))
    # Neither connects to a gateway's broker.
    gw_users = {u.identity for u in make_plan([flow_ion()], INV).acls["gw-a"].users}
    assert gw_users == {"gw-a", "edge-a1"}


def test_changing_placement_takes_the_old_permission_away() -> None:
    before = flow_ion()
    sensor = before.pipeline("sensor")
    assert sensor is not None
    moved = replace(sensor, placement=Placement(nodes=("edge-a1",)))
    after = replace(before, pipelines=tuple(moved if p.name == "sensor" else p
                                            for p in before.pipelines))  # fmt: skip
    old = topics.edge("flow", READINGS, Channel.DATA, "edge-b1")
    assert can(rules("edge-b1", "gw-b", ion=before), "write", old)
    assert not can(rules("edge-b1", "gw-b", ion=after), "write", old)
    assert not can(rules("gw-b", "cloud", ion=after), "write", old)
    text = make_plan([after], INV).files["brokers/gw-b/acl"]
    assert old not in text
    assert topics.model_filter("flow", "model") not in text.split("user edge-b1")[1]


def test_every_acl_topic_comes_from_the_topic_map() -> None:
    plan = make_plan([flow_ion()], INV)
    for acl in plan.acls.values():
        for u in acl.users:
            for r in u.rules:
                topics.parse(example_of(r.topic))
        for r in acl.patterns:
            topics.parse(r.topic.replace("%u", "x").replace("%c", "x"))


def example_of(topic_filter: str) -> str:
    """A concrete topic ``topic_filter`` matches."""
    parts = topic_filter.split("/")
    out: list[str] = []
    for i, p in enumerate(parts):
        if p == "+":
            out.append("0" * 64 if parts[i - 1] == "chunks" else "x")
        elif p == "#":
            out += ["manifest"] if parts[i - 1] == "model" else ["nodes", "x", "status"]
        else:
            out.append(p)
    return "/".join(out)


def test_bridge_topics_never_go_both_ways() -> None:
    plan = make_plan([flow_ion()], INV, DeployOptions(bridges=True))
    bt = bridge_topics(plan.relays["gw-a"], INV)
    ins = [t.pattern for t in bt if t.direction == "in"]
    outs = [t.pattern for t in bt if t.direction == "out"]
    assert not [(i, o) for i in ins for o in outs if filters_overlap(i, o)]
    assert topics.node_topic("edge-a1", topics.TopicKind.NODE_RETRANSMIT) in ins
    assert topics.node_topic("cloud-1", topics.TopicKind.NODE_RETRANSMIT) in outs
    conf = plan.files["brokers/gw-a/mosquitto.conf"]
    assert "connection ion-up-gw-a" in conf and "bridge_certfile" in conf
    assert "\nconnection " not in plan.files["brokers/cloud/mosquitto.conf"]


@pytest.mark.parametrize(
    ("source", "target", "kind", "fragment"),
    [
        ("sensor", "central", EdgeKind.MODEL, "a relay carries models down only"),
        ("central", "sensor", EdgeKind.EVENTS, "the relay sends all events the other way"),
    ],
)
def test_what_a_relay_cannot_carry_is_refused(
    source: str, target: str, kind: EdgeKind, fragment: str
) -> None:
    ion = flow_ion()
    edge = replace(ion.edges[1], name="odd", kind=kind, source=Endpoint(source),
                   targets=(Endpoint(target),))  # fmt: skip
    with pytest.raises(DeployError, match=fragment):
        make_plan([replace(ion, edges=(*ion.edges, edge))], INV)


def test_broker_configs_require_certificates_or_passwords() -> None:
    plan = make_plan([flow_ion()], INV)
    conf = plan.files["brokers/cloud/mosquitto.conf"]
    for line in (
        "allow_anonymous false",
        "require_certificate true",
        "use_identity_as_username true",
        "persistence true",
        "max_queued_messages 1000000",
        "listener 8883",
        "check_retain_source true",
    ):
        assert f"\n{line}\n" in conf, line
    assert "password_file" not in conf
    pw = make_plan([flow_ion()], INV, DeployOptions(auth="password"))
    conf = pw.files["brokers/cloud/mosquitto.conf"]
    assert "require_certificate false" in conf and "password_file " in conf
    assert "use_identity_as_username" not in conf
    assert pw.passwords["brokers/cloud"] == ("alice", "cloud-1", "gw-a", "gw-b", "mon-1")
    with pytest.raises(DeployError, match="needs certificate"):
        make_plan([flow_ion()], INV, DeployOptions(auth="password", bridges=True))


def test_node_configs_load_as_agent_configs() -> None:
    import yaml

    from node.config import config_from_mapping

    plan = make_plan([flow_ion()], INV, DeployOptions(trust_keys=()))
    gw = config_from_mapping(yaml.safe_load(plan.files["nodes/gw-a/node.yaml"]))
    assert gw.upstream is not None and gw.upstream.port == 8883 and gw.broker.port == 8884
    assert gw.relay is not None
    assert topics.edge("flow", READINGS, Channel.DATA, "edge-a1") in gw.relay.up
    edge = config_from_mapping(yaml.safe_load(plan.files["nodes/edge-b1/node.yaml"]))
    assert edge.broker.port == 8885 and edge.broker.tls is not None
    assert str(edge.broker.tls.cert_file) == "/etc/ion/client.crt"
    assert edge.upstream is None


def test_several_ions_add_up() -> None:
    other = replace(flow_ion("other"), edges=())
    plan = make_plan([flow_ion(), other], INV)
    rs = plan.acls["gw-a"].rules_of("edge-a1")
    assert can(rs, "read", topics.ion_command("flow"))
    assert can(rs, "read", topics.ion_command("other"))
    assert can(rs, "write", topics.pipeline("other", "sensor", Channel.STATS, "edge-a1"))
    assert not can(rs, "write", topics.pipeline("other", "central", Channel.STATS, "edge-a1"))
