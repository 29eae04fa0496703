"""A gateway's relay rules (pure)."""

from __future__ import annotations

import pytest

from ion import topics
from ion.topics import TopicKind
from node.agent.routing import matches, retransmit_goes_down, traffic_class_of_topic
from node.config import DEFAULT_RELAY_DOWN, DEFAULT_RELAY_UP
from node.outbox.classes import TrafficClass


@pytest.mark.parametrize(
    ("topic", "cls"),
    [
        ("ion/v1/ions/k/def", TrafficClass.CONTROL),
        ("ion/v1/nodes/n/status", TrafficClass.CONTROL),
        ("ion/v1/nodes/n/events", TrafficClass.EVENTS),
        ("ion/v1/ions/k/edges/e/health/n", TrafficClass.HEALTH),
        ("ion/v1/ions/k/edges/e/stats/n", TrafficClass.STATS),
        ("ion/v1/ions/k/edges/e/data/n", TrafficClass.DATA),
        ("ion/v1/ions/k/edges/e/trigger/n", TrafficClass.EVENTS),
        ("ion/v1/ions/k/edges/e/model/manifest", TrafficClass.MODEL),
        ("ion/v1/ions/k/pipelines/p/stats/n", TrafficClass.STATS),
    ],
)
def test_traffic_class_of_topic(topic: str, cls: TrafficClass) -> None:
    assert traffic_class_of_topic(topics.parse(topic)) is cls


def test_every_topic_kind_has_a_class() -> None:
    samples = {
        TopicKind.MODEL_CHUNKS: "ion/v1/ions/k/edges/e/model/chunks/" + "a" * 64,
        TopicKind.MODEL_REQUESTS: "ion/v1/ions/k/edges/e/model/requests",
        TopicKind.ION_COMMAND: "ion/v1/ions/k/cmd",
        TopicKind.DEVICE_DATA: "ion/v1/devices/d/data/s",
        TopicKind.MONITOR_ALERTS: "ion/v1/monitor/m/alerts",
        TopicKind.CLIENT_PROBE: "ion/v1/clients/c/probe",
    }
    for text in samples.values():
        traffic_class_of_topic(topics.parse(text))


def test_default_relay_directions() -> None:
    up, down = DEFAULT_RELAY_UP, DEFAULT_RELAY_DOWN
    assert matches("ion/v1/nodes/edge-1/status", up)
    assert not matches("ion/v1/nodes/edge-1/status", down)
    assert matches("ion/v1/ions/k/def", down)
    assert not matches("ion/v1/ions/k/def", up)
    assert matches("ion/v1/ions/k/edges/drift/health/edge-1", up)
    assert matches("ion/v1/ions/k/edges/m/model/manifest", down)
    assert matches("ion/v1/nodes/edge-1/cmd", down)
    # No topic goes both ways.
    for t in ("ion/v1/nodes/n/retransmit", "ion/v1/ions/k/edges/e/data/n"):
        assert not (matches(t, up) and matches(t, down))


def test_retransmit_direction_follows_children() -> None:
    assert retransmit_goes_down("edge-1", {"edge-1", "edge-2"})
    assert not retransmit_goes_down("cloud-1", {"edge-1"})
