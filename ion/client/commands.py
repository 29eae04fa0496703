"""Sending operator commands to nodes and collecting their results.

A command goes to one node (``ion/v1/nodes/<node>/cmd``) or to every node running an ION
(``ion/v1/ions/<ion>/cmd``), not retained: nodes refuse commands older than their
``trust.command_max_age`` (see ``node.agent.commands``), so a command is something to do now,
not a standing instruction (those are ION definitions and retained model decisions).

Each command gets a fresh random id and the operator's clock as its issue time, and is
signed with the operator's key when one is given: nodes outside development mode refuse
anything else.  Results come back on each node's ``results`` topic; we subscribe to those
before publishing so none is missed.
"""

from __future__ import annotations

import queue
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ion import topics
from ion.errors import DecodeError
from ion.model.command import Command, CommandAction, CommandResult
from ion.model.messages import new_envelope
from ion.topics import TopicKind
from ion.wire.codec import decode, encode

from .session import OperatorSession

if TYPE_CHECKING:
    from ion.security.keys import SigningKey


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def make_command(
    action: CommandAction,
    *,
    operator: str,
    now_ms: int,
    key: SigningKey | None,
    reason: str = "",
    ttl_ms: int = 0,
) -> Command:
    """A new command (fresh id, issued now), signed by ``key`` when given."""
    cmd = Command(
        command_id=secrets.token_hex(16),
        action=action,
        issued_by=operator,
        issued_ms=now_ms,
        expires_ms=now_ms + ttl_ms if ttl_ms > 0 else 0,
        reason=reason,
    )
    if key is None:
        return cmd
    from ion.security.signing import sign

    return sign(cmd, key, now_ms=now_ms)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The results that came back, and the nodes that did not answer in time."""

    results: tuple[CommandResult, ...]
    silent: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.silent and all(r.ok for r in self.results)


def send(
    session: OperatorSession,
    cmd: Command,
    *,
    nodes: Iterable[str],
    ion: str | None = None,
    wait_s: float = 10.0,
) -> Outcome:
    """Publish ``cmd`` (to ``ion``'s command topic when given, else to each of ``nodes``) and
    wait up to ``wait_s`` for a result from each of ``nodes``."""
    expected = sorted(set(nodes))
    inbox = session.listen([topics.node_topic(n, TopicKind.NODE_RESULTS) for n in expected])
    env = new_envelope(cmd, source_node=session.client_id, ion=ion or "", now_ms=cmd.issued_ms)
    payload = encode(env)
    if ion is not None:
        session.publish(topics.ion_command(ion), payload)
    else:
        for node in expected:
            session.publish(topics.node_command(node), payload)
    got: dict[str, CommandResult] = {}
    deadline = time.monotonic() + wait_s
    while len(got) < len(expected):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            msg = inbox.get(timeout=left)
        except queue.Empty:
            break
        try:
            body = decode(msg.payload).body
        except DecodeError:
            continue
        if isinstance(body, CommandResult) and body.command_id == cmd.command_id:
            got.setdefault(body.node_id, body)
    return Outcome(
        results=tuple(got[n] for n in expected if n in got),
        silent=tuple(n for n in expected if n not in got),
    )


def nodes_running(session: OperatorSession, ion: str) -> list[str]:
    """The nodes whose retained status shows a pipeline of ``ion``: those subscribed to its
    command topic."""
    from .fleet import read_statuses

    statuses, _, _ = read_statuses(session)
    return sorted(s.node_id for s in statuses if any(p.ion == ion for p in s.pipelines))
