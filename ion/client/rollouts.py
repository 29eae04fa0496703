"""Model versions on the broker, per model edge, and the operators' decisions on them.

Reading (``read_models``): ION definitions (each model edge's policy), the retained manifests
(the latest version), decisions and canary verdicts, and node statuses (which node runs, holds
and waits on which version), folded into one ``EdgeView`` per model edge (``fold``, pure).

Deciding (``publish_decisions``): one retained ``Command`` per version on
``ion/v1/ions/<ion>/edges/<edge>/model/decisions/<version>``; the last decision on a version
wins, and a node that is offline now acts on it when it comes back.  ``rollback_plan`` says
which decisions a rollback is (see ``ion rollback``).
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ion import topics
from ion.errors import DecodeError, InputError
from ion.model.command import (
    ApproveModel,
    Command,
    ModelRef,
    PromoteModel,
    RejectModel,
    RollbackModel,
)
from ion.model.definition import EdgeKind, IonDefinition, ModelPolicy, PolicyKind
from ion.model.event import Event
from ion.model.manifest import ModelManifest
from ion.model.messages import new_envelope
from ion.model.status import NodeStatus
from ion.wire.codec import decode, encode

if TYPE_CHECKING:
    from ion.security.keys import SigningKey

    from .session import OperatorSession

ModelAction = ApproveModel | RejectModel | PromoteModel | RollbackModel


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def label_key(version: str) -> int:
    return int(version) if version.isdigit() and len(version) <= 20 else -1


# -- what the broker holds, folded per model edge (pure) ----------------------------------------


@dataclass(frozen=True, slots=True)
class NodeView:
    node_id: str
    state: str
    active: str
    held: tuple[str, ...]
    pending: tuple[str, ...]
    canary: str


@dataclass(frozen=True, slots=True)
class DecisionView:
    version: str
    action: str
    by: str
    reason: str
    issued_ms: int


@dataclass(frozen=True, slots=True)
class CanaryView:
    node_id: str
    version: str
    passed: bool
    reason: str


@dataclass(frozen=True, slots=True)
class EdgeView:
    ion: str
    edge: str
    policy: str
    latest: str = ""
    latest_model_id: str = ""
    latest_size: int = 0
    producer: str = ""
    nodes: tuple[NodeView, ...] = ()
    decisions: tuple[DecisionView, ...] = ()
    canaries: tuple[CanaryView, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)

    def known_versions(self) -> set[str]:
        known = {self.latest} if self.latest else set()
        for n in self.nodes:
            known.update(n.held, n.pending, (n.active,) if n.active else ())
        known.update(d.version for d in self.decisions)
        return known


@dataclass(slots=True)
class ModelState:
    """The retained model messages of some IONs, decoded."""

    manifests: dict[tuple[str, str], ModelManifest] = field(default_factory=dict)
    decisions: dict[tuple[str, str], list[tuple[str, Command]]] = field(default_factory=dict)
    canaries: dict[tuple[str, str], list[tuple[str, Event]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


ACTION_NAMES: dict[type, str] = {
    ApproveModel: "approve",
    RejectModel: "reject",
    PromoteModel: "promote",
    RollbackModel: "rollback-to",
}


def describe_policy(p: ModelPolicy | None) -> str:
    p = p or ModelPolicy()
    parts: list[str] = []
    for g in p.gates:
        bounds = [
            f"min {g.min:g}" if g.min is not None else "",
            f"max {g.max:g}" if g.max is not None else "",
            f"margin {g.margin_over_active:g} over active"
            if g.margin_over_active is not None
            else "",
        ]
        parts.append(f"{g.metric} {' '.join(b for b in bounds if b)}".strip())
    c = p.canary
    if c is not None and p.kind is PolicyKind.CANARY:
        who = f"nodes {','.join(c.nodes)}" if c.nodes else f"share {c.share:g}"
        parts.append(f"{who}, hold {c.hold_ms / 1000:g}s")
        if c.max_drift:
            parts.append(f"max_drift {c.max_drift:g}")
        if c.max_error_rate:
            parts.append(f"max_error_rate {c.max_error_rate:g}")
    return p.kind.value + (f" ({'; '.join(parts)})" if parts else "")


def fold(
    definitions: Sequence[IonDefinition], statuses: Sequence[NodeStatus], state: ModelState
) -> list[EdgeView]:
    """One view per model edge of ``definitions``."""
    views = []
    for d in sorted(definitions, key=lambda d: d.name):
        for e in d.edges:
            if e.kind is not EdgeKind.MODEL:
                continue
            key = (d.name, e.name)
            m = state.manifests.get(key)
            nodes = tuple(
                NodeView(
                    s.node_id,
                    s.state.value,
                    ms.active_version,
                    ms.versions,
                    ms.pending,
                    ms.canary_state,
                )
                for s in sorted(statuses, key=lambda s: s.node_id)
                for ms in s.models
                if (ms.ion, ms.edge) == key
            )
            decisions = tuple(
                DecisionView(
                    version,
                    ACTION_NAMES.get(type(cmd.action), "?"),
                    cmd.issued_by,
                    cmd.reason,
                    cmd.issued_ms,
                )
                for version, cmd in sorted(
                    state.decisions.get(key, []), key=lambda vc: label_key(vc[0])
                )
            )
            canaries = tuple(
                CanaryView(
                    node,
                    ev.attributes.get("version", ""),
                    ev.type == "model.canary_passed",
                    ev.message,
                )
                for node, ev in sorted(state.canaries.get(key, []), key=lambda ne: ne[0])
            )
            views.append(
                EdgeView(
                    d.name,
                    e.name,
                    describe_policy(e.policy),
                    latest=m.version if m else "",
                    latest_model_id=m.model_id if m else "",
                    latest_size=m.size_bytes if m else 0,
                    producer=m.producer_node if m else "",
                    nodes=nodes,
                    decisions=decisions,
                    canaries=canaries,
                    metrics={x.name: x.value for x in m.metrics} if m else {},
                )
            )
    return views


def decode_model_state(messages: Iterable[tuple[str, bytes]]) -> ModelState:
    state = ModelState()
    for topic, payload in messages:
        try:
            t = topics.parse(topic)
            body = decode(payload).body
        except (DecodeError, topics.TopicError) as exc:
            state.problems.append(f"{topic}: {exc}")
            continue
        key = (t.ion, t.edge)
        if t.kind is topics.TopicKind.MODEL_MANIFEST and isinstance(body, ModelManifest):
            state.manifests[key] = body
        elif t.kind is topics.TopicKind.MODEL_DECISION and isinstance(body, Command):
            state.decisions.setdefault(key, []).append((t.version, body))
        elif t.kind is topics.TopicKind.MODEL_CANARY and isinstance(body, Event):
            state.canaries.setdefault(key, []).append((t.node, body))
    return state


# -- reading and publishing ---------------------------------------------------------------------


def read_models(
    session: OperatorSession, ion: str | None
) -> tuple[list[IonDefinition], list[EdgeView], list[str]]:
    from ion.client import definitions
    from ion.client.fleet import read_statuses

    if ion is None:
        stored, problems = definitions.fetch_all(session)
    else:
        one = definitions.fetch(session, ion)
        if not isinstance(one, IonDefinition):
            why = "was deleted" if one is not None else "is not on the broker"
            raise InputError(f"unknown ION {ion!r}: it {why}")
        stored, problems = [one], []
    defs = [d for d in stored if isinstance(d, IonDefinition)]
    statuses, _, status_problems = read_statuses(session)
    retained = session.read_retained(list(topics.model_state_filters(ion)))
    state = decode_model_state((m.topic, m.payload) for m in retained)
    return defs, fold(defs, statuses, state), [*problems, *status_problems, *state.problems]


def find_edge(session: OperatorSession, ion: str, edge: str) -> EdgeView:
    defs, views, _ = read_models(session, ion)
    for v in views:
        if v.edge == edge:
            return v
    e = defs[0].edge(edge)
    if e is None:
        model_edges = sorted(v.edge for v in views) or ["none"]
        raise InputError(
            f"ION {ion!r} has no edge {edge!r} (model edges: {', '.join(model_edges)})"
        )
    raise InputError(f"edge {edge!r} of ION {ion!r} carries {e.kind.value}, not models")


def check_version(view: EdgeView, version: str) -> None:
    topics.model_decision(view.ion, view.edge, version)  # a label that cannot be a topic: exit 2
    known = view.known_versions()
    if version not in known:
        listed = ", ".join(sorted(known, key=label_key, reverse=True)[:10]) or "none yet"
        raise InputError(f"unknown version {version!r} of {view.ion}/{view.edge} (known: {listed})")


def publish_decisions(
    session: OperatorSession,
    view: EdgeView,
    actions: list[ModelAction],
    *,
    operator: str,
    reason: str,
    key: SigningKey | None,
) -> list[dict[str, str]]:
    """Publish one retained decision per action (in order); returns what was published."""
    published = []
    for action in actions:
        now = now_ms()
        version = action.ref.version
        cmd = Command(
            command_id=secrets.token_hex(16),
            action=action,
            issued_by=operator,
            issued_ms=now,
            reason=reason,
        )
        if key is not None:
            from ion.security.signing import sign

            cmd = sign(cmd, key, now_ms=now)
        env = new_envelope(cmd, source_node=session.client_id, ion=view.ion, now_ms=now)
        topic = topics.model_decision(view.ion, view.edge, version)
        session.publish(topic, encode(env), retain=True)
        published.append(
            {
                "version": version,
                "action": ACTION_NAMES[type(action)],
                "command_id": cmd.command_id,
                "topic": topic,
            }
        )
    return published


def current_version(view: EdgeView) -> str:
    """The version a rollback naming none withdraws: the newest one active on a node, or
    published, that no decision rejected yet.  The latest published counts unless a node
    holds it pending: node statuses are sent every heartbeat and may predate it."""
    rejected = {d.version for d in view.decisions if d.action == "reject"}
    pending = {v for n in view.nodes for v in n.pending}
    candidates = {n.active for n in view.nodes if n.active}
    if view.latest and view.latest not in pending:
        candidates.add(view.latest)
    candidates -= rejected
    return max(candidates, key=label_key) if candidates else ""


DECISIONS: dict[str, type[ApproveModel | RejectModel | PromoteModel]] = {
    "approve": ApproveModel,
    "reject": RejectModel,
    "promote": PromoteModel,
}


def plan_decision(
    view: EdgeView, action: str, version: str | None
) -> tuple[list[ModelAction], list[str]]:
    """What ``action`` (approve, reject, promote or rollback) on ``version`` of ``view``'s edge
    publishes, and notes for the operator: the one plan the CLI and the dashboard share."""
    if action == "rollback":
        return rollback_plan(view, version)
    make = DECISIONS.get(action)
    if make is None:
        raise InputError(f"unknown decision {action!r}: approve, reject, promote or rollback")
    if not version:
        raise InputError(f"{action} needs a version")
    check_version(view, version)
    return [make(ModelRef(view.ion, view.edge, version))], []


def rollback_plan(view: EdgeView, version: str | None) -> tuple[list[ModelAction], list[str]]:
    ref = functools.partial(ModelRef, view.ion, view.edge)
    if version is None:
        current = current_version(view)
        if not current:
            raise InputError(f"nothing to roll back: no version of {view.ion}/{view.edge} is known")
        older = {v for n in view.nodes for v in n.held if label_key(v) < label_key(current)}
        notes = [f"rolling back {current}, the newest version running or published"]
        if not older:
            notes.append(
                f"warning: no node reports a version older than {current}: nodes that run it "
                "will run no model"
            )
        return [RejectModel(ref(current))], notes
    check_version(view, version)
    newer = sorted(
        (v for v in view.known_versions() if label_key(v) > label_key(version)), key=label_key
    )
    missing = [n.node_id for n in view.nodes if version not in n.held]
    notes = [f"warning: {', '.join(missing)} do(es) not hold {version}"] if missing else []
    return [*(RejectModel(ref(v)) for v in newer), RollbackModel(ref(version))], notes
