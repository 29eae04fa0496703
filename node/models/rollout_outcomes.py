"""What the rollout core (``node.models.rollout``) asks its shell to do: events for the audit
trail (``Notice``), this node's canary verdicts to publish (``CanaryResult``), and which edges'
watchers to tell that the active version changed."""

from __future__ import annotations

from dataclasses import dataclass, field

from ion.model.manifest import ModelManifest

EdgeKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Notice:
    """An event for the audit trail (``model.activated``, ``model.pending``, ...)."""

    kind: str
    ion: str
    edge: str
    version: str
    model_id: str = ""
    reason: str = ""
    by: str = ""  # who decided: an operator, a canary node, or "policy <kind>"
    warning: bool = False


@dataclass(frozen=True, slots=True)
class CanaryResult:
    """This node's canary verdict on a version, for the other consumers of the edge."""

    ion: str
    edge: str
    version: str
    model_id: str
    passed: bool
    reason: str


@dataclass(slots=True)
class Outcomes:
    items: list[Notice | CanaryResult] = field(default_factory=list)
    changed: set[EdgeKey] = field(default_factory=set)  # the active version changed

    def notice(
        self,
        kind: str,
        m: ModelManifest | tuple[str, str, str],
        *,
        reason: str = "",
        by: str = "",
        warning: bool = False,
        model_id: str = "",
    ) -> None:
        """``m``: the version's manifest, or (ion, edge, version) when it is not held here."""
        if isinstance(m, ModelManifest):
            ion, edge, version, model_id = m.ion, m.edge, m.version, m.model_id
        else:
            ion, edge, version = m
        self.items.append(Notice(kind, ion, edge, version, model_id, reason, by, warning))

    def extend(self, other: Outcomes) -> None:
        self.items.extend(other.items)
        self.changed |= other.changed
