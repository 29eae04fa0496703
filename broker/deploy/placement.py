"""Where an ION runs on an inventory: the nodes of each pipeline, the producers and consumers
of each edge.  Pure; the ACL and relay plans are built on it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ion.model.definition import Edge, EdgeKind, IonDefinition
from ion.validate.inventory import Inventory


@dataclass(frozen=True, slots=True)
class EdgeFlow:
    """One ION edge on the inventory: who sends along it and who reads it."""

    ion: str
    edge: Edge
    producers: frozenset[str]
    consumers: frozenset[str]

    @property
    def is_model(self) -> bool:
        return self.edge.kind is EdgeKind.MODEL


@dataclass(frozen=True, slots=True)
class Placement:
    """Every ION's pipelines per node and edge flows."""

    pipelines: Mapping[str, frozenset[tuple[str, str]]]  # node -> {(ion, pipeline)}
    flows: tuple[EdgeFlow, ...]
    # node -> (where, topic filter) of every ``mqtt_source`` it runs: what it reads from devices
    device_reads: Mapping[str, frozenset[tuple[str, str]]] = field(default_factory=dict)

    def ions_of(self, node: str) -> frozenset[str]:
        return frozenset(ion for ion, _ in self.pipelines.get(node, frozenset()))


DEVICE_SOURCE = "mqtt_source"  # the component that subscribes to devices' topics itself


def place(ions: Iterable[IonDefinition], inventory: Inventory) -> Placement:
    pipelines: dict[str, set[tuple[str, str]]] = {n.id: set() for n in inventory.nodes}
    flows: list[EdgeFlow] = []
    reads: dict[str, set[tuple[str, str]]] = {}
    for ion in ions:
        nodes_of: dict[str, frozenset[str]] = {}
        for p in ion.pipelines:
            nodes_of[p.name] = frozenset(n.id for n in inventory.select(p.placement))
            for node in nodes_of[p.name]:
                pipelines[node].add((ion.name, p.name))
            for c in p.components:
                topic = c.args.get("topic")
                if c.type == DEVICE_SOURCE and isinstance(topic, str):
                    where = f"ions[{ion.name}].pipelines[{p.name}].components[{c.name}]"
                    for node in nodes_of[p.name]:
                        reads.setdefault(node, set()).add((where, topic))
        for e in ion.edges:
            consumers = frozenset().union(*(nodes_of.get(t.pipeline, ()) for t in e.targets))
            flows.append(
                EdgeFlow(ion.name, e, nodes_of.get(e.source.pipeline, frozenset()), consumers)
            )
    return Placement(
        {k: frozenset(v) for k, v in pipelines.items()},
        tuple(flows),
        {k: frozenset(v) for k, v in reads.items()},
    )
