"""Generated broker configs run as they are: TLS with client certificates, the ACLs from the
ION, password mode; each refusal observed on a real Mosquitto."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import wait_until
from test_deploy_support import (
    Client,
    brokers,
    deploy_local,
    flow_ion,
    free_ports,
    inventory,
    tls_connack,
)  # fmt: skip

from broker.deploy.pki import CertificateAuthority
from ion import topics

pytestmark = pytest.mark.integration


def test_a_node_cannot_publish_another_nodes_status_or_a_definition(tmp_path: Path) -> None:
    inv = inventory(free_ports(3))
    out = tmp_path / "out"
    deploy_local(out, [flow_ion()], inv)
    cloud = inv.broker("cloud")
    assert cloud is not None
    with brokers(out, inv):
        mon = Client(out, "monitors/mon-1", cloud.port, client_id="mon-1")
        node = Client(out, "nodes/cloud-1", cloud.port, client_id="cloud-1")
        try:
            mon.subscribe(topics.EVERYTHING)
            # Refused: another node's status, a definition, a command, a model decision.
            forbidden = [
                topics.node_status("gw-a"),
                topics.definition("flow"),
                topics.node_command("edge-a1"),
                topics.model_decision("flow", "model", "v1"),
                topics.edge("flow", "readings", topics.Channel.DATA, "cloud-1"),
            ]
            for t in forbidden:
                node.publish(t, b"forged")
            # Allowed, and published after the forged ones: once it has arrived, anything
            # forwarded before it would have arrived too (one publisher, in order).
            node.publish(topics.node_status("cloud-1"), b"ok")
            node.publish(topics.model_manifest("flow", "model"), b"ok")
            wait_until(lambda: topics.model_manifest("flow", "model") in mon.topics(), 10)
            got = mon.topics()
            assert topics.node_status("cloud-1") in got
            assert not set(forbidden) & set(got), got
        finally:
            node.close()
            mon.close()


def test_operators_may_publish_definitions_and_commands(tmp_path: Path) -> None:
    inv = inventory(free_ports(3))
    out = tmp_path / "out"
    deploy_local(out, [flow_ion()], inv)
    cloud = inv.broker("cloud")
    assert cloud is not None
    with brokers(out, inv):
        node = Client(out, "nodes/cloud-1", cloud.port, client_id="cloud-1")
        op = Client(out, "operators/alice", cloud.port, client_id="alice-cli")
        try:
            node.subscribe(topics.ALL_DEFINITIONS)
            node.subscribe(topics.node_command("cloud-1"))
            node.subscribe(topics.node_status("gw-a"))  # not readable: never delivered
            op.publish(topics.definition("flow"), b"def", retain=True)
            op.publish(topics.node_command("cloud-1"), b"cmd")
            wait_until(lambda: len(node.topics()) >= 2, 10)
            assert set(node.topics()) == {topics.definition("flow"), topics.node_command("cloud-1")}
        finally:
            node.close()
            op.close()


def test_no_certificate_or_another_cas_certificate_is_refused(tmp_path: Path) -> None:
    import datetime as dt

    inv = inventory(free_ports(3))
    out = tmp_path / "out"
    deploy_local(out, [flow_ion()], inv)
    # An identity with the right name from another CA.
    rogue, _ = CertificateAuthority.load_or_create(
        tmp_path / "rogue-ca", now=dt.datetime.now(dt.UTC)
    )
    forged = rogue.issue("alice", now=dt.datetime.now(dt.UTC))
    fake = tmp_path / "fake" / "operators" / "alice"
    fake.mkdir(parents=True)
    (fake / "client.crt").write_bytes(forged.cert_pem)
    (fake / "client.key").write_bytes(forged.key_pem)
    cloud = inv.broker("cloud")
    assert cloud is not None
    ca = out / "operators" / "alice" / "ca.crt"
    alice = out / "operators" / "alice"
    with brokers(out, inv):
        assert tls_connack(cloud.port, ca) is None
        assert tls_connack(cloud.port, ca, fake / "client.crt", fake / "client.key") is None
        # The real identity is accepted (CONNACK 0), through the same code path.
        assert tls_connack(cloud.port, ca, alice / "client.crt", alice / "client.key") == 0


def test_password_mode(tmp_path: Path) -> None:
    inv = inventory(free_ports(3))
    out = tmp_path / "out"
    plan = deploy_local(out, [flow_ion()], inv, auth="password")
    assert not list(out.glob("*/*/client.crt"))
    passwd = (out / "brokers" / "cloud" / "passwd").read_text()
    assert (
        passwd.startswith("alice:$7$101$")
        and (out / "brokers/cloud/passwd").stat().st_mode & 0o777 == 0o600
    )
    assert set(plan.passwords["brokers/cloud"]) == {line.split(":")[0] for line in passwd.split()}
    cloud = inv.broker("cloud")
    assert cloud is not None
    secret = (out / "operators" / "alice" / "password").read_text().strip()
    with brokers(out, inv):
        with pytest.raises(ConnectionError, match=r"Not authorized|Bad user name"):
            Client(out, "operators/alice", cloud.port, client_id="a1", password=secret + "x")
        alice = Client(out, "operators/alice", cloud.port, client_id="a2", password=secret)
        node_pw = (out / "nodes" / "cloud-1" / "password").read_text().strip()
        node = Client(out, "nodes/cloud-1", cloud.port, client_id="n1", password=node_pw)
        try:
            alice.subscribe(topics.EVERYTHING)
            node.publish(topics.definition("flow"), b"forged")  # refused by the ACL
            node.publish(topics.node_status("cloud-1"), b"ok")
            wait_until(alice.topics, 10)
            assert alice.topics() == [topics.node_status("cloud-1")]
        finally:
            node.close()
            alice.close()
    # A second run keeps every password.
    deploy_local(out, [flow_ion()], inv, auth="password")
    assert (out / "operators" / "alice" / "password").read_text().strip() == secret
