"""The MQTT topic map: every topic string in the system is built and parsed here.

Layout (``ion/v1`` is the versioned namespace)::

    ion/v1/ions/<ion>/def                                  retained ION definition (or tombstone)
    ion/v1/ions/<ion>/cmd                                  commands to every node of an ION
    ion/v1/ions/<ion>/edges/<edge>/<kind>/<node>           traffic along an edge, per source node
                                                           (kind: health|stats|events|data|trigger)
    ion/v1/ions/<ion>/edges/<edge>/model/manifest          retained latest model manifest
    ion/v1/ions/<ion>/edges/<edge>/model/chunks/<model_id> model chunks
    ion/v1/ions/<ion>/edges/<edge>/model/requests          chunk requests (resume)
    ion/v1/ions/<ion>/edges/<edge>/model/decisions/<version>  retained operator decision on a
                                                           version (approve, reject, promote,
                                                           rollback target): a Command
    ion/v1/ions/<ion>/edges/<edge>/model/canary/<node>     retained canary verdict of a node
    ion/v1/ions/<ion>/pipelines/<pipeline>/<kind>/<node>   pipeline telemetry (stats|events|health)
    ion/v1/nodes/<node>/status                             retained status; last will = offline
    ion/v1/nodes/<node>/cmd                                commands to one node
    ion/v1/nodes/<node>/results                            command results from the node
    ion/v1/nodes/<node>/events                             node-level events
    ion/v1/nodes/<node>/retransmit                         gap-repair requests to the node
    ion/v1/nodes/<node>/acks                               delivery acknowledgements to the node
    ion/v1/devices/<device>/data/<stream>                  raw readings from simple devices
    ion/v1/monitor/<monitor>/alerts                        alerts raised by a monitor
    ion/v1/clients/<client>/probe                          a client's own echo (read barrier)

ION names and node ids live under different roots (``ions/`` and ``nodes/``), so no name can
make two topics collide.  Every name segment matches ``NAME_PATTERN``, so none holds ``/``,
``+`` or ``#``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from ion.errors import InputError
from ion.model.definition import NAME_PATTERN

ROOT = "ion/v1"
_NAME = re.compile(NAME_PATTERN)
_MODEL_ID = re.compile(r"^[0-9a-f]{64}$")


class TopicError(InputError):
    """A topic string is not one of ours, or a name cannot appear in a topic."""


class TopicKind(enum.Enum):
    DEFINITION = "definition"
    ION_COMMAND = "ion_command"
    EDGE = "edge"
    MODEL_MANIFEST = "model_manifest"
    MODEL_CHUNKS = "model_chunks"
    MODEL_REQUESTS = "model_requests"
    MODEL_DECISION = "model_decision"
    MODEL_CANARY = "model_canary"
    PIPELINE = "pipeline"
    NODE_STATUS = "node_status"
    NODE_COMMAND = "node_command"
    NODE_RESULTS = "node_results"
    NODE_EVENTS = "node_events"
    NODE_RETRANSMIT = "node_retransmit"
    NODE_ACKS = "node_acks"
    DEVICE_DATA = "device_data"
    MONITOR_ALERTS = "monitor_alerts"
    CLIENT_PROBE = "client_probe"


class Channel(enum.Enum):
    """What travels on an edge or pipeline topic (models have their own topics)."""

    HEALTH = "health"
    STATS = "stats"
    EVENTS = "events"
    DATA = "data"
    TRIGGER = "trigger"


_PIPELINE_CHANNELS = frozenset({Channel.HEALTH, Channel.STATS, Channel.EVENTS})
_NODE_LEAVES = {
    "status": TopicKind.NODE_STATUS,
    "cmd": TopicKind.NODE_COMMAND,
    "results": TopicKind.NODE_RESULTS,
    "events": TopicKind.NODE_EVENTS,
    "retransmit": TopicKind.NODE_RETRANSMIT,
    "acks": TopicKind.NODE_ACKS,
}
_NODE_LEAF_OF = {v: k for k, v in _NODE_LEAVES.items()}


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic.  Fields that do not apply to ``kind`` are empty."""

    kind: TopicKind
    ion: str = ""
    edge: str = ""
    pipeline: str = ""
    node: str = ""
    channel: Channel | None = None
    model_id: str = ""
    version: str = ""  # a model version label (decision topics)
    device: str = ""
    stream: str = ""
    monitor: str = ""
    client: str = ""

    def __str__(self) -> str:
        return format_topic(self)


def _name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise TopicError(
            f"invalid {what} {value!r}: use 1-64 lower-case letters, digits, '-' or '_', "
            "starting and ending with a letter or digit"
        )
    return value


# -- builders -------------------------------------------------------------------------------


def definition(ion: str) -> str:
    return f"{ROOT}/ions/{_name(ion, 'ION name')}/def"


def ion_command(ion: str) -> str:
    return f"{ROOT}/ions/{_name(ion, 'ION name')}/cmd"


def edge(ion: str, edge_name: str, channel: Channel, node: str) -> str:
    return (
        f"{ROOT}/ions/{_name(ion, 'ION name')}/edges/{_name(edge_name, 'edge name')}"
        f"/{channel.value}/{_name(node, 'node id')}"
    )


def model_manifest(ion: str, edge_name: str) -> str:
    return f"{_model_base(ion, edge_name)}/manifest"


def model_chunks(ion: str, edge_name: str, model_id: str) -> str:
    if not _MODEL_ID.match(model_id):
        raise TopicError(f"invalid model id {model_id!r}: expected 64 lower-case hex digits")
    return f"{_model_base(ion, edge_name)}/chunks/{model_id}"


def model_requests(ion: str, edge_name: str) -> str:
    return f"{_model_base(ion, edge_name)}/requests"


def model_decision(ion: str, edge_name: str, version: str) -> str:
    """Where the operators' decision on one model version is kept (retained, last one wins),
    so a node that was offline finds every decision when it comes back."""
    return f"{_model_base(ion, edge_name)}/decisions/{_name(version, 'model version')}"


def model_canary(ion: str, edge_name: str, node: str) -> str:
    """A canary node's retained verdict on the version it tried (an ``Event``)."""
    return f"{_model_base(ion, edge_name)}/canary/{_name(node, 'node id')}"


def _model_base(ion: str, edge_name: str) -> str:
    return f"{ROOT}/ions/{_name(ion, 'ION name')}/edges/{_name(edge_name, 'edge name')}/model"


def pipeline(ion: str, pipeline_name: str, channel: Channel, node: str) -> str:
    if channel not in _PIPELINE_CHANNELS:
        raise TopicError(f"pipelines publish health, stats or events, not {channel.value}")
    return (
        f"{ROOT}/ions/{_name(ion, 'ION name')}/pipelines/{_name(pipeline_name, 'pipeline name')}"
        f"/{channel.value}/{_name(node, 'node id')}"
    )


def node_topic(node: str, kind: TopicKind) -> str:
    leaf = _NODE_LEAF_OF.get(kind)
    if leaf is None:
        raise TopicError(f"{kind.value} is not a node topic")
    return f"{ROOT}/nodes/{_name(node, 'node id')}/{leaf}"


def node_status(node: str) -> str:
    return node_topic(node, TopicKind.NODE_STATUS)


def node_command(node: str) -> str:
    return node_topic(node, TopicKind.NODE_COMMAND)


def device_data(device: str, stream: str) -> str:
    return f"{ROOT}/devices/{_name(device, 'device id')}/data/{_name(stream, 'stream name')}"


def monitor_alerts(monitor: str) -> str:
    return f"{ROOT}/monitor/{_name(monitor, 'monitor id')}/alerts"


def client_probe(client: str) -> str:
    """A topic only ``client`` uses: it publishes here and waits for the echo, which tells it
    that every retained message of its earlier subscriptions has been delivered."""
    return f"{ROOT}/clients/{_name(client, 'client id')}/probe"


# -- subscription filters ---------------------------------------------------------------------

EVERYTHING = f"{ROOT}/#"
ALL_DEFINITIONS = f"{ROOT}/ions/+/def"
ALL_NODE_STATUS = f"{ROOT}/nodes/+/status"


def edge_filter(ion: str, edge_name: str, channel: Channel) -> str:
    """Everything every source node sends along one edge."""
    return (
        f"{ROOT}/ions/{_name(ion, 'ION name')}/edges/{_name(edge_name, 'edge name')}"
        f"/{channel.value}/+"
    )


def model_filter(ion: str, edge_name: str) -> str:
    """Manifests, chunks, requests, decisions and canary verdicts of one model edge."""
    return f"{_model_base(ion, edge_name)}/#"


def pipeline_filter(ion: str, pipeline_name: str, channel: Channel) -> str:
    """Telemetry of one pipeline on ``channel`` from every node that runs it."""
    if channel not in _PIPELINE_CHANNELS:
        raise TopicError(f"pipelines publish health, stats or events, not {channel.value}")
    return (
        f"{ROOT}/ions/{_name(ion, 'ION name')}/pipelines/{_name(pipeline_name, 'pipeline name')}"
        f"/{channel.value}/+"
    )


def model_state_filters(ion: str | None = None) -> tuple[str, ...]:
    """The retained model state (manifests, decisions, canary verdicts) of every model edge
    of ``ion`` (of every ION when None); chunks and requests are left out."""
    base = f"{ROOT}/ions/{'+' if ion is None else _name(ion, 'ION name')}/edges/+/model"
    return (f"{base}/manifest", f"{base}/decisions/+", f"{base}/canary/+")


def event_filters(ion: str | None = None, node: str | None = None) -> tuple[str, ...]:
    """The subscriptions that carry events (node events, pipeline and edge events, canary
    verdicts, monitor alerts), narrowed to one ION and/or one source node when given.  Alerts
    are never narrowed here: their topic names the monitor, not what they are about."""
    i = "+" if ion is None else _name(ion, "ION name")
    n = "+" if node is None else _name(node, "node id")
    filters = (
        f"{ROOT}/ions/{i}/pipelines/+/events/{n}",
        f"{ROOT}/ions/{i}/edges/+/events/{n}",
        f"{ROOT}/ions/{i}/edges/+/model/canary/{n}",
        f"{ROOT}/monitor/+/alerts",
    )
    return filters if ion is not None else (f"{ROOT}/nodes/{n}/events", *filters)


# -- parsing ------------------------------------------------------------------------------------


def format_topic(t: Topic) -> str:
    """The topic string for a parsed ``Topic`` (the inverse of ``parse``)."""
    k = t.kind
    if k is TopicKind.DEFINITION:
        return definition(t.ion)
    if k is TopicKind.ION_COMMAND:
        return ion_command(t.ion)
    if k is TopicKind.EDGE:
        assert t.channel is not None
        return edge(t.ion, t.edge, t.channel, t.node)
    if k is TopicKind.MODEL_MANIFEST:
        return model_manifest(t.ion, t.edge)
    if k is TopicKind.MODEL_CHUNKS:
        return model_chunks(t.ion, t.edge, t.model_id)
    if k is TopicKind.MODEL_REQUESTS:
        return model_requests(t.ion, t.edge)
    if k is TopicKind.MODEL_DECISION:
        return model_decision(t.ion, t.edge, t.version)
    if k is TopicKind.MODEL_CANARY:
        return model_canary(t.ion, t.edge, t.node)
    if k is TopicKind.PIPELINE:
        assert t.channel is not None
        return pipeline(t.ion, t.pipeline, t.channel, t.node)
    if k is TopicKind.DEVICE_DATA:
        return device_data(t.device, t.stream)
    if k is TopicKind.MONITOR_ALERTS:
        return monitor_alerts(t.monitor)
    if k is TopicKind.CLIENT_PROBE:
        return client_probe(t.client)
    return node_topic(t.node, k)


def parse(topic: str) -> Topic:
    """Parse a topic string; raises ``TopicError`` for anything not in the map."""
    try:
        return _parse(topic)
    except TopicError as exc:
        raise TopicError(f"{topic!r}: {exc}") from None


def _parse(topic: str) -> Topic:
    if not topic.startswith(ROOT + "/"):
        raise TopicError(f"not under {ROOT}/")
    parts = topic[len(ROOT) + 1 :].split("/")
    match parts:
        case ["ions", ion, "def"]:
            return Topic(TopicKind.DEFINITION, ion=_name(ion, "ION name"))
        case ["ions", ion, "cmd"]:
            return Topic(TopicKind.ION_COMMAND, ion=_name(ion, "ION name"))
        case ["ions", ion, "edges", e, "model", "manifest"]:
            return Topic(
                TopicKind.MODEL_MANIFEST, ion=_name(ion, "ION name"), edge=_name(e, "edge")
            )
        case ["ions", ion, "edges", e, "model", "requests"]:
            return Topic(
                TopicKind.MODEL_REQUESTS, ion=_name(ion, "ION name"), edge=_name(e, "edge")
            )
        case ["ions", ion, "edges", e, "model", "chunks", model_id]:
            if not _MODEL_ID.match(model_id):
                raise TopicError(f"invalid model id {model_id!r}")
            return Topic(
                TopicKind.MODEL_CHUNKS,
                ion=_name(ion, "ION name"),
                edge=_name(e, "edge"),
                model_id=model_id,
            )
        case ["ions", ion, "edges", e, "model", "decisions", version]:
            return Topic(
                TopicKind.MODEL_DECISION,
                ion=_name(ion, "ION name"),
                edge=_name(e, "edge"),
                version=_name(version, "model version"),
            )
        case ["ions", ion, "edges", e, "model", "canary", node]:
            return Topic(
                TopicKind.MODEL_CANARY,
                ion=_name(ion, "ION name"),
                edge=_name(e, "edge"),
                node=_name(node, "node id"),
            )
        case ["ions", ion, "edges", e, channel, node]:
            return Topic(
                TopicKind.EDGE,
                ion=_name(ion, "ION name"),
                edge=_name(e, "edge"),
                channel=_channel(channel),
                node=_name(node, "node id"),
            )
        case ["ions", ion, "pipelines", p, channel, node]:
            ch = _channel(channel)
            if ch not in _PIPELINE_CHANNELS:
                raise TopicError(f"unknown pipeline channel {channel!r}")
            return Topic(
                TopicKind.PIPELINE,
                ion=_name(ion, "ION name"),
                pipeline=_name(p, "pipeline name"),
                channel=ch,
                node=_name(node, "node id"),
            )
        case ["nodes", node, leaf] if leaf in _NODE_LEAVES:
            return Topic(_NODE_LEAVES[leaf], node=_name(node, "node id"))
        case ["devices", device, "data", stream]:
            return Topic(
                TopicKind.DEVICE_DATA,
                device=_name(device, "device id"),
                stream=_name(stream, "stream name"),
            )
        case ["monitor", monitor, "alerts"]:
            return Topic(TopicKind.MONITOR_ALERTS, monitor=_name(monitor, "monitor id"))
        case ["clients", client, "probe"]:
            return Topic(TopicKind.CLIENT_PROBE, client=_name(client, "client id"))
    raise TopicError("unknown topic layout")


def _channel(value: str) -> Channel:
    try:
        return Channel(value)
    except ValueError:
        raise TopicError(f"unknown channel {value!r}") from None


def filters_overlap(a: str, b: str) -> bool:
    """Whether some topic matches both MQTT filters ``a`` and ``b``.

    A gateway relays disjoint filter sets each way; this is the check that they are disjoint.
    """
    pa, pb = a.split("/"), b.split("/")
    for i in range(max(len(pa), len(pb))):
        x = pa[i] if i < len(pa) else None
        y = pb[i] if i < len(pb) else None
        if x == "#" or y == "#":
            return True
        if x is None or y is None:
            return False
        if x != y and "+" not in (x, y):
            return False
    return True


_RETAINED_KINDS = frozenset(
    {
        TopicKind.DEFINITION,
        TopicKind.NODE_STATUS,
        TopicKind.MODEL_MANIFEST,
        TopicKind.MODEL_DECISION,
        TopicKind.MODEL_CANARY,
    }
)


def is_retained(topic: Topic) -> bool:
    """Whether messages on ``topic`` are published retained (the latest state of something).

    A relay needs this: MQTT clears the retain flag on live deliveries, so a forwarded
    message's flag must come from what the topic is, not from how it arrived.
    """
    return topic.kind in _RETAINED_KINDS
