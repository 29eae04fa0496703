"""Least-privilege topic ACLs from the IONs and the inventory (pure).

Every topic comes from ``ion.topics``; wildcards and ``%u`` are put in by replacing a segment
of a topic built there, never by writing topic strings by hand.

Who may do what:

- a node writes its own status, events and results, the telemetry of the pipelines placed on
  it, the edges those pipelines produce (model manifests and chunks of the model edges), the
  chunk requests and canary verdicts of the model edges it consumes, and acks and retransmit
  requests to the nodes it consumes from; it reads every definition, its own commands, acks
  and retransmit requests, the commands of the IONs it runs, the edges it consumes and the
  chunk requests of the model edges it produces;
- a gateway, on its upstream broker, may do what every node behind it may do (it speaks for
  them there), and on its local broker the mirror image (it reads what they write and writes
  what they read), which is exactly what its relay forwards;
- operators read everything and write definitions, commands and model decisions;
- monitors read everything and write their alerts, the commands they are allowed and, with
  ``models``, model chunks (their model cache answers requests);
- a device writes its one topic (from the inventory) and reads nothing; a node whose pipelines
  read devices (``mqtt_source``) reads the source's topic filter on the broker it connects to
  (``device_problems`` keeps such filters out of ``ion/v1/``, except device topics).

Everything is one block per identity, a node's own topics (status, events, results, commands,
acks, retransmit requests) included: a ``pattern`` line with ``%u`` would apply to every
identity, so a device could publish a status as a node of its own name.  The one pattern
line is the CLI's probe topic, named by the client id (``%c``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from ion import topics
from ion.errors import Problem
from ion.model.definition import EdgeKind
from ion.topics import Channel, TopicKind, filters_overlap
from ion.validate.inventory import Inventory, InventoryClient

from .placement import EdgeFlow, Placement

Access = Literal["read", "write", "readwrite"]
_PH = "zz-placeholder"  # a valid name, swapped for a wildcard or %u after the topic is built
_MODEL_ID_PH = "0" * 64
_PIPELINE_CHANNELS = (Channel.HEALTH, Channel.STATS, Channel.EVENTS)


@dataclass(frozen=True, slots=True, order=True)
class Rule:
    topic: str
    access: Access


@dataclass(frozen=True, slots=True)
class UserBlock:
    identity: str
    role: str  # shown as a comment: why this identity is here
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class BrokerAcl:
    broker: str
    patterns: tuple[Rule, ...]
    users: tuple[UserBlock, ...]

    def rules_of(self, identity: str) -> frozenset[Rule]:
        """Every rule that applies to ``identity`` (its blocks and the patterns, expanded)."""
        own = {r for u in self.users if u.identity == identity for r in u.rules}
        own |= {Rule(r.topic.replace("%u", identity), r.access) for r in self.patterns}
        return frozenset(own)


def swap(topic: str, placeholder: str, value: str) -> str:
    """``topic`` with every segment equal to ``placeholder`` replaced by ``value``."""
    return "/".join(value if part == placeholder else part for part in topic.split("/"))


def _any(topic: str) -> str:
    return swap(topic, _PH, "+")


def self_rules(node: str) -> tuple[Rule, ...]:
    """What every node may do on its own topics (in its own block: a ``pattern`` line with
    ``%u`` would give them to every identity, devices, operators and monitors included)."""
    return (
        Rule(topics.node_status(node), "write"),
        Rule(topics.node_topic(node, TopicKind.NODE_EVENTS), "write"),
        Rule(topics.node_topic(node, TopicKind.NODE_RESULTS), "write"),
        Rule(topics.node_command(node), "read"),
        Rule(topics.node_topic(node, TopicKind.NODE_ACKS), "read"),
        Rule(topics.node_topic(node, TopicKind.NODE_RETRANSMIT), "read"),
    )


def patterns() -> tuple[Rule, ...]:
    # The CLI's read barrier: each session echoes itself on a topic named by its client id.
    return (Rule(swap(topics.client_probe(_PH), _PH, "%c"), "readwrite"),)


def node_rules(node: str, placement: Placement) -> frozenset[Rule]:
    """Everything ``node`` may do as a node (self rules included)."""
    rules: set[Rule] = set(self_rules(node))
    rules.add(Rule(topics.ALL_DEFINITIONS, "read"))
    for ion in placement.ions_of(node):
        rules.add(Rule(topics.ion_command(ion), "read"))
    for ion, pipeline in placement.pipelines.get(node, frozenset()):
        for ch in _PIPELINE_CHANNELS:
            rules.add(Rule(topics.pipeline(ion, pipeline, ch, node), "write"))
    for f in placement.flows:
        name = f.edge.name
        if node in f.producers:
            if f.is_model:
                rules.add(Rule(topics.model_manifest(f.ion, name), "write"))
                chunks = topics.model_chunks(f.ion, name, _MODEL_ID_PH)
                rules.add(Rule(swap(chunks, _MODEL_ID_PH, "+"), "write"))
                rules.add(Rule(topics.model_requests(f.ion, name), "read"))
            else:
                rules.add(Rule(topics.edge(f.ion, name, Channel(f.edge.kind.value), node), "write"))
        if node in f.consumers:
            if f.is_model:
                rules.add(Rule(topics.model_filter(f.ion, name), "read"))
                rules.add(Rule(topics.model_requests(f.ion, name), "write"))
                rules.add(Rule(topics.model_canary(f.ion, name, node), "write"))
            else:
                channel = Channel(f.edge.kind.value)
                rules.add(Rule(topics.edge_filter(f.ion, name, channel), "read"))
            rules |= _trigger_watch_rules(f)
            for source in f.producers - {node}:
                rules.add(Rule(topics.node_topic(source, TopicKind.NODE_ACKS), "write"))
                rules.add(Rule(topics.node_topic(source, TopicKind.NODE_RETRANSMIT), "write"))
    return frozenset(rules)


def _trigger_watch_rules(f: EdgeFlow) -> set[Rule]:
    """A trigger's target node evaluates the condition itself, from the source pipeline's
    telemetry (health only for drift) and every node's status (node.agent.trigger_watch)."""
    cond = f.edge.trigger
    if f.edge.kind is not EdgeKind.TRIGGER or cond is None:
        return set()
    channels = (Channel.HEALTH,) if cond.metric == "drift" else _PIPELINE_CHANNELS
    source = f.edge.source.pipeline
    rules = {Rule(topics.pipeline_filter(f.ion, source, ch), "read") for ch in channels}
    return rules | {Rule(topics.ALL_NODE_STATUS, "read")}


def relay_upstream_rules(
    gateway: str, inventory: Inventory, placement: Placement
) -> frozenset[Rule]:
    """On its upstream broker a gateway speaks for every node behind it (itself included)."""
    out: set[Rule] = set()
    for node in inventory.subtree(gateway):
        out |= node_rules(node, placement)
    return frozenset(out)


def relay_local_rules(gateway: str, inventory: Inventory, placement: Placement) -> frozenset[Rule]:
    """On its local broker the mirror image: it reads what they write, writes what they read."""
    flip: Mapping[Access, Access] = {"read": "write", "write": "read", "readwrite": "readwrite"}
    out: set[Rule] = set()
    for node in inventory.subtree(gateway) - {gateway}:
        out |= {Rule(r.topic, flip[r.access]) for r in node_rules(node, placement)}
    return frozenset(out)


def device_read_rules(node: str, placement: Placement) -> frozenset[Rule]:
    """What ``node`` reads from devices, on its own broker only (never relayed: devices
    publish to the broker of the site whose nodes read them)."""
    return frozenset(Rule(f, "read") for _, f in placement.device_reads.get(node, frozenset()))


def device_problems(placement: Placement) -> list[Problem]:
    """A device source reading inside ``ion/v1/`` would give its nodes read access to the
    system's own traffic through the ION alone: only device topics may be read that way."""
    out = []
    for where, f in sorted({r for reads in placement.device_reads.values() for r in reads}):
        if filters_overlap(f, topics.EVERYTHING) and f.split("/")[:3] != ["ion", "v1", "devices"]:
            out.append(Problem("error", f"{where}.args.topic", (
                f"a device source may not read {f!r}: outside ion/v1/ or under ion/v1/devices/"
                " only")))  # fmt: skip
    return out


def operator_rules() -> frozenset[Rule]:
    return frozenset(
        {
            Rule(topics.EVERYTHING, "read"),
            Rule(_any(topics.definition(_PH)), "write"),
            Rule(_any(topics.ion_command(_PH)), "write"),
            Rule(_any(topics.node_command(_PH)), "write"),
            Rule(_any(topics.model_decision(_PH, _PH, _PH)), "write"),
        }
    )


def monitor_rules(monitor: InventoryClient) -> frozenset[Rule]:
    rules = {Rule(topics.EVERYTHING, "read"), Rule(topics.monitor_alerts(monitor.id), "write")}
    if "ion" in monitor.commands:
        rules.add(Rule(_any(topics.ion_command(_PH)), "write"))
    if "node" in monitor.commands:
        rules.add(Rule(_any(topics.node_command(_PH)), "write"))
    if "models" in monitor.commands:  # its model cache answers chunk requests
        chunks = _any(topics.model_chunks(_PH, _PH, _MODEL_ID_PH))
        rules.add(Rule(swap(chunks, _MODEL_ID_PH, "+"), "write"))
    return frozenset(rules)


def merge(rules: Iterable[Rule]) -> tuple[Rule, ...]:
    """One rule per topic (read + write = readwrite), sorted."""
    access: dict[str, set[str]] = {}
    for r in rules:
        access.setdefault(r.topic, set()).update(
            ("read", "write") if r.access == "readwrite" else (r.access,)
        )
    out = []
    for topic, kinds in access.items():
        a: Access = "readwrite" if len(kinds) == 2 else "read" if "read" in kinds else "write"
        out.append(Rule(topic, a))
    return tuple(sorted(out))


def broker_acls(
    inventory: Inventory, placement: Placement, *, relay: bool = True
) -> dict[str, BrokerAcl]:
    """The ACL of every broker of the inventory.  ``relay``: gateways relay through their agent
    (False: through Mosquitto bridges, which need no rights on the local broker)."""
    blocks: dict[str, list[tuple[str, str, set[Rule]]]] = {b.id: [] for b in inventory.brokers}

    def add(broker: str | None, identity: str, role: str, rules: Iterable[Rule]) -> None:
        if broker is not None:
            blocks[broker].append((identity, role, set(rules)))

    root = inventory.root_broker()
    for node in inventory.nodes:
        b = inventory.broker_of(node.id)
        add(b.id if b else None, node.id, f"{node.layer} node",
            node_rules(node.id, placement) | device_read_rules(node.id, placement))  # fmt: skip
        if node.layer != "gateway":
            continue
        up = inventory.upstream_of(node.id)
        how = "relay" if relay else "bridge"
        add(up.id if up else None, node.id, f"gateway {how} (upstream side)",
            relay_upstream_rules(node.id, inventory, placement))  # fmt: skip
        if relay and b is not None:
            add(b.id, node.id, "gateway relay (local side)",
                relay_local_rules(node.id, inventory, placement))  # fmt: skip
    for op in inventory.operators:
        add(op.broker or (root.id if root else None), op.id, "operator", operator_rules())
    for mon in inventory.monitors:
        add(mon.broker or (root.id if root else None), mon.id, "monitor", monitor_rules(mon))
    for dev in inventory.devices:
        d = inventory.broker_of_device(dev)
        add(d.id if d else None, dev.id, "device", {Rule(dev.topic, "write")})
    out: dict[str, BrokerAcl] = {}
    pats = patterns()
    for broker, entries in blocks.items():
        merged: dict[str, tuple[list[str], set[Rule]]] = {}
        for identity, role, rules in entries:
            roles, acc = merged.setdefault(identity, ([], set()))
            roles.append(role)
            acc |= rules
        users = tuple(
            UserBlock(identity, ", ".join(roles), merge(r))
            for identity, (roles, r) in sorted(merged.items())
        )
        out[broker] = BrokerAcl(broker, pats, users)
    return out


def render_acl(acl: BrokerAcl, source: str) -> str:
    lines = [
        f"# Mosquitto ACL of broker {acl.broker!r}, generated by `ion deploy` from {source}.",
        "# Regenerate it (ion deploy) when an ION or the inventory changes; edits are lost.",
        "# Identities are certificate common names (use_identity_as_username).",
        "",
        "# Every session, on its own probe topic (%c: its client id).",
        *(f"pattern {r.access} {r.topic}" for r in acl.patterns),
    ]
    for u in acl.users:
        lines += ["", f"# {u.identity}: {u.role}", f"user {u.identity}"]
        lines += [f"topic {r.access} {r.topic}" for r in u.rules]
    return "\n".join(lines) + "\n"
