"""What each gateway forwards, for its relay (``relay:`` in node.yaml) or for a Mosquitto bridge
(``topic`` lines).  Pure.

The node agent's defaults (``DEFAULT_RELAY_UP`` / ``DEFAULT_RELAY_DOWN``) carry control, model
and telemetry traffic.  Data edges are not in them: an ION that sends data across a gateway
gets one filter per source node, in the one direction it must travel, so the two directions
stay disjoint (the relay refuses overlapping filters: they would loop).  Canary verdicts of a
model edge (``.../model/canary/<node>``, retained) go the same way: up from a canary node behind
the gateway, down from one elsewhere, one filter per canary node, whenever the edge's other
consumers are on the other side.  What cannot be carried
(a model trained below a gateway for nodes above it, telemetry sent down) is a ``Problem``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ion import topics
from ion.errors import Problem
from ion.topics import Channel, TopicKind, filters_overlap
from ion.validate.inventory import Inventory
from node.config import DEFAULT_RELAY_DOWN, DEFAULT_RELAY_UP

from .placement import EdgeFlow, Placement


@dataclass(frozen=True, slots=True)
class RelayPlan:
    gateway: str
    up: tuple[str, ...]
    down: tuple[str, ...]
    extra_up: tuple[str, ...]  # beyond the defaults: written to node.yaml only when not empty
    extra_down: tuple[str, ...]


def _matches(topic: str, filters: tuple[str, ...]) -> bool:
    return any(filters_overlap(topic, f) for f in filters)


def relay_plan(
    gateway: str, inventory: Inventory, placement: Placement
) -> tuple[RelayPlan, list[Problem]]:
    below = inventory.subtree(gateway)
    up: list[str] = []
    down: list[str] = []
    problems: list[Problem] = []
    for f in placement.flows:
        where = f"ions[{f.ion}].edges[{f.edge.name}]"
        for node, inside in _canary_crossings(f, below):
            (up if inside else down).append(topics.model_canary(f.ion, f.edge.name, node))
        for source in sorted(f.producers):
            inside = source in below
            crosses = any((c in below) != inside for c in f.consumers)
            if not crosses:
                continue
            if f.is_model:
                if inside:
                    problems.append(Problem("error", where, (
                        f"model edge produced on {source} (behind gateway {gateway}) for nodes "
                        "above it: a relay carries models down only")))  # fmt: skip
                continue
            topic = topics.edge(f.ion, f.edge.name, Channel(f.edge.kind.value), source)
            same, other = (DEFAULT_RELAY_UP, DEFAULT_RELAY_DOWN)[:: 1 if inside else -1]
            if _matches(topic, same):
                continue
            if _matches(topic, other):
                problems.append(Problem("error", where, (
                    f"{f.edge.kind.value} from {source} must cross gateway {gateway} "
                    f"{'up' if inside else 'down'}, but the relay sends all "
                    f"{f.edge.kind.value} the other way")))  # fmt: skip
                continue
            (up if inside else down).append(topic)
    extra_up, extra_down = tuple(sorted(set(up))), tuple(sorted(set(down)))
    plan = RelayPlan(
        gateway,
        (*DEFAULT_RELAY_UP, *extra_up),
        (*DEFAULT_RELAY_DOWN, *extra_down),
        extra_up,
        extra_down,
    )
    return plan, problems


def _canary_crossings(f: EdgeFlow, below: frozenset[str]) -> list[tuple[str, bool]]:
    """(canary node, behind the gateway) for every canary whose verdict must cross it.  With
    ``share`` the canaries are drawn per model, so every consumer may be one."""
    policy = f.edge.policy
    if not f.is_model or policy is None or policy.canary is None:
        return []
    canary = policy.canary
    candidates = sorted(f.consumers & set(canary.nodes)) if canary.nodes else sorted(f.consumers)
    out = []
    for node in candidates:
        inside = node in below
        if any((c in below) != inside for c in f.consumers - {node}):
            out.append((node, inside))
    return out


@dataclass(frozen=True, slots=True)
class BridgeTopic:
    pattern: str
    direction: str  # "in" (upstream -> local) or "out"


def bridge_topics(plan: RelayPlan, inventory: Inventory) -> tuple[BridgeTopic, ...]:
    """The relay's filters as bridge topics.  Retransmit requests, which the relay routes by
    their target, become one topic per node: in for the nodes behind the gateway, out for the
    others (a bridge cannot route; disjoint lists are what keep it from looping)."""
    below = inventory.subtree(plan.gateway)
    out = [BridgeTopic(f, "out") for f in plan.up]
    out += [BridgeTopic(f, "in") for f in plan.down]
    for node in sorted(n.id for n in inventory.nodes):
        topic = topics.node_topic(node, TopicKind.NODE_RETRANSMIT)
        out.append(BridgeTopic(topic, "in" if node in below else "out"))
    return tuple(out)
