"""Between the rollout core and the wire (pure): commands become rulings, outcomes become
events, pipelines' reports become health signals for a canary.

- An operator's ``Command`` (approve, reject, promote, rollback) becomes a ``Ruling`` on one
  version: who is ``issued_by`` (else the sending client), why is ``reason``.
- A canary verdict travels as an ``Event`` (``model.canary_passed`` / ``model.canary_failed``)
  retained on ``ion/v1/ions/<ion>/edges/<edge>/model/canary/<node>``.
- A pipeline's ``HealthReport`` carries the node's drift scores (the aggregate over all
  features is the score with feature ``""``); an ``error_rate`` scalar in its health or
  stats reports is its error rate.
"""

from __future__ import annotations

from ion.model.command import (
    ApproveModel,
    Command,
    ModelRef,
    PromoteModel,
    RejectModel,
    RollbackModel,
)
from ion.model.event import Event, Severity
from ion.model.health import HealthReport, StatsReport

from .policy import Ruling, Verdict
from .rollout_outcomes import CanaryResult, Notice

ERROR_RATE = "error_rate"
"""The scalar a pipeline reports its share of failed items under (0..1)."""

_VERDICTS: dict[type, Verdict] = {
    ApproveModel: Verdict.APPROVED,
    RejectModel: Verdict.REJECTED,
    PromoteModel: Verdict.PROMOTED,
    RollbackModel: Verdict.ROLLBACK_TARGET,
}
_CANARY_EVENTS = {"model.canary_passed": True, "model.canary_failed": False}


def model_ref(cmd: Command) -> ModelRef | None:
    """The model version a command is about; None for other commands."""
    action = cmd.action
    if isinstance(action, ApproveModel | RejectModel | PromoteModel | RollbackModel):
        return action.ref
    return None


def ruling_of(cmd: Command, issuer: str) -> Ruling:
    """The ruling a model command stands for (``model_ref(cmd)`` must not be None)."""
    verdict = _VERDICTS[type(cmd.action)]
    return Ruling(verdict, cmd.issued_by or issuer, cmd.reason, cmd.issued_ms, cmd.command_id)


def notice_event(n: Notice, node_id: str) -> Event:
    attributes = {"ion": n.ion, "edge": n.edge, "version": n.version, "by": n.by}
    if n.model_id:
        attributes["model_id"] = n.model_id
    return Event(
        type=n.kind,
        severity=Severity.WARNING if n.warning else Severity.INFO,
        subject=f"{n.ion}/{n.edge}@{node_id}",
        message=n.reason,
        attributes=attributes,
    )


def canary_event(r: CanaryResult, node_id: str) -> Event:
    return Event(
        type="model.canary_passed" if r.passed else "model.canary_failed",
        severity=Severity.INFO if r.passed else Severity.WARNING,
        subject=f"{r.ion}/{r.edge}@{node_id}",
        message=r.reason,
        attributes={
            "ion": r.ion,
            "edge": r.edge,
            "version": r.version,
            "model_id": r.model_id,
            "by": node_id,
        },
    )


def canary_of_event(e: Event, node: str, at_ms: int) -> tuple[str, Ruling] | None:
    """(version, verdict) from a canary node's retained event; None when it is not one."""
    passed = _CANARY_EVENTS.get(e.type)
    version = e.attributes.get("version", "")
    if passed is None or not version:
        return None
    verdict = Verdict.CANARY_PASSED if passed else Verdict.CANARY_FAILED
    return version, Ruling(verdict, node, e.message, at_ms)


def health_signals(
    body: HealthReport | StatsReport,
) -> tuple[str, tuple[str, float] | None, float | None]:
    """(model id or "", (drift metric, aggregate score) or None, error rate or None)."""
    drift = None
    model_id = ""
    if isinstance(body, HealthReport):
        model_id = body.model_id
        overall = [d for d in body.drift if d.feature == ""]
        if overall:
            drift = (overall[0].metric, overall[0].score)
    rate = next((m.value for m in body.scalars if m.name == ERROR_RATE), None)
    return model_id, drift, rate
