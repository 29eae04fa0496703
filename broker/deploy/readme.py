"""The README of each bundle: which machine it is for and where each file goes (pure text)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ion.errors import ConfigError
from ion.validate.inventory import (
    Inventory,
    InventoryBroker,
    InventoryClient,
    InventoryDevice,
    InventoryNode,
)

if TYPE_CHECKING:
    from .placement import Placement
    from .plan import DeployOptions

_UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "ion-node.service"


def systemd_unit() -> str:
    """The project's unit for the node agent (deploy/systemd/ion-node.service), as it is."""
    try:
        return _UNIT.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the systemd unit {_UNIT}: {exc}") from None


def _where(host: str) -> str:
    return f" (`{host}`)" if host else ""


def _local_note(options: DeployOptions) -> list[str]:
    if options.local is None:
        return []
    return [
        "",
        "**Local mode** (`--local`): every path in these files points into this output",
        "directory, to run the whole topology on one machine; do not copy these files elsewhere.",
    ]


def broker_readme(b: InventoryBroker, inv: Inventory, options: DeployOptions) -> str:
    role = f"the local broker of gateway `{b.gateway}`" if b.gateway else "the root (cloud) broker"
    lines = [
        f"# Broker `{b.id}`: {role}",
        "",
        f"For the machine answering at `{b.host}` port {b.port} (certificate names: "
        f"{', '.join(f'`{n}`' for n in b.names)}).",
        *_local_note(options),
        "",
        "| file | goes to | mode |",
        "|---|---|---|",
        "| `mosquitto.conf` | `/etc/mosquitto/mosquitto.conf` (replaces the package's) | 0644 |",
        "| `acl` | `/etc/mosquitto/ion/acl` | 0644 |",
        "| `ca.crt` | `/etc/mosquitto/ion/ca.crt` | 0644 |",
        "| `server.crt` | `/etc/mosquitto/ion/server.crt` | 0644 |",
        "| `server.key` | `/etc/mosquitto/ion/server.key` (owner mosquitto) | 0600 |",
    ]
    if options.auth == "password":
        lines.append("| `passwd` | `/etc/mosquitto/ion/passwd` (owner mosquitto) | 0600 |")
    if b.gateway and options.bridges:
        lines += [
            "| `bridge.crt` | `/etc/mosquitto/ion/bridge.crt` | 0644 |",
            "| `bridge.key` | `/etc/mosquitto/ion/bridge.key` (owner mosquitto) | 0600 |",
        ]
    lines += [
        "",
        "Then: `systemctl restart mosquitto` and check `/var/log/mosquitto/mosquitto.log`.",
        "After an ION or inventory change only `acl` changes: copy it and",
        "`systemctl reload mosquitto` (SIGHUP re-reads the ACL).",
    ]
    if b.gateway and options.bridges:
        up = inv.upstream_of(b.gateway)
        lines += [
            "",
            f"This broker bridges to `{up.host if up else '?'}` with identity `{b.gateway}`; the",
            "gateway's agent runs without a relay (see docs/deploy.md for the trade-offs).",
        ]
    return "\n".join(lines) + "\n"


def node_readme(
    n: InventoryNode, inv: Inventory, placement: Placement, options: DeployOptions
) -> str:
    broker = inv.broker_of(n.id)
    runs = sorted(placement.pipelines.get(n.id, frozenset()))
    lines = [
        f"# Node `{n.id}` ({n.layer}){_where(n.host)}",
        "",
        f"Connects to broker `{broker.id if broker else '?'}` "
        f"(`{broker.host if broker else '?'}:{broker.port if broker else '?'}`) as `{n.id}`.",
        "Runs: " + (", ".join(f"`{i}/{p}`" for i, p in runs) if runs else "nothing yet") + ".",
    ]
    if n.layer == "gateway":
        local = inv.local_broker(n.id)
        if options.bridges:
            lines.append(f"Its local broker `{local.id if local else '?'}` bridges upstream.")
        else:
            up = inv.upstream_of(n.id)
            lines.append(
                f"Relays between its local broker `{local.id if local else '?'}` and "
                f"`{up.id if up else '?'}` (custody per hop, its own durable outbox)."
            )
            lines.append("Install the broker bundle of its local broker on this machine too.")
    lines += [
        *_local_note(options),
        "",
        "| file | goes to | mode |",
        "|---|---|---|",
        "| `node.yaml` | `/etc/ion/node.yaml` | 0644 |",
        "| `ca.crt` | `/etc/ion/ca.crt` | 0644 |",
    ]
    if options.auth == "cert":
        lines += [
            "| `client.crt` | `/etc/ion/client.crt` | 0644 |",
            "| `client.key` | `/etc/ion/client.key` (owner ion) | 0600 |",
        ]
    else:
        lines.append("| `password` | `/etc/ion/password` (owner ion) | 0600 |")
    if options.trust_keys:
        lines.append("| `trusted.pub` | `/etc/ion/trusted.pub` | 0644 |")
    lines += [
        "| `ion-node.service` | `/etc/systemd/system/ion-node.service` | 0644 |",
        "",
        "Then: `useradd --system ion`, install the runtime in `/opt/ion/venv`,",
        "`systemctl daemon-reload && systemctl enable --now ion-node`.",
    ]
    if not options.trust_keys and not options.development_mode:
        lines += [
            "",
            "No trusted key was given (`--trust-key`): this node refuses every definition until",
            "one is added to `trust.keys` in node.yaml.",
        ]
    return "\n".join(lines) + "\n"


def client_readme(c: InventoryClient, kind: str, inv: Inventory, options: DeployOptions) -> str:
    broker = inv.broker(c.broker) if c.broker else inv.root_broker()
    what = "Operator" if kind == "operators" else "Monitor"
    home = "~/.config/ion" if kind == "operators" else f"/etc/ion/{c.id}"
    secret = "client.key" if options.auth == "cert" else "password"
    lines = [
        f"# {what} `{c.id}`",
        "",
        f"Connects to broker `{broker.id if broker else '?'}` as `{c.id}`.",
        *_local_note(options),
        "",
        f"Copy `config.yaml`, `ca.crt` and the credentials (`{secret}` mode 0600"
        + (", `client.crt`" if options.auth == "cert" else "")
        + f") to `{home}/`.",
    ]
    if kind == "operators":
        lines += [
            "`ion` reads `~/.config/ion/config.yaml` by default: `ion apply ion.yaml` then",
            "connects with this identity (add `signing_key:` to sign definitions).",
        ]
    else:
        lines.append(f"Point the monitor at it with `--config {home}/config.yaml`.")
    return "\n".join(lines) + "\n"


def device_readme(d: InventoryDevice, inv: Inventory, options: DeployOptions) -> str:
    broker = inv.broker_of_device(d)
    addr = f"{broker.host}:{broker.port}" if broker else "?"
    cert = options.auth == "cert"
    login = (
        "`--ca-file ca.crt --cert-file client.crt --key-file client.key`"
        if cert
        else f"user `{d.id}` and the password in `password`"
    )
    return "\n".join([
        f"# Device `{d.id}`",
        "",
        f"Publishes on `{d.topic}` (and may publish nothing else, nor read anything) to broker",
        f"`{broker.id if broker else '?'}` at `mqtts://{addr}`, as `{d.id}`.",
        *_local_note(options),
        "",
        "Copy `ca.crt` and the credentials (`" + ("client.crt`, `client.key`" if cert
        else "password`") + " mode 0600) to the device.  The simulator",
        f"`examples/kmeans/devices.py --broker mqtts://{addr} --name {d.id}` connects with",
        f"{login}.",
    ]) + "\n"  # fmt: skip


def index(inv: Inventory, options: DeployOptions) -> str:
    variant = "Mosquitto bridges" if options.bridges else "the gateway relay"
    lines = [
        "# Deployment bundles, generated by `ion deploy`",
        "",
        f"Gateways forward with {variant}; clients authenticate by "
        f"{'certificate' if options.auth == 'cert' else 'name and password'}.",
        *_local_note(options),
        "",
        "| machine | bundles |",
        "|---|---|",
    ]
    for n in inv.nodes:
        bundles = [f"`nodes/{n.id}`"]
        local = inv.local_broker(n.id)
        if local is not None:
            bundles.append(f"`brokers/{local.id}`")
        lines.append(f"| {n.id}{_where(n.host)} | {', '.join(bundles)} |")
    lines += [
        f"| broker host `{b.host}` | `brokers/{b.id}` |" for b in inv.brokers if not b.gateway
    ]
    for kind, clients in (("operators", inv.operators), ("monitors", inv.monitors)):
        lines += [f"| {c.id} ({kind[:-1]}) | `{kind}/{c.id}` |" for c in clients]
    lines += [f"| {d.id} (device) | `devices/{d.id}` |" for d in inv.devices]
    lines += [
        "",
        "Never copy the CA directory (`ca.key`) to any machine: keep it offline.  Re-running",
        "`ion deploy` with the same `--ca-dir` and output keeps every certificate that is still",
        "valid, so after an ION change only the `acl` files (and node.yaml relay lists) change.",
    ]
    return "\n".join(lines) + "\n"
