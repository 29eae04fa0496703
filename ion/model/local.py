"""Frames on the agent's local socket, between pipeline components (the SDK) and the node agent.

Mirrors ``LocalFrame`` in proto/ion/v1/local.proto.  ``ion.wire.local`` turns them into bytes
and back; ``node.local.framing`` adds the 4-byte length prefix.

The conversation (component -> agent unless noted):

- ``Hello`` first, always; the agent answers with a ``Reply`` and closes the connection if the
  answer is not ok.
- ``Emit``: one message along an edge (or pipeline telemetry with edge ``""``).  The ``Reply``
  comes once the agent holds the message durably.  Many may be in flight: the agent echoes
  each frame's ``request_id`` in its reply.
- ``Subscribe``: the agent replies, then pushes ``Delivery`` frames (agent -> component) while
  fewer than ``window`` of them are unacknowledged; ``Delivered`` (no reply) acknowledges every
  delivery up to an id and so gives credit back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

from ion.model.messages import Envelope

__all__ = [
    "MAX_UINT64",
    "PROTOCOL_VERSION",
    "Delivered",
    "Delivery",
    "Emit",
    "Hello",
    "LocalFrame",
    "LocalMessage",
    "Reply",
    "Subscribe",
]

PROTOCOL_VERSION = 1
"""The ``Hello.protocol_version`` this code speaks."""

MAX_UINT64 = 2**64 - 1


def _check_id(what: str, value: int) -> None:
    if not 0 <= value <= MAX_UINT64:
        raise ValueError(f"{what} {value} is outside 0..2**64-1")


@dataclass(frozen=True, slots=True)
class Hello:
    """Who the component is, and the per-job secret that proves it."""

    ion: str
    pipeline: str
    component: str = ""
    # Kept out of repr: frames end up in logs.
    token: str = field(default="", repr=False)
    protocol_version: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class Emit:
    """A message for the agent to send along ``edge`` ("" = the pipeline's own telemetry).

    The agent owns the envelope's ``source_node``, ``sequence`` and ``stream`` and overwrites
    them; the component's ``message_id`` (fresh if it sent none) and ``created_ms`` are kept, so
    a component that retries an emit with the same message id is deduplicated downstream.
    """

    edge: str
    envelope: Envelope


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Receive what arrives on ``edges`` (empty: every edge into this pipeline)."""

    edges: tuple[str, ...] = ()
    window: int = 0  # deliveries in flight before the agent waits; 0 = the agent's default

    def __post_init__(self) -> None:
        if not 0 <= self.window < 2**32:
            raise ValueError(f"subscribe window {self.window} is outside 0..2**32-1")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message for the component; ids count up from 1 on each connection."""

    delivery_id: int
    edge: str
    envelope: Envelope

    def __post_init__(self) -> None:
        _check_id("delivery id", self.delivery_id)


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to the request with the same ``request_id``."""

    ok: bool = True
    error: str = ""
    retryable: bool = False  # e.g. the outbox is full: the same request may work later

    def __post_init__(self) -> None:
        if self.ok and (self.error or self.retryable):
            raise ValueError("a successful reply carries no error")

    @classmethod
    def success(cls) -> Reply:
        return _SUCCESS

    @classmethod
    def failure(cls, error: str, *, retryable: bool = False) -> Reply:
        return cls(ok=False, error=error or "failed", retryable=retryable)


_SUCCESS = Reply()


@dataclass(frozen=True, slots=True)
class Delivered:
    """The component has handled every delivery up to and including this id (credit)."""

    up_to_delivery_id: int

    def __post_init__(self) -> None:
        _check_id("delivered id", self.up_to_delivery_id)


LocalMessage: TypeAlias = Hello | Emit | Subscribe | Delivery | Reply | Delivered


@dataclass(frozen=True, slots=True)
class LocalFrame:
    request_id: int
    message: LocalMessage

    def __post_init__(self) -> None:
        _check_id("request id", self.request_id)
