"""Operator actions from the dashboard: the same retained decisions as the CLI.

``ion approve|reject|rollback`` and these buttons share ``ion.client.rollouts``: read the
edge from the broker (``find_edge``), check the version or plan the rollback, and
``publish_decisions`` signed with the configured key.  Synchronous (the operator session is
a short-lived paho client): the server runs ``decide`` in a worker thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ion.errors import InputError

if TYPE_CHECKING:
    from ion.config.broker import BrokerConfig
    from ion.security.keys import SigningKey

log = logging.getLogger(__name__)

ACTIONS = ("approve", "reject", "rollback")


@dataclass(frozen=True, slots=True)
class Decision:
    """What an operator asked for (already validated for shape, not against the broker)."""

    action: str
    ion: str
    edge: str
    version: str  # "" for a rollback of the newest version
    reason: str
    operator: str


@dataclass(frozen=True, slots=True)
class Outcome:
    published: tuple[dict[str, str], ...]
    notes: tuple[str, ...]
    signed_by: str  # key id, "" when unsigned

    def summary(self, d: Decision) -> str:
        done = "; ".join(f"{p['action']} {p['version']}" for p in self.published)
        signed = f"signed by {self.signed_by}" if self.signed_by else "unsigned"
        return f"{d.ion}/{d.edge}: {done} published ({signed})"


def parse_decision(action: str, form: dict[str, str], operator: str) -> Decision:
    """A ``Decision`` from a form or JSON body; ``InputError`` names what is wrong."""
    from ion import topics

    if action not in ACTIONS:
        raise InputError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
    ion, edge = form.get("ion", "").strip(), form.get("edge", "").strip()
    version = form.get("version", "").strip()
    if not ion or not edge:
        raise InputError("ion and edge are required")
    if action != "rollback" and not version:
        raise InputError(f"{action} needs a version")
    reason = form.get("reason", "").strip()[:500]
    # A name or label that cannot be a topic level is bad input, before any broker is asked.
    topics.model_decision(ion, edge, version or "0")
    return Decision(action, ion, edge, version, reason, operator)


def load_key(path: Path | None) -> SigningKey | None:
    if path is None:
        return None
    from ion.security.keystore import read_signing_key

    return read_signing_key(path)


def decide(broker: BrokerConfig, key: SigningKey | None, d: Decision) -> Outcome:
    """Publish ``d`` as the CLI would; raises ``InputError`` (unknown ION, edge or version),
    ``UnavailableError`` or ``RefusedError`` (the broker)."""
    from ion.client.rollouts import find_edge, plan_decision, publish_decisions
    from ion.client.session import connect

    with connect(broker, client_prefix="ion-dashboard") as session:
        view = find_edge(session, d.ion, d.edge)
        actions, notes = plan_decision(view, d.action, d.version or None)
        reason = d.reason or ("rollback" if d.action == "rollback" else "")
        published = publish_decisions(
            session, view, actions, operator=d.operator, reason=reason, key=key
        )
    log.info(
        "operator %s: %s %s/%s %s published (%s)",
        d.operator,
        d.action,
        d.ion,
        d.edge,
        d.version or "(newest)",
        "signed" if key else "unsigned",
    )
    return Outcome(tuple(published), tuple(notes), key.key_id if key else "")
