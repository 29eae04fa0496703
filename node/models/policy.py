"""What a node does with a model version it is offered: pure decisions, no I/O.

Version labels: a producer labels each model it publishes on an edge with a decimal integer,
its publish time in Unix milliseconds, raised to one more than the last label it used on that
edge if its clock went back (``next_version``).  Labels therefore grow per edge and per
producer, survive restarts and still read as a time.  ``version_key`` orders labels: decimal
ones by value, then by the manifest's creation time; any other label sorts below every
decimal one (a foreign producer's label is still ordered, by creation time).

This is the hook for the edge policies (issue 5): ``fetch`` says whether to download a newly
announced version at all, ``activation`` whether a complete, verified one becomes active.
``auto`` activates every version newer than the active one.  ``manual``, ``gated`` and
``canary`` are not implemented yet and behave as ``auto`` (with a warning once per edge), so
IONs that name them keep working until they are.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from ion.model.definition import ModelPolicy, PolicyKind
from ion.model.manifest import ModelManifest

log = logging.getLogger(__name__)

DEFAULT_POLICY = ModelPolicy()
_warned: set[tuple[str, str]] = set()


def version_key(m: ModelManifest) -> tuple[int, int]:
    label = m.version
    number = int(label) if label.isdigit() and len(label) <= 20 else -1
    return (number, m.created_ms)


def next_version(last: int, now_ms: int) -> int:
    """The label after ``last``: the time now, or ``last + 1`` if the clock went back."""
    return max(now_ms, last + 1)


def newer(m: ModelManifest, than: ModelManifest | None) -> bool:
    return than is None or version_key(m) > version_key(than)


def fetch(
    policy: ModelPolicy | None,
    m: ModelManifest,
    newest: ModelManifest | None,
    *,
    rejected: bool,
) -> bool:
    """Whether to download ``m`` now, given the newest version active or on its way.
    Refused versions and versions not newer are not fetched: no policy would activate them
    (rollback uses what is stored)."""
    return not rejected and newer(m, newest)


class Activation(enum.Enum):
    ACTIVATE = "activate"
    KEEP = "keep"  # stored, not active (older than the active one, or refused before)
    # Issue 5: PENDING (waiting for approval or a gate), CANARY (active on some nodes).


@dataclass(frozen=True, slots=True)
class Decision:
    action: Activation
    reason: str


def activation(
    policy: ModelPolicy | None,
    m: ModelManifest,
    active: ModelManifest | None,
    *,
    rejected: bool,
) -> Decision:
    """What to do with ``m`` once it is stored, verified and ready."""
    policy = policy or DEFAULT_POLICY
    if rejected:
        return Decision(Activation.KEEP, "refused before by a consumer")
    if not newer(m, active):
        return Decision(Activation.KEEP, "not newer than the active version")
    if policy.kind is not PolicyKind.AUTO:
        key = (m.ion, m.edge)
        if key not in _warned:
            _warned.add(key)
            log.warning(
                "model edge %s/%s: policy %r is not implemented yet; activating as 'auto'",
                m.ion,
                m.edge,
                policy.kind.value,
            )
        return Decision(Activation.ACTIVATE, f"policy {policy.kind.value} (as auto for now)")
    return Decision(Activation.ACTIVATE, "policy auto")
