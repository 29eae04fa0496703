"""``ion deploy`` from the command line: bundles, certificates kept across runs, refusals; and
``ion apply`` with the generated operator identity against a generated broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.x509.oid import NameOID
from test_deploy_support import GeneratedBroker, free_ports

from ion.cli.main import cli

ROOT = Path(__file__).parents[1]
KMEANS = ROOT / "examples" / "kmeans" / "ion.yaml"
EXAMPLE = ROOT / "deploy" / "examples" / "three-tier" / "inventory.yaml"


def deploy(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["deploy", *map(str, args)])
    return result.exit_code, result.output


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_deploy_writes_a_bundle_per_machine(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, output = deploy(KMEANS, EXAMPLE, "--out", out)
    assert code == 0, output
    assert "16 issued, 0 kept" in output
    for bundle in ("brokers/cloud", "brokers/gw-north", "nodes/edge-3", "nodes/gw-south",
                   "operators/alice", "monitors/monitor-1"):  # fmt: skip
        assert (out / bundle / "README.md").exists(), bundle
        assert (out / bundle / "ca.crt").read_bytes() == (out / "ca" / "ca.crt").read_bytes()
    ca = cert(out / "ca" / "ca.crt")
    server = cert(out / "brokers" / "cloud" / "server.crt")
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(map(str, san.get_values_for_type(x509.DNSName))) == {"mqtt.example.com"}
    assert {str(a) for a in san.get_values_for_type(x509.IPAddress)} == {"10.0.0.10"}
    node = cert(out / "nodes" / "edge-3" / "client.crt")
    node.verify_directly_issued_by(ca)
    assert node.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "edge-3"
    keys = list(out.glob("*/*/*.key"))
    assert len(keys) == 16 and all(k.stat().st_mode & 0o777 == 0o600 for k in keys)
    assert not [k for k in keys if k.name == "ca.key"]  # the CA key is in no bundle
    assert (out / "nodes" / "edge-1" / "ion-node.service").read_text() == (
        ROOT / "deploy" / "systemd" / "ion-node.service"
    ).read_text()


def test_a_rerun_keeps_what_is_still_right(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert deploy(KMEANS, EXAMPLE, "--out", out)[0] == 0
    before = {p: p.read_bytes() for p in out.glob("*/*/*.crt")}
    code, output = deploy(KMEANS, EXAMPLE, "--out", out)
    assert code == 0 and "0 issued, 16 kept" in output, output
    assert before == {p: p.read_bytes() for p in out.glob("*/*/*.crt")}
    # A broker gets a new address: only its certificate changes.
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(EXAMPLE.read_text().replace("[10.0.0.10]", "[10.0.0.10, 10.0.0.11]"))
    code, output = deploy(KMEANS, inventory, "--out", out)
    assert code == 0 and "1 issued, 15 kept" in output, output
    changed = {p for p, data in before.items() if p.read_bytes() != data}
    assert changed == {out / "brokers" / "cloud" / "server.crt"}
    # A machine leaves the inventory: its bundle is reported, not deleted.
    fewer = tmp_path / "fewer.yaml"
    fewer.write_text(inventory.read_text().replace(
        "  - {id: edge-4, layer: edge, parent: gw-south, host: 192.168.20.12,\n"
        "     labels: {tier: edge, site: south}}\n", ""))  # fmt: skip
    assert fewer.read_text() != inventory.read_text()
    code, output = deploy(KMEANS, fewer, "--out", out)
    assert code == 0 and "nodes/edge-4 is no longer in the inventory" in output, output
    assert (out / "nodes" / "edge-4" / "node.yaml").exists()
    # --force issues everything again, with the same CA.
    ca = (out / "ca" / "ca.crt").read_bytes()
    code, output = deploy(KMEANS, inventory, "--out", out, "--force")
    assert code == 0 and "16 issued, 0 kept" in output, output
    assert (out / "ca" / "ca.crt").read_bytes() == ca


def test_a_separate_ca_dir_is_created_once_and_reused(tmp_path: Path) -> None:
    ca_dir = tmp_path / "offline-ca"
    assert deploy(KMEANS, EXAMPLE, "--out", tmp_path / "a", "--ca-dir", ca_dir)[0] == 0
    assert not (tmp_path / "a" / "ca").exists()
    code, output = deploy(KMEANS, EXAMPLE, "--out", tmp_path / "b", "--ca-dir", ca_dir)
    assert code == 0 and "CA reused" in output
    (ca_dir / "ca.key").write_text("garbage")
    code, output = deploy(KMEANS, EXAMPLE, "--out", tmp_path / "c", "--ca-dir", ca_dir)
    assert code == 2 and "cannot load the CA" in output


def test_refusals(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_text("x")
    code, output = deploy(KMEANS, EXAMPLE, "--out", other)
    assert code == 2 and "not written by ion deploy" in output
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("parent: gw-north", "parent: gw-west"))
    code, output = deploy(KMEANS, bad, "--out", tmp_path / "o")
    assert code == 2 and "parent 'gw-west' is not a node" in output
    # The ION's canary node is not in this inventory: a placement error, nothing written.
    renamed = tmp_path / "renamed.yaml"
    renamed.write_text(EXAMPLE.read_text().replace("id: edge-1,", "id: edge-9,"))
    code, output = deploy(KMEANS, renamed, "--out", tmp_path / "p")
    assert code == 2 and "edge-1" in output and not (tmp_path / "p").exists()
    code, output = deploy(KMEANS, EXAMPLE, "--out", tmp_path / "q", "--trust-key", "nonsense")
    assert code == 2 and "--trust-key" in output


LOOPBACK = """
brokers: [{{id: cloud, host: 127.0.0.1, port: {port}}}]
nodes:
  - {{id: cloud-1, layer: cloud, labels: {{tier: cloud}}}}
  - {{id: edge-1, layer: edge, labels: {{tier: edge}}}}
  - {{id: edge-2, layer: edge, labels: {{tier: edge}}}}
operators: [{{id: alice}}]
"""


@pytest.mark.integration
def test_ion_apply_with_the_operator_identity(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(LOOPBACK.format(port=port))
    out = tmp_path / "out"
    code, output = deploy(KMEANS, inventory, "--out", out, "--local", "--listen", "127.0.0.1")
    assert code == 0, output
    # A node's identity in a CLI config: the broker drops what it may not publish.
    node_config = tmp_path / "as-node.yaml"
    node_config.write_text(
        (out / "operators" / "alice" / "config.yaml").read_text()
        .replace("operators/alice", "nodes/cloud-1").replace("operator: alice", "operator: x")
    )  # fmt: skip
    runner = CliRunner()
    broker = GeneratedBroker(out / "brokers" / "cloud", port)
    try:
        alice = ["--config", str(out / "operators" / "alice" / "config.yaml")]
        result = runner.invoke(cli, ["apply", str(KMEANS), *alice])
        assert result.exit_code == 0, result.output
        assert "version 1" in result.output
        runner.invoke(cli, ["apply", str(KMEANS), "--force", "--config", str(node_config)])
        listed = runner.invoke(cli, ["list", "--json", *alice])
        assert listed.exit_code == 0, listed.output
        rows = json.loads(listed.output[listed.output.index("[") :])
        assert [(r["name"], r["version"]) for r in rows] == [("kmeans-anomaly", 1)], rows
    finally:
        broker.stop()
