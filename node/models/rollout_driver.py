"""The asynchronous side of the rollout: what the agent's model exchange hands to the rollout
core (``node.models.rollout``) and how its outcomes leave the node.

- operators' commands (a retained decision on ``.../model/decisions/<version>``, or a command
  on a node's or an ION's command topic) are checked (signature, when the node has trust
  settings; the edge is consumed here) and become rulings;
- other canaries' retained verdicts (``.../model/canary/<node>``) are handed on;
- this node's pipelines' health and stats reports feed its own canary trials;
- outcomes become events on the node's events topic (the audit trail), this node's canary
  verdicts are published retained for the other consumers, and the watchers of an edge whose
  active version changed are told (the running pipeline hot-swaps).

Driven by ``node.agent.models.ModelExchange``; it gives the callables below.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from ion import topics
from ion.model.command import Command
from ion.model.definition import EdgeKind, IonDefinition, ModelPolicy
from ion.model.event import Event, Severity
from ion.model.health import HealthReport, StatsReport
from ion.security.trust import TrustConfig
from ion.topics import TopicKind

from .rollout import Rollout
from .rollout_outcomes import CanaryResult, EdgeKey, Outcomes
from .rollout_wire import (
    canary_event,
    canary_of_event,
    health_signals,
    model_ref,
    notice_event,
    ruling_of,
)
from .store import StoredVersion

log = logging.getLogger(__name__)

Emit = Callable[[Event, str], Awaitable[None]]  # (event, ion): onto the node's events topic
Send = Callable[[str, object, str], Awaitable[None]]  # (topic, body, ion): through the outbox


class RolloutDriver:
    def __init__(
        self,
        rollout: Rollout,
        *,
        node_id: str,
        emit: Emit,
        send: Send,
        notify: Callable[[EdgeKey], None],
        clock: Callable[[], int],
        trust: Callable[[], TrustConfig | None],
        prune_after_ms: int = 0,
    ) -> None:
        """``prune_after_ms``: how long after an activation old versions are pruned (see
        ``ModelConfig``); 0: at once."""
        self.core = rollout
        self._node_id = node_id
        self._emit = emit
        self._send = send
        self._notify = notify
        self._clock = clock
        self._trust = trust
        self._consumed: frozenset[EdgeKey] = frozenset()
        self._inputs: dict[tuple[str, str], tuple[str, ...]] = {}  # (ion, pipeline) -> edges
        self._prune_after_ms = prune_after_ms
        self._prune_due: dict[EdgeKey, tuple[int, int]] = {}  # edge -> (when, keep)

    def plan(
        self,
        definitions: Mapping[str, IonDefinition],
        consumed: Mapping[EdgeKey, ModelPolicy | None],
        local: frozenset[tuple[str, str]],
    ) -> None:
        """The model edges consumed here with their policies, and which local pipelines
        they feed (whose health a canary trial watches)."""
        self.core.set_policies(consumed)
        self._consumed = frozenset(consumed)
        inputs: dict[tuple[str, str], tuple[str, ...]] = {}
        for name, definition in definitions.items():
            for e in definition.edges:
                if e.kind is not EdgeKind.MODEL or (name, e.name) not in consumed:
                    continue
                for t in e.targets:
                    if (name, t.pipeline) in local:
                        inputs[(name, t.pipeline)] = (*inputs.get((name, t.pipeline), ()), e.name)
        self._inputs = inputs

    # -- in ------------------------------------------------------------------------------------

    async def ready(self, stored: StoredVersion, *, keep: int) -> None:
        # In a worker thread: activating fsyncs the store's index and the rollout state, and
        # at the end of a rollout those small fsyncs wait behind every node's model being
        # written back on a shared disk (each up to ~0.1 s, one after the other on the loop
        # of a process running several nodes).
        out = await asyncio.to_thread(self.core.on_ready, stored, self._clock())
        await self.carry_out(out)
        key = (stored.manifest.ion, stored.manifest.edge)
        if self._prune_after_ms > 0:
            self._prune_due[key] = (self._clock() + self._prune_after_ms, keep)
        else:
            await asyncio.to_thread(self.core.tidy, key, keep)

    async def on_decision(
        self, ion: str, edge: str, version: str, cmd: Command, source: str
    ) -> None:
        """A retained decision from ``ion/v1/ions/<ion>/edges/<edge>/model/decisions/<version>``.

        Kept even while the edge is not (yet) consumed here: after a restart, what waited in
        the node's broker session arrives before the definitions that say what it consumes.
        """
        ref = model_ref(cmd)
        if ref is None:
            return
        if (ref.ion, ref.edge, ref.version) != (ion, edge, version):
            log.warning("ignored a decision on %s/%s@%s found on %s/%s@%s",
                        ref.ion, ref.edge, ref.version, ion, edge, version)  # fmt: skip
            return
        await self.on_command(cmd, source, retained=True)

    async def on_command(
        self, cmd: Command, issuer: str, *, retained: bool = False
    ) -> tuple[bool, str]:
        """An operator's model command (approve, reject, promote, rollback): whether it was
        taken, and a message for its result."""
        ref = model_ref(cmd)
        if ref is None:
            return False, f"{type(cmd.action).__name__} is not a model command"
        key = (ref.ion, ref.edge)
        if key not in self._consumed and not retained:
            return False, f"{ref.ion}/{ref.edge} is not consumed on node {self._node_id}"
        trust = self._trust()
        if trust is not None:
            verdict = trust.check(cmd)
            if not verdict.accepted:
                log.warning("model command %s refused: %s", cmd.command_id, verdict.reason)
                refused = Event(
                    "model.decision_refused",
                    Severity.WARNING,
                    subject=f"{ref.ion}/{ref.edge}@{self._node_id}",
                    message=f"command {cmd.command_id} from {issuer}: {verdict.reason}",
                    attributes={"ion": ref.ion, "edge": ref.edge, "version": ref.version},
                )
                await self._emit(refused, ref.ion)
                return False, f"refused: {verdict.reason}"
        ruling = ruling_of(cmd, issuer)
        version = ref.version
        if version:
            out = self.core.on_ruling(key, version, ruling)
        else:  # "roll back" naming no version: withdraw the version active here
            out, version = self.core.rollback_active(key, ruling)
            if not version:
                return False, f"no model version is active for {ref.ion}/{ref.edge} here"
        await self.carry_out(out)
        return True, f"{ruling.verdict.value} {version}"

    async def on_canary(self, ion: str, edge: str, node: str, event: Event, at_ms: int) -> None:
        """A canary node's retained verdict (from ``.../model/canary/<node>``), kept also while
        the edge is not (yet) consumed here (see ``on_decision``): it comes only once."""
        found = canary_of_event(event, node, at_ms)
        if found is not None:
            version, verdict = found
            await self.carry_out(self.core.on_canary_verdict((ion, edge), node, version, verdict))

    async def observe(self, topic: str, body: object) -> None:
        """A pipeline of this node published ``body`` on its telemetry ``topic``."""
        if not isinstance(body, HealthReport | StatsReport):
            return
        try:
            t = topics.parse(topic)
        except topics.TopicError:
            return
        if t.kind is not TopicKind.PIPELINE:
            return
        edges = self._inputs.get((t.ion, t.pipeline), ())
        if not edges:
            return
        model_id, drift, error_rate = health_signals(body)
        if drift is None and error_rate is None:
            return
        now = self._clock()
        for edge in edges:
            out = self.core.observe((t.ion, edge), model_id, now, drift=drift,
                                    error_rate=error_rate)  # fmt: skip
            await self.carry_out(out)

    async def tick(self, now: int) -> None:
        await self.carry_out(self.core.tick(now))
        for key, (when, keep) in list(self._prune_due.items()):
            if now >= when:
                del self._prune_due[key]
                await asyncio.to_thread(self.core.tidy, key, keep)

    async def refused(self, key: EdgeKey, model_id: str, reason: str) -> None:
        await self.carry_out(self.core.on_refused(key, model_id, reason))

    # -- out -----------------------------------------------------------------------------------

    async def carry_out(self, out: Outcomes) -> None:
        for key in sorted(out.changed):
            self._notify(key)
        for item in out.items:
            if isinstance(item, CanaryResult):
                event = canary_event(item, self._node_id)
                topic = topics.model_canary(item.ion, item.edge, self._node_id)
                await self._send(topic, event, item.ion)
                log.info("canary of %s/%s version %s %s: %s", item.ion, item.edge,
                         item.version, "passed" if item.passed else "failed",
                         item.reason)  # fmt: skip
            else:
                await self._emit(notice_event(item, self._node_id), item.ion)
