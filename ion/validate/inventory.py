"""The node inventory: which nodes exist, their labels, tier and parent, and (for ``ion deploy``)
the brokers they reach and the people and programs that connect beside them.

Written as YAML::

    brokers:                      # [none] only ``ion deploy`` needs them
      - {id: cloud, host: mqtt.example.com, port: 8883, addresses: [10.0.0.10]}
      - {id: gw-north, host: gw-north.lan, gateway: gw-north}   # a gateway's local broker
    nodes:
      - {id: cloud-1, layer: cloud, labels: {tier: cloud}}
      - {id: gw-north, layer: gateway, parent: cloud-1, labels: {tier: gateway}}
      - {id: edge-1, layer: edge, parent: gw-north, labels: {tier: edge, site: north}}
    operators: [{id: alice}]      # [none] may publish definitions, commands and decisions
    monitors: [{id: monitor-1, commands: [node]}]   # [none] reads everything
    devices:                      # [none] simple sensors publishing readings over MQTT
      - {id: dev-n1, broker: gw-north, topic: "sensors/{id}/readings"}

Node keys: ``id`` (required), ``labels`` [{}], ``layer`` [""] (``edge``, ``gateway`` or ``cloud``;
required when brokers are listed), ``parent`` [""] (the node this one reaches the upstream broker
through), ``host`` [""] (the machine's address, for the bundle's README), ``broker`` [derived]
(a broker id, to override where the topology puts the node).

Broker keys: ``id`` (required), ``host`` (required: the name clients connect to), ``port``
[8883], ``addresses`` [[]] (more names or IPs the server certificate must carry), ``gateway``
[""] (the gateway node whose local broker this is; empty for the root broker, at most one).

Operator and monitor keys: ``id`` (required; the certificate's common name), ``broker``
[the root broker]; monitors also ``commands`` [[]]: which commands they may publish
(``ion``: to every node of an ION, ``node``: to one node, ``models``: model chunks from its
model cache, to nodes whose producer is gone).

Device keys: ``id`` (required; the certificate's common name), ``broker`` [the root broker]
(the broker it publishes to: usually the local broker of the gateway its site is behind),
``topic`` [``sensors/{id}/readings``] (the one topic it publishes on; ``{id}`` is replaced by
the device id; no wildcards; inside ``ion/v1/`` only its own ``ion/v1/devices/<id>/...``).
A device may publish on its topic and nothing else; nodes whose pipelines read devices
(``mqtt_source``) may read them on the broker they connect to.

Where a node connects: a gateway to its own local broker; any other node to the broker of its
parent (the parent's local broker when the parent is a gateway); a node without a parent to
the root broker.  A gateway's upstream is the broker its parent connects to (the root broker
without a parent).

Given an inventory, the validator checks that every placement selects at least one node and
names only nodes that exist; ``ion deploy`` turns it into certificates and configs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import yaml
from yaml.nodes import Node

from ion.authoring import yaml_core
from ion.authoring.locations import child, element_keys, item
from ion.authoring.nodes import NodeReader, peek_text
from ion.errors import ConfigError, Problem
from ion.model.definition import NAME_PATTERN, Placement

logger = logging.getLogger(__name__)

T = TypeVar("T")

INVENTORY_KEYS = ("nodes", "brokers", "operators", "monitors", "devices")
NODE_KEYS = ("id", "labels", "layer", "parent", "host", "broker")
BROKER_KEYS = ("id", "host", "port", "addresses", "gateway")
OPERATOR_KEYS = ("id", "broker")
MONITOR_KEYS = ("id", "broker", "commands")
DEVICE_KEYS = ("id", "broker", "topic")
DEFAULT_DEVICE_TOPIC = "sensors/{id}/readings"  # what examples/kmeans/devices.py publishes on
LAYERS = ("edge", "gateway", "cloud")
MONITOR_COMMANDS = ("ion", "node", "models")
DEFAULT_TLS_PORT = 8883


@dataclass(frozen=True, slots=True)
class InventoryNode:
    id: str
    labels: Mapping[str, str] = field(default_factory=dict)
    layer: str = ""
    parent: str = ""
    host: str = ""
    broker: str = ""  # explicit broker id; "" = where the topology puts the node


@dataclass(frozen=True, slots=True)
class InventoryBroker:
    id: str
    host: str
    port: int = DEFAULT_TLS_PORT
    addresses: tuple[str, ...] = ()
    gateway: str = ""  # the gateway whose local broker this is; "" for the root broker

    @property
    def names(self) -> tuple[str, ...]:
        """Every name and address the server certificate must carry."""
        return tuple(dict.fromkeys((self.host, *self.addresses)))


@dataclass(frozen=True, slots=True)
class InventoryClient:
    """An operator or a monitor: an identity that is not a node."""

    id: str
    broker: str = ""  # "" = the root broker
    commands: tuple[str, ...] = ()  # monitors: which commands they may publish


@dataclass(frozen=True, slots=True)
class InventoryDevice:
    """A sensor that only publishes its readings on one topic (``{id}`` already replaced)."""

    id: str
    topic: str
    broker: str = ""  # "" = the root broker


@dataclass(frozen=True, slots=True)
class Inventory:
    nodes: tuple[InventoryNode, ...] = ()
    brokers: tuple[InventoryBroker, ...] = ()
    operators: tuple[InventoryClient, ...] = ()
    monitors: tuple[InventoryClient, ...] = ()
    devices: tuple[InventoryDevice, ...] = ()

    def node(self, node_id: str) -> InventoryNode | None:
        return next((n for n in self.nodes if n.id == node_id), None)

    def ids(self) -> tuple[str, ...]:
        return tuple(n.id for n in self.nodes)

    def select(self, placement: Placement) -> tuple[InventoryNode, ...]:
        """The nodes ``placement`` runs on."""
        return tuple(n for n in self.nodes if placement.selects(n.id, n.labels))

    # -- topology (meaningful once load_inventory accepted the brokers) -----------------------

    def broker(self, broker_id: str) -> InventoryBroker | None:
        return next((b for b in self.brokers if b.id == broker_id), None)

    def root_broker(self) -> InventoryBroker | None:
        return next((b for b in self.brokers if not b.gateway), None)

    def local_broker(self, gateway_id: str) -> InventoryBroker | None:
        """The broker a gateway runs for the nodes below it."""
        return next((b for b in self.brokers if b.gateway == gateway_id), None)

    def broker_of(self, node_id: str) -> InventoryBroker | None:
        """The broker ``node_id`` connects to (None: it reaches none)."""
        return self._broker_of(node_id, frozenset())

    def upstream_of(self, gateway_id: str) -> InventoryBroker | None:
        """The broker a gateway relays to: the one its parent connects to."""
        node = self.node(gateway_id)
        if node is None or node.layer != "gateway":
            return None
        return self._above(node, frozenset({gateway_id}))

    def subtree(self, gateway_id: str) -> frozenset[str]:
        """The nodes whose traffic passes through ``gateway_id``, itself included."""
        return frozenset(n.id for n in self.nodes if gateway_id in self.chain(n.id))

    def chain(self, node_id: str) -> tuple[str, ...]:
        """``node_id`` and its ancestors, nearest first (stops at a loop)."""
        out: list[str] = []
        current: InventoryNode | None = self.node(node_id)
        while current is not None and current.id not in out:
            out.append(current.id)
            current = self.node(current.parent) if current.parent else None
        return tuple(out)

    def client(self, identity: str) -> InventoryClient | None:
        return next((c for c in (*self.operators, *self.monitors) if c.id == identity), None)

    def broker_of_device(self, device: InventoryDevice) -> InventoryBroker | None:
        return self.broker(device.broker) if device.broker else self.root_broker()

    def _broker_of(self, node_id: str, seen: frozenset[str]) -> InventoryBroker | None:
        node = self.node(node_id)
        if node is None or node_id in seen:
            return None
        if node.broker:
            return self.broker(node.broker)
        if node.layer == "gateway":
            return self.local_broker(node_id)
        return self._above(node, seen | {node_id})

    def _above(self, node: InventoryNode, seen: frozenset[str]) -> InventoryBroker | None:
        if not node.parent:
            return self.root_broker()
        return self._broker_of(node.parent, seen)


class InvalidInventoryError(ConfigError):
    """An inventory file has errors; ``problems`` lists every one."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("invalid inventory:\n" + "\n".join(f"  {p}" for p in self.problems))


def load_inventory(text: str, file: str | None = None) -> Inventory:
    """Parse inventory YAML; raises :class:`InvalidInventoryError` listing every problem."""
    reader = NodeReader(file)
    try:
        root = yaml_core.compose(text)
    except yaml.YAMLError as exc:
        raise InvalidInventoryError([Problem("error", "", f"not valid YAML: {exc}", file)]) from exc
    top = reader.fields(root, "", "an inventory", INVENTORY_KEYS, ("nodes",)) if root else None
    if root is None:
        reader.problem("", "the inventory is empty; expected nodes: [...]")
    top = top or {}
    nodes = _list(reader, top, "nodes", _node)
    brokers = _list(reader, top, "brokers", _broker)
    operators = _list(reader, top, "operators", _operator)
    monitors = _list(reader, top, "monitors", _monitor)
    devices = _list(reader, top, "devices", _device)
    _check(reader, nodes)
    inventory = Inventory(
        tuple(n for _, n in nodes),
        tuple(b for _, b in brokers),
        tuple(o for _, o in operators),
        tuple(m for _, m in monitors),
        tuple(d for _, d in devices),
    )
    if "brokers" in top:
        _check_topology(reader, inventory, nodes, brokers, [*operators, *monitors])
        _check_devices(reader, inventory, devices)
    elif devices:
        reader.problem("devices", "devices need brokers: list the brokers they publish to")
    errors = [p for p in reader.problems if p.severity == "error"]
    if errors:
        raise InvalidInventoryError(sorted(errors, key=lambda p: p.line or 0))
    return inventory


def load_inventory_file(path: str | Path) -> Inventory:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInventoryError(
            [Problem("error", "", f"cannot read: {exc}", str(path))]
        ) from exc
    return load_inventory(text, str(path))


def _list(
    reader: NodeReader,
    top: Mapping[str, Node],
    key: str,
    parse: Callable[[NodeReader, Node, str], T | None],
) -> list[tuple[str, T]]:
    if key not in top:
        return []
    out: list[tuple[str, T]] = []
    items = reader.sequence(top[key], key, key) or []
    keys = element_keys(peek_text(n, "id") for n in items)
    for name, node in zip(keys, items, strict=True):
        loc = item(key, name)
        reader.mark(loc, node)
        parsed = parse(reader, node, loc)
        if parsed is not None:
            out.append((loc, parsed))
    return out


def _texts(reader: NodeReader, f: Mapping[str, Node], loc: str, *keys: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key in keys:
        if key in f:
            out[key] = reader.text(f[key], child(loc, key)) or ""
    return out


def _node(reader: NodeReader, node: Node, loc: str) -> InventoryNode | None:
    f = reader.fields(node, loc, "an inventory node", NODE_KEYS, ("id",))
    if f is None or "id" not in f:
        return None
    node_id = reader.text(f["id"], child(loc, "id"))
    if node_id is None:
        return None
    labels = reader.text_map(f["labels"], child(loc, "labels"), "labels") if "labels" in f else {}
    t = _texts(reader, f, loc, "layer", "parent", "host", "broker")
    return InventoryNode(
        node_id, labels, t.get("layer", ""), t.get("parent", ""), t.get("host", ""),
        t.get("broker", ""),
    )  # fmt: skip


def _broker(reader: NodeReader, node: Node, loc: str) -> InventoryBroker | None:
    f = reader.fields(node, loc, "a broker", BROKER_KEYS, ("id", "host"))
    if f is None or "id" not in f or "host" not in f:
        return None
    t = _texts(reader, f, loc, "id", "host", "gateway")
    port = DEFAULT_TLS_PORT
    if "port" in f:
        port = reader.integer(f["port"], child(loc, "port")) or 0
        if not 0 < port < 65536:
            reader.problem(child(loc, "port"), "port must be between 1 and 65535")
    addresses = (
        reader.text_list(f["addresses"], child(loc, "addresses"), "addresses")
        if "addresses" in f
        else []
    )
    if not t["host"]:
        reader.problem(child(loc, "host"), "host must not be empty")
    return InventoryBroker(
        t["id"], t["host"], port, tuple(a for a in addresses if a), t.get("gateway", "")
    )


def _operator(reader: NodeReader, node: Node, loc: str) -> InventoryClient | None:
    f = reader.fields(node, loc, "an operator", OPERATOR_KEYS, ("id",))
    if f is None or "id" not in f:
        return None
    t = _texts(reader, f, loc, "id", "broker")
    return InventoryClient(t["id"], t.get("broker", ""))


def _monitor(reader: NodeReader, node: Node, loc: str) -> InventoryClient | None:
    f = reader.fields(node, loc, "a monitor", MONITOR_KEYS, ("id",))
    if f is None or "id" not in f:
        return None
    t = _texts(reader, f, loc, "id", "broker")
    commands: list[str] = []
    if "commands" in f:
        commands = reader.text_list(f["commands"], child(loc, "commands"), "commands")
        for index, cmd in enumerate(commands):
            if cmd not in MONITOR_COMMANDS:
                reader.problem(
                    item(child(loc, "commands"), index),
                    f"unknown command kind {cmd!r}; one of: {', '.join(MONITOR_COMMANDS)}",
                )
    return InventoryClient(t["id"], t.get("broker", ""), tuple(dict.fromkeys(commands)))


def _device(reader: NodeReader, node: Node, loc: str) -> InventoryDevice | None:
    f = reader.fields(node, loc, "a device", DEVICE_KEYS, ("id",))
    if f is None or "id" not in f:
        return None
    t = _texts(reader, f, loc, "id", "broker", "topic")
    topic = t.get("topic", DEFAULT_DEVICE_TOPIC).replace("{id}", t["id"])
    return InventoryDevice(t["id"], topic, t.get("broker", ""))


def _check_devices(
    reader: NodeReader, inv: Inventory, devices: list[tuple[str, InventoryDevice]]
) -> None:
    """Each device a distinct identity with one concrete topic of its own."""
    taken = {n.id for n in inv.nodes} | {c.id for c in (*inv.operators, *inv.monitors)}
    topics_seen: dict[str, str] = {}
    for loc, d in devices:
        if not re.match(NAME_PATTERN, d.id):
            reader.problem(child(loc, "id"), f"device id {d.id!r} does not match {NAME_PATTERN}")
        elif d.id in taken:
            # The certificate's common name is the ACL identity: a shared name shares rights.
            reader.problem(loc, f"id {d.id!r} is already used by a node, operator or device")
        taken.add(d.id)
        if d.broker and inv.broker(d.broker) is None:
            reader.problem(child(loc, "broker"), f"broker {d.broker!r} is not in brokers")
        elif inv.broker_of_device(d) is None:
            reader.problem(loc, f"device {d.id!r} reaches no broker (no root broker is listed)")
        where = child(loc, "topic")
        parts = d.topic.split("/")
        if not d.topic or any(c in d.topic for c in "+#\0") or d.topic.startswith(("$", "/")):
            reader.problem(where, f"topic {d.topic!r} must be one concrete topic (no wildcards, "
                           "not empty, not starting with $ or /)")  # fmt: skip
        elif parts[:2] == ["ion", "v1"] and parts[2:4] != ["devices", d.id]:
            # Inside the namespace a device must not be able to speak as a node or operator.
            reader.problem(where, f"topic {d.topic!r} is inside ion/v1/ but not under "
                           f"ion/v1/devices/{d.id}/")  # fmt: skip
        elif d.topic in topics_seen:
            reader.problem(where, f"topic {d.topic!r} is already used by {topics_seen[d.topic]}")
        topics_seen.setdefault(d.topic, loc)


def _check(reader: NodeReader, located: list[tuple[str, InventoryNode]]) -> None:
    seen: set[str] = set()
    for loc, node in located:
        if not re.match(NAME_PATTERN, node.id):
            reader.problem(child(loc, "id"), f"node id {node.id!r} does not match {NAME_PATTERN}")
        if node.id in seen:
            reader.problem(loc, f"duplicate node id {node.id!r}")
        seen.add(node.id)
    parents: dict[str, str] = {}
    for _, node in located:
        parents.setdefault(node.id, node.parent)
    for loc, node in located:
        if node.parent and node.parent not in parents:
            reader.problem(child(loc, "parent"), f"parent {node.parent!r} is not a node")
            continue
        # A parent chain must end: a loop would relay messages around it forever.
        walked: list[str] = [node.id]
        current = node.parent
        while current and current in parents and current not in walked:
            walked.append(current)
            current = parents[current]
        if current == node.id and node.id == min(walked):  # report each loop once
            reader.problem(
                child(loc, "parent"), "parents form a loop: " + " -> ".join([*walked, node.id])
            )


def _check_topology(
    reader: NodeReader,
    inv: Inventory,
    nodes: list[tuple[str, InventoryNode]],
    brokers: list[tuple[str, InventoryBroker]],
    clients: list[tuple[str, InventoryClient]],
) -> None:
    """The rules ``ion deploy`` needs: every identity unique, every node reaching a broker."""
    if any(p.severity == "error" for p in reader.problems):
        return  # loops and unknown parents make the walks below meaningless
    identities: dict[str, str] = {n.id: loc for loc, n in nodes}
    for loc, c in clients:
        if not re.match(NAME_PATTERN, c.id):
            reader.problem(child(loc, "id"), f"id {c.id!r} does not match {NAME_PATTERN}")
        elif c.id in identities:
            # The certificate's common name is the identity the ACL sees: two holders of one
            # name would share each other's rights.
            reader.problem(loc, f"id {c.id!r} is already used by {identities[c.id]}")
        identities.setdefault(c.id, loc)
        if c.broker and inv.broker(c.broker) is None:
            reader.problem(child(loc, "broker"), f"broker {c.broker!r} is not in brokers")
    broker_ids: set[str] = set()
    gateways_served: dict[str, str] = {}
    for loc, b in brokers:
        if not re.match(NAME_PATTERN, b.id):
            reader.problem(child(loc, "id"), f"broker id {b.id!r} does not match {NAME_PATTERN}")
        if b.id in broker_ids:
            reader.problem(loc, f"duplicate broker id {b.id!r}")
        broker_ids.add(b.id)
        if not b.gateway:
            if "" in gateways_served:
                reader.problem(loc, f"a second root broker (the first is {gateways_served['']})")
            gateways_served.setdefault("", loc)
            continue
        gw = inv.node(b.gateway)
        if gw is None or gw.layer != "gateway":
            reader.problem(child(loc, "gateway"), f"{b.gateway!r} is not a gateway node")
        elif b.gateway in gateways_served:
            reader.problem(loc, f"gateway {b.gateway!r} already has {gateways_served[b.gateway]}")
        gateways_served.setdefault(b.gateway, loc)
    for loc, n in nodes:
        _check_node_reach(reader, inv, loc, n)


def _check_node_reach(reader: NodeReader, inv: Inventory, loc: str, n: InventoryNode) -> None:
    if n.layer not in LAYERS:
        reader.problem(child(loc, "layer"), f"layer must be one of {', '.join(LAYERS)}")
        return
    if n.broker and inv.broker(n.broker) is None:
        reader.problem(child(loc, "broker"), f"broker {n.broker!r} is not in brokers")
        return
    if n.layer == "gateway":
        if inv.local_broker(n.id) is None:
            reader.problem(loc, f"gateway {n.id!r} has no local broker (a broker with gateway: "
                           f"{n.id})")  # fmt: skip
        elif inv.upstream_of(n.id) is None:
            reader.problem(loc, f"gateway {n.id!r} reaches no upstream broker")
        return
    if inv.broker_of(n.id) is None:
        via = f"its parent {n.parent!r}" if n.parent else "the root broker (none is listed)"
        reader.problem(loc, f"{n.layer} node {n.id!r} reaches no broker through {via}")
