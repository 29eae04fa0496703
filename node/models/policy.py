"""What a node does with a model version it is offered: pure decisions, no I/O.

Version labels: a producer labels each model it publishes on an edge with a decimal integer,
its publish time in Unix milliseconds, raised to one more than the last label it used on that
edge if its clock went back (``next_version``).  Labels therefore grow per edge and per
producer, survive restarts and still read as a time.  ``version_key`` orders labels: decimal
ones by value, then by the manifest's creation time; any other label sorts below every
decimal one (a foreign producer's label is still ordered, by creation time).

Update policies (the model edge's ``policy`` in the ION), decided on each consuming node so
they work while the cloud is unreachable:

- ``auto``: every verified version newer than the active one becomes active.
- ``manual``: a new version is held *pending* until an operator approves it (a ``Ruling``).
- ``gated``: a new version becomes active only if its manifest's metrics pass every gate
  (``check_gates``); otherwise it is *refused* with the reason.
- ``canary``: a node chosen by ``is_canary`` (named in ``canary.nodes``, or its hash with the
  model id falls under ``canary.share``) activates first and watches its health for
  ``canary.hold_ms`` (``canary_check``); the others hold the version pending until a canary
  reports that it passed (or an operator promotes it).  Gates, when given, apply first.

Whatever the policy, an operator's ruling wins: approved, promoted or named as a rollback
target activates (when newer than the active version), rejected never activates.  A version
a component on this node refused is never activated again.

``fetch`` says whether to download a newly announced version at all, ``activation`` what to
do with a complete, verified one.
"""

from __future__ import annotations

import enum
import hashlib
import math
from dataclasses import dataclass, replace

from ion.model.definition import CanaryPolicy, MetricGate, ModelPolicy, PolicyKind
from ion.model.manifest import ModelManifest

DEFAULT_POLICY = ModelPolicy()


def version_key(m: ModelManifest) -> tuple[int, int]:
    label = m.version
    number = int(label) if label.isdigit() and len(label) <= 20 else -1
    return (number, m.created_ms)


def next_version(last: int, now_ms: int) -> int:
    """The label after ``last``: the time now, or ``last + 1`` if the clock went back."""
    return max(now_ms, last + 1)


def newer(m: ModelManifest, than: ModelManifest | None) -> bool:
    return than is None or version_key(m) > version_key(than)


def label_key(version: str) -> int:
    """Orders bare version labels (no manifest at hand): decimal ones by value, others first."""
    return int(version) if version.isdigit() and len(version) <= 20 else -1


class Verdict(enum.Enum):
    """What the fleet decided about one version."""

    APPROVED = "approved"  # an operator: may become active (manual), overrides a gate
    REJECTED = "rejected"  # an operator (reject, or a rollback past it): never active
    PROMOTED = "promoted"  # an operator: activate now (canary without waiting)
    ROLLBACK_TARGET = "rollback_target"  # an operator: roll back to this version
    CANARY_PASSED = "canary_passed"  # a canary node held it for the hold time
    CANARY_FAILED = "canary_failed"  # a canary node rolled it back


@dataclass(frozen=True, slots=True)
class Ruling:
    verdict: Verdict
    by: str = ""  # the operator, or the canary node
    reason: str = ""
    at_ms: int = 0
    command_id: str = ""


def _who(r: Ruling) -> str:
    return r.by or "unknown"


def fetch(
    policy: ModelPolicy | None,
    m: ModelManifest,
    newest: ModelManifest | None,
    *,
    rejected: bool,
    ruling: Ruling | None = None,
    canary: Ruling | None = None,
) -> bool:
    """Whether to download ``m`` now, given the newest version active or on its way.

    Refused versions and versions not newer are not fetched: no policy would activate them
    (rollback uses what is stored).  Under ``canary``, a version a canary failed is not
    fetched either.  ``manual`` and ``gated`` versions are fetched, so an approval (or an
    operator overriding a gate) activates them at once."""
    if rejected or (ruling is not None and ruling.verdict is Verdict.REJECTED):
        return False
    kind = (policy or DEFAULT_POLICY).kind
    if kind is PolicyKind.CANARY and canary is not None and canary.verdict is Verdict.CANARY_FAILED:
        return False
    return newer(m, newest)


class Activation(enum.Enum):
    ACTIVATE = "activate"
    KEEP = "keep"  # stored, not active (older than the active one, or refused before)
    PENDING = "pending"  # held until an approval (manual) or a canary's verdict (canary)
    REFUSE = "refuse"  # a gate refused it (an operator's approval can still activate it)
    CANARY = "canary"  # this node goes first: activate it and watch health for the hold


@dataclass(frozen=True, slots=True)
class Decision:
    action: Activation
    reason: str
    by: str = ""  # who decided: an operator, a canary node; "" for the policy itself
    promoted: bool = False  # activated because a canary passed or an operator promoted it


def activation(
    policy: ModelPolicy | None,
    m: ModelManifest,
    active: ModelManifest | None,
    *,
    rejected: bool,
    node_id: str = "",
    ruling: Ruling | None = None,
    canary: Ruling | None = None,
) -> Decision:
    """What to do with ``m`` once it is stored, verified and ready.

    ``rejected``: a component on this node refused it before.  ``ruling``: the operators'
    decision on ``m.version``, if any.  ``canary``: the canaries' verdict on it, if any
    (``aggregate_canary``)."""
    policy = policy or DEFAULT_POLICY
    if rejected:
        return Decision(Activation.KEEP, "refused before by a consumer")
    if ruling is not None and ruling.verdict is Verdict.REJECTED:
        return Decision(Activation.KEEP, f"rejected by {_who(ruling)}", ruling.by)
    if not newer(m, active):
        return Decision(Activation.KEEP, "not newer than the active version")
    if ruling is not None and ruling.verdict in _OPERATOR_YES:
        what = {
            Verdict.APPROVED: "approved",
            Verdict.PROMOTED: "promoted",
            Verdict.ROLLBACK_TARGET: "named as the rollback target",
        }[ruling.verdict]
        return Decision(
            Activation.ACTIVATE,
            f"{what} by {_who(ruling)}",
            ruling.by,
            promoted=ruling.verdict is Verdict.PROMOTED,
        )
    kind = policy.kind
    if kind is PolicyKind.AUTO:
        return Decision(Activation.ACTIVATE, "policy auto")
    if kind is PolicyKind.MANUAL:
        return Decision(Activation.PENDING, "policy manual: waiting for an approval")
    gate_note = ""
    if policy.gates:
        gates = check_gates(policy.gates, m, active)
        if not gates.passed:
            return Decision(Activation.REFUSE, f"gate: {gates.reason}")
        gate_note = f"gates passed ({gates.reason})"
    if kind is PolicyKind.GATED or policy.canary is None:
        return Decision(Activation.ACTIVATE, gate_note or f"policy {kind.value}")
    if canary is not None and canary.verdict is Verdict.CANARY_FAILED:
        return Decision(Activation.KEEP, f"the canary on {_who(canary)} failed", canary.by)
    if canary is not None and canary.verdict is Verdict.CANARY_PASSED:
        why = f"the canary on {_who(canary)} passed"
        return Decision(Activation.ACTIVATE, why, canary.by, promoted=True)
    if is_canary(policy.canary, node_id, m.model_id):
        return Decision(Activation.CANARY, _join("this node is a canary", gate_note))
    return Decision(Activation.PENDING, _join("waiting for the canary", gate_note))


_OPERATOR_YES = frozenset({Verdict.APPROVED, Verdict.PROMOTED, Verdict.ROLLBACK_TARGET})


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if b else a


# -- gates --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GateResult:
    passed: bool
    reason: str  # the first failure, or what passed


def check_gates(
    gates: tuple[MetricGate, ...], m: ModelManifest, active: ModelManifest | None
) -> GateResult:
    """Whether ``m``'s metrics pass every gate.  ``min``/``max`` are absolute bounds;
    ``margin_over_active`` asks for a value better than the active version's by at least the
    margin (higher or lower by ``higher_is_better``), and passes when nothing is active or
    the active version does not carry the metric (nothing to compare against)."""
    passed: list[str] = []
    for g in gates:
        value = m.metric(g.metric)
        if value is None or math.isnan(value):
            return GateResult(False, f"the manifest has no value for metric {g.metric!r}")
        if g.min is not None and value < g.min:
            return GateResult(False, f"{g.metric} {value:g} is below the minimum {g.min:g}")
        if g.max is not None and value > g.max:
            return GateResult(False, f"{g.metric} {value:g} is above the maximum {g.max:g}")
        if g.margin_over_active is not None and active is not None:
            base = active.metric(g.metric)
            if base is not None and not math.isnan(base):
                need = (
                    base + g.margin_over_active
                    if g.higher_is_better
                    else (base - g.margin_over_active)
                )
                better = value >= need if g.higher_is_better else value <= need
                if not better:
                    direction = "at least" if g.higher_is_better else "at most"
                    return GateResult(
                        False,
                        f"{g.metric} {value:g} is not better than the active version "
                        f"{active.version} ({base:g}) by the margin {g.margin_over_active:g} "
                        f"(needs {direction} {need:g})",
                    )
        passed.append(f"{g.metric} {value:g}")
    return GateResult(True, ", ".join(passed))


# -- canary -------------------------------------------------------------------------------------


def is_canary(canary: CanaryPolicy, node_id: str, model_id: str) -> bool:
    """Whether ``node_id`` tries ``model_id`` first.  With ``share``, the choice is a hash of
    node and model id: deterministic (every node knows the answer without asking anyone, also
    offline) and different for each version, so no node is always the guinea pig."""
    if canary.nodes:
        return node_id in canary.nodes
    if canary.share <= 0:
        return False
    digest = hashlib.sha256(f"{node_id}\0{model_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < canary.share


def aggregate_canary(verdicts: dict[str, Ruling]) -> Ruling | None:
    """The canaries' verdict on one version from each canary node's: a failure anywhere
    wins (a version one canary rolled back is not promoted), else any pass."""
    failed = [r for r in verdicts.values() if r.verdict is Verdict.CANARY_FAILED]
    if failed:
        return min(failed, key=lambda r: r.at_ms)
    passed = [r for r in verdicts.values() if r.verdict is Verdict.CANARY_PASSED]
    return min(passed, key=lambda r: r.at_ms) if passed else None


@dataclass(frozen=True, slots=True)
class CanaryWatch:
    """A canary node's trial of one version: since when, and what its health showed."""

    model_id: str
    version: str
    started_ms: int
    drift_reports: int = 0
    worst_drift: float | None = None
    drift_metric: str = ""
    error_rate: float | None = None  # the latest reported


def drifting(metric: str, score: float, limit: float) -> bool:
    """Is ``score`` beyond ``limit``?  ``overlap`` is a similarity: beyond means below."""
    return score < limit if metric == "overlap" else score > limit


def observe(
    w: CanaryWatch,
    *,
    drift: tuple[str, float] | None = None,
    error_rate: float | None = None,
) -> CanaryWatch:
    """``w`` after a health report: ``drift`` is (metric, aggregate score) of the version."""
    if drift is not None and not math.isnan(drift[1]):
        metric, score = drift
        worst = w.worst_drift
        if worst is None or drifting(metric, score, worst):
            worst = score
        w = replace(w, drift_reports=w.drift_reports + 1, worst_drift=worst, drift_metric=metric)
    if error_rate is not None and not math.isnan(error_rate):
        w = replace(w, error_rate=error_rate)
    return w


class CanaryState(enum.Enum):
    HOLDING = "holding"
    PASSED = "passed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class CanaryCheck:
    state: CanaryState
    reason: str


def canary_check(canary: CanaryPolicy, w: CanaryWatch, now_ms: int) -> CanaryCheck:
    """Where the trial stands.  It fails as soon as drift (when ``max_drift`` is set) or the
    error rate (when ``max_error_rate`` is set) is seen beyond its limit; it passes once it
    has held for ``hold_ms`` and, when ``max_drift`` is set, at least one drift score was
    seen (a canary that never reported its health has not shown that it is healthy)."""
    if (
        canary.max_drift > 0
        and w.worst_drift is not None
        and drifting(w.drift_metric, w.worst_drift, canary.max_drift)
    ):
        return CanaryCheck(
            CanaryState.FAILED,
            f"drift {w.drift_metric} {w.worst_drift:.3g} is beyond max_drift {canary.max_drift:g}",
        )
    rate = w.error_rate
    if canary.max_error_rate > 0 and rate is not None and rate > canary.max_error_rate:
        return CanaryCheck(
            CanaryState.FAILED,
            f"error rate {rate:.3g} is above max_error_rate {canary.max_error_rate:g}",
        )
    held = max(0, now_ms - w.started_ms)
    if held < canary.hold_ms:
        return CanaryCheck(CanaryState.HOLDING, f"held {held} of {canary.hold_ms} ms")
    if canary.max_drift > 0 and w.drift_reports == 0:
        return CanaryCheck(CanaryState.HOLDING, f"held {held} ms; no drift score seen yet")
    health = []
    if w.worst_drift is not None:
        health.append(f"worst drift {w.drift_metric} {w.worst_drift:.3g}")
    if w.error_rate is not None:
        health.append(f"error rate {w.error_rate:.3g}")
    detail = f" ({', '.join(health)})" if health else ""
    return CanaryCheck(CanaryState.PASSED, f"held {held / 1000:g} s{detail}")
