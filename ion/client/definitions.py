"""Apply, read, list and delete ION definitions on a broker.

The decisions (which version comes next, whether anything changed) are pure functions; the
functions taking an ``OperatorSession`` only carry them out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ion import topics
from ion.errors import DecodeError, InputError, NotFoundError
from ion.model.definition import IonDefinition, IonDeleted
from ion.model.messages import Envelope, new_envelope
from ion.security.keys import SigningKey
from ion.security.signing import sign
from ion.wire.codec import decode, encode
from ion.wire.definition import content_sha256

from .session import OperatorSession

Stored = IonDefinition | IonDeleted


@dataclass(frozen=True, slots=True)
class ApplyPlan:
    """What ``ion apply`` will publish; ``definition`` is None when nothing changed."""

    definition: IonDefinition | None
    previous_version: int
    reason: str


def authored(d: IonDefinition) -> IonDefinition:
    """The definition as its author wrote it: no version, hash, signature or apply stamp."""
    return replace(d, version=0, content_sha256="", signature=None, applied_ms=0, applied_by="")


def plan_apply(
    new: IonDefinition, current: Stored | None, *, now_ms: int, operator: str, force: bool = False
) -> ApplyPlan:
    """The next version of ``new`` given what the broker holds now (pure)."""
    previous = current.version if current is not None else 0
    if isinstance(current, IonDefinition) and not force and authored(current) == authored(new):
        return ApplyPlan(None, previous, f"unchanged (version {previous})")
    version = max(previous + 1, new.version)
    stamped = replace(authored(new), version=version)
    stamped = replace(
        stamped,
        content_sha256=content_sha256(stamped),
        applied_ms=now_ms,
        applied_by=operator,
    )
    reason = "created" if current is None or isinstance(current, IonDeleted) else "updated"
    return ApplyPlan(stamped, previous, reason)


def _decode_stored(topic: str, payload: bytes) -> Stored | None:
    if not payload:  # a cleared retained message
        return None
    try:
        env = decode(payload)
    except DecodeError as exc:
        raise InputError(
            f"the retained message on {topic} is not an ION definition: {exc}"
        ) from exc
    if not isinstance(env.body, IonDefinition | IonDeleted):
        raise InputError(f"the retained message on {topic} holds a {type(env.body).__name__}")
    return env.body


def fetch(session: OperatorSession, name: str) -> Stored | None:
    """The definition (or tombstone) the broker holds for ``name``."""
    topic = topics.definition(name)
    for msg in session.read_retained([topic]):
        if msg.topic == topic:
            return _decode_stored(topic, msg.payload)
    return None


def fetch_all(session: OperatorSession) -> tuple[list[Stored], list[str]]:
    """Every stored definition or tombstone, and a note for each retained message we could not
    read (a broken one must not hide the others)."""
    found: list[Stored] = []
    problems: list[str] = []
    for msg in session.read_retained([topics.ALL_DEFINITIONS]):
        try:
            stored = _decode_stored(msg.topic, msg.payload)
        except InputError as exc:
            problems.append(str(exc))
            continue
        if stored is not None:
            found.append(stored)
    found.sort(key=lambda s: s.name)
    return found, problems


def _envelope(body: Stored, *, operator_node: str, now_ms: int) -> Envelope:
    return new_envelope(body, source_node=operator_node, ion=body.name, now_ms=now_ms)


def publish(
    session: OperatorSession, body: Stored, *, now_ms: int, key: SigningKey | None = None
) -> Stored:
    """Publish a definition or tombstone retained, signed with ``key`` when given, waiting for
    the broker's acknowledgement; returns what was published."""
    if key is not None:
        body = sign(body, key, now_ms=now_ms)
    env = _envelope(body, operator_node=session.client_id, now_ms=now_ms)
    session.publish(topics.definition(body.name), encode(env), retain=True)
    return body


def plan_delete(current: Stored | None, name: str, *, now_ms: int, operator: str) -> IonDeleted:
    """The tombstone that deletes ``name`` (pure); raises when there is nothing to delete."""
    if not isinstance(current, IonDefinition):
        raise NotFoundError(f"no ION named {name!r} on the broker")
    return IonDeleted(
        name=name, version=current.version + 1, deleted_ms=now_ms, deleted_by=operator
    )
