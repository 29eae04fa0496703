"""The agent's side of the local socket (``node.local.port.AgentPort``), for its own pipelines.

- **Who**: each job the agent starts gets a fresh random token in its environment
  (``ION_AGENT_TOKEN``); ``authorize`` compares it in constant time with the token of the job
  the ``Hello`` names.  A token dies with its job.
- **Out**: a component's emit on a named edge must leave its own pipeline; the message is
  stored in the outbox before the reply.  Emits on ``""`` are the pipeline's telemetry (stats,
  events, health): published on the pipeline's topics, and on every stats/events/health edge
  that starts at the bare pipeline.  A model is published through the model exchange (the
  component names a file or directory on this machine).
- **In**: edge messages for a local pipeline wait in the pending inbox (``node.inbox.pending``)
  until the component reports them handled; model edges deliver the active model version
  (a manifest whose ``local_path`` annotation says where it is unpacked).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Protocol

from ion import topics
from ion.errors import DecodeError, InputError, RefusedError
from ion.model.definition import EdgeKind
from ion.model.health import HealthReport
from ion.model.local import Hello
from ion.model.manifest import ModelManifest
from ion.model.messages import DataRecords, Envelope, Event, StatsReport
from ion.topics import Channel
from ion.wire.codec import decode
from node.inbox.pending import PendingInbox
from node.local.port import ClientInfo, Inbound
from node.models.artifact import LOCAL_PATH, ModelArtifact, artifact_of, manifest_for

from .drift import NodeDrift
from .edgeports import IonEdges

log = logging.getLogger(__name__)

_TELEMETRY: dict[type, Channel] = {
    HealthReport: Channel.HEALTH,
    StatsReport: Channel.STATS,
    Event: Channel.EVENTS,
}


class ModelWatchLike(Protocol):
    @property
    def generation(self) -> int: ...

    async def wait_changed(self, after: int) -> int: ...


class ModelSide(Protocol):
    """What the port needs from the agent's model exchange (``node.agent.models``)."""

    async def publish(
        self, ion: str, edge: str, pipeline: str, artifact: ModelArtifact
    ) -> ModelManifest: ...

    def active(self, ion: str, edge: str) -> ModelArtifact | None: ...

    def watch(self, ion: str, edge: str) -> ModelWatchLike: ...

    async def report(
        self, ion: str, edge: str, model_id: str, ok: bool, detail: str = "", *, pipeline: str = ""
    ) -> None: ...


Publish = Callable[..., Awaitable[None]]


class LocalPort:
    """Implements ``AgentPort`` for an agent (see the module docstring)."""

    def __init__(
        self,
        *,
        node_id: str,
        publish: Publish,
        edges_of: Callable[[str], IonEdges | None],
        pending: PendingInbox,
        models: ModelSide | None = None,
        drift: NodeDrift | None = None,
    ) -> None:
        self._drift = drift
        self._node_id = node_id
        self._publish = publish
        self._edges_of = edges_of
        self._pending = pending
        self._models = models
        self._tokens: dict[tuple[str, str], str] = {}
        self._arrived: dict[tuple[str, str], asyncio.Event] = {}

    # -- tokens ----------------------------------------------------------------------------------

    def set_edges(self, edges_of: Callable[[str], IonEdges | None]) -> None:
        self._edges_of = edges_of
        if self._drift is not None:
            self._drift.set_edges(edges_of)

    def issue_token(self, ion: str, pipeline: str) -> str:
        token = secrets.token_urlsafe(32)
        self._tokens[(ion, pipeline)] = token
        return token

    def revoke(self, ion: str, pipeline: str) -> None:
        self._tokens.pop((ion, pipeline), None)

    def notify(self, ion: str, pipeline: str) -> None:
        """Something was added to the pending inbox of ``ion/pipeline``."""
        event = self._arrived.get((ion, pipeline))
        if event is not None:
            event.set()

    # -- AgentPort ------------------------------------------------------------------------------

    def authorize(self, hello: Hello) -> ClientInfo:
        expected = self._tokens.get((hello.ion, hello.pipeline), "")
        # Compared even when no job is known, so the time taken says nothing about which exist.
        ok = hmac.compare_digest(hello.token.encode(), (expected or "\0" * 43).encode())
        if not expected or not ok:
            raise RefusedError("unknown job token")
        return ClientInfo(hello.ion, hello.pipeline, hello.component)

    async def emit(self, client: ClientInfo, edge: str, envelope: Envelope) -> None:
        if envelope.ion and envelope.ion != client.ion:
            raise InputError(f"message for ION {envelope.ion!r} from a pipeline of {client.ion!r}")
        body = envelope.body
        if not edge:
            await self._telemetry(client, envelope)
            return
        edges = self._edges_of(client.ion)
        e = edges.edges.get(edge) if edges is not None else None
        if e is None or e.source.pipeline != client.pipeline:
            raise InputError(f"edge {edge!r} does not leave pipeline {client.label}")
        if e.kind is EdgeKind.MODEL:
            if not isinstance(body, ModelManifest):
                raise InputError(f"edge {edge!r} carries models, not {type(body).__name__}")
            await self._publish_model(client, edge, body)
            return
        if e.kind is EdgeKind.TRIGGER:
            raise InputError(f"edge {edge!r} is a trigger: the agent fires it, not a component")
        if e.kind is not EdgeKind.DATA and _TELEMETRY.get(type(body)) != Channel(e.kind.value):
            raise InputError(f"edge {edge!r} carries {e.kind.value}, not {type(body).__name__}")
        if e.kind is EdgeKind.DATA and not isinstance(body, DataRecords):
            raise InputError(f"edge {edge!r} carries data records, not {type(body).__name__}")
        topic = topics.edge(client.ion, edge, Channel(e.kind.value), self._node_id)
        await self._publish(
            topic,
            body,
            ion=client.ion,
            correlation_id=envelope.correlation_id,
            message_id=envelope.message_id or None,
        )

    async def _telemetry(self, client: ClientInfo, envelope: Envelope) -> None:
        body = envelope.body
        channel = _TELEMETRY.get(type(body))
        if channel is None:
            raise InputError(
                f"{type(body).__name__} needs an edge; only stats, events and health are "
                "pipeline telemetry"
            )
        if isinstance(body, HealthReport) and self._drift is not None:
            body, drift_event = self._drift.score(client.ion, client.pipeline, body)
            if drift_event is not None:
                log.warning("%s: %s", client.label, drift_event.message)
                event_env = replace(
                    envelope, message_id=_derived_id(envelope.message_id, 99), body=drift_event
                )
                await self._telemetry(client, event_env)
        if isinstance(body, Event):
            body = replace(body, pipeline=body.pipeline or client.pipeline)
            if self._models is not None and body.type in ("model.accepted", "model.rejected"):
                # The exchange publishes the event itself (and rolls back a rejected version).
                attrs = body.attributes
                await self._models.report(
                    client.ion,
                    attrs.get("edge", ""),
                    attrs.get("model_id", ""),
                    body.type == "model.accepted",
                    body.message,
                    pipeline=client.pipeline,
                )
                return
        destinations = [topics.pipeline(client.ion, client.pipeline, channel, self._node_id)]
        edges = self._edges_of(client.ion)
        if edges is not None:
            destinations.extend(
                topics.edge(client.ion, e.name, channel, self._node_id)
                for e in edges.outgoing(client.pipeline)
                if e.kind.value == channel.value and not e.source.component
            )
        base = envelope.message_id or None
        for i, topic in enumerate(destinations):
            # One message id per destination: receivers deduplicate per id.
            mid = base if i == 0 or base is None else _derived_id(base, i)
            await self._publish(
                topic, body, ion=client.ion, correlation_id=envelope.correlation_id, message_id=mid
            )

    async def _publish_model(self, client: ClientInfo, edge: str, manifest: ModelManifest) -> None:
        if self._models is None:
            raise InputError("this agent does not publish models")
        artifact = artifact_of(manifest)
        if artifact is None:
            raise InputError(f"a model for edge {edge!r} needs its {LOCAL_PATH!r} annotation")
        published = await self._models.publish(client.ion, edge, client.pipeline, artifact)
        log.info(
            "%s published model %s version %s on %s",
            client.label,
            published.model_id[:12],
            published.version,
            edge,
        )

    def deliveries(self, client: ClientInfo, edges: tuple[str, ...]) -> AsyncIterator[Inbound]:
        known = self._edges_of(client.ion)
        incoming = {e.name: e for e in known.incoming(client.pipeline)} if known else {}
        unknown = [e for e in edges if e not in incoming]
        if unknown:
            raise InputError(f"edges {unknown} do not lead into pipeline {client.label}")
        model_edges = [e for e in edges if incoming[e].kind is EdgeKind.MODEL]
        if model_edges:
            if len(edges) != 1:
                raise InputError("subscribe to a model edge on its own")
            return self._models_of(client, model_edges[0])
        wanted = edges or tuple(
            n for n, e in incoming.items() if e.kind not in (EdgeKind.MODEL, EdgeKind.TRIGGER)
        )
        return self._pending_of(client, wanted)

    async def delivered(self, client: ClientInfo, handled: Sequence[Inbound]) -> None:
        rows = [i.receipt for i in handled if i.receipt > 0]
        self._pending.done(client.ion, client.pipeline, rows)

    # -- deliveries -----------------------------------------------------------------------------

    async def _pending_of(
        self, client: ClientInfo, edges: tuple[str, ...]
    ) -> AsyncIterator[Inbound]:
        key = (client.ion, client.pipeline)
        event = self._arrived.setdefault(key, asyncio.Event())
        after = 0
        while True:
            event.clear()
            items = self._pending.take(client.ion, client.pipeline, edges, after, 256)
            if not items:
                await event.wait()
                continue
            for item in items:
                after = item.row_id
                try:
                    env = decode(item.payload)
                except DecodeError as exc:  # cannot happen for what we wrote; never fatal
                    log.warning("pending message %s unreadable: %s", item.message_id, exc)
                    self._pending.done(client.ion, client.pipeline, [item.row_id])
                    continue
                yield Inbound(item.edge, env, item.row_id)

    async def _models_of(self, client: ClientInfo, edge: str) -> AsyncIterator[Inbound]:
        models = self._models
        if models is None:
            return
        watch = models.watch(client.ion, edge)
        sent = ""
        generation = watch.generation
        while True:
            current = models.active(client.ion, edge)
            if current is not None and current.model_id != sent:
                sent = current.model_id
                manifest = manifest_for(current, ion=client.ion, edge=edge)
                env = Envelope(
                    message_id=_derived_id(current.model_id, 0),
                    created_ms=0,
                    body=manifest,
                    ion=client.ion,
                    source_node=self._node_id,
                )
                yield Inbound(edge, env, 0)
            generation = await watch.wait_changed(generation)


def _derived_id(base: str, index: int) -> str:
    """A message id made from another, the same every time (so retries deduplicate)."""
    return hashlib.sha256(f"{base}/{index}".encode()).hexdigest()[:32]
