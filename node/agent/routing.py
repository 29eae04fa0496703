"""Pure routing rules for a gateway's relay.

A gateway relays between its local broker (the devices below it) and an upstream broker.
``up`` filters are forwarded local -> upstream, ``down`` filters upstream -> local; the two sets
never overlap (checked when the config loads), so a forwarded message can never be picked up by
the opposite direction: loops are impossible by construction.

Retransmit requests are the exception: they go towards the node that must answer, which may be
below the gateway or above it.  The gateway knows its children (the nodes whose status it sees
on its local broker), so a request is sent down exactly when its target is a child and up
exactly when it is not; each copy the gateway sees again is on the side where that rule sends
it nowhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ion.topics import Topic, TopicKind, filters_overlap
from node.outbox.classes import TrafficClass

_CLASS_OF_KIND: Mapping[TopicKind, TrafficClass] = {
    TopicKind.DEFINITION: TrafficClass.CONTROL,
    TopicKind.ION_COMMAND: TrafficClass.CONTROL,
    TopicKind.NODE_STATUS: TrafficClass.CONTROL,
    TopicKind.NODE_COMMAND: TrafficClass.CONTROL,
    TopicKind.NODE_RESULTS: TrafficClass.CONTROL,
    TopicKind.NODE_RETRANSMIT: TrafficClass.CONTROL,
    TopicKind.NODE_ACKS: TrafficClass.CONTROL,
    TopicKind.NODE_EVENTS: TrafficClass.EVENTS,
    TopicKind.MODEL_MANIFEST: TrafficClass.MODEL,
    TopicKind.MODEL_CHUNKS: TrafficClass.MODEL,
    TopicKind.MODEL_REQUESTS: TrafficClass.MODEL,
    # Retained rollout state (operators' decisions, canaries' verdicts): relayed like models.
    TopicKind.MODEL_DECISION: TrafficClass.MODEL,
    TopicKind.MODEL_CANARY: TrafficClass.MODEL,
    TopicKind.MONITOR_ALERTS: TrafficClass.EVENTS,
    TopicKind.DEVICE_DATA: TrafficClass.DATA,
    TopicKind.CLIENT_PROBE: TrafficClass.CONTROL,
}
_CLASS_OF_CHANNEL: Mapping[str, TrafficClass] = {
    "health": TrafficClass.HEALTH,
    "stats": TrafficClass.STATS,
    "events": TrafficClass.EVENTS,
    "trigger": TrafficClass.EVENTS,
    "data": TrafficClass.DATA,
}


def traffic_class_of_topic(topic: Topic) -> TrafficClass:
    if topic.channel is not None:
        return _CLASS_OF_CHANNEL[topic.channel.value]
    return _CLASS_OF_KIND[topic.kind]


def matches(topic: str, filters: Iterable[str]) -> bool:
    """Whether ``topic`` (a concrete topic) matches any of ``filters``."""
    return any(filters_overlap(topic, f) for f in filters)


def retransmit_goes_down(target_node: str, children: Iterable[str]) -> bool:
    return target_node in set(children)
