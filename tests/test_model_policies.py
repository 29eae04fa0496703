"""Update policies, pure and with the rollout core on a real model store (no network).

``node.models.policy`` decides; ``node.models.rollout`` keeps the state (rulings, canary
verdicts, pending versions, trials) and changes the store; ``node.models.rollout_wire`` maps
commands and events.  Times are injected: nothing sleeps.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import pytest

from ion.model.definition import (
    CanaryPolicy,
    MetricGate,
    ModelPolicy,
    PolicyKind,
)
from ion.model.health import Metric
from ion.model.manifest import ModelManifest
from node.models import policy
from node.models.policy import (
    Activation,
    CanaryState,
    CanaryWatch,
    Ruling,
    Verdict,
    activation,
    canary_check,
    check_gates,
    is_canary,
)
from node.models.rollout import Rollout
from node.models.rollout_outcomes import CanaryResult, Notice, Outcomes
from node.models.store import ModelStore

ION, EDGE = "plant", "weights"
KEY = (ION, EDGE)


def manifest(version: str, **metrics: float) -> ModelManifest:
    digest = hashlib.sha256(version.encode()).hexdigest()
    return ModelManifest(
        digest,
        version,
        ion=ION,
        edge=EDGE,
        file_name="model.bin",
        size_bytes=len(version),
        created_ms=int(version) if version.isdigit() else 0,
        metrics=tuple(Metric(k, v) for k, v in metrics.items()),
    )


AUTO = ModelPolicy()
MANUAL = ModelPolicy(kind=PolicyKind.MANUAL)
GATED = ModelPolicy(
    kind=PolicyKind.GATED,
    gates=(MetricGate("quality", min=0.5, margin_over_active=0.05),),
)
CANARY = ModelPolicy(
    kind=PolicyKind.CANARY,
    canary=CanaryPolicy(nodes=("edge-1",), hold_ms=2_000, max_drift=0.3, max_error_rate=0.1),
)


# -- pure decisions -------------------------------------------------------------------------


def test_each_policy_decides_on_a_new_version() -> None:
    m1, m2 = manifest("1", quality=0.6), manifest("2", quality=0.7)
    assert activation(AUTO, m2, m1, rejected=False).action is Activation.ACTIVATE
    manual = activation(MANUAL, m2, m1, rejected=False)
    assert manual.action is Activation.PENDING and "approval" in manual.reason
    assert activation(GATED, m2, m1, rejected=False).action is Activation.ACTIVATE
    worse = manifest("3", quality=0.72)  # better, but not by the margin 0.05
    refused = activation(GATED, worse, m2, rejected=False)
    assert refused.action is Activation.REFUSE and "margin" in refused.reason
    on_canary = activation(CANARY, m2, m1, rejected=False, node_id="edge-1")
    assert on_canary.action is Activation.CANARY
    elsewhere = activation(CANARY, m2, m1, rejected=False, node_id="edge-2")
    assert elsewhere.action is Activation.PENDING and "canary" in elsewhere.reason


def test_operators_rulings_win_over_the_policy_but_not_over_a_refusal() -> None:
    m1, m2 = manifest("1"), manifest("2")
    approved = Ruling(Verdict.APPROVED, "alice")
    d = activation(MANUAL, m2, m1, rejected=False, ruling=approved)
    assert d.action is Activation.ACTIVATE and d.by == "alice" and "approved by alice" in d.reason
    low = manifest("2", quality=0.1)
    assert activation(GATED, low, m1, rejected=False, ruling=approved).action is Activation.ACTIVATE
    promoted = activation(CANARY, m2, m1, rejected=False, node_id="edge-9",
                          ruling=Ruling(Verdict.PROMOTED, "bob"))  # fmt: skip
    assert promoted.action is Activation.ACTIVATE and promoted.promoted
    rejected = Ruling(Verdict.REJECTED, "carol")
    assert activation(AUTO, m2, m1, rejected=False, ruling=rejected).action is Activation.KEEP
    assert activation(AUTO, m2, m1, rejected=True, ruling=approved).action is Activation.KEEP
    assert activation(AUTO, m1, m2, rejected=False, ruling=approved).action is Activation.KEEP


def test_canary_verdicts_decide_for_the_other_consumers() -> None:
    m1, m2 = manifest("1"), manifest("2")
    passed = Ruling(Verdict.CANARY_PASSED, "edge-1", "held 2 s")
    failed = Ruling(Verdict.CANARY_FAILED, "edge-3", "drift")
    d = activation(CANARY, m2, m1, rejected=False, node_id="edge-2", canary=passed)
    assert d.action is Activation.ACTIVATE and d.promoted and d.by == "edge-1"
    d = activation(CANARY, m2, m1, rejected=False, node_id="edge-2", canary=failed)
    assert d.action is Activation.KEEP
    assert policy.aggregate_canary({"edge-1": passed, "edge-3": failed}) == failed
    assert policy.aggregate_canary({"edge-1": passed}) == passed
    assert policy.aggregate_canary({}) is None
    assert not policy.fetch(CANARY, m2, m1, rejected=False, canary=failed)
    assert policy.fetch(CANARY, m2, m1, rejected=False, canary=passed)
    assert not policy.fetch(AUTO, m2, m1, rejected=False, ruling=Ruling(Verdict.REJECTED))
    assert policy.fetch(MANUAL, m2, m1, rejected=False)  # fetched now, activated on approval


@pytest.mark.parametrize(
    ("gate", "value", "active", "passes"),
    [
        (MetricGate("q", min=0.5), 0.5, None, True),
        (MetricGate("q", min=0.5), 0.49, None, False),
        (MetricGate("q", max=0.2), 0.3, None, False),
        (MetricGate("q", margin_over_active=0.1), 0.7, 0.6, True),
        (MetricGate("q", margin_over_active=0.1), 0.69, 0.6, False),
        (MetricGate("q", margin_over_active=0.1), 0.1, None, True),  # nothing active
        (MetricGate("loss", higher_is_better=False, margin_over_active=0.1), 0.5, 0.6, True),
        (MetricGate("loss", higher_is_better=False, margin_over_active=0.1), 0.55, 0.6, False),
        (MetricGate("loss", higher_is_better=False, max=1.0), 0.9, None, True),
    ],
)
def test_gates(gate: MetricGate, value: float, active: float | None, passes: bool) -> None:
    m = manifest("2", **{gate.metric: value})
    a = manifest("1", **{gate.metric: active}) if active is not None else None
    assert check_gates((gate,), m, a).passed is passes


def test_a_gate_on_a_metric_the_manifest_lacks_refuses() -> None:
    result = check_gates((MetricGate("quality", min=0.1),), manifest("2"), None)
    assert not result.passed and "no value for metric 'quality'" in result.reason
    # The active version lacking it leaves nothing to compare against.
    assert check_gates((MetricGate("q", margin_over_active=1),), manifest("2", q=0), manifest("1"))


def test_canary_choice_is_deterministic_and_follows_the_share() -> None:
    share = CanaryPolicy(share=0.25)
    nodes = [f"edge-{i}" for i in range(2000)]
    chosen = [n for n in nodes if is_canary(share, n, "a" * 64)]
    assert chosen == [n for n in nodes if is_canary(share, n, "a" * 64)]
    assert 400 < len(chosen) < 600
    other = [n for n in nodes if is_canary(share, n, "b" * 64)]
    assert other != chosen  # another version, other canaries
    assert all(is_canary(CanaryPolicy(share=1.0), n, "c" * 64) for n in nodes[:50])
    named = CanaryPolicy(nodes=("edge-7",))
    assert [n for n in nodes if is_canary(named, n, "a" * 64)] == ["edge-7"]


def test_a_canary_holds_then_passes_or_fails_on_drift_or_errors() -> None:
    c = CANARY.canary
    assert c is not None
    w = CanaryWatch("m" * 64, "2", started_ms=1_000)
    assert canary_check(c, w, 2_000).state is CanaryState.HOLDING
    held = canary_check(c, w, 3_500)
    assert held.state is CanaryState.HOLDING and "no drift score" in held.reason
    good = policy.observe(w, drift=("psi", 0.05), error_rate=0.01)
    assert canary_check(c, good, 2_999).state is CanaryState.HOLDING
    passed = canary_check(c, good, 3_000)
    assert passed.state is CanaryState.PASSED and "psi 0.05" in passed.reason
    bad = policy.observe(good, drift=("psi", 0.9))
    failed = canary_check(c, bad, 1_500)
    assert failed.state is CanaryState.FAILED and "beyond max_drift 0.3" in failed.reason
    assert policy.observe(bad, drift=("psi", 0.01)).worst_drift == 0.9  # worst is kept
    errors = policy.observe(good, error_rate=0.5)
    assert canary_check(c, errors, 1_500).state is CanaryState.FAILED
    # overlap is a similarity: drift is a value *below* the limit
    sim = CanaryPolicy(nodes=("edge-1",), hold_ms=0, max_drift=0.8)
    similar, dissimilar = (policy.observe(w, drift=("overlap", x)) for x in (0.9, 0.5))
    assert canary_check(sim, similar, 0).state is CanaryState.PASSED
    assert canary_check(sim, dissimilar, 0).state is CanaryState.FAILED
    # Without a drift limit, time alone passes.
    plain = CanaryPolicy(nodes=("edge-1",), hold_ms=100)
    assert canary_check(plain, w, 1_100).state is CanaryState.PASSED


# -- the rollout core on a real store -----------------------------------------------------------


class Node:
    """One consuming node's store and rollout core, with helpers to feed it."""

    def __init__(self, root: Path, node_id: str, pol: ModelPolicy) -> None:
        self.root, self.node_id, self.policy = root, node_id, pol
        self.now = 1_000_000
        self.open()

    def open(self) -> None:  # also: a restart
        self.store = ModelStore(self.root / self.node_id / "store")
        self.rollout = Rollout(self.store, self.root / self.node_id / "rollout", self.node_id)
        self.rollout.set_policies({KEY: self.policy})

    def arrive(self, m: ModelManifest) -> Outcomes:
        blob = self.root / f"{self.node_id}-{m.version}.bin"
        blob.write_bytes(m.version.encode())
        stored = self.store.add(m, blob)
        out = self.rollout.on_ready(stored, self.now)
        self.rollout.tidy(KEY, 5)
        return out

    def rule(self, verdict: Verdict, version: str, by: str = "alice", at: int = 0) -> Outcomes:
        at = at or self.now
        return self.rollout.on_ruling(KEY, version, Ruling(verdict, by, "test", at, f"c-{at}"))

    def active(self) -> str | None:
        a = self.store.active(*KEY)
        return a.manifest.version if a else None

    def pending(self) -> tuple[str, ...]:
        return self.rollout.status(KEY)[0]


def kinds(out: Outcomes) -> list[str]:
    return [i.kind for i in out.items if isinstance(i, Notice)]


def test_manual_holds_until_approved_and_reject_drops(tmp_path: Path) -> None:
    n = Node(tmp_path, "edge-1", MANUAL)
    assert kinds(n.arrive(manifest("1"))) == ["model.pending"]
    assert n.active() is None and n.pending() == ("1",)
    out = n.rule(Verdict.APPROVED, "1")
    assert kinds(out) == ["model.approved", "model.activated"] and out.changed == {KEY}
    assert n.active() == "1" and n.pending() == ()
    n.arrive(manifest("2"))
    n.arrive(manifest("3"))
    assert n.pending() == ("3", "2")
    assert kinds(n.rule(Verdict.REJECTED, "3")) == ["model.rejected"]
    assert n.pending() == ("2",) and n.active() == "1"
    assert kinds(n.rule(Verdict.REJECTED, "3", at=n.now)) == []  # the same decision again
    n.rule(Verdict.APPROVED, "2")
    assert n.active() == "2"


def test_an_approval_that_comes_first_activates_on_arrival(tmp_path: Path) -> None:
    n = Node(tmp_path, "edge-1", MANUAL)
    n.rule(Verdict.APPROVED, "1")
    out = n.arrive(manifest("1"))
    assert kinds(out) == ["model.activated"] and n.active() == "1"
    notice = out.items[0]
    assert isinstance(notice, Notice) and notice.by == "alice"


def test_rejecting_the_active_version_rolls_back(tmp_path: Path) -> None:
    n = Node(tmp_path, "edge-1", AUTO)
    n.arrive(manifest("1"))
    n.arrive(manifest("2"))
    out = n.rule(Verdict.REJECTED, "2", by="op")
    assert kinds(out) == ["model.rejected", "model.rolled_back"] and n.active() == "1"
    rolled = out.items[1]
    assert isinstance(rolled, Notice) and rolled.version == "1" and rolled.by == "op"
    assert not n.rollout.fetchable(manifest("2"))
    assert n.rollout.fetchable(manifest("3"))
    n.rule(Verdict.APPROVED, "2", at=n.now + 1)  # the operator changes their mind
    assert n.active() == "2"


def test_a_rollback_reaches_the_target_whatever_order_the_decisions_come_in(
    tmp_path: Path,
) -> None:
    decisions = [
        (Verdict.REJECTED, "3"),
        (Verdict.REJECTED, "4"),
        (Verdict.ROLLBACK_TARGET, "2"),
    ]
    for i, order in enumerate(itertools.permutations(decisions)):
        n = Node(tmp_path / str(i), "edge-1", AUTO)
        for v in ("1", "2", "3", "4"):
            n.arrive(manifest(v))
        assert n.active() == "4"
        for verdict, version in order:
            n.now += 1
            n.rule(verdict, version, by="op")
        assert n.active() == "2", order
        n.arrive(manifest("5"))  # a version made after the rollback is taken as usual
        assert n.active() == "5"
        n.arrive(manifest("3"))  # held, rejected: never
        assert n.active() == "5"


def test_a_rollback_naming_no_version_withdraws_the_active_one(tmp_path: Path) -> None:
    n = Node(tmp_path, "edge-1", AUTO)
    n.arrive(manifest("1"))
    n.arrive(manifest("2"))
    out, version = n.rollout.rollback_active(KEY, Ruling(Verdict.ROLLBACK_TARGET, "op"))
    assert version == "2" and n.active() == "1"
    assert kinds(out) == ["model.rejected", "model.rolled_back"]
    assert not n.rollout.fetchable(manifest("2"))


def test_a_rollback_to_a_version_not_held_says_so(tmp_path: Path) -> None:
    n = Node(tmp_path, "edge-1", AUTO)
    n.arrive(manifest("5"))
    out = n.rule(Verdict.ROLLBACK_TARGET, "2")
    assert kinds(out) == ["model.rollback_requested", "model.rollback_failed"]
    assert n.active() == "5"
    out = n.rule(Verdict.REJECTED, "5")  # what `ion rollback ... 2` publishes with it
    assert kinds(out) == ["model.rejected", "model.rolled_back"] and n.active() is None
    assert "no earlier version is held" in str(out.items[1])
    assert kinds(n.arrive(manifest("2"))) == ["model.activated"]  # named: taken, though older
    assert n.active() == "2"


def test_gated_refuses_a_worse_model_and_takes_a_better_one(tmp_path: Path) -> None:
    n = Node(tmp_path, "edge-1", GATED)
    assert kinds(n.arrive(manifest("1", quality=0.6))) == ["model.activated"]
    out = n.arrive(manifest("2", quality=0.62))
    assert kinds(out) == ["model.refused_by_gate"] and n.active() == "1"
    notice = out.items[0]
    assert isinstance(notice, Notice) and notice.warning and "margin" in notice.reason
    assert kinds(n.arrive(manifest("3", quality=0.4))) == ["model.refused_by_gate"]
    assert kinds(n.arrive(manifest("4", quality=0.7))) == ["model.activated"]
    assert n.active() == "4"
    n.arrive(manifest("5", quality=0.1))
    n.rule(Verdict.APPROVED, "5")  # an operator overrides the gate
    assert n.active() == "5"


def test_a_canary_node_goes_first_and_publishes_its_verdict(tmp_path: Path) -> None:
    canary = Node(tmp_path, "edge-1", CANARY)
    other = Node(tmp_path, "edge-2", CANARY)
    out = canary.arrive(manifest("1"))
    assert kinds(out) == ["model.activated", "model.canary_started"] and canary.active() == "1"
    assert kinds(other.arrive(manifest("1"))) == ["model.pending"] and other.active() is None
    assert canary.rollout.status(KEY)[1] == "trial 1"
    assert other.rollout.status(KEY)[1] == "waiting for the canary of 1"
    mid = canary.store.active(*KEY)
    assert mid is not None
    canary.rollout.observe(KEY, mid.model_id, canary.now, drift=("psi", 0.05))
    assert canary.rollout.tick(canary.now + 1_999).items == []
    out = canary.rollout.tick(canary.now + 2_000)
    [result] = [i for i in out.items if isinstance(i, CanaryResult)]
    assert result.passed and result.version == "1" and kinds(out) == ["model.canary_passed"]
    assert canary.rollout.status(KEY)[1] == "passed 1"
    verdict = Ruling(Verdict.CANARY_PASSED, "edge-1", result.reason, canary.now)
    out = other.rollout.on_canary_verdict(KEY, "edge-1", "1", verdict)
    assert kinds(out) == ["model.promoted", "model.activated"] and other.active() == "1"
    assert other.rollout.on_canary_verdict(KEY, "edge-1", "1", verdict).items == []


def test_a_canary_that_drifts_rolls_back_and_the_others_never_take_it(tmp_path: Path) -> None:
    canary = Node(tmp_path, "edge-1", CANARY)
    other = Node(tmp_path, "edge-2", CANARY)
    for n in (canary, other):
        n.rule(Verdict.APPROVED, "1")
        n.arrive(manifest("1"))
    canary.arrive(manifest("2"))
    other.arrive(manifest("2"))
    assert canary.active() == "2" and other.active() == "1" and other.pending() == ("2",)
    out = canary.rollout.observe(KEY, "", canary.now + 500, drift=("psi", 0.9))
    assert kinds(out) == ["model.canary_failed", "model.rolled_back"]
    [result] = [i for i in out.items if isinstance(i, CanaryResult)]
    assert not result.passed and "max_drift" in result.reason
    assert canary.active() == "1" and canary.store.is_rejected(*KEY, manifest("2").model_id)
    canary.arrive(manifest("2"))  # the retained manifest again: never on trial again
    assert canary.active() == "1"
    verdict = Ruling(Verdict.CANARY_FAILED, "edge-1", result.reason, canary.now)
    out = other.rollout.on_canary_verdict(KEY, "edge-1", "2", verdict)
    assert kinds(out) == ["model.rejected"] and other.pending() == () and other.active() == "1"
    assert not other.rollout.fetchable(manifest("2"))


def test_a_component_refusing_the_canary_version_fails_the_trial(tmp_path: Path) -> None:
    canary = Node(tmp_path, "edge-1", CANARY)
    canary.arrive(manifest("1"))
    m = manifest("1")
    canary.store.reject(*KEY, m.model_id)
    out = canary.rollout.on_refused(KEY, m.model_id, "unknown format")
    assert kinds(out) == ["model.canary_failed"]
    assert [i.passed for i in out.items if isinstance(i, CanaryResult)] == [False]


def test_the_rollout_state_survives_a_restart(tmp_path: Path) -> None:
    n = Node(tmp_path, "edge-1", CANARY)
    n.rule(Verdict.REJECTED, "9")
    n.arrive(manifest("1"))
    n.open()  # the agent restarts
    assert n.rollout.status(KEY) == ((), "trial 1")
    assert not n.rollout.fetchable(manifest("9"))
    n.rollout.observe(KEY, "", n.now, drift=("psi", 0.1))
    n.open()
    assert kinds(n.rollout.tick(n.now + 2_000)) == ["model.canary_passed"]  # evidence kept
    other = Node(tmp_path, "edge-2", CANARY)
    other.rollout.on_canary_verdict(KEY, "edge-1", "1", Ruling(Verdict.CANARY_PASSED, "edge-1"))
    other.open()
    assert kinds(other.arrive(manifest("1"))) == ["model.promoted", "model.activated"]


def test_a_changed_policy_decides_held_versions_again(tmp_path: Path) -> None:
    n = Node(tmp_path, "edge-1", MANUAL)
    n.arrive(manifest("1"))
    n.arrive(manifest("2"))
    assert n.rollout.tick(n.now).items == []
    n.rollout.set_policies({KEY: AUTO})  # the ION was applied again with policy auto
    out = n.rollout.tick(n.now)
    assert kinds(out) == ["model.activated"] and n.active() == "2" and n.pending() == ()
    assert n.rollout.tick(n.now).items == []


def test_a_broken_state_file_starts_afresh(tmp_path: Path) -> None:
    n = Node(tmp_path, "edge-1", MANUAL)
    n.arrive(manifest("1"))
    state = tmp_path / "edge-1" / "rollout" / ION / f"{EDGE}.json"
    state.write_text("{not json")
    n.open()
    assert n.pending() == ()
