"""The whole deployment as values: every file's text and every certificate to issue (pure).

``bundle`` turns a plan into files (issuing certificates on the way); nothing here touches the
disk or draws a random number, so the plan is what the tests look at.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import yaml

from ion.errors import InputError, Problem
from ion.model.definition import IonDefinition
from ion.validate.inventory import Inventory, InventoryBroker, InventoryClient, InventoryNode

from . import readme
from .acl import BrokerAcl, broker_acls, device_problems, render_acl
from .mosquittoconf import BridgeConf, BrokerConf, render_broker_conf
from .placement import Placement, place
from .relayplan import RelayPlan, bridge_topics, relay_plan

Auth = Literal["cert", "password"]


class DeployError(InputError):
    """The IONs cannot be deployed on this inventory as asked; ``problems`` says why."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("cannot deploy:\n" + "\n".join(f"  {p}" for p in self.problems))


@dataclass(frozen=True, slots=True)
class DeployOptions:
    """bridges: gateways forward with Mosquitto bridges instead of their relay.
    auth: clients authenticate by certificate (``cert``) or name and password.
    local: write configs whose paths point into this output directory, to run every broker and
        agent of the topology on one machine (tests, trials); None: paths of real machines.
    listen: the address every broker binds (None: all interfaces).
    trust_keys: public key lines (``ed25519:...``) nodes trust for signed definitions/models.
    development_mode: nodes also act on unsigned definitions (never in production).
    """

    bridges: bool = False
    auth: Auth = "cert"
    local: Path | None = None
    listen: str | None = None
    run_as_user: str | None = "mosquitto"
    trust_keys: tuple[str, ...] = ()
    development_mode: bool = False
    source: str = "the ION"


@dataclass(frozen=True, slots=True)
class CertRequest:
    bundle: str  # directory of the output, e.g. "nodes/edge-1"
    stem: str  # files <stem>.crt and <stem>.key
    common_name: str
    server_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DeployPlan:
    files: Mapping[str, str]  # path in the output directory -> text
    certs: tuple[CertRequest, ...]
    ca_copies: tuple[str, ...]  # bundles that get ca.crt
    passwords: Mapping[str, tuple[str, ...]]  # password mode: broker bundle -> identities
    acls: Mapping[str, BrokerAcl]
    relays: Mapping[str, RelayPlan]
    placement: Placement
    secrets: frozenset[str] = field(default_factory=frozenset)  # files only their owner reads
    directories: tuple[str, ...] = ()  # local mode: broker persistence directories


@dataclass(frozen=True, slots=True)
class _Paths:
    """Where a bundle's files are on the machine it is copied to."""

    local: Path | None

    def node(self, node: str) -> Path:
        return self.local / "nodes" / node if self.local else Path("/etc/ion")

    def broker(self, broker: str) -> Path:
        return self.local / "brokers" / broker if self.local else Path("/etc/mosquitto/ion")

    def client(self, kind: str, identity: str) -> Path:
        if self.local:
            return self.local / kind / identity
        return Path("~/.config/ion") if kind == "operators" else Path(f"/etc/ion/{identity}")


def make_plan(
    ions: Iterable[IonDefinition], inventory: Inventory, options: DeployOptions = DeployOptions()
) -> DeployPlan:
    ions = tuple(ions)
    problems: list[Problem] = []
    if not inventory.brokers:
        problems.append(Problem("error", "brokers", "the inventory lists no brokers"))
    if options.bridges and options.auth == "password":
        problems.append(Problem("error", "", "--bridges needs certificate authentication"))
    placement = place(ions, inventory)
    problems += device_problems(placement)
    relays: dict[str, RelayPlan] = {}
    for n in inventory.nodes:
        if n.layer == "gateway":
            relays[n.id], found = relay_plan(n.id, inventory, placement)
            problems += found
    if problems:
        raise DeployError(problems)
    acls = broker_acls(inventory, placement, relay=not options.bridges)
    paths = _Paths(options.local)
    files: dict[str, str] = {}
    certs: list[CertRequest] = []
    ca_copies: list[str] = []
    passwords: dict[str, tuple[str, ...]] = {}
    secrets: set[str] = set()
    directories: list[str] = []
    for b in inventory.brokers:
        bundle = f"brokers/{b.id}"
        if options.local is not None:
            directories.append(f"{bundle}/data")
        files[f"{bundle}/acl"] = render_acl(acls[b.id], options.source)
        files[f"{bundle}/mosquitto.conf"] = render_broker_conf(
            _broker_conf(b, inventory, relays, paths, options)
        )
        certs.append(CertRequest(bundle, "server", b.id, b.names))
        ca_copies.append(bundle)
        if b.gateway and options.bridges:
            certs.append(CertRequest(bundle, "bridge", b.gateway))
        if options.auth == "password":
            passwords[bundle] = tuple(u.identity for u in acls[b.id].users)
        files[f"{bundle}/README.md"] = readme.broker_readme(b, inventory, options)
    for n in inventory.nodes:
        bundle = f"nodes/{n.id}"
        config = _node_config(n, inventory, relays, paths, options)
        files[f"{bundle}/node.yaml"] = _yaml(config, f"agent config of node {n.id}")
        files[f"{bundle}/ion-node.service"] = readme.systemd_unit()
        if options.trust_keys:
            files[f"{bundle}/trusted.pub"] = "\n".join(options.trust_keys) + "\n"
        files[f"{bundle}/README.md"] = readme.node_readme(n, inventory, placement, options)
        _identity_files(
            bundle, n.id, options=options, certs=certs, ca_copies=ca_copies, secrets=secrets
        )
    for kind, clients in (("operators", inventory.operators), ("monitors", inventory.monitors)):
        for c in clients:
            bundle = f"{kind}/{c.id}"
            files[f"{bundle}/config.yaml"] = _yaml(
                _client_config(c, kind, inventory, paths, options), f"ion CLI config of {c.id}"
            )
            files[f"{bundle}/README.md"] = readme.client_readme(c, kind, inventory, options)
            _identity_files(
                bundle, c.id, options=options, certs=certs, ca_copies=ca_copies, secrets=secrets
            )
    for d in inventory.devices:
        bundle = f"devices/{d.id}"
        files[f"{bundle}/README.md"] = readme.device_readme(d, inventory, options)
        _identity_files(
            bundle, d.id, options=options, certs=certs, ca_copies=ca_copies, secrets=secrets
        )
    files["README.md"] = readme.index(inventory, options)
    return DeployPlan(
        files, tuple(certs), tuple(ca_copies), passwords, acls, relays, placement,
        frozenset(secrets), tuple(directories),
    )  # fmt: skip


def _identity_files(
    bundle: str,
    identity: str,
    *,
    options: DeployOptions,
    certs: list[CertRequest],
    ca_copies: list[str],
    secrets: set[str],
) -> None:
    ca_copies.append(bundle)
    if options.auth == "cert":
        certs.append(CertRequest(bundle, "client", identity))
    else:
        secrets.add(f"{bundle}/password")


def _url(b: InventoryBroker) -> str:
    host = f"[{b.host}]" if ":" in b.host else b.host
    return f"mqtts://{host}:{b.port}"


def _connection(
    b: InventoryBroker, where: Path, options: DeployOptions, user: str
) -> dict[str, Any]:
    out: dict[str, Any] = {"url": _url(b), "ca_file": str(where / "ca.crt")}
    if options.auth == "cert":
        out |= {"cert_file": str(where / "client.crt"), "key_file": str(where / "client.key")}
    else:
        out |= {"username": user, "password_file": str(where / "password")}
    return out


def _node_config(
    n: InventoryNode,
    inv: Inventory,
    relays: Mapping[str, RelayPlan],
    paths: _Paths,
    options: DeployOptions,
) -> dict[str, Any]:
    where = paths.node(n.id)
    broker = inv.broker_of(n.id)
    assert broker is not None  # load_inventory checked every node reaches one
    config: dict[str, Any] = {
        "node": {"id": n.id, "labels": dict(n.labels), "layer": n.layer, "parent": n.parent},
        "broker": _connection(broker, where, options, n.id),
    }
    if n.layer == "gateway" and not options.bridges:
        upstream = inv.upstream_of(n.id)
        assert upstream is not None
        config["upstream"] = _connection(upstream, where, options, n.id)
        relay = relays[n.id]
        if relay.extra_up or relay.extra_down:
            config["relay"] = {"up": list(relay.up), "down": list(relay.down)}
    config["data_dir"] = str(where / "data") if options.local else "/var/lib/ion"
    trust: dict[str, Any] = {}
    if options.trust_keys:
        trust["keys"] = ["trusted.pub"]
    if options.development_mode:
        trust["development_mode"] = True
    if trust:
        config["trust"] = trust
    return config


def _client_config(
    c: InventoryClient, kind: str, inv: Inventory, paths: _Paths, options: DeployOptions
) -> dict[str, Any]:
    broker = inv.broker(c.broker) if c.broker else inv.root_broker()
    assert broker is not None
    where = paths.client(kind, c.id)
    return {"broker": _connection(broker, where, options, c.id), "operator": c.id}


def _broker_conf(
    b: InventoryBroker,
    inv: Inventory,
    relays: Mapping[str, RelayPlan],
    paths: _Paths,
    options: DeployOptions,
) -> BrokerConf:
    where = paths.broker(b.id)
    bridge = None
    if b.gateway and options.bridges:
        upstream = inv.upstream_of(b.gateway)
        assert upstream is not None
        bridge = BridgeConf(
            name=f"ion-up-{b.gateway}",
            host=upstream.host,
            port=upstream.port,
            remote_clientid=f"ion-bridge-{b.gateway}",
            cafile=where / "ca.crt",
            certfile=where / "bridge.crt",
            keyfile=where / "bridge.key",
            topics=bridge_topics(relays[b.gateway], inv),
        )
    local = options.local is not None
    return BrokerConf(
        broker_id=b.id,
        port=b.port,
        bind=options.listen,
        cafile=where / "ca.crt",
        certfile=where / "server.crt",
        keyfile=where / "server.key",
        acl_file=where / "acl",
        persistence_dir=where / "data" if local else Path("/var/lib/mosquitto"),
        log_file=where / "mosquitto.log" if local else Path("/var/log/mosquitto/mosquitto.log"),
        password_file=where / "passwd" if options.auth == "password" else None,
        run_as_user=options.run_as_user,
        bridge=bridge,
    )


def _yaml(data: Mapping[str, Any], what: str) -> str:
    body = yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False)
    return f"# The {what}, generated by `ion deploy`; regenerate rather than edit.\n{body}"


def bundle_of(path: str) -> str:
    """The bundle directory a plan file belongs to ("" for the top level)."""
    parts = PurePosixPath(path).parts
    return "/".join(parts[:2]) if len(parts) > 2 else ""
