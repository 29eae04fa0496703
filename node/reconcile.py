"""What this node must run, worked out from the ION definitions it holds (pure).

``DefinitionBook`` keeps the newest definition or tombstone per ION and refuses anything older
(a replayed retained message, a stale copy relayed late).  ``plan_node`` turns the book into a
``NodePlan``: the pipelines placed on this node and the topic filters it must subscribe to.
``diff`` compares a plan with what runs and says what to start, stop and restart.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ion import topics
from ion.model.definition import EdgeKind, IonDefinition, IonDeleted, Pipeline
from ion.security.trust import TrustConfig
from ion.topics import Channel

from .identity import NodeIdentity

log = logging.getLogger(__name__)

PipelineKey = tuple[str, str]
"""(ION name, pipeline name)."""

_EDGE_CHANNELS = {
    EdgeKind.HEALTH: Channel.HEALTH,
    EdgeKind.STATS: Channel.STATS,
    EdgeKind.EVENTS: Channel.EVENTS,
    EdgeKind.DATA: Channel.DATA,
    EdgeKind.TRIGGER: Channel.TRIGGER,
}


@dataclass(frozen=True, slots=True)
class Offer:
    """The outcome of offering a definition or tombstone to the book."""

    accepted: bool
    reason: str


@dataclass(slots=True)
class DefinitionBook:
    """The newest definition (or tombstone) per ION, never going back in version.

    Given a ``TrustConfig``, ``offer`` first checks the signature: an unsigned, forged or
    untrusted item is refused before its version is even looked at, so it can neither run
    nor raise the version a genuine item must beat."""

    entries: dict[str, IonDefinition | IonDeleted] = field(default_factory=dict)
    warned_unsigned: bool = False

    def offer(self, item: IonDefinition | IonDeleted, trust: TrustConfig | None = None) -> Offer:
        if trust is not None:
            verdict = trust.check(item)
            if not verdict.accepted:
                return Offer(False, f"{verdict.reason} (version {item.version})")
            if verdict.unsigned and not self.warned_unsigned:
                self.warned_unsigned = True
                log.warning(
                    "ION %s version %d is unsigned; acting on it because trust.development_mode "
                    "is on (said once)", item.name, item.version,
                )  # fmt: skip
        held = self.entries.get(item.name)
        if held is not None:
            if item.version < held.version:
                return Offer(False, f"stale: version {item.version} < held {held.version}")
            if item.version == held.version:
                if item == held:
                    return Offer(False, "duplicate")
                return Offer(False, f"conflict: a different version {item.version} is held")
        self.entries[item.name] = item
        kind = "deleted" if isinstance(item, IonDeleted) else "accepted"
        return Offer(True, f"{kind} version {item.version}")

    def active(self) -> dict[str, IonDefinition]:
        return {n: d for n, d in self.entries.items() if isinstance(d, IonDefinition)}


@dataclass(frozen=True, slots=True)
class NodePlan:
    """Everything a node derives from the definitions it holds."""

    pipelines: Mapping[PipelineKey, Pipeline]
    ion_versions: Mapping[str, int]
    subscriptions: frozenset[str]


def base_subscriptions(node_id: str) -> frozenset[str]:
    """What every node subscribes to whatever it runs."""
    from ion.topics import TopicKind

    return frozenset(
        {
            topics.ALL_DEFINITIONS,
            topics.node_command(node_id),
            topics.node_topic(node_id, TopicKind.NODE_RETRANSMIT),
            topics.node_topic(node_id, TopicKind.NODE_ACKS),
        }
    )


def plan_node(ions: Mapping[str, IonDefinition], node: NodeIdentity) -> NodePlan:
    pipelines: dict[PipelineKey, Pipeline] = {}
    subs = set(base_subscriptions(node.node_id))
    for name, ion in sorted(ions.items()):
        mine = {p.name for p in ion.pipelines if p.placement.selects(node.node_id, node.labels)}
        if not mine:
            continue
        subs.add(topics.ion_command(name))
        for p in ion.pipelines:
            if p.name in mine:
                pipelines[(name, p.name)] = p
        for e in ion.edges:
            if not any(t.pipeline in mine for t in e.targets):
                continue
            if e.kind is EdgeKind.MODEL:
                subs.add(topics.model_filter(name, e.name))
            else:
                subs.add(topics.edge_filter(name, e.name, _EDGE_CHANNELS[e.kind]))
    return NodePlan(
        pipelines=pipelines,
        ion_versions={n: d.version for n, d in ions.items()},
        subscriptions=frozenset(subs),
    )


@dataclass(frozen=True, slots=True)
class PipelineDiff:
    start: tuple[PipelineKey, ...]
    stop: tuple[PipelineKey, ...]
    update: tuple[PipelineKey, ...]  # running with a different spec: restart with the new one


def diff(
    desired: Mapping[PipelineKey, Pipeline], running: Mapping[PipelineKey, Pipeline]
) -> PipelineDiff:
    def keys(it: Iterable[PipelineKey]) -> tuple[PipelineKey, ...]:
        return tuple(sorted(it))

    return PipelineDiff(
        start=keys(k for k in desired if k not in running),
        stop=keys(k for k in running if k not in desired),
        update=keys(k for k in desired if k in running and running[k] != desired[k]),
    )
