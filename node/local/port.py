"""What the local socket server needs from the agent: the ``AgentPort`` protocol, and a fake.

The server knows frames and connections; the agent knows jobs, edges, the outbox and the inbox.
This is everything one asks of the other, so the server is tested against ``FakeAgentPort``
and the agent implements four methods without knowing about sockets.

At-least-once to the component: ``deliveries`` hands out inbound messages, and ``delivered``
says which ones the component has handled.  Anything handed out but never reported delivered
(the component crashed, the connection dropped) is the agent's to hand out again later.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ion.errors import InputError, RefusedError
from ion.model.local import Hello
from ion.model.messages import Envelope

__all__ = ["AgentPort", "ClientInfo", "FakeAgentPort", "Inbound"]


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """An authorised component, as the agent knows it (from ``authorize``)."""

    ion: str
    pipeline: str
    component: str = ""

    @property
    def label(self) -> str:
        """``ion/pipeline[/component]``: the id on every log record about this client."""
        base = f"{self.ion}/{self.pipeline}"
        return f"{base}/{self.component}" if self.component else base


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message for a component.  ``receipt`` is the agent's own handle (e.g. its inbox
    row id), given back in ``delivered``; the server never looks at it."""

    edge: str
    envelope: Envelope
    receipt: int = 0


class AgentPort(Protocol):
    """The agent, as the local socket server sees it."""

    def authorize(self, hello: Hello) -> ClientInfo:
        """Who this is.  Checks the per-job token (in constant time).

        Raises ``RefusedError`` (unknown or wrong token), ``InputError`` (e.g. the ION or
        pipeline named does not run here), ``UnavailableError`` (the job is not ready yet).
        """
        ...

    async def emit(self, client: ClientInfo, edge: str, envelope: Envelope) -> None:
        """Take the message; return once it is durably stored (in the outbox).

        The envelope is as the component built it: its message id (fresh if it sent none) and
        ``created_ms`` are worth keeping (a retried emit keeps its id, so it is deduplicated
        downstream); ``source_node``, ``sequence``, ``stream`` and ``route`` are the agent's to
        set, and an ``ion`` other than ``client.ion`` is the agent's to refuse.

        Called in the order the component sent the messages; an implementation that fixes each
        message's place (sequence number, outbox position) before its first ``await`` keeps
        the component's order.  Raises ``UnavailableError`` (retryable: the outbox is full) or
        ``InputError`` (unknown edge, an edge that does not leave this pipeline, a body that
        does not belong on it).  May be cancelled (server shutdown).
        """
        ...

    def deliveries(self, client: ClientInfo, edges: tuple[str, ...]) -> AsyncIterator[Inbound]:
        """What arrives for ``client`` on ``edges`` (empty: every edge into its pipeline).

        Raises ``InputError`` at once for an edge that does not lead into the pipeline.  The
        server pulls only when the component has credit (that is the flow control), and
        closes the iterator (``aclose``, when it has one) when the subscription ends.
        """
        ...

    async def delivered(self, client: ClientInfo, handled: Sequence[Inbound]) -> None:
        """The component has handled these (in delivery order); they need not come again."""
        ...


EmitHook = Callable[[ClientInfo, str, Envelope], Awaitable[None]]


@dataclass
class FakeAgentPort:
    """An in-memory ``AgentPort`` with scripted behaviour, for tests and benchmarks.

    - One job: ``ion``/``pipeline`` with ``token``; other tokens are refused.
    - ``out_edges`` may be emitted to (and "" always); ``in_edges`` may be subscribed to.
    - ``emit_hook``, when set, runs inside every ``emit`` before the message is kept: raise
      from it to script failures, await in it to script slow storage.
    - ``push(edge, envelope)`` queues an inbound message; ``handled`` collects what the
      component acknowledged.
    """

    token: str = "secret"  # noqa: S105 - a fake's fixed token
    ion: str = "demo"
    pipeline: str = "p"
    out_edges: Collection[str] = ("out",)
    in_edges: Collection[str] = ("in",)
    emit_hook: EmitHook | None = None
    keep: bool = True  # False: count emits without keeping them (benchmarks)
    emitted: list[tuple[ClientInfo, str, Envelope]] = field(default_factory=list)
    emit_count: int = 0
    handled: list[Inbound] = field(default_factory=list)
    subscriptions: int = 0
    _inbox: asyncio.Queue[Inbound] | None = field(default=None, repr=False)
    _receipts: int = 0

    def authorize(self, hello: Hello) -> ClientInfo:
        if not hmac.compare_digest(hello.token.encode(), self.token.encode()):
            raise RefusedError("unknown job token")
        if (hello.ion, hello.pipeline) != (self.ion, self.pipeline):
            raise InputError(f"pipeline {hello.ion}/{hello.pipeline} does not run here")
        return ClientInfo(hello.ion, hello.pipeline, hello.component)

    async def emit(self, client: ClientInfo, edge: str, envelope: Envelope) -> None:
        if edge and edge not in self.out_edges:
            raise InputError(f"edge {edge!r} does not leave pipeline {client.pipeline!r}")
        if self.emit_hook is not None:
            await self.emit_hook(client, edge, envelope)
        self.emit_count += 1
        if self.keep:
            self.emitted.append((client, edge, envelope))

    def deliveries(self, client: ClientInfo, edges: tuple[str, ...]) -> AsyncIterator[Inbound]:
        unknown = [e for e in edges if e not in self.in_edges]
        if unknown:
            raise InputError(f"edges {unknown} do not lead into pipeline {client.pipeline!r}")
        self.subscriptions += 1
        return self._pull(frozenset(edges))

    async def delivered(self, client: ClientInfo, handled: Sequence[Inbound]) -> None:
        self.handled.extend(handled)

    def push(self, edge: str, envelope: Envelope) -> Inbound:
        self._receipts += 1
        item = Inbound(edge, envelope, self._receipts)
        self._queue().put_nowait(item)
        return item

    @property
    def queued(self) -> int:
        return self._queue().qsize()

    def _queue(self) -> asyncio.Queue[Inbound]:
        if self._inbox is None:
            self._inbox = asyncio.Queue()
        return self._inbox

    async def _pull(self, edges: frozenset[str]) -> AsyncIterator[Inbound]:
        queue = self._queue()
        while True:
            item = await queue.get()
            if not edges or item.edge in edges:
                yield item
