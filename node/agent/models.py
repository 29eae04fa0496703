"""Model hand-off along ION model edges: the agent's side.

Producer (a pipeline here is the source of a model edge): ``publish`` packs the artifact,
digests it, stores it in the node's model store (where chunk requests are answered from, also
after a restart), then publishes the retained manifest and the chunks through the agent's
durable ``publish`` (outbox first, traffic class ``model``).  The manifest goes first, so online
consumers verify every chunk as it arrives; a late joiner finds the retained manifest and asks
for the chunks (``ChunkRequest``).  Publishing bytes already published on the edge publishes
nothing and returns the manifest held.

Consumer (a pipeline here is a target of a model edge): a manifest starts a transfer when the
edge's policy wants it (``node.models.policy``); ``node.models.incoming`` verifies and writes
the chunks and says when to ask for missing ones.  A complete transfer is checked whole, stored
(directory archives unpacked safely), activated by the policy and announced to watchers.
``report`` turns a component's verdict into a ``model.accepted`` / ``model.rejected`` event; a
refused version is rolled back to the previous one and never activated again.

Update policies, operators' decisions (retained on ``.../model/decisions/<version>``) and
canary verdicts (retained on ``.../model/canary/<node>``) go to ``rollouts``
(``node.models.rollout_driver``).  Decisions are events on the node's events topic
(``model.activated``, ``model.pending``, ``model.rolled_back``, ``model.invalid``, ...).
``run`` drives the exchange inside the agent (what arrives, in order,
plus a timer); its ``on_*`` methods and ``tick`` can be called directly with a fake host, which
makes each step testable without a broker.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ion import topics
from ion.errors import InputError, UnavailableError
from ion.model.command import Command
from ion.model.definition import EdgeKind, IonDefinition, ModelPolicy
from ion.model.event import Event, Severity
from ion.model.manifest import ChunkRequest, ModelChunk, ModelManifest
from ion.model.status import ModelStatus
from ion.security.trust import TrustConfig
from ion.topics import TopicKind
from node.link.base import LinkState
from node.models.artifact import ModelArtifact
from node.models.config import ModelConfig
from node.models.errors import ChunkMismatchError, IntegrityError, ManifestError, ModelError
from node.models.watch import ModelWatch

if TYPE_CHECKING:
    # The machinery (store, transfers, rollouts, chunk sending, packing) is imported and
    # built when the node first has a model edge or held model state: an idle agent, and
    # most nodes most of the time, never load it (tests/test_idle_footprint.py).
    from node.models.incoming import Incoming, Transfers
    from node.models.rollout_driver import RolloutDriver
    from node.models.sending import ChunkSender, DirectLink
    from node.models.store import ModelStore, StoredVersion

from .receiver import Arrival

log = logging.getLogger(__name__)

EdgeKey = tuple[str, str]  # (ION, edge)
_MODEL_KINDS = frozenset(
    {
        TopicKind.MODEL_MANIFEST,
        TopicKind.MODEL_CHUNKS,
        TopicKind.MODEL_REQUESTS,
        TopicKind.MODEL_DECISION,
        TopicKind.MODEL_CANARY,
    }
)


class ModelHost(Protocol):
    """What the exchange needs from the agent (``node.agent.service.Agent`` is one)."""

    node_id: str

    async def publish(
        self,
        topic: str,
        body: object,
        *,
        ion: str = "",
        correlation_id: str = "",
        message_id: str | None = None,
    ) -> None: ...

    def consume(self, match: Callable[[Arrival], bool]) -> AsyncIterator[Arrival]: ...


def is_model_arrival(arrival: Arrival) -> bool:
    return arrival.topic.kind in _MODEL_KINDS


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class ModelExchange:
    # The node's trust settings (set by the agent from its config): manifests it publishes
    # are signed with ``trust.signing_key``, manifests it consumes must pass ``trust.check``.
    # None (a bare exchange, as in unit tests) signs and checks nothing.
    trust: TrustConfig | None = None

    def __init__(
        self,
        host: ModelHost,
        root: Path,
        *,
        config: ModelConfig | None = None,
        clock: Callable[[], int] = wall_ms,
    ) -> None:
        """``root``: this node's model directory (``<data_dir>/models``)."""
        self._host = host
        self._cfg = config or ModelConfig()
        self._clock = clock
        self._root = root
        self._outgoing = root / "outgoing"
        shutil.rmtree(self._outgoing, ignore_errors=True)  # packs of an earlier run
        self._consumed: dict[EdgeKey, ModelPolicy | None] = {}
        self._produced: dict[EdgeKey, str] = {}  # -> the source pipeline
        self._policies: dict[EdgeKey, ModelPolicy | None] = {}  # both of the above
        # Model ids whose manifest this node decided not to fetch (bounded, oldest out): their
        # chunks, sent for other consumers, are not staged.
        self._unwanted: dict[str, None] = {}
        self._watches: dict[EdgeKey, ModelWatch] = {}
        # State held from an earlier run (versions, rollouts, partial transfers) needs the
        # machinery at once, edges or not (e.g. to drop what an edge deleted meanwhile left).
        if root.is_dir() and any(p.name != "outgoing" for p in root.iterdir()):
            self._machinery()
        self._tg: asyncio.TaskGroup | None = None
        self.counters: Counter[str] = Counter()

    # -- the machinery, built on first use ---------------------------------------------------

    @property
    def built(self) -> bool:
        """Whether the store, transfers and rollouts have been loaded (they are on first use:
        a model edge here, model traffic, or state held from an earlier run)."""
        return "store" in self.__dict__

    def _machinery(self) -> None:
        _ = self.rollouts, self.transfers, self._sender

    @cached_property
    def store(self) -> ModelStore:
        from node import allocator
        from node.models.store import ModelStore

        allocator.tune()  # model chunks: large buffers reused, not mapped afresh

        return ModelStore(self._root / "store", self._cfg.unpack_limits)

    @cached_property
    def rollouts(self) -> RolloutDriver:
        """Update policies, operators' decisions and canaries (``node.models.rollout``)."""
        from node.models.rollout import Rollout
        from node.models.rollout_driver import RolloutDriver

        return RolloutDriver(
            Rollout(self.store, self._root / "rollout", self._host.node_id),
            node_id=self._host.node_id,
            emit=self._emit,
            send=lambda topic, body, ion: self._later(self._quietly(topic, body, ion), topic),
            notify=self._notify,
            clock=self._clock,
            trust=lambda: self.trust,
            prune_after_ms=self._cfg.prune_after_ms,
        )

    @cached_property
    def transfers(self) -> Transfers:
        from node.models.incoming import Transfers

        return Transfers(self._root, self._cfg)

    @cached_property
    def _sender(self) -> ChunkSender:
        from node.models.sending import ChunkSender

        # Chunks go straight over the host's link when it has one (node.models.sending); a
        # host without one (a test's fake) gets everything through ``publish``.
        direct = self._direct_link if hasattr(type(self._host), "link") else None
        return ChunkSender(
            self._publish, self._cfg, self._clock, link=direct, node_id=self._host.node_id
        )

    # -- what this node produces and consumes ----------------------------------------------

    def plan(
        self, definitions: Mapping[str, IonDefinition], local: Iterable[tuple[str, str]]
    ) -> None:
        """Learn the model edges this node produces and consumes from the active definitions
        and the (ION, pipeline) pairs placed here."""
        mine = set(local)
        consumed: dict[EdgeKey, ModelPolicy | None] = {}
        produced: dict[EdgeKey, str] = {}
        policies: dict[EdgeKey, ModelPolicy | None] = {}
        for name, definition in definitions.items():
            for e in definition.edges:
                if e.kind is not EdgeKind.MODEL:
                    continue
                key = (name, e.name)
                if any((name, t.pipeline) in mine for t in e.targets):
                    consumed[key] = policies[key] = e.policy
                if (name, e.source.pipeline) in mine:
                    produced[key] = e.source.pipeline
                    policies[key] = e.policy
        self._consumed, self._produced, self._policies = consumed, produced, policies
        if not policies and not self.built:
            return  # nothing to plan for, nothing held
        self.rollouts.plan(definitions, consumed, frozenset(mine))
        for inc in self.transfers:  # an edge no longer consumed here (e.g. the ION deleted)
            m = inc.manifest
            if (m.ion, m.edge) not in consumed and not inc.finishing:
                log.info("dropping the transfer of %s: %s/%s is not consumed here any more",
                         m.model_id[:12], m.ion, m.edge)  # fmt: skip
                self.transfers.drop(m.model_id)

    def subscriptions(self) -> frozenset[str]:
        """Topic filters for the model traffic this node needs."""
        subs = {topics.model_filter(i, e) for i, e in self._consumed}
        subs |= {topics.model_requests(i, e) for i, e in self._produced}
        return frozenset(subs)

    def _keep(self, key: EdgeKey) -> int:
        p = self._policies.get(key)
        return p.keep_versions if p is not None and p.keep_versions > 0 else self._cfg.keep_versions

    # -- watching ----------------------------------------------------------------------------

    def active(self, ion: str, edge: str) -> ModelArtifact | None:
        if not self.built:
            return None  # nothing held: built at start when a store exists (see __init__)
        stored = self.store.active(ion, edge)
        return stored.artifact() if stored else None

    def watch(self, ion: str, edge: str) -> ModelWatch:
        w = self._watches.get((ion, edge))
        if w is None:
            w = self._watches[(ion, edge)] = ModelWatch(ion, edge, self.active(ion, edge))
        return w

    def _notify(self, key: EdgeKey) -> None:
        w = self._watches.get(key)
        if w is not None:
            w.update(self.active(*key))

    def statuses(self) -> list[ModelStatus]:
        """For the node's status: the model edges this node produces or consumes."""
        out = []
        for ion, edge in sorted({*self._consumed, *self._produced}):
            active = self.store.active(ion, edge)
            held = reversed(self.store.versions(ion, edge))
            pending, canary_state = self.rollouts.core.status((ion, edge))
            out.append(
                ModelStatus(
                    ion=ion,
                    edge=edge,
                    active_version=active.manifest.version if active else "",
                    active_model_id=active.model_id if active else "",
                    versions=tuple(v.manifest.version for v in held),
                    pending=pending,
                    canary_state=canary_state,
                )
            )
        return out

    # -- producing ---------------------------------------------------------------------------

    async def publish(
        self, ion: str, edge: str, pipeline: str, artifact: ModelArtifact
    ) -> ModelManifest:
        """Publish ``artifact`` (from ``pipeline`` on this node) along the model edge; returns
        its manifest once manifest and chunks are durable in the outbox."""
        from ion.security.signing import sign
        from node.models.pack import pack
        from node.models.transfer import build_manifest, check_manifest, digest_file

        key = (ion, edge)
        source = self._produced.get(key)
        if source is None:
            node = self._host.node_id
            raise InputError(f"no model edge {edge!r} of ION {ion!r} starts on node {node}")
        if source != pipeline:
            raise InputError(f"model edge {ion}/{edge} starts at {source!r}, not {pipeline!r}")
        packed = await asyncio.to_thread(pack, artifact.path, self._outgoing)
        sent = False
        try:
            digest = await asyncio.to_thread(digest_file, packed.path, self._cfg.chunk_size)
            stored = self.store.get(ion, edge, digest.model_id)
            if stored is None:
                now = self._clock()
                manifest = build_manifest(
                    packed,
                    digest,
                    version=self.store.next_version(ion, edge, now),
                    ion=ion,
                    edge=edge,
                    producer_pipeline=pipeline,
                    producer_node=self._host.node_id,
                    format=artifact.format,
                    created_ms=now,
                    metrics=artifact.metrics,
                    baseline=artifact.baseline,
                    annotations=artifact.annotations,
                )
                if self.trust is not None and self.trust.signing_key is not None:
                    # Signed before it is stored: the store's copy is what is (re)published.
                    manifest = sign(manifest, self.trust.signing_key, now_ms=now)
                check_manifest(manifest, self._cfg.transfer_limits)  # what peers would refuse
                build = asyncio.to_thread(
                    self.store.build, manifest, packed.path, move=packed.temporary
                )
                if packed.temporary or key in self._consumed:
                    built = await build
                else:
                    # The file stays where it is while the store copies and fsyncs it (a
                    # fifth of a second for 50 MB here): its chunks go out from it meanwhile.
                    # A consumer asking before the copy is stored is answered when it asks
                    # again; a crash before it is stored leaves publish unfinished, as before.
                    building = asyncio.ensure_future(build)
                    try:
                        await self._sender.publish_model(manifest, packed.path)
                        sent = True
                    finally:
                        built = await building
                stored = self.store.install(manifest, built)
                if key in self._consumed:  # a consumer here too: our own echo never reaches it
                    await self._decide(stored)
                else:
                    # Off the loop: deleting an old model's files can take a while.
                    await asyncio.to_thread(self.store.prune, ion, edge, self._keep(key))
        finally:
            if packed.temporary:
                packed.path.unlink(missing_ok=True)
        m = stored.manifest
        if not sent:
            if self.store.is_published(ion, edge, m.model_id):
                log.info("model %s/%s: %s was published before", ion, edge, m.model_id[:12])
                return m
            await self._sender.publish_model(m, stored.blob_path)
        self.store.mark_published(ion, edge, m.model_id)
        log.info(
            "published model %s/%s version %s (%s, %d chunk(s))",
            ion, edge, m.version, m.model_id[:12], m.chunk_count,
        )  # fmt: skip
        return m

    # -- what arrives ------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume model traffic from the host and run the timers, until cancelled."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            try:
                tg.create_task(self._timer(), name=f"{self._host.node_id}: model timers")
                async for arrival in self._host.consume(is_model_arrival):
                    await self.handle(arrival)
            finally:
                self._tg = None

    async def _timer(self) -> None:
        while True:
            await asyncio.sleep(self._cfg.tick_ms / 1000)
            await self.tick(self._clock())

    async def handle(self, arrival: Arrival) -> None:
        t, body = arrival.topic, arrival.envelope.body
        try:
            if t.kind is TopicKind.MODEL_MANIFEST and isinstance(body, ModelManifest):
                if (body.ion, body.edge) != (t.ion, t.edge):
                    raise ManifestError(f"a manifest for {body.ion}/{body.edge} on {t}")
                await self.on_manifest(body)
            elif t.kind is TopicKind.MODEL_CHUNKS and isinstance(body, ModelChunk):
                if body.model_id == t.model_id:
                    await self.on_chunk(body, ion=t.ion, edge=t.edge)
            elif t.kind is TopicKind.MODEL_REQUESTS and isinstance(body, ChunkRequest):
                await self.on_request(t.ion, t.edge, body)
            elif t.kind is TopicKind.MODEL_DECISION and isinstance(body, Command):
                source = arrival.envelope.source_node
                await self.rollouts.on_decision(t.ion, t.edge, t.version, body, source)
            elif t.kind is TopicKind.MODEL_CANARY and isinstance(body, Event):
                created = arrival.envelope.created_ms
                await self.rollouts.on_canary(t.ion, t.edge, t.node, body, created)
            else:
                self.counters["unexpected"] += 1
        except (InputError, OSError) as exc:
            self.counters["errors"] += 1
            log.warning("model message on %s: %s", t, exc)
            await self._problem("model.invalid", str(exc))

    async def on_manifest(self, m: ModelManifest) -> None:
        from node.models import policy
        from node.models.transfer import check_manifest

        key = (m.ion, m.edge)
        if key not in self._consumed:
            self.counters["manifest.ignored"] += 1
            return
        check_manifest(m, self._cfg.transfer_limits)
        if self.trust is not None:  # before anything is fetched or stored
            verdict = self.trust.check(m)
            if not verdict.accepted:
                self.counters["manifest.refused"] += 1
                log.warning("model %s/%s version %s refused: %s",
                            m.ion, m.edge, m.version, verdict.reason)  # fmt: skip
                await self._event("model.rejected", Severity.WARNING, m, verdict.reason)
                return
            if verdict.unsigned:
                if not self.counters["manifest.unsigned"]:
                    log.warning("model %s/%s version %s is unsigned; fetching it because "
                                "trust.development_mode is on (said once)",
                                m.ion, m.edge, m.version)  # fmt: skip
                self.counters["manifest.unsigned"] += 1
        if self.transfers.get(m.model_id) or self.store.get(*key, m.model_id):
            return
        active = self.store.active(*key)
        newest = self.transfers.newest(*key)
        if active is not None and policy.newer(active.manifest, newest):
            newest = active.manifest
        rejected = self.store.is_rejected(*key, m.model_id) or not self.rollouts.core.fetchable(m)
        if not policy.fetch(self._consumed[key], m, newest, rejected=rejected):
            self.counters["manifest.skipped"] += 1
            self._unwanted[m.model_id] = None
            while len(self._unwanted) > 1024:
                del self._unwanted[next(iter(self._unwanted))]
            log.info("model %s/%s version %s: not fetched", m.ion, m.edge, m.version)
            return
        log.info("fetching model %s/%s version %s (%s, %d chunk(s))",
                 m.ion, m.edge, m.version, m.model_id[:12], m.chunk_count)  # fmt: skip
        inc = self.transfers.start(m, self._clock())
        if inc.assembler.complete:
            await self._complete(inc)

    async def on_chunk(self, chunk: ModelChunk, *, ion: str = "", edge: str = "") -> None:
        """A chunk from the chunk topic of (``ion``, ``edge``) (unknown when empty)."""
        inc = self.transfers.get(chunk.model_id)
        if inc is None:
            if chunk.model_id in self._unwanted or (
                ion
                and ((ion, edge) not in self._consumed or self.store.get(ion, edge, chunk.model_id))
            ):
                self.counters["chunk.unwanted"] += 1  # e.g. sent again for another consumer
            elif self.transfers.stage(chunk, self._clock()):
                self.counters["chunk.staged"] += 1
            else:
                self.counters["chunk.dropped"] += 1
            return
        if inc.finishing:
            return
        outcome = self.transfers.add(inc, chunk, self._clock())
        self.counters[f"chunk.{outcome.value}"] += 1
        if inc.assembler.complete:
            await self._complete(inc)

    async def _complete(self, inc: Incoming) -> None:
        m = inc.manifest
        inc.finishing = True
        try:
            data = await asyncio.to_thread(inc.assembler.finish)
        except ChunkMismatchError as exc:
            log.warning("%s", exc)
            inc.finishing, inc.last_activity_ms = False, 0  # ask for them at once
            return
        except IntegrityError as exc:
            self.transfers.drop(m.model_id)
            await self._problem("model.invalid", str(exc), m)
            return
        except OSError as exc:
            await self._start_over(m, exc)
            return
        try:
            stored = self.store.get(m.ion, m.edge, m.model_id)
            if stored is None:
                # Both in a worker thread (the store locks its changes): their fsyncs would
                # block the loop, and with it every node of a process that runs several.
                stored = await asyncio.to_thread(self.store.add, m, data, move=True)
        except ModelError as exc:  # e.g. an unsafe archive: nothing of it is kept
            self.transfers.drop(m.model_id)
            await self._problem("model.invalid", str(exc), m)
            return
        except OSError as exc:
            await self._start_over(m, exc)
            return
        self.transfers.drop(m.model_id)
        await self._decide(stored)

    async def _start_over(self, m: ModelManifest, exc: OSError) -> None:
        """Writing or storing ``m`` failed on this node's disk (full, failing): what was
        received cannot be trusted, so the transfer starts over, asking for its chunks after
        the longest wait (not at once: the disk may need time, or an operator)."""
        self.transfers.drop(m.model_id)
        log.warning("model %s/%s version %s: storing it failed (%s); fetching it again",
                    m.ion, m.edge, m.version, exc)  # fmt: skip
        await self._problem("model.storage", f"storing the model failed: {exc}", m)
        try:
            inc = self.transfers.start(m, self._clock())
        except OSError as again:
            log.warning("model %s: cannot start over (%s); waiting for its manifest",
                        m.model_id[:12], again)  # fmt: skip
            return
        inc.last_activity_ms = self._clock()
        inc.interval_ms = self._cfg.request_max_interval_ms

    async def _decide(self, stored: StoredVersion) -> None:
        await self.rollouts.ready(
            stored, keep=self._keep((stored.manifest.ion, stored.manifest.edge))
        )

    async def on_request(self, ion: str, edge: str, req: ChunkRequest) -> None:
        key = (ion, edge)
        if req.requester == self._host.node_id:
            return
        if key not in self._produced and not (self._cfg.serve_held and key in self._consumed):
            return
        stored = self.store.get(ion, edge, req.model_id)
        if stored is None:
            return
        fresh = self._sender.fresh(stored, req.indexes, self._clock())
        if not fresh:
            return
        self.counters["chunks.served"] += len(fresh)
        log.info("sending %d chunk(s) of %s to %s", len(fresh), req.model_id[:12], req.requester)
        await self._later(self._sender.answer(stored, fresh), "model chunks")

    async def tick(self, now: int) -> None:
        """Ask for missing chunks where a transfer stalled; forget old bookkeeping; see how
        canary trials stand."""
        if not self.built:
            return
        self._sender.forget(now)
        await self.rollouts.tick(now)
        if not self._sender.can_send():
            return  # asked once the link is back: a request queued meanwhile would be stale
        for m, req in self.transfers.due(now, self._still_wanted, self._host.node_id):
            self.counters["requests"] += 1
            log.info("asking for %s chunk(s) of %s", len(req.indexes) or "all", m.model_id[:12])
            topic = topics.model_requests(m.ion, m.edge)
            await self._later(self._sender.send_request(topic, req, m.ion), "chunk request")

    def _still_wanted(self, m: ModelManifest) -> bool:
        return (m.ion, m.edge) in self._consumed

    # -- verdicts --------------------------------------------------------------------------

    async def report(
        self, ion: str, edge: str, model_id: str, ok: bool, detail: str = "", *, pipeline: str = ""
    ) -> None:
        """A component loaded ``model_id`` (ok) or could not (then it is rolled back)."""
        stored = self.store.get(ion, edge, model_id)
        if stored is None:
            raise InputError(f"model {model_id[:12]} is not held for {ion}/{edge}")
        m = stored.manifest
        kind = "model.accepted" if ok else "model.rejected"
        await self._event(kind, Severity.INFO if ok else Severity.WARNING, m, detail, pipeline)
        if ok or not self.store.reject(ion, edge, model_id):
            return
        await self.rollouts.refused((ion, edge), model_id, detail)
        now_active = self.store.active(ion, edge)
        self._notify((ion, edge))
        why = f"version {m.version} was refused"
        if now_active is None:
            why += "; no earlier version is held"
        back_to = now_active.manifest if now_active else m
        await self._event("model.rolled_back", Severity.WARNING, back_to, why, pipeline)

    # -- plumbing ----------------------------------------------------------------------------

    async def _later(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coro`` in the background under ``run``'s task group; without one (driven
        directly, as in tests), now."""
        if self._tg is not None:
            self._tg.create_task(coro, name=f"{self._host.node_id}: {name}")
        else:
            await coro

    async def _publish(self, topic: str, body: object, ion: str) -> None:
        await self._host.publish(topic, body, ion=ion)

    @property
    def sender(self) -> ChunkSender:
        """What this node sent of its models (``counters``, ``times_sent``)."""
        return self._sender

    def _direct_link(self) -> DirectLink | None:
        """The host's MQTT link when it is connected now."""
        link = getattr(self._host, "link", None)
        return link if link is not None and link.state is LinkState.CONNECTED else None

    async def _quietly(self, topic: str, body: object, ion: str) -> None:
        try:
            await self._host.publish(topic, body, ion=ion)
        except UnavailableError as exc:
            log.warning("could not queue a message for %s: %s", topic, exc)

    async def _event(
        self, kind: str, severity: Severity, m: ModelManifest, detail: str, pipeline: str = ""
    ) -> None:
        attributes = {"ion": m.ion, "edge": m.edge, "model_id": m.model_id, "version": m.version}
        await self._emit(
            Event(
                type=kind,
                severity=severity,
                subject=f"{m.ion}/{m.edge}@{self._host.node_id}",
                message=detail,
                attributes=attributes,
                pipeline=pipeline,
            ),
            m.ion,
        )

    async def _problem(self, kind: str, detail: str, m: ModelManifest | None = None) -> None:
        if m is not None:
            await self._event(kind, Severity.WARNING, m, detail)
        else:
            subject = self._host.node_id
            await self._emit(Event(kind, Severity.WARNING, subject=subject, message=detail), "")

    async def _emit(self, event: Event, ion: str) -> None:
        topic = topics.node_topic(self._host.node_id, TopicKind.NODE_EVENTS)
        await self._later(self._quietly(topic, event, ion), event.type)
