"""The topic map: every builder, its parse, and every way a topic can be wrong."""

from __future__ import annotations

import pytest

from ion import topics
from ion.topics import Channel, Topic, TopicError, TopicKind

MID = "a" * 64

# (topic string, the parsed value) — each row is checked both ways.
TABLE: list[tuple[str, Topic]] = [
    ("ion/v1/ions/kmeans/def", Topic(TopicKind.DEFINITION, ion="kmeans")),
    ("ion/v1/ions/kmeans/cmd", Topic(TopicKind.ION_COMMAND, ion="kmeans")),
    (
        "ion/v1/ions/kmeans/edges/drift/health/edge-1",
        Topic(TopicKind.EDGE, ion="kmeans", edge="drift", channel=Channel.HEALTH, node="edge-1"),
    ),
    (
        "ion/v1/ions/kmeans/edges/retrain/trigger/gw_2",
        Topic(TopicKind.EDGE, ion="kmeans", edge="retrain", channel=Channel.TRIGGER, node="gw_2"),
    ),
    (
        "ion/v1/ions/kmeans/edges/feed/data/cloud-1",
        Topic(TopicKind.EDGE, ion="kmeans", edge="feed", channel=Channel.DATA, node="cloud-1"),
    ),
    (
        "ion/v1/ions/kmeans/edges/model/model/manifest",
        Topic(TopicKind.MODEL_MANIFEST, ion="kmeans", edge="model"),
    ),
    (
        f"ion/v1/ions/kmeans/edges/model/model/chunks/{MID}",
        Topic(TopicKind.MODEL_CHUNKS, ion="kmeans", edge="model", model_id=MID),
    ),
    (
        "ion/v1/ions/kmeans/edges/model/model/requests",
        Topic(TopicKind.MODEL_REQUESTS, ion="kmeans", edge="model"),
    ),
    (
        "ion/v1/ions/kmeans/edges/model/model/decisions/1718000000000",
        Topic(TopicKind.MODEL_DECISION, ion="kmeans", edge="model", version="1718000000000"),
    ),
    (
        "ion/v1/ions/kmeans/edges/model/model/canary/edge-1",
        Topic(TopicKind.MODEL_CANARY, ion="kmeans", edge="model", node="edge-1"),
    ),
    (
        "ion/v1/ions/kmeans/pipelines/inference/stats/edge-1",
        Topic(
            TopicKind.PIPELINE,
            ion="kmeans",
            pipeline="inference",
            channel=Channel.STATS,
            node="edge-1",
        ),
    ),
    ("ion/v1/nodes/edge-1/status", Topic(TopicKind.NODE_STATUS, node="edge-1")),
    ("ion/v1/nodes/edge-1/cmd", Topic(TopicKind.NODE_COMMAND, node="edge-1")),
    ("ion/v1/nodes/edge-1/results", Topic(TopicKind.NODE_RESULTS, node="edge-1")),
    ("ion/v1/nodes/edge-1/events", Topic(TopicKind.NODE_EVENTS, node="edge-1")),
    ("ion/v1/nodes/edge-1/retransmit", Topic(TopicKind.NODE_RETRANSMIT, node="edge-1")),
    ("ion/v1/nodes/edge-1/acks", Topic(TopicKind.NODE_ACKS, node="edge-1")),
    (
        "ion/v1/devices/sensor-7/data/readings",
        Topic(TopicKind.DEVICE_DATA, device="sensor-7", stream="readings"),
    ),
    ("ion/v1/monitor/main/alerts", Topic(TopicKind.MONITOR_ALERTS, monitor="main")),
    ("ion/v1/clients/ion-cli-1a2b/probe", Topic(TopicKind.CLIENT_PROBE, client="ion-cli-1a2b")),
]


@pytest.mark.parametrize(("text", "parsed"), TABLE, ids=[t for t, _ in TABLE])
def test_parse_and_format_are_inverse(text: str, parsed: Topic) -> None:
    assert topics.parse(text) == parsed
    assert topics.format_topic(parsed) == text
    assert str(parsed) == text


def test_table_covers_every_kind() -> None:
    assert {p.kind for _, p in TABLE} == set(TopicKind)


def test_builders_match_table() -> None:
    assert topics.definition("kmeans") == "ion/v1/ions/kmeans/def"
    assert topics.edge("k", "e", Channel.HEALTH, "n") == "ion/v1/ions/k/edges/e/health/n"
    assert topics.model_chunks("k", "e", MID).endswith(f"/model/chunks/{MID}")
    assert topics.node_status("n1") == "ion/v1/nodes/n1/status"
    assert topics.node_command("n1") == "ion/v1/nodes/n1/cmd"
    assert topics.device_data("d", "s") == "ion/v1/devices/d/data/s"


BAD_TOPICS = [
    "",
    "ion/v1",
    "ion/v2/ions/k/def",
    "other/ion/v1/ions/k/def",
    "ion/v1/ions/k",
    "ion/v1/ions/k/def/extra",
    "ion/v1/ions/K/def",  # upper case
    "ion/v1/ions/-k/def",  # leading dash
    "ion/v1/ions/+/def",  # a wildcard is not a name
    "ion/v1/ions/#/def",
    "ion/v1/ions//def",
    "ion/v1/ions/k/edges/e/bogus/n",
    "ion/v1/ions/k/edges/e/model/chunks/xyz",
    "ion/v1/ions/k/pipelines/p/data/n",  # pipelines publish health/stats/events only
    "ion/v1/nodes/n/unknown",
    "ion/v1/nodes/n",
    "ion/v1/devices/d/data",
    "ion/v1/monitor/m/other",
    "ion/v1/ions/" + "a" * 65 + "/def",
]


@pytest.mark.parametrize("text", BAD_TOPICS)
def test_bad_topics_raise_topic_error(text: str) -> None:
    with pytest.raises(TopicError, match=r"unknown|invalid|not under"):
        topics.parse(text)


@pytest.mark.parametrize("name", ["", "A", "a/b", "a+b", "a#", "-a", "a-", "a b", "é"])
def test_builders_refuse_names_that_cannot_be_topic_segments(name: str) -> None:
    with pytest.raises(TopicError, match="invalid"):
        topics.definition(name)
    with pytest.raises(TopicError, match="invalid"):
        topics.node_status(name)


def test_pipeline_topics_refuse_data_channel() -> None:
    with pytest.raises(TopicError):
        topics.pipeline("k", "p", Channel.DATA, "n")


def test_node_topic_refuses_non_node_kind() -> None:
    with pytest.raises(TopicError):
        topics.node_topic("n", TopicKind.DEFINITION)


def test_filters() -> None:
    assert topics.EVERYTHING == "ion/v1/#"
    assert topics.ALL_DEFINITIONS == "ion/v1/ions/+/def"
    assert topics.edge_filter("k", "e", Channel.HEALTH) == "ion/v1/ions/k/edges/e/health/+"
    assert topics.model_filter("k", "e") == "ion/v1/ions/k/edges/e/model/#"
    # Node ids and ION names never share a level, whatever they are called.
    assert topics.definition("nodes") != topics.node_status("ions")


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("ion/v1/#", "ion/v1/ions/+/def", True),
        ("ion/v1/ions/+/def", "ion/v1/ions/k/def", True),
        ("ion/v1/ions/+/def", "ion/v1/ions/+/cmd", False),
        ("ion/v1/nodes/+/status", "ion/v1/nodes/n/cmd", False),
        ("a/b", "a/b/c", False),
        ("a/b/#", "a/b", True),  # '#' also matches the parent level
        ("a/+", "a/b/c", False),
        ("+/+", "a/b", True),
        ("a", "b", False),
    ],
)
def test_filters_overlap(a: str, b: str, overlap: bool) -> None:
    assert topics.filters_overlap(a, b) is overlap
    assert topics.filters_overlap(b, a) is overlap


def test_retained_topics() -> None:
    assert topics.is_retained(topics.parse("ion/v1/ions/k/def"))
    assert topics.is_retained(topics.parse("ion/v1/nodes/n/status"))
    assert topics.is_retained(topics.parse("ion/v1/ions/k/edges/m/model/manifest"))
    assert not topics.is_retained(topics.parse("ion/v1/ions/k/edges/e/data/n"))
    assert not topics.is_retained(topics.parse("ion/v1/nodes/n/cmd"))
