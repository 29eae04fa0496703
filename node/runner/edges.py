"""Where a pipeline meets its ION edges: component ports bound to the SDK.

The agent tells the runner (``RunnerSpec.edges``) which ports are edge ends.  Values leaving
through an ``out`` port are handed to the SDK for that edge; an ``in`` port reads what arrives
on its edge; a model ``in`` port gets a ``ModelFeed`` (streaming) or the active model
(batch).  Telemetry needs no edge: health reports, events and stats that a component puts on an
output nobody inside the pipeline reads go to the pipeline's own topics (and to stats/events
edges that start at the bare pipeline), which is how every pipeline reports without wiring.

Values and what they travel as:

- ``HealthReport``, ``StatsReport``, ``Event``, ``DataRecords``: as they are;
- a mapping of names to numbers on a stats port: a ``StatsReport`` of scalars;
- an object with ``to_data_records()`` (e.g. a scored batch): its ``DataRecords``;
- anything else JSON can write (numbers, strings, lists, dicts) on a data edge: a
  ``DataRecords`` with a JSON payload, read back as the same value at the other end;
- a ``ModelArtifact`` on a model edge: published (manifest + chunks) by the agent.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from ion.model.event import DataRecords, Event
from ion.model.health import HealthReport, Metric, StatsReport
from node.models.artifact import ModelArtifact, ModelFeed

from .spec import EdgePort

log = logging.getLogger(__name__)

JSON_CONTENT = "application/json"


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


class EdgeIO(Protocol):
    """What the runner needs to move values along edges (``SdkEdgeIO``; a fake in tests)."""

    def send(self, component: str, port: EdgePort, value: Any) -> None: ...

    def telemetry(self, component: str, value: Any) -> bool:
        """Report ``value`` as pipeline telemetry if it is telemetry; True when it was."""
        ...

    def stream(self, port: EdgePort, stop: StopFlag) -> Iterator[Any]: ...

    def model_feed(self, port: EdgePort, stop: StopFlag) -> ModelFeed: ...

    def close(self) -> None: ...


def is_telemetry(value: Any) -> bool:
    return isinstance(value, HealthReport | StatsReport | Event)


def to_wire(value: Any, kind: str) -> Any:
    """The message body that carries ``value`` along an edge of ``kind`` (see the docstring)."""
    if isinstance(value, HealthReport | StatsReport | Event | DataRecords | ModelArtifact):
        return value
    if kind == "stats" and isinstance(value, Mapping):
        return StatsReport(
            pipeline="", scalars=tuple(Metric(str(k), float(v)) for k, v in value.items())
        )
    convert = getattr(value, "to_data_records", None)
    if callable(convert):
        records = convert()
        if isinstance(records, DataRecords):
            return records
    try:
        payload = json.dumps(value, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot send a {type(value).__name__} along a {kind} edge: {exc}") from exc
    return DataRecords(payload=payload, content_type=JSON_CONTENT)


def from_wire(body: Any) -> Any:
    """What an ``in`` port yields for a message body (the inverse of ``to_wire``)."""
    if isinstance(body, DataRecords) and body.content_type == JSON_CONTENT and not body.columns:
        return json.loads(body.payload)
    return body


class SdkEdgeIO:
    """Edges through ``node.sdk`` (the agent's socket, or standalone files without an agent).

    One SDK client per component, made on first use, so events and health carry the name of
    the component that produced them.
    """

    def __init__(self, connect: Any = None) -> None:
        if connect is None:
            from node import sdk

            connect = sdk.connect
        self._connect = connect
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _client(self, component: str) -> Any:
        with self._lock:
            client = self._clients.get(component)
            if client is None:
                client = self._clients[component] = self._connect(component=component)
            return client

    def send(self, component: str, port: EdgePort, value: Any) -> None:
        client = self._client(component)
        body = to_wire(value, port.kind)
        if isinstance(body, ModelArtifact):
            client.publish_model(port.edge, body)
            log.info("published model %s on edge %s", body.path, port.edge)
            return
        if isinstance(body, HealthReport):
            client.emit_health(body, port.edge, wait=False)
            return
        if isinstance(body, StatsReport) and not body.pipeline:
            client.emit_stats({m.name: m.value for m in body.scalars}, edge=port.edge, wait=False)
            return
        client.emit_nowait(port.edge, body)

    def telemetry(self, component: str, value: Any) -> bool:
        if (
            isinstance(value, Mapping)
            and value
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value.values())
        ):
            # A bare mapping of numbers is only telemetry on a stats port; callers pass it
            # here only for such ports.
            self._client(component).emit_stats(value, wait=False)
            return True
        if not is_telemetry(value):
            return False
        client = self._client(component)
        if isinstance(value, HealthReport):
            client.emit_health(value, wait=False)
        else:
            client.emit_nowait("", value)
        return True

    def stream(self, port: EdgePort, stop: StopFlag) -> Iterator[Any]:
        client = self._client(port.component)
        for _edge, envelope in client.subscribe([port.edge], stop=stop):
            yield from_wire(envelope.body)

    def model_feed(self, port: EdgePort, stop: StopFlag) -> ModelFeed:
        feed: ModelFeed = self._client(port.component).model_feed(port.edge, stop=stop)
        return feed

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            try:
                client.close()
            except Exception:
                log.exception("closing an SDK client failed")
