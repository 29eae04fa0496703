"""``ion check``: the judgments alone, then the command against real Mosquitto brokers (plain,
TLS with a throw-away CA, with passwords), real agents and real outbox files."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from agent_support import node_config
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support import async_wait_until

from broker.settings import BrokerSettings
from broker.settings import TlsSettings as BrokerTls
from ion.model.messages import NodeState, NodeStatus
from ion.security.trust import TrustConfig
from node.agent.service import Agent
from node.check import (
    judge_certificate,
    judge_disk,
    judge_outbox,
    judge_skew,
    judge_status,
    judge_trust,
)
from node.check_probes import OutboxClassFacts, TlsFacts
from node.outbox.classes import TrafficClass
from node.outbox.policy import OutboundItem
from node.outbox.store import OutboxStore

ROOT = Path(__file__).resolve().parents[1]
NOW = 1_800_000_000_000


def ion(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ION_")}
    env["HOME"] = str(ROOT / ".no-home")  # no user config file leaks in
    return subprocess.run(
        [sys.executable, "-m", "ion.cli.main", *args],
        capture_output=True, text=True, timeout=timeout, env=env, check=False,
    )  # fmt: skip


def verdicts(r: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    data = json.loads(r.stdout)
    return {c["name"]: c for c in data["checks"]}


# -- pure judgments -------------------------------------------------------------------------


def status(node: str, state: NodeState = NodeState.ONLINE, hb: int = 1000) -> NodeStatus:
    return NodeStatus(node_id=node, state=state, heartbeat_interval_ms=hb)


def test_skew_ok_when_fresh_statuses_fit_their_heartbeat() -> None:
    r = judge_skew([(status("a"), NOW - 400), (status("b"), NOW - 900)], own_node=None,
                   now_ms=NOW, max_skew_s=2)  # fmt: skip
    assert r.verdict == "OK", r
    assert "2 live node(s)" in r.detail


def test_skew_from_the_future_means_this_clock_is_behind() -> None:
    r = judge_skew([(status("a"), NOW + 5_000)], own_node=None, now_ms=NOW, max_skew_s=2)
    assert r.verdict == "WARN" and "5.0s behind" in r.detail
    r = judge_skew([(status("a"), NOW + 120_000)], own_node=None, now_ms=NOW, max_skew_s=2)
    assert r.verdict == "FAIL" and r.hint


def test_skew_ahead_is_bounded_by_fresh_heartbeats_only() -> None:
    # 10 s heartbeats, statuses 25 s old: at least 15 s ahead.
    r = judge_skew([(status("a", hb=10_000), NOW - 25_000)], own_node=None, now_ms=NOW,
                   max_skew_s=2)  # fmt: skip
    assert r.verdict == "WARN" and "15.0s ahead" in r.detail
    # Older than three heartbeats: a silent node or a clock far ahead; never a FAIL.
    r = judge_skew([(status("a"), NOW - 60_000)], own_node=None, now_ms=NOW, max_skew_s=2)
    assert r.verdict == "SKIP" and "went silent" in r.detail


def test_skew_ignores_our_own_node_and_offline_nodes() -> None:
    pairs = [(status("me"), NOW + 50_000), (status("b", NodeState.OFFLINE), NOW + 50_000)]
    r = judge_skew(pairs, own_node="me", now_ms=NOW, max_skew_s=2)
    assert r.verdict == "SKIP"


def test_disk_thresholds() -> None:
    gib = 2**30
    assert judge_disk(Path("/d"), 50 * gib, 100 * gib, min_free_percent=10).verdict == "OK"
    assert judge_disk(Path("/d"), 15 * gib, 100 * gib, min_free_percent=10).verdict == "WARN"
    r = judge_disk(Path("/d"), 5 * gib, 100 * gib, min_free_percent=10)
    assert r.verdict == "FAIL" and "5.0%" in r.detail and r.hint


def test_outbox_judgment_by_age_and_fill() -> None:
    assert judge_outbox([], None, now_ms=NOW, max_age_s=600).verdict == "OK"
    fresh = OutboxClassFacts("events", 3, 300, 0, NOW - 2_000)
    assert judge_outbox([fresh], None, now_ms=NOW, max_age_s=600).verdict == "OK"
    aging = OutboxClassFacts("events", 3, 300, 0, NOW - 120_000)
    assert judge_outbox([aging], None, now_ms=NOW, max_age_s=600).verdict == "WARN"
    old = OutboxClassFacts("data", 3, 300, 0, NOW - 3_600_000)
    r = judge_outbox([fresh, old], None, now_ms=NOW, max_age_s=600)
    assert r.verdict == "FAIL" and "data 3 queued, oldest 60m" in r.detail


def test_certificate_expiry() -> None:
    facts = TlsFacts("TLSv1.3", "CN=b", "CN=ca", NOW / 1000 + 10 * 86400)
    assert judge_certificate(facts, now_s=NOW / 1000, warn_days=30).verdict == "WARN"
    assert judge_certificate(facts, now_s=NOW / 1000, warn_days=5).verdict == "OK"
    assert judge_certificate(facts, now_s=NOW / 1000 + 11 * 86400, warn_days=5).verdict == "FAIL"


def test_trust_and_status_judgments() -> None:
    assert judge_trust(TrustConfig()).verdict == "WARN"
    assert "development_mode" in judge_trust(TrustConfig(development_mode=True)).detail
    assert judge_status("n", None, age_s=None).verdict == "WARN"
    assert judge_status("n", status("n"), age_s=1.0).verdict == "OK"
    assert judge_status("n", status("n", NodeState.OFFLINE), age_s=1.0).verdict == "WARN"


# -- against real brokers -------------------------------------------------------------------


def write_node_config(path: Path, node: str, url: str, data_dir: Path, extra: str = "") -> Path:
    path.write_text(
        f"node: {{id: {node}}}\nbroker: {{url: '{url}'}}\ndata_dir: {data_dir}\n"
        f"trust: {{development_mode: true}}\n{extra}"
    )
    return path


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.integration
@pytest.mark.asyncio
async def test_healthy_node_and_broker_pass(fresh_mosquitto: Any, tmp_path: Path) -> None:
    url = fresh_mosquitto.url
    async with (
        Agent(node_config("edge-1", url, tmp_path)) as a,
        Agent(node_config("edge-2", url, tmp_path)) as b,
    ):
        await a.link.wait_connected()
        await b.link.wait_connected()
        await async_wait_until((tmp_path / "edge-1" / "agent.db").exists)
        cfg = write_node_config(tmp_path / "node.yaml", "edge-1", url, tmp_path / "edge-1")
        r = await asyncio.to_thread(ion, "check", "--node-config", str(cfg), "--json")
        plain = await asyncio.to_thread(ion, "check", "--node-config", str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    v = verdicts(r)
    for name in ("config", "tcp", "mqtt", "login", "pubsub", "status", "clock", "disk", "outbox"):
        assert v[name]["verdict"] == "OK", v[name]
    assert v["tls"]["verdict"] == "SKIP"  # plain mqtt:// on loopback
    assert v["trust"]["verdict"] == "WARN"  # development mode
    assert "edge-1 reported online" in v["status"]["detail"]
    assert "1 live node(s)" in v["clock"]["detail"]  # edge-2; never the node itself
    assert json.loads(r.stdout)["ok"] is True
    assert plain.returncode == 0, plain.stderr
    assert "  OK    tcp " in plain.stdout
    assert "fix: turn development_mode off" in plain.stdout


@pytest.mark.integration
def test_a_gateway_checks_its_upstream_broker_too(
    mosquitto: Any, tmp_path: Path, closed_port: int
) -> None:
    cfg = write_node_config(
        tmp_path / "gw.yaml", "gw-1", mosquitto.url, tmp_path / "gw-1",
        extra=f"upstream: {{url: 'mqtt://127.0.0.1:{closed_port}'}}\n",
    )  # fmt: skip
    r = ion("check", "--json", "--node-config", str(cfg))
    assert r.returncode == 1
    v = verdicts(r)
    assert v["tcp"]["verdict"] == v["login"]["verdict"] == "OK"  # the local broker
    assert v["upstream.tcp"]["verdict"] == "FAIL"
    assert str(closed_port) in v["upstream.tcp"]["detail"]
    assert v["upstream.pubsub"]["verdict"] == "SKIP"


@pytest.mark.integration
def test_unreachable_broker_fails_with_one_clear_line(closed_port: int) -> None:
    r = ion("check", "--broker", f"mqtt://127.0.0.1:{closed_port}")
    assert r.returncode == 1
    lines = [line for line in r.stdout.splitlines() if line.startswith("  FAIL")]
    refused = f"cannot connect to 127.0.0.1:{closed_port}: Connection refused"
    assert lines == [f"  FAIL  tcp     {refused}"]
    assert r.stdout.splitlines()[-1] == "1 FAIL, 5 SKIP"
    assert "fix: is the broker running" in r.stdout
    assert "Traceback" not in r.stderr


@pytest.mark.integration
def test_a_port_that_is_not_mqtt_fails_at_connack() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "ion.cli.main", "check", "--json", "--timeout", "2",
             "--broker", f"mqtt://127.0.0.1:{port}"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        conn, _ = server.accept()
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        out, _ = proc.communicate(timeout=30)
        conn.close()
    assert proc.returncode == 1
    v = {c["name"]: c for c in json.loads(out)["checks"]}
    assert v["tcp"]["verdict"] == "OK"
    assert v["mqtt"]["verdict"] == "FAIL"
    assert "not with an MQTT CONNACK" in v["mqtt"]["detail"]


@pytest.mark.integration
def test_wrong_password_fails_at_login(broker_factory: Any, tmp_path: Path) -> None:
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "u", "right"], check=True)
    broker = broker_factory(settings=BrokerSettings(allow_anonymous=False, password_file=pw))
    wrong = tmp_path / "wrong"
    wrong.write_text("wrong\n")
    r = ion("check", "--json", "--broker", f"mqtt://{broker.host}:{broker.port}",
            "--username", "u", "--password-file", str(wrong))  # fmt: skip
    assert r.returncode == 1
    v = verdicts(r)
    assert v["login"]["verdict"] == "FAIL"
    # Mosquitto answers a wrong password with "not authorised" (5), not 4.
    assert v["login"]["detail"].startswith("refused as 'u': ")
    assert "mosquitto_passwd" in v["login"]["hint"]
    assert v["pubsub"]["verdict"] == "SKIP"
    (tmp_path / "right").write_text("right\n")
    ok = ion("check", "--json", "--broker", f"mqtt://{broker.host}:{broker.port}",
             "--username", "u", "--password-file", str(tmp_path / "right"))  # fmt: skip
    assert ok.returncode == 0, ok.stdout
    assert verdicts(ok)["login"]["detail"] == "accepted as 'u'"


@pytest.mark.integration
def test_acl_denials_fail_pubsub(broker_factory: Any, tmp_path: Path) -> None:
    # Anonymous clients may use their probe topic but read no node's status.  Mosquitto
    # 2.0 grants the subscription anyway and filters at delivery, so the check can only say
    # that no status arrived, naming the ACL as one reason.
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite ion/v1/clients/#\n")
    broker = broker_factory(settings=BrokerSettings(acl_file=acl))
    cfg = write_node_config(tmp_path / "n.yaml", "edge-a", broker.url, tmp_path / "edge-a")
    r = ion("check", "--json", "--timeout", "3", "--node-config", str(cfg))
    v = verdicts(r)
    assert v["pubsub"]["verdict"] == "OK"
    assert v["status"]["verdict"] == "WARN"
    assert "the ACL must let it publish ion/v1/nodes/edge-a/status" in v["status"]["hint"]
    # Read-only everywhere: the broker acknowledges the probe and drops it.
    acl2 = tmp_path / "acl2"
    acl2.write_text("topic read ion/v1/#\n")
    ro = broker_factory(settings=BrokerSettings(acl_file=acl2))
    r = ion("check", "--json", "--timeout", "2", "--broker", ro.url)
    assert r.returncode == 1
    v = verdicts(r)
    assert v["login"]["verdict"] == "OK"
    assert v["pubsub"]["verdict"] == "FAIL"
    assert "did not echo our probe" in v["pubsub"]["detail"]
    assert "publish and subscribe ion/v1/clients/ion-check-" in v["pubsub"]["hint"]
    assert v["clock"]["verdict"] == "SKIP"


# -- TLS ------------------------------------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def make_ca(directory: Path, name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    _write(directory / name, cert, key)
    return cert, key


def make_server_cert(
    directory: Path, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], days: int
) -> None:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "broker")]))
        .issuer_name(ca[0].subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(ca[1], hashes.SHA256())
    )  # fmt: skip
    _write(directory / "server", cert, key)


@pytest.fixture
def tls_broker(broker_factory: Any, tmp_path: Path) -> Any:
    """A Mosquitto with a TLS listener whose certificate (ours, CA ``ca``) expires in 10 days;
    ``stranger`` is a CA that signed nothing."""
    pki = tmp_path / "pki"
    pki.mkdir()
    ca = make_ca(pki, "ca")
    make_ca(pki, "stranger")
    make_server_cert(pki, ca, days=10)
    tls = BrokerTls(certfile=pki / "server.crt", keyfile=pki / "server.key")
    broker = broker_factory(settings=BrokerSettings(tls=tls))
    broker.pki = pki
    return broker


@pytest.mark.integration
def test_tls_trusted_certificate_warns_of_expiry(tls_broker: Any) -> None:
    url = f"mqtts://127.0.0.1:{tls_broker.tls_port}"
    r = ion("check", "--json", "--broker", url, "--ca-file", str(tls_broker.pki / "ca.crt"))
    assert r.returncode == 0, r.stdout + r.stderr
    v = verdicts(r)
    assert v["tls"]["verdict"] == "WARN", v["tls"]
    assert "CN=broker by CN=ca" in v["tls"]["detail"]
    assert "in 10 day(s)" in v["tls"]["detail"] or "in 9 day(s)" in v["tls"]["detail"]
    assert v["login"]["verdict"] == v["pubsub"]["verdict"] == "OK"
    r = ion("check", "--json", "--broker", url, "--ca-file", str(tls_broker.pki / "ca.crt"),
            "--cert-warn-days", "5")  # fmt: skip
    assert verdicts(r)["tls"]["verdict"] == "OK"


@pytest.mark.integration
def test_tls_untrusted_ca_fails(tls_broker: Any) -> None:
    url = f"mqtts://127.0.0.1:{tls_broker.tls_port}"
    r = ion("check", "--broker", url, "--ca-file", str(tls_broker.pki / "stranger.crt"))
    assert r.returncode == 1
    assert "FAIL  tls" in r.stdout
    assert "certificate is not trusted" in r.stdout
    assert "fix: ca_file must hold the CA that signed the broker's certificate" in r.stdout
    assert "SKIP  mqtt" in r.stdout


@pytest.mark.integration
def test_tls_mismatch_both_ways(tls_broker: Any) -> None:
    # mqtts:// to the plain listener: the handshake fails.
    plain = f"mqtts://127.0.0.1:{tls_broker.port}"
    r = ion("check", "--json", "--broker", plain, "--ca-file", str(tls_broker.pki / "ca.crt"))
    assert r.returncode == 1
    v = verdicts(r)
    assert v["tls"]["verdict"] == "FAIL"
    assert "TLS handshake failed" in v["tls"]["detail"]
    assert "a plain one needs mqtt://" in v["tls"]["hint"]
    # mqtt:// to the TLS listener: no CONNACK, and the hint says to use mqtts://.
    r = ion("check", "--json", "--timeout", "3", "--broker",
            f"mqtt://127.0.0.1:{tls_broker.tls_port}")  # fmt: skip
    assert r.returncode == 1
    v = verdicts(r)
    assert v["mqtt"]["verdict"] == "FAIL"
    assert "use mqtts://" in v["mqtt"]["hint"]


# -- disk and outbox ------------------------------------------------------------------------


@pytest.mark.integration
def test_full_disk_threshold_fails(mosquitto: Any, tmp_path: Path) -> None:
    cfg = write_node_config(tmp_path / "node.yaml", "edge-d", mosquitto.url, tmp_path / "d")
    r = ion("check", "--json", "--node-config", str(cfg), "--min-free-percent", "100")
    assert r.returncode == 1
    v = verdicts(r)
    assert v["disk"]["verdict"] == "FAIL"
    assert "below 100%" in v["disk"]["detail"] and "does not exist yet" in v["disk"]["detail"]
    assert v["outbox"]["verdict"] == "SKIP"  # the agent never ran there


def test_backlogged_outbox_fails_and_is_read_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "edge-b"
    data_dir.mkdir()
    now = time.time_ns() // 1_000_000
    old = now - 2 * 3_600_000
    with OutboxStore(data_dir / "agent.db", clock=lambda: old) as store:
        store.enqueue([
            OutboundItem("ion/v1/nodes/edge-b/events", b"x" * 10, TrafficClass.EVENTS, old),
            OutboundItem("ion/v1/nodes/edge-b/events", b"y" * 10, TrafficClass.EVENTS, old + 1),
            OutboundItem("ion/v1/ions/i/edges/e/data/edge-b", b"z", TrafficClass.DATA, now),
        ])  # fmt: skip
    before = (data_dir / "agent.db").read_bytes()
    r = ion("check", "--data-dir", str(data_dir), "--max-queue-age", "600")
    assert r.returncode == 1, r.stdout
    assert " tcp " not in r.stdout  # no broker named: only the data dir is checked
    line = next(line for line in r.stdout.splitlines() if line.startswith("  FAIL  outbox"))
    assert line.startswith("  FAIL  outbox  backlog: events 2 queued, oldest ")
    assert "fix: the node cannot deliver" in r.stdout
    assert (data_dir / "agent.db").read_bytes() == before


def test_bad_node_config_fails_clearly(tmp_path: Path) -> None:
    cfg = tmp_path / "node.yaml"
    cfg.write_text("node: {id: edge-1}\nbogus: 1\n")
    r = ion("check", "--node-config", str(cfg), "--broker", "mqtt://127.0.0.1:1")
    assert r.returncode == 1
    assert "FAIL  config" in r.stdout and "bogus" in r.stdout


def test_check_help() -> None:
    r = ion("check", "--help")
    assert r.returncode == 0 and "--node-config" in r.stdout and "--min-free-percent" in r.stdout
