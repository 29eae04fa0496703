"""Helpers for the deploy tests (no tests here): loopback inventories, generated brokers run
for real, paho clients holding a generated identity."""

from __future__ import annotations

import datetime as dt
import getpass
import os
import socket
import ssl
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from support import wait_until

from broker.deploy.bundle import write_plan
from broker.deploy.plan import DeployOptions, DeployPlan, make_plan
from broker.embedded import mosquitto_path
from broker.process import ChildProcess, read_tail
from ion.model.definition import IonDefinition
from ion.validate.inventory import Inventory, load_inventory

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def three_tier_yaml(ports: Sequence[int], *, edges: int = 1) -> str:
    """Cloud broker, gateway brokers gw-a and gw-b on loopback, ``edges`` edge nodes behind
    each gateway, a cloud node, an operator and a monitor."""
    cloud, gw_a, gw_b = ports
    lines = [
        "brokers:",
        f"  - {{id: cloud, host: 127.0.0.1, port: {cloud}, addresses: [localhost]}}",
        f"  - {{id: gw-a, host: 127.0.0.1, port: {gw_a}, gateway: gw-a}}",
        f"  - {{id: gw-b, host: 127.0.0.1, port: {gw_b}, gateway: gw-b}}",
        "nodes:",
        "  - {id: cloud-1, layer: cloud, labels: {tier: cloud}}",
        "  - {id: gw-a, layer: gateway, parent: cloud-1, labels: {tier: gateway}}",
        "  - {id: gw-b, layer: gateway, parent: cloud-1, labels: {tier: gateway}}",
    ]
    lines += [
        f"  - {{id: edge-{gw}{i}, layer: edge, parent: gw-{gw}, labels: {{tier: edge}}}}"
        for gw in ("a", "b")
        for i in range(1, edges + 1)
    ]
    lines += ["operators: [{id: alice}]", "monitors: [{id: mon-1, commands: [node]}]"]
    return "\n".join(lines) + "\n"


def inventory(ports: Sequence[int], *, edges: int = 1) -> Inventory:
    return load_inventory(three_tier_yaml(ports, edges=edges))


def deploy_local(
    out: Path, ions: Sequence[IonDefinition], inv: Inventory, **options: Any
) -> DeployPlan:
    """Plan and write bundles whose paths point into ``out`` (what ``ion deploy --local``
    writes), brokers bound to 127.0.0.1."""
    opts = DeployOptions(
        local=out.resolve(),
        listen="127.0.0.1",
        run_as_user=getpass.getuser() if os.geteuid() == 0 else None,
        **options,
    )
    plan = make_plan(ions, inv, opts)
    write_plan(plan, out, now=NOW)
    return plan


class GeneratedBroker:
    """Mosquitto running one generated mosquitto.conf, as it is."""

    def __init__(self, bundle: Path, port: int) -> None:
        self.bundle = bundle
        self.port = port
        binary = mosquitto_path()
        assert binary is not None, "Mosquitto is not installed"
        conf = bundle / "mosquitto.conf"
        self._child = ChildProcess(
            [str(binary), "-c", str(conf)], console_log=bundle / "console.log", cwd=bundle
        )
        wait_until(self._ready, 10, message=self.log_tail)

    def _ready(self) -> bool:
        assert self._child.alive(), f"mosquitto exited: {self.log_tail()}"
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
        except OSError:
            return False
        return True

    def log_tail(self) -> str:
        return read_tail(self.bundle / "mosquitto.log") + read_tail(self.bundle / "console.log")

    def log_text(self) -> str:
        path = self.bundle / "mosquitto.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        self._child.stop()
        # A clean stop saves the database; a persistence path that does not work shows here.
        assert "Error saving" not in self.log_text(), self.log_tail()


@contextmanager
def brokers(out: Path, inv: Inventory) -> Iterator[dict[str, GeneratedBroker]]:
    """Every broker of ``inv`` started from its generated bundle in ``out``; all stopped."""
    with ExitStack() as stack:
        running: dict[str, GeneratedBroker] = {}
        for b in inv.brokers:
            gb = GeneratedBroker(out / "brokers" / b.id, b.port)
            stack.callback(gb.stop)
            running[b.id] = gb
        yield running


class Client:
    """A paho client with the identity of bundle ``out/<bundle>`` (sync, for ACL checks)."""

    def __init__(
        self, out: Path, bundle: str, port: int, *, client_id: str, password: str | None = None
    ) -> None:
        """``password``: log in with the bundle's name and this password (password mode)."""
        where = out / bundle
        self.messages: list[paho.MQTTMessage] = []
        self._lock = threading.Lock()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311
        )
        cert = password is None
        self.client.tls_set(
            ca_certs=str(where / "ca.crt"),
            certfile=str(where / "client.crt") if cert else None,
            keyfile=str(where / "client.key") if cert else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
        if password is not None:
            self.client.username_pw_set(where.name, password)
        self.client.on_message = self._on_message
        self.connected = threading.Event()
        self.refused = ""

        def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            self.refused = str(reason) if reason.is_failure else ""
            self.connected.set()

        self.client.on_connect = on_connect
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(10) or self.refused:
            self.close()
            raise ConnectionError(f"{bundle} could not connect to port {port}: {self.refused}")

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(msg)

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *a: done.set()
        self.client.subscribe(topic, qos=1)
        assert done.wait(10)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)

    def topics(self) -> list[str]:
        with self._lock:
            return [m.topic for m in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def tls_connack(
    port: int, ca: Path, cert: Path | None = None, key: Path | None = None
) -> int | None:
    """The CONNACK return code a TLS client with ``cert`` gets, or None when the broker
    refuses the TLS session itself (no certificate, a certificate from another CA)."""
    from broker.probe import connect_packet

    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                # TLS 1.3 checks the client certificate after the handshake: the refusal
                # comes as an alert or EOF on the first read.
                tls.sendall(connect_packet("probe-" + os.urandom(4).hex()))
                head = tls.recv(4)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return None
    if len(head) < 4:
        return None
    assert head[0] == 0x20, head
    return head[3]


def flow_ion(name: str = "flow") -> IonDefinition:
    """``training`` on the cloud sends a model down to ``sensor`` on every edge node, which
    sends data up along ``readings`` to ``central`` on the cloud.  The pipelines run on an
    engine no node has (nothing starts): the test's agents send along the edges themselves."""
    from ion.model.definition import (
        Component,
        Edge,
        EdgeKind,
        Endpoint,
        ModelPolicy,
        Pipeline,
        PipelineMode,
        PipelineRole,
        Placement,
    )  # fmt: skip

    def pipeline(p: str, placement: Placement, role: PipelineRole) -> Pipeline:
        return Pipeline(p, "none", role, PipelineMode.STREAMING, placement,
                        (Component("c", "noop"),))  # fmt: skip

    return IonDefinition(
        name=name,
        pipelines=(
            pipeline("training", Placement(nodes=("cloud-1",)), PipelineRole.TRAINING),
            pipeline("central", Placement(labels={"tier": "cloud"}), PipelineRole.OTHER),
            pipeline("sensor", Placement(labels={"tier": "edge"}), PipelineRole.INFERENCE),
        ),
        edges=(
            Edge("model", EdgeKind.MODEL, Endpoint("training"), (Endpoint("sensor"),),
                 policy=ModelPolicy(keep_versions=1)),
            Edge("readings", EdgeKind.DATA, Endpoint("sensor", "api", "out"),
                 (Endpoint("central", "api", "in"),)),
        ),
    )  # fmt: skip


def _matches(topic_filter: str, topic: str) -> bool:
    f, t = topic_filter.split("/"), topic.split("/")
    for i, part in enumerate(f):
        if part == "#":
            return True
        if i >= len(t) or (part not in ("+", t[i])):
            return False
    return len(f) == len(t)


def acl_allows(acl_text: str, user: str, client_id: str, topic: str, access: str) -> bool:
    """Mosquitto's reading of an ACL file: the user's ``topic`` lines plus every ``pattern``."""
    current: str | None = None
    for raw in acl_text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        kind, *rest = line.split()
        if kind == "user":
            current = rest[0]
            continue
        if kind not in ("topic", "pattern") or (kind == "topic" and current != user):
            continue
        rule_access, rule_topic = rest if len(rest) == 2 else ("readwrite", rest[0])
        if kind == "pattern":
            rule_topic = rule_topic.replace("%u", user).replace("%c", client_id)
        if rule_access in (access, "readwrite") and _matches(rule_topic, topic):
            return True
    return False


def refused_publishes(bundle: Path) -> list[str]:
    """Every publish a broker received (log_type all) that its ACL refused: what a client
    tried that the generated ACL does not allow."""
    import re

    log = (bundle / "mosquitto.log").read_text()
    acl = (bundle / "acl").read_text()
    users = dict(re.findall(r"New client connected from \S+ as (\S+) \(.*u'([^']+)'\)", log))
    refused = []
    for cid, topic in re.findall(r"Received PUBLISH from (\S+) \([^']*'([^']+)'", log):
        user = users.get(cid)
        if user is None and cid.startswith("ion-bridge-") and cid.endswith("-local"):
            continue  # the broker's own bridge, publishing downstream: no ACL applies
        if user is None or not acl_allows(acl, user, cid, topic, "write"):
            refused.append(f"{cid} ({user}): {topic}")
    return refused
